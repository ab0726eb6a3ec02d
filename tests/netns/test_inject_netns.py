"""Batched direct injection (DisableExternalCache) at scale: every state reaches the backup's kernel.

Node A (ours) creates N flows (default 50,000) at full speed while node B (ours, ``DisableExternalCache
on``) runs: B's kernel table must end holding exactly A's flows, counted by a dump, with no failed
inject.  Then B is restarted on an empty table with a readiness file: when the file says 0, B's
kernel already holds all N (the startup resync went through the batched injector).  And the kernel-side
filter that keeps the injector's own events off the event socket drops exactly those.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO, Netns
from tests.netns.sync_mesh import C_CONNTRACK, Node, create, flow_args, inject_pair, ns, wait_for
from tests.netns.test_sync_resync import burst_keys

pytestmark = [pytest.mark.root]

N = int(os.environ.get("CTPY_INJECT_N", "50000"))
_ORIG = re.compile(r"src=\S+ dst=\S+ sport=\d+ dport=\d+")


def kernel_flows(node: Node) -> set[str]:
    """The original tuple (src/dst/ports) of every UDP entry in the node's kernel table."""
    r = ns(node.ns, C_CONNTRACK, "-L", "-p", "udp", timeout=60)
    assert r.returncode == 0, r.stderr
    return {m.group(0) for m in map(_ORIG.search, r.stdout.splitlines()) if m}


def inject_stats(node: Node) -> dict:
    return json.loads(node.client("-s", "network", "-o", "json").stdout)["external_inject"]


def test_burst_and_resync_reach_the_backups_kernel(tmp_path):
    want = burst_keys(N)
    with inject_pair(tmp_path) as (a, b, ready):
        a.start()
        b.start()
        t0 = time.monotonic()
        r = ns(a.ns, sys.executable, "bench/populate.py", str(N), "udp", timeout=120)
        assert r.returncode == 0, r.stderr
        state: dict = {}

        def converged() -> bool:
            got = kernel_flows(b)
            state["missing"], state["extra"] = len(want - got), len(got - want)
            return not state["missing"]

        wait_for(converged, 90, f"{N} flows in B's kernel", interval=1.0,
                 show=lambda: f"{state} {inject_stats(b)}\n{b.logs()[-1500:]}")
        live = time.monotonic() - t0
        st = inject_stats(b)
        print(f"\nlive burst of {N}: in B's kernel after {live:.1f} s; inject {st}")
        assert state["extra"] == 0
        assert st["add_fail"] == st["upd_fail"] == 0 and st["add_ok"] + st["upd_ok"] >= N
        assert st["batches"] < N // 10  # batched: many states per netlink batch

        # B restarts on an empty table: its startup resync goes through the injector
        b.stop()
        assert ns(b.ns, C_CONNTRACK, "-F").returncode == 0
        assert not kernel_flows(b)
        t1 = time.monotonic()
        b.start(wait=False)
        wait_for(lambda: ready.exists() and ready.read_text().strip() == "0", 60, "B ready",
                 show=lambda: b.logs()[-1500:], interval=0.05)
        secs = time.monotonic() - t1
        got = kernel_flows(b)  # read after "ready": injected before the file said so
        print(f"resync of {N}: ready after {secs:.1f} s, B's kernel holds {len(want & got)} of {N}; "
              f"inject {inject_stats(b)}")
        assert want <= got


_FILTER_PROBE = r"""
import socket
from conntrack_tools.flow import AF_INET, Flow, Tuple
from conntrack_tools.netlink.attrs import NLM_F_CREATE, NLM_F_EXCL, CtMsg, ct_type
from conntrack_tools.netlink.codec import encode_flow, iter_messages, nlmsg
from conntrack_tools.netlink.socket import CtnlSocket, attach_filter, pid_filter

def flow(i):
    a, b = bytes((10, 7, 0, i)), bytes((10, 8, 0, 1))
    return Flow(AF_INET, Tuple(AF_INET, a, b, 17, 1000 + i, 53), Tuple(AF_INET, b, a, 17, 53, 1000 + i), timeout=60)

inj, other = CtnlSocket(), CtnlSocket()
ev = CtnlSocket(groups=1)
attach_filter(ev.sock, pid_filter([inj.portid, 4242]))
for i, s in enumerate((inj, other, inj, other)):
    seq = s.next_seq()
    msg = nlmsg(ct_type(CtMsg.NEW), NLM_F_CREATE | NLM_F_EXCL, seq, AF_INET, encode_flow(flow(i)))
    assert not s.batch([(seq, msg)])
ev.sock.settimeout(0.5)
pids = []
try:
    while True:
        n = ev.recv()
        pids += [pid for _t, _f, _s, pid, _a, _b in iter_messages(ev.view, n)]
except (TimeoutError, socket.timeout):
    pass
print(pids == [other.portid, other.portid], pids, inj.portid, other.portid)
"""


def test_event_socket_filter_drops_the_injectors_echoes():
    """The kernel filter ctnl puts on the event socket with direct injection (netlink/socket.pid_filter)."""
    n = Netns("inj-filter")
    try:
        r = n.run([sys.executable, "-c", _FILTER_PROBE], cwd=REPO)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("True"), r.stdout
    finally:
        n.close()


@pytest.mark.parametrize("channel", ["multicast", "tcp"])
def test_the_peers_flows_reach_the_kernel_while_a_resync_dumps_the_table(tmp_path, channel):
    """keepalived's primary hook runs -R while the VIPs move: a flow the old master opened a moment before
    must reach this kernel before its next packet, not after a dump of the whole table (C reads no sync
    input until its dump is over; an FTP data connection was seen dropped as invalid in the lab).  And a
    resync request read during the dump is answered after it, with the whole cache.  On a datagram
    channel and on a TCP one (its connection is read between dump messages too)."""
    n = 2 * N
    with inject_pair(tmp_path, channel) as (a, b, _ready):
        a.start()
        b.start()
        r = ns(b.ns, sys.executable, "bench/populate.py", str(n), "udp", timeout=120)  # B's own table
        assert r.returncode == 0, r.stderr
        wait_for(lambda: b.count("-i") >= n, 90, f"{n} flows in B's internal cache")
        wait_for(lambda: a.count("-e") >= n, 90, f"{n} flows in A's external cache")  # A idle again
        resync = subprocess.Popen(["ip", "netns", "exec", b.ns, *b.client_argv, "-C", str(b.conf), "-R"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        t0 = time.monotonic()
        wait_for(lambda: "resync with master conntrack table" in b.logs(), 10, "B's dump to start", interval=0.005)
        create(a, 1)  # A's daemon sends it to B
        while ns(b.ns, C_CONNTRACK, "-G", *flow_args(1, 1)[:-2]).returncode != 0:  # no -t with -G
            assert resync.poll() is None, "the resync ended before A's flow was in B's kernel"
            time.sleep(0.005)
        arrived = time.monotonic() - t0
        assert resync.wait(60) == 0, resync.stderr.read()
        took = time.monotonic() - t0
        print(f"\n-R of {n} entries took {took:.2f} s; A's flow was in B's kernel after {arrived:.2f} s")
        assert took - arrived >= 0.3, "A's flow reached B's kernel only at the end of the dump"

        # A resync request read during the dump is answered once the cache is whole again, not half filled.
        before = b.lines("-i")
        assert b.client("-f", "internal").returncode == 0  # the primary hook's -f, before its -R
        assert a.client("-f", "external").returncode == 0
        seen = b.logs().count("resync with master conntrack table")
        resync = subprocess.Popen(["ip", "netns", "exec", b.ns, *b.client_argv, "-C", str(b.conf), "-R"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: b.logs().count("resync with master conntrack table") > seen, 10, "B's second dump",
                 interval=0.005)
        assert a.client("-n").returncode == 0
        assert resync.wait(60) == 0, resync.stderr.read()
        assert b.lines("-i") == before  # the dump's compiled path fills the cache as the events did
        wait_for(lambda: a.count("-e") >= n, 60, f"B's answer: all {n} flows in A's external cache",
                 show=lambda: f"A holds {a.count('-e')}")
