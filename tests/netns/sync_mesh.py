"""N sync nodes on one multicast segment, for the 3-node, auth and resync netns tests.

A hub namespace holds a bridge (IGMP snooping off); every node namespace has one veth into
it, address 10.233.0.<i>/24, multicast group 225.0.0.53 port 3790.  Names are ``ctpy-s3...``
(namespaces ``ctpy-s3h<tag>`` and ``ctpy-s3<tag>n<i>``), removed by name; only daemons
started here are stopped, by pid.
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

from tests.conftest import require_root, stop_process

C_DAEMON = "/usr/sbin/conntrackd"
C_CONNTRACK = "/usr/sbin/conntrack"
PY_DAEMON = [sys.executable, "-m", "conntrack_tools.daemon.main"]
REPO = Path(__file__).resolve().parents[2]
TAG = f"{os.getpid() % 100000}"
HUB = f"ctpy-s3h{TAG}"
BRIDGE = f"ctpy-s3{TAG}br"

MODES = {"ftfw": "FTFW {{\n ResendQueueSize {rsq}\n ACKWindowSize 20\n StartupResync on\n}}",
         "notrack": "NOTRACK {{\n StartupResync on\n}}"}


def sh(*cmd: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=timeout, cwd=REPO)


def ns(name: str, *cmd: str, check: bool = False, timeout: float = 30) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", name, *cmd, check=check, timeout=timeout)


def wait_for(cond, timeout: float = 10.0, what: str = "condition", show=None):
    end = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}" + (f": {show()}" if show else ""))
        time.sleep(0.05)


def node_ns(i: int) -> str:
    return f"ctpy-s3{TAG}n{i}"


class Mesh:
    """Namespaces + bridge; ``add(i)`` plugs node i into the segment."""

    def __init__(self) -> None:
        self.nodes: list[int] = []

    def __enter__(self) -> Mesh:
        require_root()
        if not (os.path.exists(C_CONNTRACK) and shutil.which("ip")):
            pytest.fail("needs iproute2 and /usr/sbin/conntrack")
        sh("ip", "netns", "add", HUB)
        ns(HUB, "ip", "link", "add", BRIDGE, "type", "bridge", "mcast_snooping", "0", check=True)
        ns(HUB, "ip", "link", "set", BRIDGE, "up", check=True)
        return self

    def add(self, i: int) -> str:
        name = node_ns(i)
        sh("ip", "netns", "add", name)
        self.nodes.append(i)
        ns(name, "ip", "link", "set", "lo", "up", check=True)
        dev, hub = f"ctpy-s3{TAG}n{i}", f"ctpy-s3{TAG}h{i}"
        sh("ip", "link", "add", dev, "netns", name, "type", "veth", "peer", "name", hub, "netns", HUB)
        ns(HUB, "ip", "link", "set", hub, "master", BRIDGE, check=True)
        ns(HUB, "ip", "link", "set", hub, "up", check=True)
        ns(name, "ip", "addr", "add", f"10.233.0.{i}/24", "dev", dev, check=True)
        ns(name, "ip", "link", "set", dev, "up", check=True)
        ns(name, "ip", "route", "add", "224.0.0.0/4", "dev", dev, check=True)
        return name

    def __exit__(self, *exc) -> None:
        for i in self.nodes:
            subprocess.run(["ip", "netns", "del", node_ns(i)], check=False)
        subprocess.run(["ip", "netns", "del", HUB], check=False)


class Node:
    def __init__(self, tmp: Path, i: int, impl: str = "py", mode: str = "ftfw", auth: str | None = None,
                 rsq: int = 131072, rcvbuf: int = 4194304, extra_general: str = "") -> None:
        self.i, self.impl = i, impl
        self.ns = node_ns(i)
        self.dir = tmp / f"n{i}-{impl}"
        self.dir.mkdir(exist_ok=True)
        self.conf = self.dir / "conntrackd.conf"
        dev = f"ctpy-s3{TAG}n{i}"
        auth_line = f" AuthKey {auth}\n" if auth else ""
        self.conf.write_text(
            f"Sync {{\n Mode {MODES[mode].format(rsq=rsq)}\n{auth_line}"
            f"Multicast {{\n IPv4_address 225.0.0.53\n Group 3790\n IPv4_interface 10.233.0.{i}\n"
            f" Interface {dev}\n Checksum on\n SndSocketBuffer 4194304\n RcvSocketBuffer {rcvbuf}\n}}\n}}\n"
            "General {\n Systemd off\n HashSize 8192\n HashLimit 2097152\n"
            f" LogFile {self.dir / 'log'}\n Syslog off\n LockFile {self.dir / 'lock'}\n"
            f" UNIX {{ Path {self.dir / 'ctl'} }}\n NetlinkOverrunResync 1\n"
            " NetlinkBufferSize 4194304\n NetlinkBufferSizeMaxGrowth 67108864\n"
            f"{extra_general}"
            " Filter From Userspace {\n  Address Ignore {\n   IPv4_address 127.0.0.1\n"
            "   IPv4_address 10.233.0.0/24\n  }\n }\n}\n")
        self.conf.chmod(0o600)
        self.proc: subprocess.Popen | None = None

    def start(self) -> Node:
        self.out = open(self.dir / "stdout", "a")
        argv = [C_DAEMON] if self.impl == "c" else PY_DAEMON
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv, "-C", str(self.conf)],
                                     stdout=self.out, stderr=subprocess.STDOUT, cwd=REPO)
        wait_for(lambda: self.client("-s").returncode == 0 or self.proc.poll() is not None, 15, "daemon up",
                 show=self.logs)
        assert self.proc.poll() is None, self.logs()
        return self

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None
        if getattr(self, "out", None):
            self.out.close()
            self.out = None

    def logs(self) -> str:
        p = self.dir / "log"
        return (p.read_text() if p.exists() else "") + (self.dir / "stdout").read_text()

    def client(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return ns(self.ns, *PY_DAEMON, "-C", str(self.conf), *args, timeout=timeout)

    def external(self) -> set[str]:
        """src/dst of every external flow."""
        return {m.group(0) for m in _SRCDST.finditer(self.client("-e").stdout)}

    def network(self) -> str:
        return self.client("-s", "network").stdout


_SRCDST = re.compile(r"src=\S+ dst=\S+ sport=\d+ dport=\d+")


def flow_args(node: int, k: int) -> tuple[str, ...]:
    """A UDP flow owned by ``node``: 192.0.<node>.<k> -> 198.51.100.<node>."""
    return ("-p", "udp", "-s", f"192.0.{node}.{k}", "-d", f"198.51.100.{node}", "--sport", f"{1000 + k}",
            "--dport", "53", "-t", "600")


def flow_key(node: int, k: int) -> str:
    return f"src=192.0.{node}.{k} dst=198.51.100.{node} sport={1000 + k} dport=53"


def create(node: Node, k: int) -> None:
    r = ns(node.ns, C_CONNTRACK, "-I", *flow_args(node.i, k))
    assert r.returncode == 0, r.stderr


def counter(text: str, label: str) -> int:
    m = re.search(rf"{re.escape(label)}:\s*(\d+)", text)
    assert m, f"{label!r} not in {text}"
    return int(m.group(1))
