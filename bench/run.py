"""Benchmarks of our `conntrack` against the C tool, in the same run, printed as a ratio table.

Each measure runs in a private network namespace filled with N entries by
bench/populate.py (batched ctnetlink creates). Times are wall-clock medians of
several runs of the whole command (interpreter start-up included), so the
ratios are what a user sees. Run as root: `make bench` or
`python bench/run.py [--quick] [--sizes 10000,100000]`.
"""

from __future__ import annotations

import argparse
import os
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
C_BIN = "/usr/sbin/conntrack"
PY_BIN = shutil.which("conntrack", path=str(Path(sys.executable).parent)) or "conntrack"


class Netns:
    def __init__(self) -> None:
        self.name = f"ctpy-bench-{uuid.uuid4().hex[:6]}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)

    def cmd(self, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def populate(self, n: int, kind: str = "mix") -> None:
        subprocess.run(self.cmd([C_BIN, "-F"]), capture_output=True)
        subprocess.run(self.cmd([sys.executable, str(HERE / "populate.py"), str(n), kind]), check=True)

    def close(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], check=False)


class BadRun(RuntimeError):
    """A timed command failed or printed the wrong number of lines: its time means nothing."""


def timed(argv: list[str], lines: int | None = None, first: str | None = None) -> float:
    """Wall-clock seconds of ``argv``; its exit status must be 0 and, when given, its stdout must have ``lines``
    lines (the first one equal to ``first``). Stdout goes to a file (as cheap as /dev/null) and is
    checked after the clock stops."""
    with tempfile.TemporaryFile("w+b") as out:
        t0 = time.perf_counter()
        r = subprocess.run(argv, stdout=out, stderr=subprocess.PIPE, check=False)
        elapsed = time.perf_counter() - t0
        out.seek(0)
        text = out.read()
    got = text.count(b"\n")
    head = text.split(b"\n", 1)[0].decode(errors="replace")
    if r.returncode != 0 or (lines is not None and got != lines) or (first is not None and head != first):
        raise BadRun(f"{' '.join(argv)}: exit {r.returncode}, {got} lines (want 0 and {lines}"
                     f"{f', first {first!r}' if first is not None else ''}, got first {head!r}); "
                     f"stderr: {r.stderr.decode(errors='replace').strip()[-300:]}")
    return elapsed


def median_pair(ns: Netns, args: list[str], runs: int, setup=None, lines: int | None = None,
                first: str | None = None) -> tuple[float, float]:
    """Alternate C and ours so background noise hits both alike; every run is checked (`timed`)."""
    c_times, py_times = [], []
    for _ in range(runs):
        for binary, store in ((C_BIN, c_times), (PY_BIN, py_times)):
            if setup:
                setup()
            store.append(timed(ns.cmd([binary, *args]), lines, first))
    return statistics.median(c_times), statistics.median(py_times)


def count(ns: Netns, *args: str) -> int:
    """How many entries C lists for a filter (the expected line count of a filtered command)."""
    r = subprocess.run(ns.cmd([C_BIN, "-L", *args]), capture_output=True, text=True, check=True)
    return r.stdout.count("\n")


def events(ns: Netns, binary: str, n: int) -> tuple[int, str]:
    """Lines printed by `-E -e NEW` while n entries are created as fast as possible."""
    subprocess.run(ns.cmd([C_BIN, "-F"]), capture_output=True)
    proc = subprocess.Popen(ns.cmd([binary, "-E", "-e", "NEW"]), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    # Ready when a probe entry's NEW event comes out (a fixed sleep races with a slow start-up).
    probes = 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        probes += 1
        subprocess.run(ns.cmd([C_BIN, "-I", "-s", "192.0.2.1", "-d", "192.0.2.2", "-p", "udp", "--sport",
                               str(probes), "--dport", "9", "-t", "30"]), capture_output=True)
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            break
    # Drain stdout like a real consumer would: a full pipe would stall the listener.
    counted = [0]

    def drain() -> None:
        for _line in proc.stdout:
            counted[0] += 1

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    subprocess.run(ns.cmd([sys.executable, str(HERE / "populate.py"), str(n), "udp"]), check=True)
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    err = proc.stderr.read()
    proc.wait(timeout=60)
    reader.join(timeout=30)
    lost = [line for line in err.splitlines() if "events lost" in line]
    return max(counted[0] - probes, 0), (lost[0] if lost else "")


def startup(binary: str, runs: int = 15) -> float:
    return statistics.median(timed([binary, "-V"], 1, "conntrack v1.4.7 (conntrack-tools)") for _ in range(runs))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sizes", default="10000,100000")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--events", type=int, default=100000)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/run.py needs root (network namespaces)", file=sys.stderr)
        return 2
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[tuple[str, str, float, float, str]] = []
    rows.append(("start-up (-V)", "-", startup(C_BIN), startup(PY_BIN), "report"))
    ns = Netns()
    try:
        for n in sizes:
            ns.populate(n)
            c, p = median_pair(ns, ["-L"], args.runs, lines=n)
            rows.append(("-L >/dev/null", str(n), c, p, "<= 2.0 (goal 1.2)"))
            c, p = median_pair(ns, ["-C"], args.runs * 2, lines=1, first=str(n))
            rows.append(("-C", str(n), c, p, "<= 1.0 + start-up"))
        n = max(sizes)
        ns.populate(n)
        n_udp = count(ns, "-p", "udp")
        if not 0 < n_udp < n:
            raise BadRun(f"the mixed table of {n} entries has {n_udp} UDP entries")
        c, p = median_pair(ns, ["-D", "-p", "udp"], max(2, args.runs // 2), setup=lambda: ns.populate(n), lines=n_udp)
        rows.append(("-D -p udp", str(n), c, p, "<= 1.0 (goal 0.5)"))
        c, p = median_pair(ns, ["-F"], max(2, args.runs // 2), setup=lambda: ns.populate(n), lines=0)
        rows.append(("-F", str(n), c, p, "<= 1.0"))
        c_lines, _ = events(ns, C_BIN, args.events)
        p_lines, p_lost = events(ns, PY_BIN, args.events)
    finally:
        ns.close()

    print(f"\n{'measure':<16} {'N':>7} {'C (s)':>8} {'ours (s)':>9} {'ratio':>6}  target")
    for name, n_text, c, p, target in rows:
        print(f"{name:<16} {n_text:>7} {c:>8.3f} {p:>9.3f} {p / c:>6.2f}  {target}")
    n_ev = args.events
    print(f"{'-E -e NEW':<16} {n_ev:>7} {c_lines * 100 / n_ev:>7.1f}% {p_lines * 100 / n_ev:>8.1f}%"
          f"{'':>7}  >= 99% printed, or loss reported" + (f" ({p_lost.strip()})" if p_lost else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
