"""Beyond C: sync key rotation on a live pair (keyring AuthKey files re-read without a restart).

Two of our daemons (FTFW over multicast, keys from root-only keyring files) under a steady
stream of conntrack creates on both nodes; mid-stream the key goes through the three steps
of docs/sync.md (add the new key on both, send with it on both, drop the old one on both),
each step only once both daemons report the file loaded (``-s network -o json``: key ids).
A malformed file written in between is refused and the old keys kept.  At the end: not one
datagram rejected (unauthenticated, bad MAC, unknown key id, malformed) and every flow of each
node on its peer.  Negative: peers with disjoint keyrings reject each other, counted by kind.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import stop_process
from tests.netns.sync_mesh import (
    C_CONNTRACK,
    Mesh,
    Node,
    assert_nothing_rejected,
    flow_args,
    flow_key,
    node_ns,
    sync_auth,
    wait_for,
)

pytestmark = [pytest.mark.root]

OLD = "0123456789abcdef" * 4
NEW = "fedcba9876543210" * 4
OTHER = "5a" * 32
FLOWS = 240  # per node, one every ~25 ms: the rotation happens in the middle of the stream


def write_keys(path: Path, *keys: tuple[int, str]) -> None:
    """Atomic replace (as Ansible's template module does): the daemon never reads half a file."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text("# test keyring\n" + "".join(f"key {i} {k}\n" for i, k in keys))
    tmp.chmod(0o600)
    tmp.replace(path)


def loaded(node: Node, send: int, ids: list[int]) -> bool:
    a = sync_auth(node)
    return a["send_key_id"] == send and a["key_ids"] == ids


def stream(i: int) -> subprocess.Popen:
    """Creates FLOWS flows on node i, one per ``conntrack -I``, paced."""
    script = "".join(f"{C_CONNTRACK} -I {' '.join(flow_args(i, k))} >/dev/null 2>&1; sleep 0.025\n"
                     for k in range(FLOWS))
    return subprocess.Popen(["ip", "netns", "exec", node_ns(i), "sh", "-c", script])


def test_rotation_mid_stream_rejects_nothing_and_loses_nothing(tmp_path):
    keys = {i: tmp_path / f"n{i}.key" for i in (1, 2)}
    for f in keys.values():
        write_keys(f, (1, OLD))
    with Mesh() as mesh:
        nodes: dict[int, Node] = {}
        streams: list[subprocess.Popen] = []
        try:
            for i in (1, 2):
                mesh.add(i)
                nodes[i] = Node(tmp_path, i, auth=str(keys[i]))
                nodes[i].start()
            n1, n2 = nodes[1], nodes[2]
            wait_for(lambda: all(loaded(n, 1, [1]) for n in (n1, n2)), 10, "both daemons up with key 1")
            streams = [stream(1), stream(2)]
            wait_for(lambda: len(n2.external()) >= FLOWS // 4, 30, "stream under way")
            steps = [((1, OLD), (2, NEW)), ((2, NEW), (1, OLD)), ((2, NEW),)]
            for n, step in enumerate(steps, 1):
                for i in (1, 2):
                    write_keys(keys[i], *step)
                    if n == 2 and i == 2:  # an operator's typo between two steps: refused, old keys kept
                        keys[2].write_text("key 2 not-hex\n")
                        wait_for(lambda: sync_auth(n2)["key_file"]["refused"] == 1, 5, "bad file refused")
                        assert loaded(n2, 1, [1, 2]) and "not-hex" not in n2.logs()
                        write_keys(keys[i], *step)
                want_send, want_ids = step[0][0], [k for k, _ in step]
                wait_for(lambda: all(loaded(n, want_send, want_ids) for n in (n1, n2)), 10,  # noqa: B023
                         f"step {n} loaded on both", show=lambda: f"{sync_auth(n1)}\n{sync_auth(n2)}")
            assert all(s.poll() is None for s in streams), "rotation finished after the stream: nothing proved"
            for s in streams:
                assert s.wait(timeout=60) == 0
            want = {i: {flow_key(i, k) for k in range(FLOWS)} for i in (1, 2)}
            wait_for(lambda: want[1] <= n2.external() and want[2] <= n1.external(), 30, "every flow on the peer",
                     show=lambda: f"missing on 2: {len(want[1] - n2.external())}, on 1: {len(want[2] - n1.external())}")
            for n in (n1, n2):
                a = sync_auth(n)
                assert_nothing_rejected(a)
                assert a["send_key_id"] == 2 and a["key_ids"] == [2] and a["by_key"]["2"]["accepted"] > 0, a
                assert a["key_file"]["reloads"] == 3, a
                log = n.logs()
                assert "reloaded: sending key 1, also accepting 2" in log and "reloaded: sending key 2" in log, log
                assert OLD not in log and NEW not in log
            assert "AuthKey file refused, keeping the current keys (sending key 1, also accepting 2)" in n2.logs()
            net = n1.network()
            assert "Unknown key id:" in net and "Key id:" in net
            print("rotation mid-stream:", {i: {k: sync_auth(nodes[i])[k] for k in ("accepted", "sent", "by_key")}
                                           for i in (1, 2)})
        finally:
            for s in streams:
                stop_process(s, sig=signal.SIGKILL)
            for n in nodes.values():
                n.stop()


def test_disjoint_keyrings_reject_each_other_counted(tmp_path):
    """1: key id 1 = OLD; 2: key id 2 = NEW (unknown id to 1 and 3); 3: key id 1 = OTHER (bad MAC for 1)."""
    rings = {1: [(1, OLD)], 2: [(2, NEW)], 3: [(1, OTHER)]}
    with Mesh() as mesh:
        nodes: dict[int, Node] = {}
        try:
            for i, ring in rings.items():
                mesh.add(i)
                f = tmp_path / f"n{i}.key"
                write_keys(f, *ring)
                nodes[i] = Node(tmp_path, i, auth=str(f))
                nodes[i].start()
            for i, n in nodes.items():
                r = subprocess.run(["ip", "netns", "exec", n.ns, C_CONNTRACK, "-I", *flow_args(i, 0)],
                                   capture_output=True, text=True, check=False)
                assert r.returncode == 0, r.stderr
            n1, n2, n3 = nodes[1], nodes[2], nodes[3]
            wait_for(lambda: sync_auth(n1)["unknown_key"] > 0 and sync_auth(n1)["bad_mac"] > 0, 15,
                     "1 rejects 2 (unknown key id) and 3 (bad MAC)", show=lambda: str(sync_auth(n1)))
            wait_for(lambda: sync_auth(n2)["unknown_key"] > 0 and sync_auth(n3)["unknown_key"] > 0, 15,
                     "2 and 3 reject the others", show=lambda: f"{sync_auth(n2)}\n{sync_auth(n3)}")
            for n in nodes.values():
                assert n.external() == set(), n.i
                assert sync_auth(n)["accepted"] == 0
            a1 = sync_auth(n1)
            assert a1["by_key"]["1"]["bad_mac"] == a1["bad_mac"]  # all bad MACs carried our key id
            print("disjoint keyrings:", {i: {k: sync_auth(n)[k] for k in ("unknown_key", "bad_mac", "accepted")}
                                         for i, n in nodes.items()})
        finally:
            for n in nodes.values():
                n.stop()
