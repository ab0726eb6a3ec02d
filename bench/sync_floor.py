"""The CPython floor of the sender's event path, against C's whole sender (not a CI test).

    sudo .venv/bin/python bench/sync_floor.py [--n 200000] [--runs 3]

Why: the line-rate target (issue: peer converged within 1.5x the C pair's time at 200k flows created
at full speed) needs our sender to spend about what C's does per kernel event, 3-5 us of CPU
(`bench/sync_run.py --matrix`, "sender CPU us/event", C -> C rows).  This script measures what a
Python loop costs per event before it does any of the sync work, on real ctnetlink events:

* ``recv``: ``recv_into`` on the event socket until it is empty, nothing else;
* ``recv + minimal work``: the same plus the least a sender must do per event: unpack the netlink
  header, slice a key, one dict store, one ``struct.pack`` of a message.

The N events are queued first (N flows created by bench/populate.py --preencode in a namespace
``ctpy-floor<pid>`` while the socket, with a receive buffer large enough for all of them, is not
read), so the figures are the reader's CPU alone (``time.process_time``), without the creator's.
Our daemon's full per-event cost is `bench/sync_stages.py` (in-process stages) and the matrix.
"""

from __future__ import annotations

import argparse
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from conntrack_tools.netlink.socket import CtnlSocket  # noqa: E402

NS = f"ctpy-floor{os.getpid() % 100000}"
GROUPS = 0b011  # NFNLGRP_CONNTRACK_NEW | _UPDATE
_HDR = struct.Struct("=IHHII")
_MSG = struct.Struct("!4s4sHHI")


def drain(sock: CtnlSocket, work: bool) -> tuple[int, float]:
    """(events read, CPU seconds) for one drain of the queued events."""
    buf = bytearray(1 << 16)
    view = memoryview(buf)
    rin = sock.sock.recv_into
    hdr, msg = _HDR.unpack_from, _MSG.pack
    table: dict[bytes, bytes] = {}
    n = 0
    t0 = time.process_time()
    if not work:
        while True:
            try:
                rin(buf)
            except BlockingIOError:
                break
            n += 1
    else:
        while True:
            try:
                rin(buf)
            except BlockingIOError:
                break
            _len, _type, _flags, seq, _pid = hdr(buf, 0)
            key = bytes(view[40:56])
            table[key] = msg(key[:4], key[4:8], 1, 2, seq)
            n += 1
    return n, time.process_time() - t0


def inner(n: int, runs: int) -> None:
    """In the namespace: queue N events, drain them, per variant and run; print one line each."""
    for work in (False, True):
        for _ in range(runs):
            subprocess.run(["conntrack", "-F"], capture_output=True, check=False)
            with CtnlSocket(groups=GROUPS, rcvbuf=1 << 30) as sock:
                subprocess.run([sys.executable, str(REPO / "bench" / "populate.py"), str(n), "mix", "--preencode"],
                               check=True, cwd=REPO, stdout=subprocess.DEVNULL)
                sock.sock.setblocking(False)
                got, cpu = drain(sock, work)
                lost = sock.drops()
            print(f"{'recv + minimal work' if work else 'recv'}\t{got}\t{lost}\t{cpu / max(got, 1) * 1e6:.2f}",
                  flush=True)
        subprocess.run(["conntrack", "-F"], capture_output=True, check=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.inner:
        inner(a.n, a.runs)
        return
    if os.geteuid() != 0:
        sys.exit("needs root (a network namespace)")
    max_path = Path("/proc/sys/net/netfilter/nf_conntrack_max")
    old_max = max_path.read_text().strip() if max_path.exists() else None
    subprocess.run(["ip", "netns", "add", NS], check=True)
    try:
        if old_max is not None and int(old_max) < a.n * 2:
            max_path.write_text(str(a.n * 2))
        # ctnetlink creates are events whatever the ruleset: the namespace needs no nft rule
        out = subprocess.run(["ip", "netns", "exec", NS, sys.executable, __file__, "--inner", "--n", str(a.n),
                              "--runs", str(a.runs)], check=True, capture_output=True, text=True).stdout
    finally:
        subprocess.run(["ip", "netns", "del", NS], check=False)
        if old_max is not None:
            max_path.write_text(old_max)
    rows: dict[str, list[tuple[int, int, float]]] = {}
    for line in out.splitlines():
        name, got, lost, us = line.split("\t")
        rows.setdefault(name, []).append((int(got), int(lost), float(us)))
    print(f"\n## CPython floor of the sender's event loop ({a.n:,} queued ctnetlink NEW events, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, Python {sys.version.split()[0]})\n")
    print("| loop | events read (lost) | CPU us/event, best | runs |")
    print("|---|---:|---:|---|")
    for name, vals in rows.items():
        best = min(v[2] for v in vals)
        print(f"| {name} | {vals[0][0]:,} ({vals[0][1]}) | {best:.2f} | {', '.join(f'{v[2]:.2f}' for v in vals)} |")


if __name__ == "__main__":
    main()
