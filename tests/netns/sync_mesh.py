"""N sync nodes on one multicast segment, for the 3-node, auth and resync netns tests.

A hub namespace holds a bridge (IGMP snooping off); every node namespace has one veth into
it, address 10.233.0.<i>/24, multicast group 225.0.0.53 port 3790.  Names are ``ctpy-s3...``
(namespaces ``ctpy-s3h<tag>`` and ``ctpy-s3<tag>n<i>``), removed by name; only daemons
started here are stopped, by pid.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import require_root
from tests.netns.daemon_proc import C_CONNTRACK, C_DAEMON, PY_DAEMON, Conntrackd, ns_run, sh, wait_for

__all__ = ["AUTH_REJECTS", "C_CONNTRACK", "PY_DAEMON", "Mesh", "Node", "assert_nothing_rejected", "counter",
           "create", "flow_key", "inject_pair", "ns", "sync_auth", "sync_general", "wait_for"]

TAG = f"{os.getpid() % 100000}"
HUB = f"ctpy-s3h{TAG}"
BRIDGE = f"ctpy-s3{TAG}br"

MODES = {"ftfw": "FTFW {{\n ResendQueueSize {rsq}\n ACKWindowSize 20\n StartupResync on\n}}",
         "ftfw-inject": "FTFW {{\n ResendQueueSize {rsq}\n ACKWindowSize 20\n StartupResync on\n"
                        " DisableExternalCache on\n}}",
         "notrack": "NOTRACK {{\n StartupResync on\n}}"}
ns = ns_run


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
        sh("ip", "netns", "add", HUB, check=True)
        ns(HUB, "ip", "link", "add", BRIDGE, "type", "bridge", "mcast_snooping", "0", check=True)
        ns(HUB, "ip", "link", "set", BRIDGE, "up", check=True)
        return self

    def add(self, i: int) -> str:
        name = node_ns(i)
        sh("ip", "netns", "add", name, check=True)
        self.nodes.append(i)
        ns(name, "ip", "link", "set", "lo", "up", check=True)
        dev, hub = f"ctpy-s3{TAG}n{i}", f"ctpy-s3{TAG}h{i}"
        sh("ip", "link", "add", dev, "netns", name, "type", "veth", "peer", "name", hub, "netns", HUB, check=True)
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


def sync_general(d: Conntrackd, hash_size: int, hash_limit: int, ignore: str, extra: str = "") -> str:
    """The General section of a sync daemon: big netlink buffers, overrun resync, its own LogFile, LockFile
    and UNIX path, and userspace flows from loopback and the sync network ``ignore`` filtered out."""
    return ("General {\n Systemd off\n"
            f" HashSize {hash_size}\n HashLimit {hash_limit}\n"
            f" LogFile {d.log_file}\n Syslog off\n LockFile {d.lock}\n"
            f" UNIX {{ Path {d.sock} }}\n NetlinkOverrunResync 1\n"
            " NetlinkBufferSize 4194304\n NetlinkBufferSizeMaxGrowth 67108864\n"
            f"{extra}"
            " Filter From Userspace {\n  Address Ignore {\n   IPv4_address 127.0.0.1\n"
            f"   IPv4_address {ignore}\n  }}\n }}\n}}\n")


AUTH_REJECTS = ("unauthenticated", "bad_mac", "unknown_key", "malformed", "replayed", "stale")


def sync_auth(d: Conntrackd) -> dict:
    """The ``auth`` section of the daemon's ``-s network -o json`` (at the top, or in its channel's object)."""
    js = json.loads(d.client("-s", "network", "-o", "json").stdout)
    return js["auth"] if "auth" in js else next(v["auth"] for v in js.values() if isinstance(v, dict) and "auth" in v)


def assert_nothing_rejected(auth: dict) -> None:
    """Not one datagram rejected by sync authentication: every reject counter of :func:`sync_auth` is 0."""
    assert {k: auth[k] for k in AUTH_REJECTS} == dict.fromkeys(AUTH_REJECTS, 0), auth


class Node(Conntrackd):
    """Sync node i (C's daemon or ours) on the mesh's multicast group."""

    merge_stderr = True

    def __init__(self, tmp: Path, i: int, impl: str = "py", mode: str = "ftfw", auth: str | None = None,
                 rsq: int = 131072, rcvbuf: int = 4194304, extra_general: str = "", channel: str = "multicast") -> None:
        self.i, self.impl = i, impl
        super().__init__(node_ns(i), tmp / f"n{i}-{impl}", [C_DAEMON] if impl == "c" else PY_DAEMON)
        self.ns = self.netns
        dev = f"ctpy-s3{TAG}n{i}"
        auth_line = f" AuthKey {auth}\n" if auth else ""
        if channel == "tcp":  # a two-node stream: nodes 1 and 2 only
            where = f"TCP {{\n IPv4_address 10.233.0.{i}\n IPv4_Destination_Address 10.233.0.{3 - i}\n Port 3790\n"
        else:
            where = f"Multicast {{\n IPv4_address 225.0.0.53\n Group 3790\n IPv4_interface 10.233.0.{i}\n"
        link = (f"{where} Interface {dev}\n Checksum on\n SndSocketBuffer 4194304\n RcvSocketBuffer {rcvbuf}\n}}\n")
        self.conf.write_text(
            f"Sync {{\n Mode {MODES[mode].format(rsq=rsq)}\n{auth_line}{link}}}\n"
            + sync_general(self, 8192, 2097152, "10.233.0.0/24", extra_general))
        self.conf.chmod(0o600)

    def external(self) -> set[str]:
        """src/dst of every external flow."""
        return {m.group(0) for m in _SRCDST.finditer(self.client("-e").stdout)}

    def network(self) -> str:
        return self.client("-s", "network").stdout


@contextmanager
def inject_pair(tmp: Path, channel: str = "multicast") -> Iterator[tuple[Node, Node, Path]]:
    """A fresh two-node mesh: node 1 (ours, FTFW) and node 2 (ours, FTFW with ``DisableExternalCache on`` and a
    readiness file), neither started, on ``channel`` (multicast or tcp).  Yields (node 1, node 2, node 2's
    readiness file); on the way out both nodes are stopped (those started) and the mesh removed.  For
    tests/netns/test_inject_netns.py and bench/resync_ready.py."""
    with Mesh() as mesh:
        nodes: list[Node] = []
        try:
            for i in (1, 2):
                mesh.add(i)
            ready = tmp / "ready"
            nodes = [Node(tmp, 1, mode="ftfw", channel=channel),
                     Node(tmp, 2, mode="ftfw-inject", channel=channel,
                          extra_general=f" Readiness {{\n  File {ready}\n  Weight -100\n }}\n")]
            yield nodes[0], nodes[1], ready
        finally:
            for n in nodes:
                n.stop()


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
