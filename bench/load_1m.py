"""Load: 1M entries in a namespace's kernel table with our conntrackd following (not a CI test).

    sudo .venv/bin/python bench/load_1m.py [N] [--buffer BYTES] [--max-growth BYTES]

Runs as root. Creates ``ctpy-load-<pid>``, raises nf_conntrack_max for the run and restores it
(the limit is global: only init_net can write it, and namespaces share it), starts our
conntrackd (stats mode, HashLimit 2M) in the namespace, then:

1. create N entries with bench/populate.py's batched ctnetlink creates (N NEW events);
2. wait until the daemon's cache holds N (events, or the overrun resync if events were lost);
3. ``conntrackd -i`` of the whole cache (streamed from the loop);
4. flush the kernel table (N DESTROY events) and wait for the cache to drain.

For each phase: wall time, daemon CPU seconds (utime+stime from /proc), entries/s, and at
the end the daemon's peak RSS (VmHWM), overruns and resyncs. The namespace and the limit are
restored on every exit path; only the daemon started here is stopped, by pid.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MAX = Path("/proc/sys/net/netfilter/nf_conntrack_max")
CLK = os.sysconf("SC_CLK_TCK")


def sh(*cmd: str, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    return subprocess.run(list(cmd), **kw)


class Bench:
    def __init__(self, n: int, buffer: int, growth: int) -> None:
        self.n = n
        self.ns = f"ctpy-load-{os.getpid()}"
        self.dir = Path(tempfile.mkdtemp(prefix="ctpy-load-"))
        self.conf = self.dir / "conntrackd.conf"
        self.conf.write_text(
            "General {\n  HashSize 1048576\n  HashLimit 2097152\n  Systemd off\n"
            f"  LockFile {self.dir / 'lock'}\n  UNIX {{ Path {self.dir / 'ctl'} }}\n"
            f"  NetlinkBufferSize {buffer}\n  NetlinkBufferSizeMaxGrowth {growth}\n  NetlinkOverrunResync 1\n"
            "}\n"
            f"Stats {{\n  LogFile {self.dir / 'stats.log'}\n}}\n")
        self.proc: subprocess.Popen | None = None
        self.rows: list[tuple[str, float, float, str]] = []

    def nsrun(self, *cmd: str, **kw) -> subprocess.CompletedProcess:
        return sh("ip", "netns", "exec", self.ns, *cmd, cwd=REPO, **kw)

    def client(self, *args: str) -> str:
        return self.nsrun(sys.executable, "-m", "conntrack_tools.daemon.main", "-C", str(self.conf), *args,
                          timeout=600).stdout

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK

    def status(self, key: str) -> int:
        m = re.search(rf"^{key}:\s+(\d+) kB", Path(f"/proc/{self.proc.pid}/status").read_text(), re.M)
        return int(m[1]) * 1024 if m else 0

    def cached(self) -> int:
        m = re.search(r"current active connections:\s+(\d+)", self.client("-s"))
        return int(m[1]) if m else -1

    def wait_cached(self, want: int, timeout: float = 900) -> None:
        end = time.monotonic() + timeout
        while (got := self.cached()) != want:
            if time.monotonic() > end:
                raise SystemExit(f"cache holds {got}, want {want}: daemon did not keep up within {timeout}s")
            time.sleep(0.5)

    def phase(self, name: str, fn, unit_count: int) -> None:
        c0, t0 = self.cpu(), time.monotonic()
        fn()
        wall, cpu = time.monotonic() - t0, self.cpu() - c0
        self.rows.append((name, wall, cpu, f"{unit_count / wall:,.0f}"))
        print(f"  {name}: {wall:.1f}s wall, daemon {cpu:.1f} CPU-s", flush=True)

    def run(self) -> None:
        n = self.n
        sh("ip", "netns", "add", self.ns, check=True)
        self.nsrun("ip", "link", "set", "lo", "up")
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, sys.executable, "-m",
                                      "conntrack_tools.daemon.main", "-C", str(self.conf)],
                                     stdout=open(self.dir / "stdout", "w"), stderr=subprocess.STDOUT, cwd=REPO)
        end = time.monotonic() + 20
        while self.cached() != 0:
            if self.proc.poll() is not None or time.monotonic() > end:
                raise SystemExit("daemon did not start: " + (self.dir / "stdout").read_text())
            time.sleep(0.2)
        rss0 = self.status("VmRSS")
        print(f"daemon pid {self.proc.pid} up, RSS {rss0 / 2**20:.0f} MiB; creating {n:,} entries", flush=True)

        def create() -> None:
            r = self.nsrun(sys.executable, "bench/populate.py", str(n), "mix", timeout=1800)
            if r.returncode:
                raise SystemExit(f"populate failed: {r.stderr}")
            self.populate_s = time.monotonic()

        t0 = time.monotonic()
        self.phase("create N + daemon follows", lambda: (create(), self.wait_cached(n)), n)
        populate_wall = self.populate_s - t0
        kernel = int(self.nsrun("cat", "/proc/sys/net/netfilter/nf_conntrack_count").stdout)
        self.rows.append(("  (kernel creates alone)", populate_wall, float("nan"), f"{n / populate_wall:,.0f}"))
        lines = 0

        def dump() -> None:
            nonlocal lines
            lines = self.client("-i").count("\n")

        self.phase("conntrackd -i (whole cache)", dump, n)
        self.phase("flush kernel + daemon drains", lambda: (self.nsrun(str(Path(sys.executable).with_name(
            "conntrack")), "-F"), self.wait_cached(0)), n)
        rt = self.client("-s", "runtime")

        def num(rx: str) -> str:
            m = re.search(rx, rt)
            return m[1] if m else "?"

        self.summary = {
            "entries": n, "kernel count after create": kernel, "-i lines": lines,
            "daemon CPU total (s)": f"{self.cpu():.1f}",
            "daemon peak RSS (MiB)": f"{self.status('VmHWM') / 2**20:.0f}",
            "daemon RSS idle at start (MiB)": f"{rss0 / 2**20:.0f}",
            "netlink overruns": num(r"netlink overrun:\s+(\d+)"),
            "resyncs": num(r"resync with kernel table:\s+(\d+)"),
            "events received": num(r"events received:\s+(\d+)"),
            "event buffer (bytes)": num(r"current buffer size \(in bytes\):\s+(\d+)"),
        }

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        sh("ip", "netns", "del", self.ns)

    def report(self) -> None:
        print("\n| phase | wall s | daemon CPU s | entries/s |\n|---|---:|---:|---:|")
        for name, wall, cpu, rate in self.rows:
            print(f"| {name} | {wall:.1f} | {'-' if cpu != cpu else f'{cpu:.1f}'} | {rate} |")
        print("\n| figure | value |\n|---|---:|")
        for k, v in self.summary.items():
            print(f"| {k} | {v} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("n", nargs="?", type=int, default=1_000_000)
    ap.add_argument("--buffer", type=int, default=16 << 20, help="NetlinkBufferSize (default 16 MiB)")
    ap.add_argument("--max-growth", type=int, default=64 << 20, help="NetlinkBufferSizeMaxGrowth (default 64 MiB)")
    a = ap.parse_args()
    if os.geteuid():
        sys.exit("needs root (network namespace, nf_conntrack_max)")
    old_max = int(MAX.read_text())
    need = a.n + a.n // 5 + 1024
    if old_max < need:
        MAX.write_text(str(need))
        print(f"nf_conntrack_max {old_max} -> {need} for the run (global limit, restored at exit)")
    b = Bench(a.n, a.buffer, a.max_growth)
    try:
        b.run()
        b.report()
    finally:
        b.close()
        if int(MAX.read_text()) != old_max:
            MAX.write_text(str(old_max))
            print(f"nf_conntrack_max restored to {old_max}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
