"""A returning node's startup resync through direct injection, until its readiness file says 0 (issue #13).

    sudo .venv/bin/python bench/resync_ready.py N [--repo DIR]

Node A (ours, FTFW) holds N flows (bench/populate.py N udp); node B (ours, ``DisableExternalCache on``, a
readiness file) starts on an empty table.  Prints how long until B's file said 0 and how many entries B's kernel
held at that moment (nf_conntrack_count of its namespace) — it must be all N.  ``--repo`` runs another checkout's
conntrack_tools and test helpers (e.g. ``git worktree add /tmp/base <commit>``) for an A/B in the same minutes.
Namespaces are tests/netns/sync_mesh.py's (``ctpy-s3*``), removed at the end; only daemons started here are stopped.
The two nodes are tests/netns/sync_mesh.inject_pair (the netns test's); a ``--repo`` older than that helper gets
this tree's sync_mesh over its own daemon helpers.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
import tempfile
import time
from pathlib import Path

OWN_REPO = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("n", type=int)
    ap.add_argument("--repo", default=str(OWN_REPO))
    a = ap.parse_args()
    repo = Path(a.repo).resolve()
    os.chdir(repo)  # the daemons run `python -m conntrack_tools.daemon.main` from here
    sys.path.insert(0, str(repo))
    from tests.netns import sync_mesh

    if not hasattr(sync_mesh, "inject_pair"):  # an older checkout: this tree's mesh over its daemon helpers
        spec = importlib.util.spec_from_file_location("ctpy_own_sync_mesh", OWN_REPO / "tests/netns/sync_mesh.py")
        assert spec is not None and spec.loader is not None
        sync_mesh = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sync_mesh)
    ns, wait_for = sync_mesh.ns, sync_mesh.wait_for

    tmp = Path(tempfile.mkdtemp(prefix="ctpy-resync-"))
    with sync_mesh.inject_pair(tmp) as (peer, node, ready):
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
