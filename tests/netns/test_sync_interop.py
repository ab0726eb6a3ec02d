"""Sync interop in two network namespaces linked by a veth: Python <-> Python, Python <-> C 1.4.7.

For each mode (FTFW, NOTRACK, ALARM) and transport (UDP, Multicast): flows created with
``conntrack -I`` in A appear in B's external cache (``conntrackd -e``), an update (mark)
and a destroy follow, ``-c`` on B puts them in B's kernel table (``conntrack -L`` of both
compared with timeouts masked).  Then FTFW: HELLO after restarting either side, ``-n`` and
``-B`` across implementations, IPv6 sync link.  Namespaces and veths are ``ctpy-s...`` and
removed in finalizers; only processes started here are killed, by pid.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_root, stop_process
from tests.netns.daemon_proc import wait_for as _wait_for

C_DAEMON = "/usr/sbin/conntrackd"
C_CONNTRACK = "/usr/sbin/conntrack"
PY_DAEMON = [sys.executable, "-m", "conntrack_tools.daemon.main"]
TAG = f"{os.getpid() % 100000}"
NS_A, NS_B = f"ctpy-sA{TAG}", f"ctpy-sB{TAG}"
VETH_A, VETH_B = f"ctpy-s{TAG}a", f"ctpy-s{TAG}b"
VETH2_A, VETH2_B = f"ctpy-s{TAG}c", f"ctpy-s{TAG}d"  # second dedicated link (failover)
REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.root]


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=30)


def ns(name: str, *cmd: str, check: bool = False) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", name, *cmd, check=check)


def wait_for(cond, timeout: float = 8.0, what: str = "condition", show=None):
    return _wait_for(cond, timeout, what, show, interval=0.03)


@pytest.fixture(scope="module")
def link():
    require_root()
    if not (os.path.exists(C_CONNTRACK) and shutil.which("ip")):
        pytest.fail("needs iproute2 and /usr/sbin/conntrack")
    created = []
    try:
        for n in (NS_A, NS_B):
            sh("ip", "netns", "add", n)
            created.append(n)
            ns(n, "ip", "link", "set", "lo", "up", check=True)
        sh("ip", "link", "add", VETH_A, "netns", NS_A, "type", "veth", "peer", "name", VETH_B, "netns", NS_B)
        sh("ip", "link", "add", VETH2_A, "netns", NS_A, "type", "veth", "peer", "name", VETH2_B, "netns", NS_B)
        for n, dev, v4, v6 in ((NS_A, VETH_A, "10.231.0.1/24", "fd00:231::1/64"),
                               (NS_B, VETH_B, "10.231.0.2/24", "fd00:231::2/64"),
                               (NS_A, VETH2_A, "10.232.0.1/24", "fd00:232::1/64"),
                               (NS_B, VETH2_B, "10.232.0.2/24", "fd00:232::2/64")):
            ns(n, "ip", "addr", "add", v4, "dev", dev, check=True)
            ns(n, "ip", "addr", "add", v6, "dev", dev, "nodad", check=True)
            ns(n, "ip", "link", "set", dev, "up", check=True)
        yield
    finally:
        for n in created:
            subprocess.run(["ip", "netns", "del", n], check=False)


def channel(transport: str, side: str, v6: bool = False) -> str:
    return _channel(transport, side, v6).replace(" Checksum on\n", " Checksum on\n SndSocketBuffer 4194304\n"
                                                  " RcvSocketBuffer 4194304\n")


def _channel(transport: str, side: str, v6: bool = False) -> str:
    me, peer = ("1", "2") if side == "A" else ("2", "1")
    dev = VETH_A if side == "A" else VETH_B
    if transport == "udp":
        if v6:
            return (f"UDP {{\n IPv6_address fd00:231::{me}\n IPv6_Destination_Address fd00:231::{peer}\n"
                    f" Port 3781\n Interface {dev}\n Checksum on\n}}\n")
        return (f"UDP {{\n IPv4_address 10.231.0.{me}\n IPv4_Destination_Address 10.231.0.{peer}\n"
                f" Port 3781\n Interface {dev}\n Checksum on\n}}\n")
    if transport == "udp2":  # two links, the first one Default
        dev2 = VETH2_A if side == "A" else VETH2_B
        return (_channel("udp", side).replace("UDP {", "UDP Default {") +
                f"UDP {{\n IPv4_address 10.232.0.{me}\n IPv4_Destination_Address 10.232.0.{peer}\n"
                f" Port 3784\n Interface {dev2}\n Checksum on\n}}\n")
    if transport == "tcp":
        return (f"TCP {{\n IPv4_address 10.231.0.{me}\n IPv4_Destination_Address 10.231.0.{peer}\n"
                f" Port 3783\n Interface {dev}\n Checksum on\n}}\n")
    if v6:
        return f"Multicast {{\n IPv6_address ff02::1:3\n Group 3782\n Interface {dev}\n Checksum on\n}}\n"
    return (f"Multicast {{\n IPv4_address 225.0.0.51\n Group 3782\n IPv4_interface 10.231.0.{me}\n"
            f" Interface {dev}\n Checksum on\n}}\n")


MODES = {"ftfw": "FTFW {\n ResendQueueSize 131072\n ACKWindowSize 20\n PurgeTimeout 1\n}",
         "notrack": "NOTRACK {\n}",
         "inject": "FTFW {\n DisableExternalCache on\n PurgeTimeout 1\n}",
         "bypass": "NOTRACK {\n DisableInternalCache on\n}",
         "alarm": "ALARM {\n RefreshTime 5\n CacheTimeout 30\n}"}


class Node:
    def __init__(self, tmp: Path, side: str, impl: str, mode: str, transport: str, v6: bool = False,
                 options: str = ""):
        self.ns = NS_A if side == "A" else NS_B
        self.side, self.impl = side, impl
        self.dir = tmp / f"{side}-{impl}-{mode}-{transport}"
        self.dir.mkdir(exist_ok=True)
        self.conf = self.dir / "conntrackd.conf"
        self.conf.write_text(
            f"Sync {{\n Mode {MODES[mode]}\n{channel(transport, side, v6)}{options}}}\n"
            "General {\n Systemd off\n HashSize 8192\n HashLimit 2097152\n"
            f" LogFile {self.dir / 'log'}\n Syslog off\n LockFile {self.dir / 'lock'}\n"
            f" UNIX {{ Path {self.dir / 'ctl'} }}\n NetlinkOverrunResync 1\n"
            " NetlinkBufferSize 4194304\n NetlinkBufferSizeMaxGrowth 67108864\n"
            " Scheduler { Type RR Priority 0 }\n"
            " Filter From Userspace {\n  Address Ignore {\n   IPv4_address 127.0.0.1\n"
            "   IPv4_address 10.231.0.0/24\n   IPv6_address fd00:231::/64\n   IPv4_address 10.232.0.0/24\n  }\n }\n}\n")
        self.proc: subprocess.Popen | None = None

    def argv(self) -> list[str]:
        return [C_DAEMON] if self.impl == "c" else PY_DAEMON

    def start(self) -> Node:
        self.out = open(self.dir / "stdout", "a")
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.ns, *self.argv(), "-C", str(self.conf)],
                                     stdout=self.out, stderr=subprocess.STDOUT, cwd=REPO)
        wait_for(lambda: self.client("-s").returncode == 0 or self.proc.poll() is not None, 10, "daemon up",
                 show=self.logs)
        assert self.proc.poll() is None, self.logs()
        return self

    def stop(self, kill: bool = False) -> None:
        stop_process(self.proc, 5, signal.SIGKILL if kill else signal.SIGTERM)
        self.proc = None
        if kill:
            for f in ("lock", "ctl"):
                (self.dir / f).unlink(missing_ok=True)
        if getattr(self, "out", None):
            self.out.close()

    def logs(self) -> str:
        p = self.dir / "log"
        return (p.read_text() if p.exists() else "") + (self.dir / "stdout").read_text()

    def client(self, *args: str) -> subprocess.CompletedProcess:
        # our client speaks the same UNIX protocol to both daemons
        return ns(self.ns, *PY_DAEMON, "-C", str(self.conf), *args)

    def external(self) -> list[str]:
        return [line for line in self.client("-e").stdout.splitlines() if "src=" in line]


def ct(nsname: str, *args: str) -> None:
    r = ns(nsname, C_CONNTRACK, *args)
    assert r.returncode == 0, r.stderr


FLOWS = [
    ("-p", "tcp", "-s", "192.0.2.1", "-d", "198.51.100.1", "--sport", "1001", "--dport", "80",
     "--state", "ESTABLISHED", "-u", "ASSURED", "-t", "300", "-m", "7"),
    ("-p", "udp", "-s", "192.0.2.2", "-d", "198.51.100.2", "--sport", "1002", "--dport", "53", "-t", "100",
     "--src-nat", "203.0.113.5"),
    ("-p", "icmp", "-s", "192.0.2.3", "-d", "198.51.100.3", "--icmp-type", "8", "--icmp-code", "0",
     "--icmp-id", "4660", "-t", "30"),
    ("-p", "tcp", "-s", "2001:db8::1", "-d", "2001:db8::2", "--sport", "1004", "--dport", "443",
     "--state", "ESTABLISHED", "-t", "300", "-w", "5"),
    ("-p", "udp", "-s", "192.0.2.5", "-d", "198.51.100.5", "--sport", "1005", "--dport", "123", "-t", "60",
     "-w", "9", "-m", "3"),
]
def recv_malformed(net: str) -> int:
    m = re.search(r"recv:\n\t\tMalformed messages:\t\s*(\d+)", net)
    assert m, net
    return int(m.group(1))


_MASK = re.compile(r"^(\S+\s+\d+) \d+ ")


def table(nsname: str) -> list[str]:
    out = ns(nsname, C_CONNTRACK, "-L", "-f", "ipv4").stdout + ns(nsname, C_CONNTRACK, "-L", "-f", "ipv6").stdout
    lines = [_MASK.sub(r"\1 T ", line).replace(" use=1", "") for line in out.splitlines()]
    return sorted(line for line in lines if "192.0.2." in line or "2001:db8::" in line)


@pytest.fixture
def pair(link, tmp_path):
    nodes: list[Node] = []

    def make(a: str, b: str, mode: str, transport: str, v6: bool = False, options: str = "") -> tuple[Node, Node]:
        for n in (NS_A, NS_B):
            ns(n, C_CONNTRACK, "-F")
        na = Node(tmp_path, "A", a, mode, transport, v6, options)
        nb = Node(tmp_path, "B", b, mode, transport, v6, options)
        nodes.extend((na, nb))
        nb.start()
        na.start()
        return na, nb

    yield make
    for n in nodes:
        n.stop()


COMBOS = [(a, b) for a, b in (("py", "py"), ("py", "c"), ("c", "py"))]


@pytest.mark.parametrize("transport", ["udp", "mcast", "tcp"])
@pytest.mark.parametrize("mode", ["ftfw", "notrack", "alarm"])
@pytest.mark.parametrize("impls", COMBOS, ids=["py-py", "py-c", "c-py"])
def test_sync_flows(pair, impls, mode, transport):
    na, nb = pair(*impls, mode, transport)
    for f in FLOWS:
        ct(NS_A, "-I", *f)
    wait_for(lambda: len(nb.external()) == len(FLOWS), what="flows in B's external cache",
             show=lambda: f"{nb.external()}\n--- A log\n{na.logs()}\n--- B log\n{nb.logs()}")
    ext = "\n".join(nb.external())
    assert "mark=7" in ext and "zone=9" in ext and "id=4660" in ext
    # update: a new mark travels
    ct(NS_A, "-U", "-p", "tcp", "-s", "192.0.2.1", "-d", "198.51.100.1", "--sport", "1001", "--dport", "80",
       "-m", "42")
    wait_for(lambda: any("mark=42" in x for x in nb.external()), what="update in B")
    # destroy follows
    ct(NS_A, "-D", "-p", "icmp", "-s", "192.0.2.3")
    wait_for(lambda: len(nb.external()) == len(FLOWS) - 1, what="destroy in B", show=nb.external)
    # commit on B: B's kernel table equals A's (timeouts masked)
    assert nb.client("-c").returncode == 0
    wait_for(lambda: table(NS_B) == table(NS_A), 5, "B kernel == A kernel",
             show=lambda: f"A={table(NS_A)}\nB={table(NS_B)}\n{nb.logs()}")
    # nobody saw anything malformed, and FTFW senders get everything acknowledged
    for n in (na, nb):
        net = n.client("-s", "network").stdout
        assert recv_malformed(net) == 0, net
    if mode == "ftfw":
        # idle FTFW peers keep acknowledging each other's ACKs: only control messages may wait
        wait_for(lambda: "object ->" not in na.client("-s", "rsqueue").stdout, 5,
                 "A's data messages all acknowledged", show=lambda: na.client("-s", "rsqueue").stdout)


@pytest.mark.parametrize("impls", COMBOS, ids=["py-py", "py-c", "c-py"])
def test_ftfw_restart_hello_and_resync(pair, impls):
    na, nb = pair(*impls, "ftfw", "udp")
    ct(NS_A, "-I", *FLOWS[0])
    wait_for(lambda: len(nb.external()) == 1, what="first flow")
    # restart the sender A: HELLO makes B accept its (lower) sequence numbers again
    na.stop()
    na.start()
    ct(NS_A, "-I", *FLOWS[1])
    wait_for(lambda: len(nb.external()) == 2, what="flow after A restart", show=nb.logs)
    # restart the receiver B: its cache is empty; -n on B asks A for a bulk send
    nb.stop()
    nb.start()
    ct(NS_A, "-I", *FLOWS[2])
    wait_for(lambda: len(nb.external()) >= 1, what="flow after B restart", show=nb.logs)
    assert nb.client("-n").returncode == 0
    wait_for(lambda: len(nb.external()) == 3, what="resync after -n", show=lambda: f"{nb.external()}\n{na.logs()}")
    # -B on A: a bulk send refreshes B after B's external cache was flushed
    assert nb.client("-f", "external").returncode == 0
    wait_for(lambda: len(nb.external()) == 0, what="flush external")
    assert na.client("-B").returncode == 0
    wait_for(lambda: len(nb.external()) == 3, what="bulk after -B")
    # bulk messages carry each flow's timeout (C does), so a commit after a resync keeps them, not 60 s
    assert nb.client("-c").returncode == 0
    wait_for(lambda: kernel_timeout(NS_B, "192.0.2.1") is not None, 5, "committed", show=lambda: table(NS_B))
    assert kernel_timeout(NS_B, "192.0.2.1") > 200, ns(NS_B, C_CONNTRACK, "-L").stdout


def kernel_timeout(nsname: str, src: str) -> int | None:
    for line in ns(nsname, C_CONNTRACK, "-L").stdout.splitlines():
        if f"src={src} " in line:
            return int(line.split()[2])
    return None


@pytest.mark.parametrize("transport", ["udp", "mcast"])
@pytest.mark.parametrize("impls", [("py", "py"), ("py", "c"), ("c", "py")], ids=["py-py", "py-c", "c-py"])
def test_ipv6_sync_link(pair, impls, transport):
    na, nb = pair(*impls, "ftfw", transport, True)
    ct(NS_A, "-I", *FLOWS[3])
    ct(NS_A, "-I", *FLOWS[0])
    wait_for(lambda: len(nb.external()) == 2, what="flows over IPv6 link", show=nb.logs)


def test_python_stats_views(pair):
    na, nb = pair("py", "py", "ftfw", "mcast")
    ct(NS_A, "-I", *FLOWS[0])
    wait_for(lambda: len(nb.external()) == 1, what="flow")
    s = na.client("-s").stdout
    assert "multicast traffic (active device=" in s and "message tracking:" in s
    assert "network statistics:" in na.client("-s", "network").stdout
    assert "role=ACTIVE" in na.client("-s", "link").stdout
    assert "queue rsqueue:" in na.client("-s", "queue").stdout
    assert na.client("-s", "rsqueue").stdout.startswith("resent queue (len=")


# ---------------------------------------------------------------- commit benchmark (N flows)

FILL = r"""
import sys
from conntrack_tools.flow import AF_INET, Flow, Tuple
from conntrack_tools.netlink.attrs import NLM_F_CREATE, NLM_F_EXCL, CtMsg, ct_type
from conntrack_tools.netlink.codec import encode_flow, nlmsg
from conntrack_tools.netlink.socket import CtnlSocket
n = int(sys.argv[1])
s = CtnlSocket()
msgs = []
for i in range(n):
    o = Tuple(AF_INET, bytes((100, 64 + (i >> 16), (i >> 8) & 255, i & 255)), bytes((198, 51, 100, 1)), 17, 1000, 53)
    f = Flow(AF_INET, o, o.reversed(), timeout=600)
    seq = s.next_seq()
    msgs.append((seq, nlmsg(ct_type(CtMsg.NEW), NLM_F_CREATE | NLM_F_EXCL, seq, AF_INET, encode_flow(f))))
errs = s.batch(msgs)
print(len(errs))
"""
_COMMIT = re.compile(r"Committed (\d+) new entries.*?commit has taken (\d+\.\d+) seconds", re.S)


def commit_seconds(node: Node) -> tuple[int, float]:
    m = _COMMIT.findall(node.logs())
    assert m, node.logs()
    return int(m[-1][0]), float(m[-1][1])


@pytest.mark.parametrize("receiver", ["py", "c"])
def test_commit_many(pair, receiver, capsys):
    n = int(os.environ.get("CTPY_SYNC_BENCH_N", "20000"))
    na, nb = pair("py", receiver, "ftfw", "udp")
    r = ns(NS_A, sys.executable, "-c", FILL, str(n))
    assert r.returncode == 0 and r.stdout.strip() == "0", r.stderr
    wait_for(lambda: f"current active connections:\t{n:12d}" in nb.client("-s").stdout.split("cache external:")[-1],
             60, "all flows in B's external cache", show=lambda: nb.client("-s").stdout)
    assert nb.client("-c").returncode == 0
    got, secs = wait_for(lambda: _COMMIT.search(nb.logs()) and commit_seconds(nb), 60, "commit log")
    assert got == n
    assert int(ns(NS_B, C_CONNTRACK, "-C").stdout.strip()) >= n
    with capsys.disabled():
        print(f"\n[sync-bench] receiver={receiver} N={n} commit {secs:.3f}s ({secs / n * 1e6:.1f} us/entry)")


@pytest.mark.parametrize("impls", [("py", "py"), ("py", "c"), ("c", "py")], ids=["py-py", "py-c", "c-py"])
def test_link_failover(pair, impls):
    na, nb = pair(*impls, "ftfw", "udp2")
    ct(NS_A, "-I", *FLOWS[0])
    wait_for(lambda: len(nb.external()) == 1, what="flow over the default link")
    ns(NS_A, "ip", "link", "set", VETH_A, "down", check=True)
    try:
        wait_for(lambda: "becomes dedicated link" in na.logs(), 5, "failover", show=na.logs)
        ct(NS_A, "-I", *FLOWS[1])
        wait_for(lambda: len(nb.external()) == 2, what="flow over the second link", show=nb.logs)
        if na.impl == "py":
            assert f"device={VETH2_A} status=RUNNING role=ACTIVE" in na.client("-s", "link").stdout
    finally:
        ns(NS_A, "ip", "link", "set", VETH_A, "up")


@pytest.mark.parametrize("impls", [("py", "py"), ("c", "py")], ids=["py-py", "c-py"])
def test_disable_external_cache_injects_into_kernel(pair, impls):
    na, nb = pair(*impls, "inject", "udp")
    for f in FLOWS:
        ct(NS_A, "-I", *f)
    wait_for(lambda: table(NS_B) == table(NS_A), 8, "injected flows in B's kernel",
             show=lambda: f"A={table(NS_A)}\nB={table(NS_B)}\n{nb.client('-s').stdout}")
    assert nb.external() == []
    ct(NS_A, "-D", "-p", "icmp", "-s", "192.0.2.3")
    wait_for(lambda: table(NS_B) == table(NS_A), 8, "injected destroy")
    assert "external inject:" in nb.client("-s").stdout


def test_reset_timers_with_direct_injection_keeps_the_kernel_table(pair):
    """Beyond C: with DisableExternalCache the kernel table is the synced state; -t flushes only the
    internal cache, PurgeTimeout later (C would flush the injected flows from the kernel)."""
    na, nb = pair("py", "py", "inject", "udp")
    ct(NS_A, "-I", *FLOWS[0])
    wait_for(lambda: len(table(NS_B)) == 1, 8, "injected flow in B's kernel")
    nb.client("-t")
    wait_for(lambda: "flushing internal cache (scheduled)" in nb.logs(), 5, "the scheduled flush", show=nb.logs)
    assert "flushing internal cache in 1 secs" in nb.logs()
    assert len(table(NS_B)) == 1, table(NS_B)


def test_garbage_on_the_sync_port_is_counted_and_ignored(pair):
    na, nb = pair("py", "py", "ftfw", "udp")
    junk = "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n" \
           "for p in (b'\\x00' * 3, b'\\x1a\\x08\\x00\\x00' * 4, b'\\x20' * 40, bytes(range(256))):\n" \
           "    s.sendto(p, ('10.231.0.2', 3781))\n"
    assert ns(NS_A, sys.executable, "-c", junk).returncode == 0
    wait_for(lambda: recv_malformed(nb.client("-s", "network").stdout) >= 4, 5, "malformed counted",
             show=lambda: nb.client("-s", "network").stdout)
    ct(NS_A, "-I", *FLOWS[0])
    wait_for(lambda: len(nb.external()) == 1, what="sync still works")


@pytest.mark.parametrize("impl", ["py", "c"])
def test_reset_timers_flushes_kernel_after_purge_timeout(pair, impl):
    na, nb = pair("py", impl, "ftfw", "udp")
    ct(NS_A, "-I", *FLOWS[0])
    wait_for(lambda: len(nb.external()) == 1, what="flow")
    nb.client("-c")
    wait_for(lambda: len(table(NS_B)) == 1, what="committed")
    nb.client("-t")
    wait_for(lambda: "flushing conntrack table in 1 secs" in nb.logs(), 3, "-t logged", show=nb.logs)
    wait_for(lambda: table(NS_B) == [], 5, "kernel flushed after PurgeTimeout", show=lambda: table(NS_B))


# An FTP control connection in A between two addresses on lo (no 127.0.0.1: the daemons ignore it),
# through an nft "ct helper" rule: the master flow carries helper=ftp and the PORT command makes
# the kernel expect a data connection to 192.0.2.30:40000.
FTP_NFT = """table inet ctpy_exp {
    ct helper ftp-std { type "ftp" protocol tcp; }
    chain out { type filter hook output priority 0; policy accept; tcp dport 21 ct helper set "ftp-std"; }
}
"""
FTP_SESSION = r"""
import socket, sys, time
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("198.51.100.30", 21)); srv.listen(1)
c = socket.socket(); c.bind(("192.0.2.30", int(sys.argv[1]))); c.connect(("198.51.100.30", 21))
s, _ = srv.accept()
s.sendall(b"220 ctpy\r\n"); c.recv(100)
c.sendall(b"USER ctpy\r\n"); s.recv(100); s.sendall(b"331 ok\r\n"); c.recv(100)
c.sendall(b"PORT 192,0,2,30,156,64\r\n"); s.recv(100); s.sendall(b"200 ok\r\n"); c.recv(100)
time.sleep(0.2)
"""
_EXP_TIMEOUT = re.compile(r"^\d+ ")


def expectations(nsname: str) -> list[str]:
    out = ns(nsname, C_CONNTRACK, "-L", "expect").stdout
    return sorted(_EXP_TIMEOUT.sub("T ", line) for line in out.splitlines() if "192.0.2.30" in line)


@pytest.fixture
def ftp_helper(link):
    ns(NS_A, "ip", "addr", "add", "192.0.2.30/32", "dev", "lo", check=False)
    ns(NS_A, "ip", "addr", "add", "198.51.100.30/32", "dev", "lo", check=False)
    r = subprocess.run(["ip", "netns", "exec", NS_A, "nft", "-f", "-"], input=FTP_NFT, text=True,
                       capture_output=True)
    assert r.returncode == 0, r.stderr
    yield
    ns(NS_A, "nft", "delete", "table", "inet", "ctpy_exp")
    for n in (NS_A, NS_B):
        ns(n, C_CONNTRACK, "-F", "expect")


@pytest.mark.parametrize("impls", COMBOS, ids=["py-py", "py-c", "c-py"])
def test_expectation_sync(pair, impls, ftp_helper):
    """ExpectationSync: A's FTP expectation reaches B; ``-c`` puts master and expectation in B's kernel."""
    na, nb = pair(*impls, "ftfw", "udp", options="Options {\n ExpectationSync on\n}\n")
    sport = 40030 + COMBOS.index(impls)  # a new control connection each time (the last one is in TIME_WAIT)
    r = ns(NS_A, sys.executable, "-c", FTP_SESSION, str(sport))
    assert r.returncode == 0, r.stderr
    want = expectations(NS_A)
    assert len(want) == 1 and "helper=ftp" in want[0], ns(NS_A, C_CONNTRACK, "-L", "expect").stdout
    wait_for(lambda: "192.0.2.30" in nb.client("-e", "expect").stdout, 8, "expectation in B's external cache",
             show=lambda: f"{nb.client('-e', 'expect').stdout}\n--- A\n{na.logs()}\n--- B\n{nb.logs()}")
    assert nb.client("-c").returncode == 0
    if nb.impl == "c":
        # C 1.4.7 commits the expectation cache after the conntracks only when the conntrack commit
        # needed more than one step (> 8192 buckets, src/sync-mode.c commit_cb); ours always does
        assert nb.client("-c", "expect").returncode == 0
    wait_for(lambda: expectations(NS_B) == want, 5, "B kernel expectation == A's",
             show=lambda: f"A={want}\nB={expectations(NS_B)}\n{nb.logs()}")
    assert any("helper=ftp" in line and "198.51.100.30" in line for line in table(NS_B))
    if nb.impl == "py":
        assert "Committed 1 new expectations" in nb.logs()


@pytest.mark.parametrize("impls", [("py", "py"), ("c", "py")], ids=["py-py", "c-py"])
def test_expectation_sync_injected(pair, impls, ftp_helper):
    """DisableExternalCache: the master and then its expectation go straight into B's kernel."""
    na, nb = pair(*impls, "inject", "udp", options="Options {\n ExpectationSync on\n}\n")
    sport = 40040 + (impls[0] == "c")
    r = ns(NS_A, sys.executable, "-c", FTP_SESSION, str(sport))
    assert r.returncode == 0, r.stderr
    want = expectations(NS_A)
    assert len(want) == 1
    wait_for(lambda: expectations(NS_B) == want, 8, "injected expectation in B's kernel",
             show=lambda: f"A={want}\nB={expectations(NS_B)}\n{nb.logs()}")


_BYPASS = re.compile(r"internal bypass:\nconnections new:\t\t +(\d+)\nconnections updated:\t\t +(\d+)\n"
                     r"connections destroyed:\t\t +(\d+)\n")


@pytest.mark.parametrize("impls", COMBOS, ids=["py-py", "py-c", "c-py"])
def test_disable_internal_cache_sends_events_without_a_cache(pair, impls):
    """NOTRACK + DisableInternalCache: events go out at once, -i shows the kernel, -B sends a kernel dump."""
    na, nb = pair(*impls, "bypass", "udp")
    ct(NS_A, "-I", *FLOWS[0])
    ct(NS_A, "-I", *FLOWS[1])
    wait_for(lambda: len(nb.external()) == 2, what="flows in B", show=lambda: f"{nb.external()}\n{na.logs()}")
    ct(NS_A, "-D", "-p", "udp", "-s", "192.0.2.2")
    wait_for(lambda: len(nb.external()) == 1, what="destroy in B")
    assert "src=192.0.2.1 " in na.client("-i").stdout  # the kernel table, there is no cache
    m = _BYPASS.search(na.client("-s").stdout)
    assert m and int(m[1]) == 2 and int(m[3]) == 1, na.client("-s").stdout
    assert nb.client("-f", "external").returncode == 0
    wait_for(lambda: len(nb.external()) == 0, what="external flushed")
    assert na.client("-B").returncode == 0
    wait_for(lambda: len(nb.external()) == 1, what="bulk from the kernel table", show=na.logs)


@pytest.mark.parametrize("impl", ["py", "c"])
def test_expectation_sync_without_internal_cache(pair, impl, ftp_helper):
    """NOTRACK + DisableInternalCache + ExpectationSync: the expectation event is sent at once."""
    na, nb = pair("py", impl, "bypass", "udp", options="Options {\n ExpectationSync on\n}\n")
    r = ns(NS_A, sys.executable, "-c", FTP_SESSION, str(40050 + (impl == "c")))
    assert r.returncode == 0, r.stderr
    assert "192.0.2.30" in na.client("-i", "expect").stdout  # the kernel's expectation table
    wait_for(lambda: "192.0.2.30" in nb.client("-e", "expect").stdout, 8, "expectation in B's external cache",
             show=lambda: f"{nb.client('-e', 'expect').stdout}\n--- A\n{na.logs()}")
