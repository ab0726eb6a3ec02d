"""Beyond C: never-stuck FTFW convergence after resend-queue overflow and netlink overrun.

The sender has ResendQueueSize 256 and a small netlink event buffer, the receiver a 64 KiB
socket buffer; a burst of N flows (batched ctnetlink creates) overruns the sender's event
socket (-> resync from a dump) and the receiver's socket (-> lost datagrams, NACKs for
messages the resend queue already evicted).  C answers such NACKs with nothing and the
peer stays short for good (935,887 of 1M in the issue); we re-queue the evicted objects
(targeted resync).  The receiver's external cache must end equal to the sender's flows:
missing and extra counts are printed and must be 0.
"""

from __future__ import annotations

import json
import os
import sys
import time

import pytest

from tests.netns.sync_mesh import Mesh, Node, ns, wait_for

pytestmark = [pytest.mark.root]

N = int(os.environ.get("CTPY_RESYNC_N", "20000"))


def burst_keys(n: int) -> set[str]:
    """What bench/populate.py N udp creates (see its flows())."""
    return {f"src=10.1.{i >> 16}.1 dst=10.2.0.1 sport={1024 + i % 60000} dport={80 + i // 60000}" for i in range(n)}


def test_burst_with_tiny_resend_queue_converges_to_100_percent(tmp_path):
    with Mesh() as mesh:
        nodes = []
        try:
            for i in (1, 2):
                mesh.add(i)
            a = Node(tmp_path, 1, rsq=256, extra_general=" NetlinkBufferSize 65536\n"
                                                          " NetlinkBufferSizeMaxGrowth 262144\n")
            b = Node(tmp_path, 2, rcvbuf=65536)
            nodes = [a, b]
            for n in nodes:
                n.start()
            t0 = time.monotonic()
            r = ns(a.ns, sys.executable, "bench/populate.py", str(N), "udp", timeout=60)
            assert r.returncode == 0, r.stderr
            want = burst_keys(N)
            state = {}

            def converged() -> bool:
                got = b.external()
                state["missing"], state["extra"] = len(want - got), len(got - want)
                return not state["missing"] and not state["extra"]

            try:
                wait_for(converged, 45, "receiver has exactly the sender's flows",
                         show=lambda: f"missing={state['missing']} extra={state['extra']}\n{a.logs()[-1500:]}")
            finally:
                js = json.loads(a.client("-s", "network", "-o", "json").stdout)
                js = js.get("network", js) if "resend" not in js else js
                print(f"\nN={N}: missing={state.get('missing')} extra={state.get('extra')} "
                      f"after {time.monotonic() - t0:.1f} s; sender resend={js.get('resend')}; "
                      f"receiver lost={json.loads(b.client('-s', 'network', '-o', 'json').stdout)}"[:600])
            # the scenario really exercised the recovery paths
            assert js["resend"]["overflow"] > 0
        finally:
            for n in nodes:
                n.stop()
