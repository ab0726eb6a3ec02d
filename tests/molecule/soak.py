#!/usr/bin/env python3
"""Failback at scale (issue #13): N background entries on the pair, then the `kill` pass of failover.py.

    soak.py [--entries 200000] [--rate 20000] [--out FILE] [-i INVENTORY ...]

The master's kernel table is filled with N established-looking entries (bench/populate.py, run in the
master's network namespace with the node's own Python), the backup must hold them all (direct
injection) before the pass starts; then 100 TCP + 10 UDP + 20 NAT connections and the FTP session,
`podman kill` of the master and `podman start`.  The rebooted node asks the survivor for a resync of
N + the live flows, which takes seconds at this size: the failback is hitless only if the node's
readiness file holds it back until that resync is in its kernel.  The report is failover.py's plus a
`background` block (entries, time to sync them to the backup, the rebooted node's table size and
readiness wait).  Needs the lab converged with a table and HashLimit for N
(`scripts/lab.sh soak` does both).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import failover as fo

POPULATE = fo.ROOT / "bench" / "populate.py"
NODE_PYTHON = "/opt/conntrack-tools/bin/python"  # the node's venv has our package (bench/populate.py needs it)


def kernel_count(lab: fo.Lab, node: str) -> int:
    return int(fo.sh(lab.c(node), "conntrack -C 2>/dev/null || echo 0", check=False).strip() or 0)


def fill(lab: fo.Lab, node: str, entries: int, rate: float) -> dict[str, Any]:
    fo.podman("cp", str(POPULATE), f"{lab.c(node)}:/tmp/ctpy-populate.py")
    out = fo.sh(lab.c(node), f"{NODE_PYTHON} /tmp/ctpy-populate.py {entries} mix --rate {rate:g} --stats",
                timeout=entries / max(rate, 1000) + 120)
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--entries", type=int, default=200_000)
    p.add_argument("--rate", type=float, default=20_000, help="background entries created per second")
    p.add_argument("--out", default=str(fo.ROOT / "molecule" / ".state" / "failover-soak.json"))
    p.add_argument("-i", "--inventory", action="append")
    args = p.parse_args(argv)
    lab = fo.Lab(fo.load_lab(args.inventory or fo.inventories_from_env()))
    master, backup = fo.wait("one node holding every VIP", lab.roles, 60, 0.5)
    before = kernel_count(lab, backup)
    t0 = time.monotonic()
    made = fill(lab, master, args.entries, args.rate)
    fo.log(f"{made['created']} background entries created on {master} in {made['seconds']} s")
    want = before + int(0.999 * args.entries)
    fo.wait(f"{args.entries} background entries in {backup}'s kernel table",
            lambda: kernel_count(lab, backup) >= want, 600, 2.0)
    synced_s = round(time.monotonic() - t0, 1)
    fo.log(f"{backup} holds them {synced_s} s after the first was created")
    result: dict[str, Any] = {"lab": fo.client_id(lab), "implementation": lab.info["implementation"],
                              "tcp": 100, "udp": 10, "nat": 20, "passes": []}
    t1 = time.monotonic()
    try:
        report = fo.run_pass(lab, "kill", 100, 10, 20, True)
    except (TimeoutError, RuntimeError) as exc:
        fo.log(f"pass 'kill' failed: {exc}")
        report = {"kind": "kill", "failed": str(exc)}
        fo.sh(lab.c("client"), f"touch {fo.FLOWS_STOP}", check=False)
    back = report.get("events", [{}, {}])[1] if "events" in report else {}
    commit = back.get("commit") or {}
    report["background"] = {
        "entries": args.entries, "created": made["created"], "create_s": made["seconds"], "synced_s": synced_s,
        "kernel_after_failback": kernel_count(lab, master) if fo.running(lab.c(master)) else None,
        "ready_after_restart_s": (round(commit["ready_t"] - back["t_restart"], 2)
                                  if commit.get("ready_t") and back.get("t_restart") else None)}
    result["passes"].append(report)
    result["duration_s"] = round(time.monotonic() - t1, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    fo.print_report(result)
    b = report["background"]
    print(f"  background: {b['created']} entries, on the backup {b['synced_s']} s after the first; the rebooted "
          f"node was ready {b['ready_after_restart_s']} s after `podman start` and holds "
          f"{b['kernel_after_failback']} entries")
    if "failed" in report:
        return 1
    s = report["summary"]
    problems = [f"{ev['event']}: {ev['invalid_dropped']} packets dropped as invalid {ev['invalid_by_node']}"
                for ev in report["events"] if ev["invalid_dropped"]]
    if (s["kept"], s["lost"]) != (s["tcp"], 0) or s["nat_kept"] != s["nat"]:
        problems.append(f"connections lost: {s['lost']} TCP, {s['nat'] - s['nat_kept']} NAT ({s['errors']})")
    for msg in problems:
        print(f"  SOAK FAILED: {msg}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
