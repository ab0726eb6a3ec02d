"""Sync benchmark: our conntrackd pair against a C conntrackd 1.4.7 pair, FTFW over UDP (not a CI test).

    sudo .venv/bin/python bench/sync_run.py [--quick] [--sizes 100000,1000000] [--rate 40000]

Runs as root.  Two namespaces ``ctpy-sbA<tag>`` (sender) and ``ctpy-sbB<tag>`` (receiver) joined
by a veth (the topology of tests/netns/test_sync_interop.py: configs with their own LockFile
and UNIX path in a temp dir, no Scheduler; the daemons are run by tests/netns/daemon_proc.py,
their General section is tests/netns/sync_mesh.py's).  nf_conntrack_max is global and only writable from
the host namespace: it is raised for the run and restored on every exit path.

For each size N, and for each implementation (C pair, then our pair, on the same namespaces):

1. **paced**: fresh daemons, N flows created in A at ``--rate``/s (bench/populate.py --rate);
   poll B's external cache until it holds N, stops moving (``--stall``) or ``--max-wait`` passed
   since the last create; fraction present and time from the first create to convergence.  Then
   RSS (VmRSS, VmHWM) of both daemons with what their caches hold.
2. **fastest**: fresh daemons, N flows created as fast as the kernel takes them (all messages
   encoded first, then sent back to back: netlink event overruns and resyncs happen here);
   fraction and time to converge, as above.
3. **commit**: a C sender fills the receiver's external cache (fastest rate), then
   ``conntrackd -c`` on B, ``--commits`` times from an empty kernel table (median reported): the
   commit time is the one the receiver logs ("Committed N new entries" ... "commit has taken S
   seconds", both implementations).

One table of ours/C ratios is printed at the end.  Only processes started here are stopped,
by pid; the namespaces are removed by name.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from conntrack_tools.daemon.control import Action  # noqa: E402
from conntrack_tools.daemon.control_server import request  # noqa: E402
from tests.netns.daemon_proc import Conntrackd, ns_run, sh  # noqa: E402
from tests.netns.sync_mesh import sync_general  # noqa: E402

VENV_BIN = Path(sys.executable).parent
C_DAEMON = "/usr/sbin/conntrackd"
C_CONNTRACK = "/usr/sbin/conntrack"
PY_DAEMON = str(VENV_BIN / "conntrackd")
MAX = Path("/proc/sys/net/netfilter/nf_conntrack_max")
CLK = os.sysconf("SC_CLK_TCK")
TAG = f"{os.getpid() % 100000}"
NS = {"A": f"ctpy-sbA{TAG}", "B": f"ctpy-sbB{TAG}"}
VETH = {"A": f"ctpy-sb{TAG}a", "B": f"ctpy-sb{TAG}b"}
ADDR = {"A": "10.241.0.1", "B": "10.241.0.2"}
# the receiver's log line, as tests/netns/test_sync_interop.py::_COMMIT reads it (C and ours alike)
COMMIT = re.compile(r"Committed (\d+) new entries.*?commit has taken (\d+\.\d+) seconds", re.S)
ACTIVE = re.compile(r"current active connections:\s+(\d+)")


def ns(side: str, *cmd: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
    return ns_run(NS[side], *cmd, check=check, timeout=timeout)


def proc_kb(pid: int, key: str) -> int:
    m = re.search(rf"^{key}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(m[1]) if m else 0


def setup_link() -> None:
    for side in "AB":
        sh("ip", "netns", "add", NS[side], check=True)
        ns(side, "ip", "link", "set", "lo", "up", check=True)
    sh("ip", "link", "add", VETH["A"], "netns", NS["A"], "type", "veth", "peer", "name", VETH["B"], "netns", NS["B"],
       check=True)
    for side in "AB":
        ns(side, "ip", "addr", "add", f"{ADDR[side]}/24", "dev", VETH[side], check=True)
        ns(side, "ip", "link", "set", VETH[side], "up", check=True)


def teardown_link() -> None:
    for side in "AB":
        sh("ip", "netns", "del", NS[side])


class Daemon(Conntrackd):
    """One conntrackd (C or ours) in namespace ``side``, FTFW over UDP to the other side."""

    start_timeout = 20.0
    stop_timeout = 60.0
    merge_stderr = True

    def __init__(self, tmp: Path, side: str, impl: str, run: int) -> None:
        super().__init__(NS[side], tmp / f"{side}-{impl}-{run}", [C_DAEMON] if impl == "c" else [PY_DAEMON],
                         client=[PY_DAEMON])
        self.side, self.impl = side, impl
        me, peer = ADDR[side], ADDR["B" if side == "A" else "A"]
        self.conf.write_text(
            "Sync {\n Mode FTFW {\n  ResendQueueSize 131072\n  ACKWindowSize 300\n }\n"
            f" UDP {{\n  IPv4_address {me}\n  IPv4_Destination_Address {peer}\n  Port 3781\n"
            f"  Interface {VETH[side]}\n  SndSocketBuffer 4194304\n  RcvSocketBuffer 4194304\n  Checksum on\n }}\n}}\n"
            + sync_general(self, 262144, 4194304, "10.241.0.0/24"))

    def start(self) -> Daemon:
        try:
            super().start()
        except AssertionError:
            raise SystemExit(f"{self.impl} daemon in {self.side} did not start:\n{self.logs()}") from None
        self.idle_kb = proc_kb(self.proc.pid, "VmRSS")
        return self

    def up(self) -> bool:
        return self.stats() is not None

    def stats(self) -> str | None:
        """``-s`` output, asked in-process (polling with a client process each time would load the CPUs)."""
        chunks: list[bytes] = []
        ok = request(str(self.sock), Action.STATS, chunks.append, timeout=30)
        return b"".join(chunks).decode(errors="replace") if ok else None

    def count(self, cache: str) -> int:
        """Entries in the 'internal' or 'external' cache, from ``-s``."""
        out = self.stats() or ""
        part = out.split(f"cache {cache}:", 1)
        m = ACTIVE.search(part[1]) if len(part) == 2 else None
        return int(m[1]) if m else -1

    def mem(self) -> tuple[int, int]:
        return proc_kb(self.proc.pid, "VmRSS"), proc_kb(self.proc.pid, "VmHWM")

    def wait_idle(self, timeout: float = 120) -> None:
        """Until the daemon uses less than 5 % of a CPU over half a second."""
        end = time.monotonic() + timeout
        c0 = self.cpu()
        while time.monotonic() < end:
            time.sleep(0.5)
            c1 = self.cpu()
            if c1 - c0 < 0.025:
                return
            c0 = c1

    def cpu(self) -> float:
        """utime + stime so far, seconds."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK


@dataclass
class Sync:
    created_s: float = 0.0
    present: int = 0
    converge_s: float = float("nan")
    sender_s: float = float("nan")  # when the sender's internal cache held N
    sender_internal: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # side -> daemon CPU seconds during the phase
    hwm: dict[str, int] = field(default_factory=dict)  # side -> VmHWM kB at the end of the phase
    notes: list[str] = field(default_factory=list)


@dataclass
class Result:
    paced: Sync | None = None
    fastest: Sync | None = None
    mem: dict[str, tuple[int, int, int]] = field(default_factory=dict)  # side -> (idle, rss, hwm) kB
    held: dict[str, int] = field(default_factory=dict)  # side -> entries in its cache when mem was read
    commit_n: int = 0
    commit_s: float = float("nan")  # median of commit_all
    commit_all: list[float] = field(default_factory=list)
    commit_fill: Sync | None = None  # the C sender -> this receiver run that filled the external cache


def flush_kernels() -> None:
    for side in "AB":
        ns(side, C_CONNTRACK, "-F", timeout=300)


def read_created(pop: subprocess.Popen, s: Sync) -> None:
    """populate.py's closing stats line: how long the creates took, failures."""
    assert pop.stdout is not None
    stats = json.loads(pop.stdout.readline() or "{}")
    s.created_s = stats.get("seconds", float("nan"))
    if stats.get("errors"):
        s.notes.append(f"{stats['errors']} creates failed")


def sync_once(tmp: Path, impl: str, n: int, rate: float, run: int, stall: float, max_wait: float, commits: int,
              res: Result, sender: str | None = None, measure_mem: bool = False) -> Sync:
    """One pair (sender A = ``sender`` or ``impl``, receiver B = ``impl``) from empty tables."""
    flush_kernels()
    b = Daemon(tmp, "B", impl, run).start()
    a = Daemon(tmp, "A", sender or impl, run).start()
    s = Sync()
    try:
        args = ["--rate", str(rate)] if rate else ["--preencode"]
        pop = subprocess.Popen(["ip", "netns", "exec", NS["A"], sys.executable, str(REPO / "bench" / "populate.py"),
                                str(n), "mix", "--stats", *args], stdout=subprocess.PIPE, text=True, cwd=REPO)
        assert pop.stdout is not None
        pop.stdout.readline()  # {"sending": true}
        t0 = time.monotonic()
        cpu0 = {d.side: d.cpu() for d in (a, b)}
        last, last_change, done = -1, t0, None
        while True:
            got = b.count("external")
            now = time.monotonic()
            if s.sender_s != s.sender_s and a.count("internal") >= n:
                s.sender_s = now - t0
            if done is None and pop.poll() is not None:
                read_created(pop, s)
                done = now
            if got != last:
                last, last_change = got, now
            if got >= n:
                s.converge_s = now - t0
                break
            if done is not None and now - last_change > stall:
                s.notes.append(f"stalled {stall:.0f}s at {got:,}")
                break
            if done is not None and now - done > max_wait:
                s.notes.append(f"cut off {max_wait:.0f}s after the last create, still moving, at {got:,}")
                break
            time.sleep(0.2)
        pop.wait()
        if done is None:  # the peer held all N before the creating process had exited
            read_created(pop, s)
        s.present = last
        s.sender_internal = a.count("internal")
        for d in (a, b):
            s.cpu[d.side] = d.cpu() - cpu0[d.side]
            s.hwm[d.side] = d.mem()[1]
        label = f"{sender or impl}->{impl} N={n:,} {f'{rate:.0f}/s' if rate else 'fastest'}"
        conv = f"{s.converge_s:.1f}s" if s.converge_s == s.converge_s else "not converged"
        print(f"  {label}: created in {s.created_s:.2f}s; B external {s.present:,}/{n:,} "
              f"({100 * s.present / n:.2f} %), {conv}; A internal {s.sender_internal:,} "
              f"(N at {s.sender_s:.1f}s); daemon CPU s A {s.cpu['A']:.1f} B {s.cpu['B']:.1f}; "
              f"VmHWM MiB A {s.hwm['A'] // 1024} B {s.hwm['B'] // 1024}", flush=True)
        if measure_mem:
            # memory with N entries in the caches (A: internal, B: external)
            res.held = {"A": s.sender_internal, "B": s.present}
            for d in (a, b):
                rss, hwm = d.mem()
                res.mem[d.side] = (d.idle_kb, rss, hwm)
        if commits:
            times = []
            for k in range(commits):
                if k:
                    # again from an empty kernel table, once B's daemon has digested the flush's events
                    ns("B", C_CONNTRACK, "-F", timeout=300)
                    b.wait_idle()
                before = len(COMMIT.findall(b.logs()))
                b.client("-c", timeout=300)
                end = time.monotonic() + 300
                while len(m := COMMIT.findall(b.logs())) <= before:
                    if time.monotonic() > end:
                        raise SystemExit(f"no commit log line from {impl}:\n{b.logs()[-2000:]}")
                    time.sleep(0.2)
                res.commit_n = int(m[-1][0])
                times.append(float(m[-1][1]))
            res.commit_all = times
            res.commit_s = statistics.median(times)
            print(f"  {impl} commit of {res.commit_n:,}: {', '.join(f'{t:.3f}' for t in times)}s; "
                  f"(sender {sender or impl})", flush=True)
    finally:
        a.stop()
        b.stop()
    return s


def ratio(ours: float, c: float) -> str:
    if not (ours == ours and c == c) or c == 0:
        return "–"
    return f"**{ours / c:.2f}**"


def verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "NOT met")


def table(results: dict[tuple[str, int], Result], sizes: list[int], rate: float) -> str:
    rows = ["| measure | N | C | ours | ours/C | target | verdict |", "|---|---:|---:|---:|---:|---|---|"]
    for n in sizes:
        c, py = results.get(("c", n)), results.get(("py", n))
        if c is None or py is None:
            continue
        runs = f"median of {len(c.commit_all)}" if len(c.commit_all) > 1 else "1 run"
        rows.append(f"| commit (`-c` on receiver, s from its log, {runs}; entries) | {n:,} | {c.commit_s:.3f} "
                    f"({c.commit_n:,}) | {py.commit_s:.3f} ({py.commit_n:,}) | {ratio(py.commit_s, c.commit_s)} | "
                    "≤ 0.75 | "
                    f"{verdict(py.commit_s <= 0.75 * c.commit_s) if c.commit_n == py.commit_n else 'not comparable'} |")
        for name, key in ((f"sync at {rate / 1000:.0f}k/s", "paced"), ("sync at fastest rate", "fastest")):
            cs, ps = getattr(c, key), getattr(py, key)
            if cs is None or ps is None:
                continue
            rows.append(f"| {name}: present in peer's external cache | {n:,} | {100 * cs.present / n:.2f} % | "
                        f"{100 * ps.present / n:.2f} % | – | 100 % | {verdict(ps.present >= n)} |")

            def conv(s: Sync) -> str:
                return f"{s.converge_s:.1f}" if s.converge_s == s.converge_s else "never"

            rows.append(f"| {name}: time to converge (s, from first create; creates took C {cs.created_s:.1f}, "
                        f"ours {ps.created_s:.1f}) | {n:,} | {conv(cs)} | {conv(ps)} | "
                        f"{ratio(ps.converge_s, cs.converge_s)} | report | – |")
            rows.append(f"| {name}: sender's internal cache complete (s) | {n:,} | {cs.sender_s:.1f} | "
                        f"{ps.sender_s:.1f} | {ratio(ps.sender_s, cs.sender_s)} | report | – |")
            for side, who in (("A", "sender"), ("B", "receiver")):
                rows.append(f"| {name}: {who} daemon CPU s until converged or stalled | {n:,} | "
                            f"{cs.cpu[side]:.1f} | {ps.cpu[side]:.1f} | {ratio(ps.cpu[side], cs.cpu[side])} | "
                            "report | – |")
            if key == "fastest":
                rows.append(f"| {name}: sender peak RSS (VmHWM, overrun resync + purge), MiB | {n:,} | "
                            f"{cs.hwm['A'] / 1024:.0f} | {ps.hwm['A'] / 1024:.0f} | "
                            f"{ratio(ps.hwm['A'], cs.hwm['A'])} | report | – |")
        for side, role in (("A", "sender (internal cache)"), ("B", "receiver (external cache)")):
            ci, cr, ch = c.mem[side]
            pi, pr, ph = py.mem[side]
            ch_n, ph_n = max(c.held.get(side, n), 1), max(py.held.get(side, n), 1)
            cper, pper = (cr - ci) * 1024 / ch_n, (pr - pi) * 1024 / ph_n
            held = "" if ch_n == ph_n == n else f" (C holds {ch_n:,}, ours {ph_n:,})"
            rows.append(f"| RSS {role}, MiB (idle → with N; per entry){held} | {n:,} | {ci / 1024:.0f} → "
                        f"{cr / 1024:.0f}; {cper:.0f} B | {pi / 1024:.0f} → {pr / 1024:.0f}; {pper:.0f} B | "
                        f"{ratio(pr, cr)} (per entry {pper / cper:.2f}) | ≤ 1.0 | "
                        f"{verdict(pr <= cr and pper <= cper)} |")
            rows.append(f"| peak RSS (VmHWM) {role}, MiB | {n:,} | {ch / 1024:.0f} | {ph / 1024:.0f} | "
                        f"{ratio(ph, ch)} | report | – |")
    return "\n".join(rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="N = 100k only")
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--rate", type=float, default=40000, help="paced creation rate (flows/s)")
    ap.add_argument("--stall", type=float, default=20, help="give up when the peer's count does not move this long")
    ap.add_argument("--max-wait", type=float, default=90,
                    help="stop waiting for convergence this long after the last create (keeps a run short)")
    ap.add_argument("--commits", type=int, default=0,
                    help="commits per size and implementation, median reported (default 3 up to 200k, else 1)")
    ap.add_argument("--no-fastest", action="store_true", help="skip the fastest-rate phase")
    a = ap.parse_args()
    if os.geteuid():
        sys.exit("needs root (network namespaces, nf_conntrack_max)")
    if not (os.path.exists(C_DAEMON) and os.path.exists(C_CONNTRACK) and shutil.which("ip")):
        sys.exit("needs iproute2, /usr/sbin/conntrackd and /usr/sbin/conntrack")
    sizes = [100_000] if a.quick else [int(x) for x in a.sizes.split(",")]
    old_max = int(MAX.read_text())
    need = 2 * max(sizes) + 65536  # A's N plus slack (B holds N after the commit: per-namespace count)
    tmp = Path(tempfile.mkdtemp(prefix="ctpy-sb-"))
    results: dict[tuple[str, int], Result] = {}
    t_start = time.monotonic()
    try:
        if old_max < need:
            MAX.write_text(str(need))
            print(f"nf_conntrack_max {old_max} -> {need} for the run (global, restored at exit)", flush=True)
        setup_link()
        run = 0
        for n in sizes:
            for impl in ("c", "py"):
                res = results.setdefault((impl, n), Result())
                run += 1
                res.paced = sync_once(tmp, impl, n, a.rate, run, a.stall, a.max_wait, 0, res, measure_mem=True)
            if not a.no_fastest:
                for impl in ("c", "py"):
                    run += 1
                    results[(impl, n)].fastest = sync_once(tmp, impl, n, 0, run, a.stall, a.max_wait, 0,
                                                           results[(impl, n)])
            # commit: the external cache filled by a C sender (fastest), so both receivers commit all N
            for impl in ("c", "py"):
                run += 1
                commits = a.commits if a.commits else (3 if n <= 200_000 else 1)
                results[(impl, n)].commit_fill = sync_once(tmp, impl, n, 0, run, a.stall, a.max_wait, commits,
                                                           results[(impl, n)], sender="c")
        flush_kernels()
    finally:
        teardown_link()
        if int(MAX.read_text()) != old_max:
            MAX.write_text(str(old_max))
            print(f"nf_conntrack_max restored to {old_max}", flush=True)
        shutil.rmtree(tmp, ignore_errors=True)
    load = os.getloadavg()
    print(f"\n## Sync benchmark ({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, load average "
          f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} at the end, run took {time.monotonic() - t_start:.0f}s)\n")
    print(table(results, sizes, a.rate))
    for (impl, n), r in sorted(results.items()):
        for key in ("paced", "fastest", "commit_fill"):
            s = getattr(r, key)
            if s is not None and s.notes:
                print(f"- {impl} N={n:,} {key}: {'; '.join(s.notes)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
