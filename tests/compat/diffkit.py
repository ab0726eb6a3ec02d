"""Differential-test kit: run /usr/sbin/conntrack and ours on the same kernel table and compare.

* `mask()` hides what legitimately differs between two runs: timeouts, conntrack ids (not ICMP ids), `use=`,
  `delta-time=`, the event `portid=`/`progname=`, print-time stamps and the binary's path.
* `Topology` builds client <-> router (NAT, FTP helper) <-> server namespaces with real traffic;
  `start_helpers()` runs this file as the tiny server/client (`python diffkit.py serve|client`).
* `compare()` runs C, ours, C on one table (read-only commands) and accepts ours if it equals
  either C run, so an entry that changes between runs (counters, expiry) cannot make it flaky.
* `compare_fresh()` runs a table-changing command on an identical table rebuilt for each binary
  (`-F`, then `-R -` with the setup lines, both by C) and also compares C's listings afterwards.

Label tests need /etc/xtables/connlabel.conf: instead of touching the host's /etc, commands run in a
private mount namespace where a read-only overlay adds `xtables/connlabel.conf` to /etc.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

if __name__ != "__main__":
    from tests.conftest import C_CONNTRACK, PY_CONNTRACK, Netns
else:  # helper mode: no test imports needed
    C_CONNTRACK = PY_CONNTRACK = ""
    Netns = object

LABELS = "0 ctpy-zero\n1 ref-blue\n2 ref-green\n3 ref-red\n5 ctpy-five\n40 ctpy-forty\n"

# ------------------------------------------------------------------ masking

_LINE_MASKS = [
    # print-time prefix of -E -o timestamp
    (re.compile(r"^\[\d+ *\.\d+ *\]\t"), "[TS]\t"),
    # timeout of a flow line (plain/extended, events): "<l4> <num> <timeout> "
    (re.compile(r"^((?:\[TS\]\t)?(?: *\[(?:NEW|UPDATE|DESTROY)\] )?(?:ipv[46] +\d+ )?[a-z0-9-]+ +\d+ )\d+ "),
     r"\1T "),
    # timeout of an expectation line
    (re.compile(r"^((?:\[TS\]\t)?(?: *\[(?:NEW|UPDATE|DESTROY)\] )?)\d+ proto="), r"\1T proto="),
]
_MASKS = [
    (re.compile(r"(^|\s)-t \d+"), r"\1-t T"),
    # the conntrack id (-o id: after use=, at the end of the line); an ICMP id follows code=N and is kept
    (re.compile(r"(\bcode=\d+ )?\bid=\d+"), lambda m: m[0] if m[1] else "id=N"),
    (re.compile(r"\bdelta-time=\d+"), "delta-time=N"),
    (re.compile(r"\buse=\d+"), "use=N"),
    (re.compile(r"\bportid=\d+"), "portid=N"),
    (re.compile(r" progname=\S+"), ""),
    (re.compile(r"<(timeout|id|deltatime|use)>\d+</\1>"), r"<\1>N</\1>"),
    (re.compile(r"<when>.*?</when>"), "<when/>"),
]


def mask(text: str, extra: list[tuple[re.Pattern, str]] | None = None) -> str:
    for path in (PY_CONNTRACK, C_CONNTRACK):
        if path:
            text = text.replace(path, "conntrack")
    lines = []
    for line in text.split("\n"):
        for rx, repl in _LINE_MASKS:
            line = rx.sub(repl, line)
        lines.append(line)
    text = "\n".join(lines)
    for rx, repl in _MASKS + (extra or []):
        text = rx.sub(repl, text)
    return text


STATS_MASK = [(re.compile(r"=\d+"), "=N"), (re.compile(r">\d+<"), ">N<")]

# ------------------------------------------------------------------ running


@dataclass(frozen=True)
class Result:
    out: str
    err: str
    rc: int

    def masked(self, extra=None) -> Result:
        return Result(mask(self.out, extra), mask(self.err, extra), self.rc)

    def show(self) -> str:
        return f"--- rc {self.rc}\n--- stdout\n{self.out}--- stderr\n{self.err}"


_label_layer: str | None = None


def label_layer() -> str:
    """A directory holding xtables/connlabel.conf, used as the upper layer of /etc (created once)."""
    global _label_layer
    if _label_layer is None:
        import atexit
        import shutil
        d = tempfile.mkdtemp(prefix="ctpy-labels-")
        atexit.register(shutil.rmtree, d, True)
        os.makedirs(f"{d}/xtables")
        Path(f"{d}/xtables/connlabel.conf").write_text(LABELS)
        _label_layer = d
    return _label_layer


def with_labels(argv: list[str]) -> list[str]:
    script = f"mount -t overlay ctpy-labels -o lowerdir={label_layer()}:/etc /etc && exec \"$0\" \"$@\""
    return ["unshare", "-m", "--propagation", "private", "sh", "-c", script, *argv]


def argv_of(args: str | list[str]) -> list[str]:
    return shlex.split(args) if isinstance(args, str) else list(args)


def run(ns: Netns, binary: str, args: str | list[str], *, labels: bool = False, stdin: str | None = None,
        timeout: float = 20) -> Result:
    argv = [binary, *argv_of(args)]
    if labels:
        argv = with_labels(argv)
    p = subprocess.run(ns.prefix() + argv, input=stdin if stdin is not None else "", capture_output=True,
                       text=True, timeout=timeout)
    return Result(p.stdout, p.stderr, p.returncode)


def _diff(a: Result, b: Result) -> str:
    return "".join(difflib.unified_diff(a.show().splitlines(True), b.show().splitlines(True), "C", "ours"))


def compare(ns: Netns, args: str, *, labels: bool = False, extra=None, stdin: str | None = None,
            empty: bool = False) -> Result:
    """Read-only command: ours must equal C run just before or just after (masked).

    C's stdout must not be empty (an empty table or a filter matching nothing would compare nothing),
    unless ``empty``: the case is about matching nothing, and then C's stdout must be empty.
    """
    c1 = run(ns, C_CONNTRACK, args, labels=labels, stdin=stdin).masked(extra)
    if bool(c1.out) == empty:
        raise AssertionError(f"conntrack {args}: C printed {'something' if empty else 'nothing'} on stdout "
                             f"({'listed as matching nothing' if empty else 'the case would compare nothing'})\n"
                             f"{c1.show()}")
    py = run(ns, PY_CONNTRACK, args, labels=labels, stdin=stdin).masked(extra)
    if py == c1:
        return py
    c2 = run(ns, C_CONNTRACK, args, labels=labels, stdin=stdin).masked(extra)
    if py == c2:
        return py
    raise AssertionError(f"conntrack {args}: ours differs from C\n{_diff(c1, py)}")


def compare_all(ns: Netns, corpus: list[str], *, labels: bool = False, extra=None, empty: frozenset[str] = frozenset(),
                workers: int = 6) -> dict[str, str | None]:
    """`compare()` every read-only command line concurrently: {args: None if equal, else the diff}.
    ``empty``: the lines whose C output is expected to be empty (see `compare`)."""
    from concurrent.futures import ThreadPoolExecutor

    def one(args: str) -> str | None:
        try:
            compare(ns, args, labels=labels, extra=extra, empty=args in empty)
        except AssertionError as exc:
            return str(exc)
        return None

    with ThreadPoolExecutor(workers) as ex:
        return dict(zip(corpus, ex.map(one, corpus), strict=True))


def check(results: dict[str, str | None], args: str) -> None:
    import pytest
    if results[args] is not None:
        pytest.fail(results[args], pytrace=False)


def reset(ns: Netns, setup: list[str], *, labels: bool = False) -> None:
    """Flush and load `setup` (-I lines) with C: one `-R -` batch, but lines with labels one by one
    (C 1.4.7's `-R` crashes with SIGSEGV on `--label-add`)."""
    run(ns, C_CONNTRACK, "-F", labels=labels)
    plain = [line for line in setup if "--label" not in line]
    if plain:
        r = run(ns, C_CONNTRACK, "-R -", labels=labels, stdin="\n".join(plain) + "\n")
        assert r.rc == 0, f"setup failed: {r.show()}"
    for line in setup:
        if "--label" in line:
            r = run(ns, C_CONNTRACK, line, labels=labels)
            assert r.rc == 0, f"setup `conntrack {line}` failed: {r.show()}"
    n = run(ns, C_CONNTRACK, "-C", labels=labels).out.strip()
    assert n == str(len(setup)), f"setup loaded {n} entries, not {len(setup)}: the comparison would be vacuous"


def compare_fresh(ns: Netns, setup: list[str], args: str, *, post: tuple[str, ...] = ("-L -o extended",),
                  labels: bool = False, stdin: str | None = None, multi_update: bool = False) -> Result:
    """Table-changing command: each binary runs on the same freshly built table; C lists the result.

    ``multi_update``: a `-U` that changes several entries. C 1.4.7 sends every update and read-back
    with one sequence number and reads one reply per request, so from the second entry on it reads
    the previous request's reply: it prints a subset of the updated entries and its error lines and
    count lag (docs/compat.md). Then the table after, the exit status and "each line C printed is
    one of ours" are compared, and ours must print one line per entry it counts.
    """
    got = {}
    for name, binary in (("C", C_CONNTRACK), ("ours", PY_CONNTRACK)):
        reset(ns, setup, labels=labels)
        main = run(ns, binary, args, labels=labels, stdin=stdin).masked()
        after = [run(ns, C_CONNTRACK, p, labels=labels).masked() for p in post]
        got[name] = (main, after)
    c, py = got["C"], got["ours"]
    if multi_update:
        c_lines, py_lines = c[0].out.splitlines(), py[0].out.splitlines()
        counted = re.search(r"(\d+) flow entries have been updated", py[0].err)
        if (c[0].rc != py[0].rc or not set(c_lines) <= set(py_lines) or counted is None
                or int(counted[1]) != len(py_lines)):
            raise AssertionError(f"conntrack {args}: ours differs from C\n{_diff(c[0], py[0])}")
    elif c[0] != py[0]:
        raise AssertionError(f"conntrack {args}: ours differs from C\n{_diff(c[0], py[0])}")
    for p, a, b in zip(post, c[1], py[1], strict=True):
        if a != b:
            raise AssertionError(f"after conntrack {args}: `conntrack {p}` differs (C ran it both times)\n"
                                 f"{_diff(a, b)}")
    return py[0]


def netlink_listeners(ns: Netns) -> int:
    """NETLINK_NETFILTER sockets with multicast groups in the namespace (event listeners ready)."""
    text = ns.run(["cat", "/proc/net/netlink"]).stdout
    n = 0
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) > 3 and cols[1] == "12" and int(cols[3], 16) != 0:
            n += 1
    return n


def netlink_backlog(ns: Netns) -> int:
    """Bytes queued unread on the namespace's NETLINK_NETFILTER listener sockets (Rmem of /proc/net/netlink)."""
    text = ns.run(["cat", "/proc/net/netlink"]).stdout
    return sum(int(cols[4]) for cols in (line.split() for line in text.splitlines()[1:])
               if len(cols) > 4 and cols[1] == "12" and int(cols[3], 16) != 0)


def drained(ns: Netns, polls: int = 3):
    """A wait_for predicate: true once the listeners' queues were seen empty ``polls`` times in a row (each
    listener has read every event; the last buffer read is printed by the time of the last poll)."""
    seen = [0]

    def pred() -> bool:
        seen[0] = seen[0] + 1 if netlink_backlog(ns) == 0 else 0
        return seen[0] >= polls
    return pred


def wait_for(pred, timeout: float = 10.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


# ------------------------------------------------------------------ topology with real traffic

RTR_NFT = """
table inet ctpy {
    ct helper ftp-std { type "ftp" protocol tcp; }
    chain pre { type filter hook prerouting priority 0; policy accept; tcp dport 21 ct helper set "ftp-std"; }
    chain forw { type filter hook forward priority 0; policy accept; ct state established,related accept; }
}
table ip ctpynat {
    chain pre { type nat hook prerouting priority -100; policy accept;
        ip daddr 10.77.1.1 tcp dport 8080 dnat to 10.77.2.2:80; }
    chain post { type nat hook postrouting priority 100; policy accept;
        tcp dport 9000 snat to 10.77.2.1; oifname "s0" udp dport 5555 masquerade; }
}
"""
SRV_NFT = "table inet ctpy {\n chain inp { type filter hook input priority 0; tcp dport 7777 drop; }\n}\n"


class Topology:
    """ctpy-dcli <-> ctpy-drtr <-> ctpy-dsrv, like c-tools-behaviour's topo1 (10.77.1/24, 10.77.2/24, fd77:1/2::)."""

    def __init__(self, acct: bool = True):
        self.cli, self.rtr, self.srv = Netns("dcli"), Netns("drtr"), Netns("dsrv")
        self.procs: list[subprocess.Popen] = []
        try:
            self._build(acct)
        except BaseException:
            self.close()
            raise

    def _build(self, acct: bool) -> None:
        sh = subprocess.run
        r = self.rtr.name
        sh(["ip", "link", "add", "c0", "netns", r, "type", "veth", "peer", "eth0", "netns", self.cli.name], check=True)
        sh(["ip", "link", "add", "s0", "netns", r, "type", "veth", "peer", "eth0", "netns", self.srv.name], check=True)
        for ns, dev, v4, v6, gw4, gw6 in (
                (self.cli, "eth0", "10.77.1.2/24", "fd77:1::2/64", "10.77.1.1", "fd77:1::1"),
                (self.srv, "eth0", "10.77.2.2/24", "fd77:2::2/64", "10.77.2.1", "fd77:2::1"),
                (self.rtr, "c0", "10.77.1.1/24", "fd77:1::1/64", None, None),
                (self.rtr, "s0", "10.77.2.1/24", "fd77:2::1/64", None, None)):
            ns.run(["ip", "addr", "add", v4, "dev", dev], check=True)
            ns.run(["ip", "addr", "add", v6, "dev", dev, "nodad"], check=True)
            ns.run(["ip", "link", "set", dev, "up"], check=True)
            if gw4:
                ns.run(["ip", "route", "add", "default", "via", gw4], check=True)
                ns.run(["ip", "-6", "route", "add", "default", "via", gw6], check=True)
        self.rtr.run(["sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"], check=True)
        for ns in (self.rtr, self.srv):  # entries outlive the session without refresh traffic
            ns.run(["sysctl", "-qw", "net.netfilter.nf_conntrack_udp_timeout=600",
                    "net.netfilter.nf_conntrack_udp_timeout_stream=600",
                    "net.netfilter.nf_conntrack_icmp_timeout=600",
                    "net.netfilter.nf_conntrack_icmpv6_timeout=600"], check=True)
        if acct:
            self.rtr.run(["sysctl", "-qw", "net.netfilter.nf_conntrack_acct=1",
                          "net.netfilter.nf_conntrack_timestamp=1"], check=True)
        self.rtr.run(["nft", "-f", "-"], input=RTR_NFT, check=True)
        self.srv.run(["nft", "-f", "-"], input=SRV_NFT, check=True)

    def start_traffic(self) -> None:
        me = [sys.executable, str(Path(__file__).resolve())]
        srv = subprocess.Popen(self.srv.prefix() + me + ["serve"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)
        self.procs.append(srv)
        assert srv.stdout.readline().strip() == "ready"
        cli = subprocess.Popen(self.cli.prefix() + me + ["client"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)
        self.procs.append(cli)
        assert cli.stdout.readline().strip() == "ready"

    def burst(self) -> None:
        """The client sends one UDP/ICMP request per flow and waits for every reply (counters +1 each way)."""
        cli = self.procs[1]
        cli.stdin.write("burst\n")
        cli.stdin.flush()
        assert cli.stdout.readline().strip() == "done"

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        for ns in (self.cli, self.rtr, self.srv):
            ns.close()


# ------------------------------------------------------------------ helper processes (run inside a netns)

def _serve() -> None:
    import socket
    import threading

    def hold(conn):
        try:
            while conn.recv(4096):
                pass
        finally:
            conn.close()

    def ftp(conn):
        conn.sendall(b"220 ctpy\r\n")
        f = conn.makefile("rb")
        for line in f:
            conn.sendall(b"200 ok\r\n" if line.startswith(b"PORT") else b"331 ok\r\n")
        conn.close()

    def tcp(family, addr, port, handler):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((addr, port))
        s.listen(16)

        def loop():
            while True:
                c, _ = s.accept()
                threading.Thread(target=handler, args=(c,), daemon=True).start()
        threading.Thread(target=loop, daemon=True).start()

    def udp_echo(port):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("10.77.2.2", port))

        def loop():
            while True:
                data, peer = s.recvfrom(2048)
                s.sendto(data, peer)
        threading.Thread(target=loop, daemon=True).start()

    for port in (22, 80, 9000):
        tcp(socket.AF_INET, "10.77.2.2", port, hold)
    tcp(socket.AF_INET6, "fd77:2::2", 80, hold)
    tcp(socket.AF_INET, "10.77.2.2", 21, ftp)
    udp_echo(53)
    udp_echo(5555)
    print("ready", flush=True)
    sys.stdin.read()


def _icmp_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def _client() -> None:
    import socket
    import struct

    keep = []

    def tcp(family, addr, port, sport, close=False):
        s = socket.socket(family, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("", sport))
        s.connect((addr, port))
        s.sendall(b"hello\n")
        if close:
            s.shutdown(socket.SHUT_WR)
            s.recv(10)
            s.close()
        else:
            keep.append(s)
        return s

    tcp(socket.AF_INET, "10.77.2.2", 22, 40022)
    tcp(socket.AF_INET, "10.77.2.2", 22, 40023, close=True)           # TIME_WAIT
    tcp(socket.AF_INET, "10.77.1.1", 8080, 40080)                       # DNAT
    tcp(socket.AF_INET, "10.77.2.2", 9000, 40900)                       # SNAT
    tcp(socket.AF_INET6, "fd77:2::2", 80, 40680)                        # IPv6
    syn = socket.socket(socket.AF_INET, socket.SOCK_STREAM)             # SYN_SENT (server drops)
    syn.bind(("", 40777))
    syn.setblocking(False)
    syn.connect_ex(("10.77.2.2", 7777))
    time.sleep(0.2)
    syn.close()
    # FTP control connection: a line before PORT (the helper skips the first packet of each direction)
    f = tcp(socket.AF_INET, "10.77.2.2", 21, 40021)
    f.recv(100)
    f.sendall(b"USER ctpy\r\n")
    f.recv(100)
    f.sendall(b"PORT 10,77,1,2,156,64\r\n")                             # expect dport 40000
    f.recv(100)
    udp4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp4.bind(("", 40053))
    udp6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    udp6.bind(("", 40653))
    masq = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    masq.bind(("", 40555))
    icmp4 = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    icmp6 = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)

    def ping_all():
        udp4.sendto(b"x", ("10.77.2.2", 53))
        udp6.sendto(b"x", ("fd77:2::2", 53))
        masq.sendto(b"x", ("10.77.2.2", 5555))
        hdr = struct.pack("!BBHHH", 8, 0, 0, 17882, 1) + b"ctpy"
        icmp4.sendto(hdr[:2] + struct.pack("!H", _icmp_checksum(hdr)) + hdr[4:], ("10.77.2.2", 0))
        icmp6.sendto(struct.pack("!BBHHH", 128, 0, 0, 17883, 1) + b"ctpy", ("fd77:2::2", 0))

    def burst():
        """One request and its reply on each answered UDP/ICMP flow (not the unanswered UDP over IPv6), replies
        awaited: the same counters each time."""
        for s in (udp4, masq, icmp4, icmp6):  # drop earlier replies: the ones awaited below are this burst's
            s.setblocking(False)
            try:
                while True:
                    s.recv(2048)
            except BlockingIOError:
                pass
            s.settimeout(10)
        udp4.sendto(b"x", ("10.77.2.2", 53))
        masq.sendto(b"x", ("10.77.2.2", 5555))
        hdr = struct.pack("!BBHHH", 8, 0, 0, 17882, 2) + b"ctpy"
        icmp4.sendto(hdr[:2] + struct.pack("!H", _icmp_checksum(hdr)) + hdr[4:], ("10.77.2.2", 0))
        icmp6.sendto(struct.pack("!BBHHH", 128, 0, 0, 17883, 2) + b"ctpy", ("fd77:2::2", 0))
        await_replies()

    def await_replies():
        for s in (udp4, masq, icmp4, icmp6):
            s.settimeout(10)
        udp4.recv(100)
        masq.recv(100)
        while (lambda d: d[(d[0] & 15) * 4])(icmp4.recv(2048)) != 0:  # IPv4 header, then the ICMP type
            pass
        while icmp6.recv(2048)[0] != 129:  # echo reply (not neighbour discovery)
            pass

    ping_all()
    await_replies()  # the IPv6 UDP request stays unanswered (no server on fd77:2::2 port 53)
    print("ready", flush=True)

    # No refresh traffic: packets during the comparisons would change counters between the C run and ours.
    # The router's UDP/ICMP timeouts are raised instead (Topology.setup), so the entries outlive the session.
    # A line `burst` on stdin sends one more burst (Topology.burst) and answers `done`.
    for line in sys.stdin:
        if line.strip() == "burst":
            burst()
            print("done", flush=True)


def _ftp_lo(addr: str, port: int) -> None:
    """FTP-ish exchange on a loopback address pair: server and client in one process (events netns)."""
    import socket
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, 21))
    srv.listen(1)
    c = socket.socket()
    c.bind(("127.0.0.1", port))
    c.connect((addr, 21))
    s, _ = srv.accept()
    s.sendall(b"220 ctpy\r\n")
    c.recv(100)
    c.sendall(b"USER ctpy\r\n")
    s.recv(100)
    s.sendall(b"331 ok\r\n")
    c.recv(100)
    c.sendall(b"PORT 127,0,0,1,156,64\r\n")
    s.recv(100)
    s.sendall(b"200 ok\r\n")
    c.recv(100)
    time.sleep(0.1)
    c.close()
    s.close()
    srv.close()


def _tcp_lo(port: int) -> None:
    """A full TCP lifecycle on 127.0.0.1 (NEW SYN_SENT ... TIME_WAIT events)."""
    import socket
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(1)
    c = socket.socket()
    c.connect(("127.0.0.1", port))
    s, _ = srv.accept()
    c.sendall(b"hi")
    s.recv(10)
    s.sendall(b"ho")
    c.recv(10)
    c.close()
    time.sleep(0.05)
    s.close()
    srv.close()
    time.sleep(0.05)


if __name__ == "__main__":
    cmd = sys.argv[1]
    if cmd == "serve":
        _serve()
    elif cmd == "client":
        _client()
    elif cmd == "ftp-lo":
        _ftp_lo(sys.argv[2], int(sys.argv[3]))
    elif cmd == "tcp-lo":
        _tcp_lo(int(sys.argv[2]))
