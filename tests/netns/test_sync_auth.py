"""Beyond C: authenticated sync (AuthKey, HMAC-SHA256 envelope, protocol version 2) in netns.

Five nodes on one multicast group: 1 and 2 are Python with the same key (1 inline hex,
2 from a root-only key file), 3 is Python with another key, 4 is Python without a key,
5 is the C 1.4.7 daemon.  Flows of 1 reach 2 (and the reverse) and nobody else; flows of
3, 4 and 5 never reach 1 or 2 (4 and 5 sync with each other, which proves they sent).
The authenticated nodes count the others' datagrams as bad MAC / unauthenticated (text and
JSON), the C and key-less nodes count ours as "Wrong protocol version".  Forged and
replayed datagrams injected from another host are dropped and counted.
"""

from __future__ import annotations

import time

import pytest

from tests.netns.sync_mesh import PY_DAEMON, Mesh, Node, counter, create, flow_key, ns, sync_auth, wait_for

pytestmark = [pytest.mark.root]

KEY = "00112233445566778899aabbccddeeff0123456789abcdef0123456789abcdef"
OTHER = "ff" * 32

SNIFF_REPLAY = r"""
import socket, struct, sys, time
# capture one authenticated datagram of node 1 from the group, then replay it and a forged copy
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
r.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
r.bind(("225.0.0.53", 3790))
r.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
             socket.inet_aton("225.0.0.53") + socket.inet_aton(sys.argv[1]))
r.settimeout(5)
while True:
    data, src = r.recvfrom(65535)
    if src[0] == "10.233.0.1" and data[0] >> 4 == 2:
        break
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(sys.argv[1]))
time.sleep(0.2)  # let node 2 take the original first
for _ in range(3):
    s.sendto(data, ("225.0.0.53", 3790))
forged = bytearray(data); forged[21] ^= 0xFF
s.sendto(bytes(forged), ("225.0.0.53", 3790))
print("sent")
"""


def test_auth_peers_sync_others_are_ignored_and_counted(tmp_path):
    keyfile = tmp_path / "sync.key"
    keyfile.write_text(KEY + "\n")
    keyfile.chmod(0o600)
    with Mesh() as mesh:
        specs = {1: ("py", KEY), 2: ("py", str(keyfile)), 3: ("py", OTHER), 4: ("py", None), 5: ("c", None)}
        nodes: dict[int, Node] = {}
        try:
            for i, (impl, auth) in specs.items():
                mesh.add(i)
                nodes[i] = Node(tmp_path, i, impl, auth=auth)
            # --config-test: the checker says every peer must be Python; a readable key file is flagged
            r = ns(nodes[2].ns, *PY_DAEMON, "-C", str(nodes[2].conf), "--config-test")
            assert r.returncode == 0 and "requires every peer to be the Python conntrackd" in r.stderr, r.stderr
            keyfile.chmod(0o644)
            r = ns(nodes[2].ns, *PY_DAEMON, "-C", str(nodes[2].conf), "--config-test")
            assert "group/world readable" in r.stderr, r.stderr
            keyfile.chmod(0o600)
            for n in nodes.values():
                n.start()
            for i in nodes:
                create(nodes[i], 0)
            n1, n2, n4, n5 = nodes[1], nodes[2], nodes[4], nodes[5]
            wait_for(lambda: n2.external() == {flow_key(1, 0)}, 15, "1 -> 2 authenticated",
                     show=lambda: f"{n2.external()}\n{n2.logs()[-1500:]}")
            wait_for(lambda: n1.external() == {flow_key(2, 0)}, 15, "2 -> 1 authenticated")
            # 4 (Python, no key) and 5 (C) still talk v1 with each other: they did send
            wait_for(lambda: flow_key(4, 0) in n5.external() and flow_key(5, 0) in n4.external(), 15,
                     "4 <-> 5 unauthenticated sync", show=lambda: f"{n4.external()} {n5.external()}")
            time.sleep(1.2)  # one more alive round from everybody
            assert n1.external() == {flow_key(2, 0)} and n2.external() == {flow_key(1, 0)}
            for i in (3, 4, 5):
                assert not {flow_key(1, 0), flow_key(2, 0)} & nodes[i].external(), i
            # counted: text and JSON
            net = n1.network()
            assert "authentication (HMAC-SHA256-128):" in net, net
            assert counter(net, "Bad MAC") > 0 and counter(net, "Unauthenticated") > 0, net
            assert counter(net, "Accepted") > 0 and counter(net, "Sealed") > 0, net
            assert counter(net, "Malformed messages") == 0, net
            auth = sync_auth(n2)
            assert auth["enabled"] and auth["bad_mac"] > 0 and auth["unauthenticated"] > 0, auth
            for i in (4, 5):  # the key-less Python node and the C daemon skip our envelopes
                assert counter(nodes[i].network(), "Wrong protocol version") > 0, i
            assert "authentication" not in n4.network()
            # replay from another host (node 3) and a forged copy: dropped and counted
            before = n2.network()
            r = ns(nodes[3].ns, "python3", "-c", SNIFF_REPLAY, "10.233.0.3", timeout=20)
            assert r.stdout.strip() == "sent", r.stderr
            wait_for(lambda: counter(n2.network(), "Replayed") >= counter(before, "Replayed") + 3, 5,
                     "replays counted", show=n2.network)
            assert counter(n2.network(), "Bad MAC") > counter(before, "Bad MAC")
            # and the authenticated pair keeps working
            create(n1, 1)
            wait_for(lambda: flow_key(1, 1) in n2.external(), 10, "still syncing after the attack")
            after = n2.network()
            print("node 2 auth counters:", {k: counter(after, k) for k in (
                "Accepted", "Unauthenticated", "Bad MAC", "Replayed", "Stale (clock skew)", "Malformed envelope")},
                "| C node Wrong protocol version:", counter(n5.network(), "Wrong protocol version"))
        finally:
            for n in nodes.values():
                n.stop()
