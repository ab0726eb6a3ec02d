"""Sync under faults (harness): two namespaces, our conntrackd in FTFW on each, faults on the link.

Topology: ``ctpy-sfA<id>`` and ``ctpy-sfB<id>`` joined by one veth (10.233.0.1/2), UDP channel.
A's kernel table is filled with N flows (bench/populate.py, batched creates); the property
checked after every fault is convergence: B's external cache (``-e``) equals A's internal
cache (``-i``), keys compared, missing/extra counts printed.

Fault injectors (each a small function, reusable by later tests):

* ``loss(pct)``     nft in B drops ``pct`` % of sync datagrams at random (``numgen random mod 100``)
* ``cut(seconds)``  the veth in A goes down, then up again
* ``kill9(node)``   SIGKILL of a daemon (mid-bulk when called right after ``-B``/``-n``), restart

Every scenario runs by default, in CI too
(``CTPY_SYNC_FAULTS=0`` keeps only the baseline for a quick local run; figures in docs/reliability.md).
``CTPY_SYNC_FAULT_IMPL=c`` runs the same scenarios between two C conntrackd 1.4.7.
First run (2000 flows, before the 2026-11-26 FTFW fixes): 5 % loss left 54
entries missing after 60 s, a 10 s link cut 2000; since the fixes every scenario converges in
< 3 s after the fault (each test <= 14 s, the whole module ~45 s). C 1.4.7 in the same
scenarios: 5 % loss 36 missing, 20 % loss 173, link cut before the first exchange 2000.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.conftest import stop_process

REPO = Path(__file__).resolve().parents[2]
TAG = f"{os.getpid() % 100000}"
NS_A, NS_B = f"ctpy-sfA{TAG}", f"ctpy-sfB{TAG}"
VETH_A, VETH_B = f"ctpy-sf{TAG}a", f"ctpy-sf{TAG}b"
PY_DAEMON = [sys.executable, "-m", "conntrack_tools.daemon.main"]
# CTPY_SYNC_FAULT_IMPL=c runs the same scenarios between two C conntrackd 1.4.7 (for comparison;
# our client talks to both)
C_DAEMON = ["/usr/sbin/conntrackd"] if os.environ.get("CTPY_SYNC_FAULT_IMPL") == "c" else None
N = int(os.environ.get("CTPY_SYNC_FAULT_N", "2000"))

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces"),
    pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft for loss injection"),
]


def sh(*cmd: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=timeout, cwd=REPO)


def ns(name: str, *cmd: str, check: bool = False, timeout: float = 60) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", name, *cmd, check=check, timeout=timeout)


@pytest.fixture(scope="module")
def link():
    created = []
    try:
        for n in (NS_A, NS_B):
            sh("ip", "netns", "add", n)
            created.append(n)
            ns(n, "ip", "link", "set", "lo", "up", check=True)
        sh("ip", "link", "add", VETH_A, "netns", NS_A, "type", "veth", "peer", "name", VETH_B, "netns", NS_B)
        for n, dev, addr in ((NS_A, VETH_A, "10.233.0.1/24"), (NS_B, VETH_B, "10.233.0.2/24")):
            ns(n, "ip", "addr", "add", addr, "dev", dev, check=True)
            ns(n, "ip", "link", "set", dev, "up", check=True)
        yield
    finally:
        for n in created:
            subprocess.run(["ip", "netns", "del", n], check=False)


class Node:
    def __init__(self, tmp: Path, side: str) -> None:
        self.ns = NS_A if side == "A" else NS_B
        me, peer = ("1", "2") if side == "A" else ("2", "1")
        self.dir = tmp / side
        self.dir.mkdir(exist_ok=True)
        self.conf = self.dir / "conntrackd.conf"
        self.conf.write_text(
            "Sync {\n Mode FTFW {\n  ResendQueueSize 131072\n  ACKWindowSize 300\n }\n"
            f" UDP {{\n  IPv4_address 10.233.0.{me}\n  IPv4_Destination_Address 10.233.0.{peer}\n  Port 3791\n"
            f"  Interface {VETH_A if side == 'A' else VETH_B}\n  Checksum on\n"
            "  SndSocketBuffer 4194304\n  RcvSocketBuffer 4194304\n }\n}\n"
            "General {\n Systemd off\n HashSize 8192\n HashLimit 2097152\n"
            f" LogFile {self.dir / 'log'}\n Syslog off\n LockFile {self.dir / 'lock'}\n"
            f" UNIX {{ Path {self.dir / 'ctl'} }}\n NetlinkOverrunResync 1\n"
            " NetlinkBufferSize 4194304\n NetlinkBufferSizeMaxGrowth 67108864\n"
            " Filter From Userspace {\n  Address Ignore {\n   IPv4_address 127.0.0.1\n"
            "   IPv4_address 10.233.0.0/24\n  }\n }\n}\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> Node:
        out = open(self.dir / "stdout", "a")
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, *(C_DAEMON or PY_DAEMON), "-C", str(self.conf)],
                                     stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
        out.close()
        end = time.monotonic() + 15
        while self.client("-s").returncode != 0:
            assert self.proc.poll() is None and time.monotonic() < end, self.logs()
            time.sleep(0.05)
        return self

    def stop(self, kill: bool = False) -> None:
        stop_process(self.proc, 10, signal.SIGKILL if kill else signal.SIGTERM)
        self.proc = None

    def logs(self) -> str:
        return "".join((self.dir / f).read_text()[-3000:] for f in ("log", "stdout") if (self.dir / f).exists())

    def client(self, *args: str) -> subprocess.CompletedProcess:
        return ns(self.ns, *PY_DAEMON, "-C", str(self.conf), *args, timeout=120)

    def keys(self, which: str) -> set[str]:
        out = self.client(which).stdout
        return {m[0] for m in re.finditer(r"^\w+\s+\d+ .*?src=\S+ dst=\S+(?: sport=\d+ dport=\d+)?", out, re.M)}


# ------------------------------------------------------------------------------------ faults


def loss(pct: int) -> None:
    """Drop pct % of the sync datagrams B receives, at random."""
    ns(NS_B, "nft", "-f", "-", check=False)
    rules = (f"table inet ctpy_loss {{\n chain input {{\n  type filter hook input priority -300;\n"
             f"  udp dport 3791 numgen random mod 100 < {pct} drop\n }}\n}}\n")
    r = subprocess.run(["ip", "netns", "exec", NS_B, "nft", "-f", "-"], input=rules, text=True,
                       capture_output=True, timeout=30)
    assert r.returncode == 0, r.stderr


def no_loss() -> None:
    ns(NS_B, "nft", "delete", "table", "inet", "ctpy_loss")


def cut(seconds: float) -> None:
    ns(NS_A, "ip", "link", "set", VETH_A, "down", check=True)
    time.sleep(seconds)
    ns(NS_A, "ip", "link", "set", VETH_A, "up", check=True)


def kill9(node: Node) -> None:
    node.stop(kill=True)
    for f in ("lock", "ctl"):
        (node.dir / f).unlink(missing_ok=True)
    node.start()


def converge(a: Node, b: Node, timeout: float, nudge=None) -> tuple[float, int, int]:
    """Wait until B's external cache == A's internal cache; (seconds, missing, extra)."""
    t0 = time.monotonic()
    missing = extra = -1
    next_nudge = t0 + 5
    while time.monotonic() - t0 < timeout:
        want, got = a.keys("-i"), b.keys("-e")
        missing, extra = len(want - got), len(got - want)
        if len(want) >= N and not missing and not extra:
            break
        if nudge is not None and time.monotonic() > next_nudge:
            nudge()
            next_nudge = time.monotonic() + 5
        time.sleep(0.5)
    return time.monotonic() - t0, missing, extra


@pytest.fixture
def pair(link, tmp_path):
    for n in (NS_A, NS_B):
        ns(n, "conntrack", "-F")
    a, b = Node(tmp_path, "A"), Node(tmp_path, "B")
    b.start()
    a.start()
    yield a, b
    no_loss()
    ns(NS_A, "ip", "link", "set", VETH_A, "up")
    a.stop()
    b.stop()


def populate() -> None:
    r = ns(NS_A, sys.executable, "bench/populate.py", str(N), "mix", timeout=120)
    assert r.returncode == 0, r.stderr


SCENARIOS = {
    "baseline": lambda a, b: None,
    "loss5": lambda a, b: loss(5),
    "loss20": lambda a, b: loss(20),
    "linkcut10": lambda a, b: cut(10),  # right after both started: before their first exchange
    "linkcut10-settled": lambda a, b: cut(10),  # after the HELLO handshake and a first ACK
}


# Every scenario runs by default (CI included: each <= 14 s); CTPY_SYNC_FAULTS=0 keeps only the baseline
# for a quick local run.
SOAK = os.environ.get("CTPY_SYNC_FAULTS", "1") != "0"
soak = pytest.mark.skipif(not SOAK, reason="fault scenarios switched off locally with CTPY_SYNC_FAULTS=0")


@pytest.mark.parametrize("scenario", [s if s == "baseline" else pytest.param(s, marks=soak) for s in SCENARIOS])
def test_external_cache_converges(pair, scenario) -> None:
    a, b = pair
    if scenario.startswith("loss"):
        SCENARIOS[scenario](a, b)
        populate()
    elif scenario.startswith("linkcut"):  # the flows are created while the link is down: sent into the void
        if scenario.endswith("settled"):
            time.sleep(2.5)
        t = threading.Thread(target=SCENARIOS[scenario], args=(a, b))
        t.start()
        time.sleep(0.3)
        populate()
        t.join()
    else:
        populate()
    secs, missing, extra = converge(a, b, timeout=60)
    net = b.client("-s", "network").stdout
    print(f"\n{scenario}: N={N} converged in {secs:.1f}s missing={missing} extra={extra}")
    if (missing, extra) != (0, 0):
        print("A:", a.client("-s", "network", "-o", "json").stdout, a.client("-s", "queue").stdout)
        print("B:", b.client("-s", "network", "-o", "json").stdout)
    assert (missing, extra) == (0, 0), f"{scenario}: missing={missing} extra={extra}\n{net}\n{b.logs()}"


@soak
@pytest.mark.parametrize("victim", ["A", "B"])
def test_kill9_mid_bulk_then_restart(pair, victim) -> None:
    a, b = pair
    populate()
    converge(a, b, timeout=60)
    b.client("-f", "external")
    a.client("-B")  # bulk in flight ...
    time.sleep(0.05)
    kill9(a if victim == "A" else b)  # ... and one side dies
    secs, missing, extra = converge(a, b, timeout=60, nudge=lambda: b.client("-n"))
    print(f"\nkill -9 {victim} mid-bulk: converged in {secs:.1f}s missing={missing} extra={extra}")
    assert (missing, extra) == (0, 0)
