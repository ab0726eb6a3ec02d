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
by pid; the namespaces are removed by name.  The namespaces and the veth are made by rtnetlink
(pyroute2), with a route for 224.0.0.0/4 on the veth.

**--matrix** (the burst-loss issue): rows ``mode/transport/pair/loss/N`` —

    sudo .venv/bin/python bench/sync_run.py --matrix [--out FILE] [--sockbuf default|BYTES]
    sudo .venv/bin/python bench/sync_run.py --matrix --modes ftfw --transports udp,mcast --pairs c-py \\
        --loss 0,10,20 --matrix-sizes 20000,200000,1000000
    sudo .venv/bin/python bench/sync_run.py --matrix --rows ftfw/mcast/c-py/10/20000,notrack/udp/py-py/0/20000

* modes NOTRACK and FTFW; transports UDP and Multicast (IPv4, group 225.0.0.50, port 3781 like UDP);
* pairings (sender-receiver) ``c-c`` (the reference), ``py-py``, ``c-py``, ``py-c``; for each row the
  C -> C row with the same mode, transport, loss and N is added (``--no-c-reference`` not) and the
  ratios are taken against it;
* loss: ``loss`` % of the sync datagrams arriving at the receiver B are dropped at random by an nft
  rule in B's input hook, before conntrack (``udp dport 3781 numgen random mod 100 < loss counter drop``).
  That is "loss on the receiver's input"; netem on A's egress would do the same, but this kernel has
  no sch_netem (CONFIG_NET_SCH_NETEM unset), so nft it is.  Datagrams A receives (ACKs, NACKs,
  RESYNC requests) are not dropped;
* every N is created at full speed (bench/populate.py --preencode: all messages built, then sent back
  to back), 20k being the burst; fresh daemons per row (B first), both kernel tables flushed;
* ``--inject`` (issue #13): rows whose receiver runs with ``DisableExternalCache on`` (modes ``ftfw-inject``,
  ``notrack-inject``; C's receiver the same option), created at full speed or at ``/rate`` flows/s (a sixth field
  of ``--rows``); B holds a flow when its kernel table does (nf_conntrack_count, confirmed by a dump), and a second
  table gives the receiver's CPU against C -> C;
* ``--sockbuf``: Snd/RcvSocketBuffer of both daemons, 4 MiB as in the rest of this file, or
  ``default`` for none (C: net.core.rmem_default; ours: its own default).

Per row: the flows in B's external cache at the end (``-s`` cache stats), the time from the first
create until B holds N (else "stalled (s)": when B's count last moved; the watch gives up after
``--stall`` s without progress, default 20, or ``--max-wait`` s after the last create, default 60
here), the sender daemon's CPU per event and the receiver's (on-CPU time of all the daemon's threads,
/proc/PID/task/*/schedstat, else utime+stime; first create -> converged or stalled), B's
``-s network`` "Packets lost" (sequence gaps), B's namespace UDP RcvbufErrors (datagrams its socket
buffer could not take), the datagrams the loss rule dropped, A's ``-s runtime`` "netlink overrun"
(event socket overflows, each followed by a resync from a kernel dump) and how many RESYNC requests
A answered ("resync requested by other node" in its LogFile, C's line too; not stdout, which repeats
it).  No argument but ``--matrix`` runs baseline_rows() (~4 minutes).  The header line says which
commit the daemon ran, and whether conntrack_tools/ had uncommitted changes (``--code DIR`` runs a
fixed snapshot instead).

``--profile DIR`` (both modes) runs our daemons under cProfile, one ``DIR/<side>-py-<run>.pstats`` each
(read with ``python -m pstats``); their CPU figures then include the profiler's overhead (~2x).
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from conntrack_tools.daemon.control import Action  # noqa: E402
from conntrack_tools.daemon.control_server import request  # noqa: E402
from tests.netns.daemon_proc import Conntrackd, ns_run, sh  # noqa: E402
from tests.netns.sync_mesh import sync_general  # noqa: E402
from tests.netns.veth_pair import VethPair, stat_num  # noqa: E402

VENV_BIN = Path(sys.executable).parent
C_DAEMON = "/usr/sbin/conntrackd"
C_CONNTRACK = "/usr/sbin/conntrack"
PY_DAEMON = str(VENV_BIN / "conntrackd")
PROFILE: Path | None = None  # --profile DIR: our daemons run under cProfile, one DIR/<side>-py-<run>.pstats each
MAX = Path("/proc/sys/net/netfilter/nf_conntrack_max")
CLK = os.sysconf("SC_CLK_TCK")
TAG = f"{os.getpid() % 100000}"
PORT = 3781  # UDP port, and the multicast group's port (--matrix)
PAIR = VethPair("ctpy-sb", TAG, "10.241.0", PORT, "ctpy_loss")
NS, VETH, ADDR = PAIR.ns, PAIR.veth, PAIR.addr
# the receiver's log line, as tests/netns/test_sync_interop.py::_COMMIT reads it (C and ours alike)
COMMIT = re.compile(r"Committed (\d+) new entries.*?commit has taken (\d+\.\d+) seconds", re.S)
ACTIVE = re.compile(r"current active connections:\s+(\d+)")
GROUP = "225.0.0.50"
MODE_CONF = {"ftfw": " Mode FTFW {\n  ResendQueueSize 131072\n  ACKWindowSize 300\n }\n",
             "notrack": " Mode NOTRACK {\n }\n",
             # --inject rows: the receiver writes received states straight into its kernel (C's option too)
             "ftfw-inject": " Mode FTFW {\n  ResendQueueSize 131072\n  ACKWindowSize 300\n"
                            "  DisableExternalCache on\n }\n",
             "notrack-inject": " Mode NOTRACK {\n  DisableExternalCache on\n }\n"}
INJECTED = re.compile(r"external inject:\s+connections created:\s+(\d+)\s+failed:\s+(\d+)\s+"
                      r"connections updated:\s+(\d+)\s+failed:\s+(\d+)")


def ns(side: str, *cmd: str, check: bool = False, timeout: float = 120) -> subprocess.CompletedProcess:
    return ns_run(NS[side], *cmd, check=check, timeout=timeout)


def proc_kb(pid: int, key: str) -> int:
    m = re.search(rf"^{key}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    return int(m[1]) if m else 0


setup_link, teardown_link = PAIR.create, PAIR.remove


class Daemon(Conntrackd):
    """One conntrackd (C or ours) in namespace ``side``, FTFW over UDP to the other side."""

    start_timeout = 20.0
    stop_timeout = 60.0
    merge_stderr = True

    def __init__(self, tmp: Path, side: str, impl: str, run: int, mode: str = "ftfw", transport: str = "udp",
                 sockbuf: int | None = 4194304) -> None:
        name = f"{side}-{impl}-{run}"
        argv = [C_DAEMON] if impl == "c" else [PY_DAEMON]
        if impl != "c" and PROFILE is not None:  # cProfile writes the stats when the daemon exits (SIGTERM)
            argv = [sys.executable, "-m", "cProfile", "-o", str(PROFILE / f"{name}.pstats"),
                    "-m", "conntrack_tools.daemon.main"]
        super().__init__(NS[side], tmp / name, argv, client=[PY_DAEMON])
        self.side, self.impl = side, impl
        me, peer = ADDR[side], ADDR["B" if side == "A" else "A"]
        if transport == "udp":
            link = f" UDP {{\n  IPv4_address {me}\n  IPv4_Destination_Address {peer}\n  Port {PORT}\n"
        else:  # the group's port is the UDP one, so one loss rule (dport PORT) fits both transports
            link = f" Multicast {{\n  IPv4_address {GROUP}\n  Group {PORT}\n  IPv4_interface {me}\n"
        self.conf.write_text(
            f"Sync {{\n{MODE_CONF[mode]}{link}"
            f"  Interface {VETH[side]}\n"
            + (f"  SndSocketBuffer {sockbuf}\n  RcvSocketBuffer {sockbuf}\n" if sockbuf else "")
            + "  Checksum on\n }\n}\n"
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

    def stats(self, action: Action = Action.STATS) -> str | None:
        """``-s`` output (or ``-s network`` etc. by ``action``), asked in-process (polling with a client
        process each time would load the CPUs)."""
        chunks: list[bytes] = []
        ok = request(str(self.sock), action, chunks.append, timeout=30)
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
        """CPU time so far, seconds: the on-CPU nanoseconds of every thread (/proc/PID/task/*/schedstat), or
        utime + stime (clock ticks, 10 ms: too coarse for a C daemon's 20k-event burst) without schedstats."""
        try:
            return sum(int(t.joinpath("schedstat").read_text().split()[0])
                       for t in Path(f"/proc/{self.proc.pid}/task").iterdir()) / 1e9
        except (OSError, ValueError, IndexError):
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / CLK


@dataclass
class Sync:
    created_s: float = 0.0
    present: int = 0
    converge_s: float = float("nan")
    sender_s: float = float("nan")  # when the sender's internal cache held N
    sender_internal: int = 0
    stalled_s: float = float("nan")  # not converged: when B's count last moved (or the cut-off), from first create
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


@contextmanager
def bench_link(need: int) -> Iterator[None]:
    """The run's setting: nf_conntrack_max raised to ``need`` if lower (global: restored on the way out) and the
    veth pair between A and B (removed on the way out)."""
    old_max = int(MAX.read_text())
    try:
        if old_max < need:
            MAX.write_text(str(need))
            print(f"nf_conntrack_max {old_max} -> {need} for the run (global, restored at exit)", flush=True)
        setup_link()
        yield
    finally:
        teardown_link()
        if int(MAX.read_text()) != old_max:
            MAX.write_text(str(old_max))
            print(f"nf_conntrack_max restored to {old_max}", flush=True)


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


def kernel_count(side: str, n: int) -> int:
    """populate.py's flows in ``side``'s kernel table: the cheap per-namespace nf_conntrack_count while it is
    below ``n`` (a few sync-socket entries count too), then a dump (``conntrack -L -d 10.2.0.1``) to be sure."""
    r = ns(side, "cat", "/proc/sys/net/netfilter/nf_conntrack_count")
    count = int(r.stdout) if r.returncode == 0 else 0
    if count < n:
        return count
    r = ns(side, C_CONNTRACK, "-L", "-d", "10.2.0.1", timeout=300)
    return len(r.stdout.splitlines())


def watch(a: Daemon, b: Daemon, pop: subprocess.Popen, n: int, stall: float, max_wait: float, s: Sync,
          t0: float, count=None) -> int:
    """Poll B's external cache (or ``count()``, e.g. its kernel table) and A's internal one from ``t0`` (the first
    create) until B holds ``n``, stops moving for ``stall`` s or ``max_wait`` s passed since populate.py exited;
    fills ``s``, returns B's count."""
    last, last_change, done = -1, t0, None
    while True:
        got = count() if count is not None else b.count("external")
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
            s.stalled_s = last_change - t0
            break
        if done is not None and now - done > max_wait:
            s.notes.append(f"cut off {max_wait:.0f}s after the last create, still moving, at {got:,}")
            s.stalled_s = now - t0
            break
        time.sleep(0.2)
    pop.wait()
    if done is None:  # the peer held all N before the creating process had exited
        read_created(pop, s)
    return last


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
        s.present = watch(a, b, pop, n, stall, max_wait, s, t0)
        s.sender_internal = a.count("internal")
        overruns = stat_num(a.stats(Action.STATS_RUNTIME), "netlink overrun")
        for d in (a, b):
            s.cpu[d.side] = d.cpu() - cpu0[d.side]
            s.hwm[d.side] = d.mem()[1]
        label = f"{sender or impl}->{impl} N={n:,} {f'{rate:.0f}/s' if rate else 'fastest'}"
        conv = f"{s.converge_s:.1f}s" if s.converge_s == s.converge_s else "not converged"
        print(f"  {label}: created in {s.created_s:.2f}s; B external {s.present:,}/{n:,} "
              f"({100 * s.present / n:.2f} %), {conv}; A internal {s.sender_internal:,} "
              f"(N at {s.sender_s:.1f}s); daemon CPU s A {s.cpu['A']:.1f} B {s.cpu['B']:.1f}; "
              f"VmHWM MiB A {s.hwm['A'] // 1024} B {s.hwm['B'] // 1024}; A netlink overruns {overruns}", flush=True)
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


# ------------------------------------------------------------------------------------------------ --matrix

PAIRS = {"c-c": ("c", "c"), "py-py": ("py", "py"), "c-py": ("c", "py"), "py-c": ("py", "c")}
NAME = {"c": "C", "py": "ours"}


@dataclass(frozen=True, order=True)
class Row:
    """One matrix row: sync ``mode`` over ``transport`` from a ``sender`` to a ``receiver`` (``c``/``py``), ``loss`` %
    of the datagrams arriving at the receiver dropped at random, ``n`` flows created at full speed."""

    mode: str
    transport: str
    loss: int
    n: int
    pair: str
    rate: int = 0  # flows created per second (bench/populate.py --rate), 0: at full speed (--preencode)

    @property
    def inject(self) -> bool:
        """The receiver injects into its kernel (DisableExternalCache): converged = its kernel holds N."""
        return self.mode.endswith("-inject")

    @property
    def sender(self) -> str:
        return PAIRS[self.pair][0]

    @property
    def receiver(self) -> str:
        return PAIRS[self.pair][1]

    @property
    def base(self) -> Row:
        """The C -> C row the ratios of this one are taken against."""
        return Row(self.mode, self.transport, self.loss, self.n, "c-c", self.rate)

    def __str__(self) -> str:
        return f"{self.mode}/{self.transport}/{self.pair}/{self.loss}/{self.n}" + (f"/{self.rate}" if self.rate else "")

    @classmethod
    def parse(cls, spec: str) -> Row:
        """``mode/transport/pair/loss/n[/rate]``, e.g. ``ftfw/mcast/c-py/10/20000``,
        ``ftfw-inject/udp/c-py/0/200000/40000``."""
        mode, transport, pair, loss, n, *rate = spec.split("/")
        if mode not in MODE_CONF or transport not in ("udp", "mcast") or pair not in PAIRS or len(rate) > 1:
            raise ValueError(f"bad row {spec!r}: mode {'|'.join(MODE_CONF)}, transport udp|mcast, "
                             f"pair {'|'.join(PAIRS)}, optional /rate")
        return cls(mode, transport, int(loss), int(n), pair, int(rate[0]) if rate else 0)


@dataclass
class RowResult:
    sync: Sync
    sender_cpu_us: float  # sender daemon utime+stime per event (µs), first create -> converged or stalled
    receiver_cpu_us: float
    seq_lost: int = -1  # receiver's -s network "Packets lost" (sequence gaps it saw)
    rcvbuf_errors: int = -1  # receiver namespace's UDP RcvbufErrors during the row (socket buffer overflows)
    sndbuf_errors: int = -1  # sender namespace's UDP SndbufErrors
    injected: int = -1  # datagrams the loss rule dropped
    overruns: int = -1  # sender's -s runtime "netlink overrun" (event socket overflows -> resync)
    resyncs: int = -1  # RESYNC requests the sender answered ("resync requested by other node" in its log, C and ours)
    receiver_cpu_s: float = float("nan")
    inject: tuple[int, ...] = ()  # inject rows: the receiver's -s "external inject" created/failed/updated/failed
    receiver_overruns: int = -1  # the receiver's own netlink event socket overflows (inject rows: its writes' events)


def baseline_rows() -> list[Row]:
    """What --matrix runs by default: the 20k burst in every mode/transport/pairing at 0 % loss, FTFW C -> ours
    (with its C -> C reference) at 10 and 20 % loss, and 200k FTFW over UDP for our pair and C's."""
    rows = [Row(m, t, 0, 20_000, p) for m in ("notrack", "ftfw") for t in ("udp", "mcast") for p in PAIRS]
    rows += [Row("ftfw", t, loss, 20_000, p) for loss in (10, 20) for t in ("udp", "mcast") for p in ("c-c", "c-py")]
    rows += [Row("ftfw", "udp", 0, 200_000, p) for p in ("c-c", "py-py")]
    return rows


def inject_rows() -> list[Row]:
    """What --inject runs (issue #13, the backup's cost of direct injection): FTFW over UDP, the receiver with
    DisableExternalCache on, 200k flows at 40k/s and as one burst, received by C and by ours from a C sender (so
    that only the receiver differs) and our pair."""
    return [Row("ftfw-inject", "udp", 0, 200_000, p, rate) for rate in (40_000, 0) for p in ("c-c", "c-py", "py-py")]


set_loss, injected_drops, udp_snmp = PAIR.set_loss, PAIR.injected_drops, PAIR.udp_snmp


def matrix_row(tmp: Path, row: Row, run: int, stall: float, max_wait: float, sockbuf: int | None) -> RowResult:
    """Fresh daemons (receiver B first), the loss rule, N flows created in A with --preencode; B's external cache
    polled until it holds N or stalls (:func:`watch`)."""
    flush_kernels()
    set_loss(row.loss)
    b = Daemon(tmp, "B", row.receiver, run, row.mode, row.transport, sockbuf).start()
    a = Daemon(tmp, "A", row.sender, run, row.mode, row.transport, sockbuf).start()
    s = Sync()
    try:
        snmp0 = {side: udp_snmp(side) for side in "AB"}
        inj0 = injected_drops()
        pace = ["--rate", str(row.rate)] if row.rate else ["--preencode"]
        pop = subprocess.Popen(["ip", "netns", "exec", NS["A"], sys.executable, str(REPO / "bench" / "populate.py"),
                                str(row.n), "mix", "--stats", *pace], stdout=subprocess.PIPE, text=True, cwd=REPO)
        assert pop.stdout is not None
        pop.stdout.readline()  # {"sending": true}
        t0 = time.monotonic()
        cpu0 = {d.side: d.cpu() for d in (a, b)}
        count = (lambda: kernel_count("B", row.n)) if row.inject else None
        s.present = watch(a, b, pop, row.n, stall, max_wait, s, t0, count)
        for d in (a, b):
            s.cpu[d.side] = d.cpu() - cpu0[d.side]
        s.sender_internal = a.count("internal")
        snmp1 = {side: udp_snmp(side) for side in "AB"}
        res = RowResult(s, 1e6 * s.cpu["A"] / row.n, 1e6 * s.cpu["B"] / row.n,
                        seq_lost=stat_num(b.stats(Action.STATS_NETWORK), "Packets lost"),
                        rcvbuf_errors=snmp1["B"].get("RcvbufErrors", -1) - snmp0["B"].get("RcvbufErrors", 0),
                        sndbuf_errors=snmp1["A"].get("SndbufErrors", -1) - snmp0["A"].get("SndbufErrors", 0),
                        injected=injected_drops() - inj0 if row.loss else 0,
                        overruns=stat_num(a.stats(Action.STATS_RUNTIME), "netlink overrun"),
                        resyncs=a.log_file.read_text(errors="replace").count("resync requested by other node"),
                        receiver_cpu_s=s.cpu["B"],
                        receiver_overruns=stat_num(b.stats(Action.STATS_RUNTIME), "netlink overrun"))
        if row.inject:
            m = INJECTED.search(b.stats() or "")
            res.inject = tuple(int(x) for x in m.groups()) if m else ()
        conv = f"converged {s.converge_s:.1f}s" if s.converge_s == s.converge_s else \
            f"NOT converged ({'; '.join(s.notes)})"
        print(f"  {row}: created in {s.created_s:.2f}s; B {'kernel' if row.inject else 'external'} "
              f"{s.present:,}/{row.n:,} "
              f"({100 * s.present / row.n:.2f} %), {conv}; A internal {s.sender_internal:,}; CPU µs/event "
              f"A {res.sender_cpu_us:.1f} B {res.receiver_cpu_us:.1f}; B seq lost {res.seq_lost}, RcvbufErrors "
              f"{res.rcvbuf_errors}, injected drops {res.injected}; A SndbufErrors {res.sndbuf_errors}, "
              f"netlink overruns {res.overruns}, resyncs requested by B {res.resyncs}"
              + (f"; B inject created/failed/updated/failed {res.inject}, B's own netlink overruns "
                 f"{res.receiver_overruns}, B CPU {res.receiver_cpu_s:.2f} s" if row.inject else ""), flush=True)
        return res
    finally:
        a.stop()
        b.stop()
        set_loss(0)


def table_rows(results: dict[Row, RowResult], rows: list[Row], cpu: Callable[[RowResult], float],
               inject_only: bool = False) -> Iterator[tuple[Row, RowResult, str, str, str]]:
    """The rows that ran (``inject_only``: the direct-injection ones), each with its converge cell and its converge
    and ``cpu`` ratios against its C -> C base ("–" for C -> C itself or when the base did not run)."""
    for row in rows:
        r, base = results.get(row), results.get(row.base)
        if r is None or (inject_only and not row.inject):
            continue
        s = r.sync
        conv = f"{s.converge_s:.1f}" if s.converge_s == s.converge_s else f"stalled ({s.stalled_s:.1f})"
        if base is None or row.pair == "c-c":
            yield row, r, conv, "–", "–"
        else:
            yield row, r, conv, ratio(s.converge_s, base.sync.converge_s), ratio(cpu(r), cpu(base))


def matrix_table(results: dict[Row, RowResult], rows: list[Row]) -> str:
    out = ["| mode | link | sender → receiver | loss % | N | in receiver's external cache | converge s "
           "(first create →) | vs C→C | sender CPU µs/event | vs C→C | receiver CPU µs/event | receiver seq lost | "
           "receiver RcvbufErrors | dropped by loss rule | sender netlink overruns | RESYNCs asked by receiver |",
           "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for row, r, conv, vs_conv, vs_cpu in table_rows(results, rows, lambda x: x.sender_cpu_us):
        s = r.sync
        out.append(f"| {row.mode.upper()} | {'UDP' if row.transport == 'udp' else 'Multicast'} | "
                   f"{NAME[row.sender]} → {NAME[row.receiver]} | {row.loss} | {row.n:,} | "
                   f"{s.present:,} ({100 * s.present / row.n:.2f} %) | {conv} | {vs_conv} | "
                   f"{r.sender_cpu_us:.1f} | {vs_cpu} | {r.receiver_cpu_us:.1f} | {r.seq_lost} | {r.rcvbuf_errors} | "
                   f"{r.injected} | {r.overruns} | {r.resyncs} |")
    return "\n".join(out)


def inject_table(results: dict[Row, RowResult], rows: list[Row]) -> str:
    """The backup's side of direct injection: its kernel table and its CPU, ratios against C -> C."""
    out = ["| mode | sender → receiver | N | created at | in receiver's kernel (dump) | converge s (first create →) "
           "| vs C→C | receiver CPU s | receiver CPU µs/flow | vs C→C | sender CPU µs/flow | receiver inject "
           "created / failed / updated / failed | receiver netlink overruns |",
           "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for row, r, conv, vs_conv, vs_cpu in table_rows(results, rows, lambda x: x.receiver_cpu_s, inject_only=True):
        s = r.sync
        out.append(f"| {row.mode.upper()} | {NAME[row.sender]} → {NAME[row.receiver]} | {row.n:,} | "
                   f"{f'{row.rate / 1000:.0f}k/s' if row.rate else 'full speed'} | "
                   f"{s.present:,} ({100 * s.present / row.n:.2f} %) | {conv} | {vs_conv} | {r.receiver_cpu_s:.2f} | "
                   f"{r.receiver_cpu_us:.1f} | {vs_cpu} | {r.sender_cpu_us:.1f} | "
                   f"{' / '.join(f'{x:,}' for x in r.inject) or '?'} | {r.receiver_overruns} |")
    return "\n".join(out)


def tree_state(code: str | None = None) -> str:
    """HEAD and whether conntrack_tools/ has uncommitted changes (the daemon runs from this tree), or ``code``."""
    if code:
        stamp = Path(code) / "COMMIT"  # written by whoever made the snapshot, if they did
        return f"from {code}" + (f" ({stamp.read_text().strip()})" if stamp.exists() else "")
    head = sh("git", "-C", str(REPO), "rev-parse", "--short", "HEAD").stdout.strip()
    dirty = sh("git", "-C", str(REPO), "status", "--short", "--", "conntrack_tools").stdout.split("\n")
    dirty = [x[3:] for x in dirty if x.strip()]
    return f"{head}" + (f" + uncommitted changes in {', '.join(dirty)}" if dirty else "")


def run_matrix(a: argparse.Namespace) -> int:
    rows: list[Row] = []
    if a.rows:
        rows = [Row.parse(x) for x in a.rows.split(",")]
    if a.inject:
        rows += inject_rows()
    if a.modes or a.transports or a.pairs or a.loss or a.matrix_sizes or not rows:
        if not (a.modes or a.transports or a.pairs or a.loss or a.matrix_sizes):
            rows += baseline_rows()
        else:
            rows += [Row(m, t, int(loss), int(n), p) for m in (a.modes or "notrack,ftfw").split(",")
                     for t in (a.transports or "udp,mcast").split(",") for p in (a.pairs or ",".join(PAIRS)).split(",")
                     for loss in (a.loss or "0").split(",") for n in (a.matrix_sizes or "20000").split(",")]
    if not a.no_c_reference:
        rows += [r.base for r in rows]
    rows = sorted(set(rows), key=lambda r: (r.n, r.mode, r.transport, r.loss, -r.rate, list(PAIRS).index(r.pair)))
    if any(r.loss for r in rows) and not shutil.which("nft"):
        sys.exit("needs nft for the loss rule")
    need = 2 * max(r.n for r in rows) + 65536
    tmp = Path(tempfile.mkdtemp(prefix="ctpy-sb-"))
    results: dict[Row, RowResult] = {}
    t_start = time.monotonic()
    if a.code:
        # our daemons (and populate.py) import conntrack_tools from there: PYTHONPATH comes before the venv's
        # editable path to this checkout
        if not (Path(a.code) / "conntrack_tools" / "__init__.py").exists():
            sys.exit(f"--code {a.code}: no conntrack_tools/ there")
        os.environ["PYTHONPATH"] = str(Path(a.code).resolve())
    state = tree_state(a.code)
    print(f"{len(rows)} rows, code {state}", flush=True)
    try:
        with bench_link(need):
            for run, row in enumerate(rows, 1):
                results[row] = matrix_row(tmp, row, run, a.stall, a.max_wait, a.sockbuf)
            flush_kernels()
    finally:
        if a.keep:
            print(f"daemon configs and logs kept in {tmp} (<side>-<impl>-<row number>/)", flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    load = os.getloadavg()
    text = (f"\n## Sync matrix ({time.strftime('%Y-%m-%d %H:%M')}, code {state}, {os.cpu_count()} CPUs, load average "
            f"{load[0]:.1f}/{load[1]:.1f}/{load[2]:.1f} at the end, run took {time.monotonic() - t_start:.0f}s; "
            f"stall {a.stall:.0f}s, cut-off {a.max_wait:.0f}s after the last create; Snd/RcvSocketBuffer "
            f"{a.sockbuf or 'not set (each daemon its default)'})\n\n"
            + matrix_table(results, rows) + "\n"
            + (f"\nDirect injection (receiver with DisableExternalCache on; its kernel table counted with a dump):\n\n"
               f"{inject_table(results, rows)}\n" if any(r.inject for r in rows) else ""))
    print(text)
    if a.out:
        Path(a.out).write_text(text)
    return 0


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
    m = ap.add_argument_group("--matrix: modes x transports x pairings x loss, 20k burst / 200k / 1M at full speed")
    m.add_argument("--matrix", action="store_true",
                   help="run the matrix instead (default rows: the baseline set, see baseline_rows())")
    m.add_argument("--rows", help="explicit rows mode/transport/pair/loss/N, comma-separated "
                                  "(e.g. ftfw/mcast/c-py/10/20000)")
    m.add_argument("--inject", action="store_true",
                   help="the direct-injection rows (inject_rows(): 200k at 40k/s and at full speed into a receiver "
                        "with DisableExternalCache on, C and ours)")
    m.add_argument("--modes", help="product of these (notrack,ftfw) ...")
    m.add_argument("--transports", help="... and these (udp,mcast) ...")
    m.add_argument("--pairs", help=f"... and these ({','.join(PAIRS)}; sender-receiver) ...")
    m.add_argument("--loss", help="... and these loss percentages (default 0) ...")
    m.add_argument("--matrix-sizes", help="... and these N (default 20000)")
    m.add_argument("--no-c-reference", action="store_true", help="do not add the C -> C row each ratio needs")
    m.add_argument("--sockbuf", default="4194304",
                   help="Snd/RcvSocketBuffer of both daemons, bytes, or 'default' for none in the config (the "
                        "daemon's own default: rmem_default for C, 16 MiB for ours); default 4194304")
    m.add_argument("--code", help="a directory holding another conntrack_tools/ for our daemons to run, a fixed "
                                  "snapshot while the tree changes (e.g. `mkdir /tmp/ctpy-base && git archive HEAD "
                                  "conntrack_tools | tar -x -C /tmp/ctpy-base`; a COMMIT file there is printed)")
    m.add_argument("--out", help="also write the table to this file")
    m.add_argument("--keep", action="store_true", help="keep the daemons' configs and logs (printed where)")
    ap.add_argument("--profile", metavar="DIR", help="run our daemons under cProfile, stats in DIR/<side>-py-<run>"
                                                     ".pstats (CPU figures then measure the profiler too)")
    a = ap.parse_args()
    if a.profile:
        global PROFILE
        PROFILE = Path(a.profile).resolve()
        PROFILE.mkdir(parents=True, exist_ok=True)
    if a.matrix:
        a.sockbuf = None if a.sockbuf == "default" else int(a.sockbuf)
        a.max_wait = a.max_wait if a.max_wait != 90 else 60
    if os.geteuid():
        sys.exit("needs root (network namespaces, nf_conntrack_max)")
    if not (os.path.exists(C_DAEMON) and os.path.exists(C_CONNTRACK) and shutil.which("ip")):
        sys.exit("needs iproute2, /usr/sbin/conntrackd and /usr/sbin/conntrack")
    if a.matrix:
        return run_matrix(a)
    sizes = [100_000] if a.quick else [int(x) for x in a.sizes.split(",")]
    need = 2 * max(sizes) + 65536  # A's N plus slack (B holds N after the commit: per-namespace count)
    tmp = Path(tempfile.mkdtemp(prefix="ctpy-sb-"))
    results: dict[tuple[str, int], Result] = {}
    t_start = time.monotonic()
    try:
        with bench_link(need):
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
