"""Netlink overrun under load: 100k+ conntrack events at full speed against our conntrackd.

The daemon runs in its own namespace (``ctpy-ovr-<pid>``) with a small event socket buffer
(NetlinkBufferSize 64 KiB, growth capped at 256 KiB) and NetlinkOverrunResync 1. bench/
populate.py then creates N entries with batched ctnetlink requests, as fast as the kernel takes
them: each is a NEW event, far more than 256 KiB of them queue up while the daemon decodes,
so the kernel drops events (ENOBUFS). The daemon must notice, grow its buffer, resync from a
dump, and end with an internal cache equal to the kernel table: same count, same keys (proto +
original tuple), no missing, no extra. Then the table is flushed (N DESTROY events, overrun
again) and the cache must drain to 0 through the resync's purge. Figures are printed (-s).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import stop_process

REPO = Path(__file__).resolve().parents[2]
NS = f"ctpy-ovr-{os.getpid()}"
OURS = [sys.executable, "-m", "conntrack_tools.daemon.main"]
PY_CONNTRACK = [str(Path(sys.executable).with_name("conntrack"))]
N = int(os.environ.get("CTPY_OVERRUN_N", "100000"))

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and ctnetlink"),
    pytest.mark.skipif(shutil.which("ip") is None, reason="needs iproute2"),
]


def nsrun(*cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", NS, *cmd], capture_output=True, text=True, check=check,
                          timeout=timeout, cwd=REPO)


@pytest.fixture(scope="module")
def netns():
    subprocess.run(["ip", "netns", "add", NS], check=True)
    nsrun("ip", "link", "set", "lo", "up")
    yield NS
    subprocess.run(["ip", "netns", "del", NS], check=False)


KEY_RX = re.compile(r"^(\w+)\s+(\d+) .*?src=(\S+) dst=(\S+)(?: sport=(\d+) dport=(\d+))?")


def keys(text: str) -> set[tuple]:
    """proto number + original tuple of every line of a -L / -i listing."""
    out = set()
    for line in text.splitlines():
        m = KEY_RX.match(line)
        if m:
            out.add((m[2], m[3], m[4], m[5], m[6]))
    return out


def kernel_count() -> int:
    return int(nsrun("cat", "/proc/sys/net/netfilter/nf_conntrack_count").stdout)


def runtime_figures(text: str) -> dict[str, int]:
    want = {"overrun": r"netlink overrun:\s+(\d+)", "resync": r"resync with kernel table:\s+(\d+)",
            "received": r"events received:\s+(\d+)", "buffer": r"current buffer size \(in bytes\):\s+(\d+)",
            "catch_failed": r"catch event failed:\s+(\d+)"}
    return {k: int(m[1]) if (m := re.search(rx, text)) else -1 for k, rx in want.items()}


@pytest.fixture
def daemon(netns, tmp_path):
    conf = tmp_path / "conntrackd.conf"
    conf.write_text(
        "General {\n  HashSize 65536\n  HashLimit 524288\n  Systemd off\n"
        f"  LockFile {tmp_path / 'lock'}\n  UNIX {{ Path {tmp_path / 'ctl'} }}\n"
        "  NetlinkBufferSize 65536\n  NetlinkBufferSizeMaxGrowth 262144\n  NetlinkOverrunResync 1\n}\n"
        f"Stats {{\n  LogFile {tmp_path / 'stats.log'}\n}}\n")
    nsrun(*PY_CONNTRACK, "-F", check=False)
    out = open(tmp_path / "stdout", "w")
    proc = subprocess.Popen(["ip", "netns", "exec", NS, *OURS, "-C", str(conf)], stdout=out,
                            stderr=subprocess.STDOUT, cwd=REPO)

    def client(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return nsrun(*OURS, "-C", str(conf), *args, check=False, timeout=timeout)

    end = time.monotonic() + 15
    while client("-s").returncode != 0:
        assert proc.poll() is None, (tmp_path / "stdout").read_text()
        assert time.monotonic() < end, "daemon did not answer"
        time.sleep(0.1)
    yield client, tmp_path
    stop_process(proc, 10)
    out.close()


def converge(client, want: int, timeout: float) -> tuple[float, int]:
    """Wait until the cache holds ``want`` entries (checked cheaply via -s)."""
    t0 = time.monotonic()
    n = -1
    while time.monotonic() - t0 < timeout:
        s = client("-s").stdout
        m = re.search(r"current active connections:\s+(\d+)", s)
        n = int(m[1]) if m else -1
        if n == want:
            return time.monotonic() - t0, n
        time.sleep(0.25)
    return time.monotonic() - t0, n


def test_overrun_resync_cache_matches_kernel(daemon) -> None:
    client, tmp = daemon
    t0 = time.monotonic()
    r = nsrun(sys.executable, "bench/populate.py", str(N), "mix", timeout=120)
    gen_s = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    assert kernel_count() == N

    # 1. N NEW events, far beyond the buffer: overrun, resync, cache == kernel table
    conv_s, cached = converge(client, N, timeout=60)
    fig = runtime_figures(client("-s", "runtime").stdout)
    kernel = keys(nsrun(*PY_CONNTRACK, "-L").stdout)
    cache = keys(client("-i", timeout=120).stdout)
    missing, extra = len(kernel - cache), len(cache - kernel)
    print(f"\noverrun: {N} creates in {gen_s:.2f}s ({N / gen_s:,.0f} events/s); cache {cached}/{N} after "
          f"{conv_s:.1f}s; keys missing={missing} extra={extra}; runtime {fig}")
    assert fig["overrun"] >= 1, f"no overrun detected: {fig}"
    assert fig["resync"] >= 1, fig
    assert fig["buffer"] == 262144, fig  # doubled up to NetlinkBufferSizeMaxGrowth
    assert len(kernel) == N and cached == N
    assert (missing, extra) == (0, 0)
    log = (tmp / "stdout").read_text()
    assert "netlink event socket buffer size has been doubled to" in log
    assert "cannot be doubled further" in log  # the capped growth warning, once

    # 2. flush: N DESTROY events, overrun again, the resync's purge drains the cache
    before = fig
    t1 = time.monotonic()
    nsrun(*PY_CONNTRACK, "-F", check=False)
    assert kernel_count() == 0
    conv2_s, cached2 = converge(client, 0, timeout=60)
    fig2 = runtime_figures(client("-s", "runtime").stdout)
    print(f"flush: cache {cached2} after {conv2_s:.1f}s (flush {time.monotonic() - t1 - conv2_s:.2f}s); "
          f"overruns {before['overrun']}->{fig2['overrun']}, resyncs {before['resync']}->{fig2['resync']}")
    assert cached2 == 0
    assert client("-i").stdout == ""
