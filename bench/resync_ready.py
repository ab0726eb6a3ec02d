"""A returning node's startup resync through direct injection, until its readiness file says 0 (issue #13).

    sudo .venv/bin/python bench/resync_ready.py N [--repo DIR]

Node A (ours, FTFW) holds N flows (bench/populate.py N udp); node B (ours, ``DisableExternalCache on``, a
readiness file) starts on an empty table.  Prints how long until B's file said 0 and how many entries B's kernel
held at that moment (nf_conntrack_count of its namespace) — it must be all N.  ``--repo`` runs another checkout's
conntrack_tools and test helpers (e.g. ``git worktree add /tmp/base <commit>``) for an A/B in the same minutes.
Namespaces are tests/netns/sync_mesh.py's (``ctpy-s3*``), removed at the end; only daemons started here are stopped.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

INJECT_MODE = "FTFW {{\n ResendQueueSize {rsq}\n ACKWindowSize 20\n StartupResync on\n DisableExternalCache on\n}}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("n", type=int)
    ap.add_argument("--repo", default=str(Path(__file__).resolve().parents[1]))
    a = ap.parse_args()
    repo = Path(a.repo).resolve()
    os.chdir(repo)  # the daemons run `python -m conntrack_tools.daemon.main` from here
    sys.path.insert(0, str(repo))
    from tests.netns import sync_mesh
    from tests.netns.sync_mesh import Mesh, Node, ns, wait_for

    sync_mesh.MODES.setdefault("ftfw-inject", INJECT_MODE)  # older checkouts lack it
    tmp = Path(tempfile.mkdtemp(prefix="ctpy-resync-"))
    with Mesh() as mesh:
        nodes: list = []
        try:
            for i in (1, 2):
                mesh.add(i)
            ready = tmp / "ready"
            peer = Node(tmp, 1, mode="ftfw")
            node = Node(tmp, 2, mode="ftfw-inject",
                        extra_general=f" Readiness {{\n  File {ready}\n  Weight -100\n }}\n")
            nodes = [peer, node]
            peer.start()
            r = ns(peer.ns, sys.executable, "bench/populate.py", str(a.n), "udp", timeout=300)
            if r.returncode:
                sys.exit(r.stderr)
            wait_for(lambda: peer.count("-i") >= a.n, 120, "the peer's internal cache", interval=1)
            t0 = time.monotonic()
            node.start(wait=False)
            while time.monotonic() - t0 < 300 and not (ready.exists() and ready.read_text().strip() == "0"):
                time.sleep(0.05)
            secs = time.monotonic() - t0
            count = ns(node.ns, "cat", "/proc/sys/net/netfilter/nf_conntrack_count").stdout.strip()
            m = re.search(r"external inject:.*?created:\s+(\d+)\s+failed:\s+(\d+)", node.client("-s").stdout, re.S)
            print(f"{repo} N={a.n:,}: ready after {secs:.1f} s; kernel entries then {count}; inject created/failed "
                  f"{'/'.join(m.groups()) if m else '?'}; resync requests by the node "
                  f"{node.logs().count('requesting resync')}", flush=True)
        finally:
            for x in nodes:
                x.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
