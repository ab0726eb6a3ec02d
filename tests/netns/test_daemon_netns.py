"""conntrackd in a network namespace: our daemon, our client, and the C 1.4.7 ones cross-driven.

Every test gets its own config (LockFile, UNIX Path, stats LogFile in a tmp dir).  The netns
``ctpy-d-<id>`` is created once per module and deleted in the finalizer; only the processes
started here are killed, by pid.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.netns.daemon_proc import C_CONNTRACK, C_DAEMON, PY_DAEMON, REPO, Conntrackd, ModuleNetns, stopping, wait_for

NS = ModuleNetns("d")
netns = NS.fixture()
nsrun = NS.run

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and ctnetlink"),
    pytest.mark.skipif(shutil.which("ip") is None or not os.path.exists(C_CONNTRACK),
                       reason="needs iproute2 and /usr/sbin/conntrack"),
]
need_c_daemon = pytest.mark.skipif(not os.path.exists(C_DAEMON), reason="needs the C conntrackd 1.4.7")


@pytest.fixture(autouse=True)
def clean_table():
    nsrun(C_CONNTRACK, "-F")
    yield


def conntrack_insert(src: str, dst: str, proto: str = "tcp", sport: int = 1000, dport: int = 80) -> None:
    args = ["-I", "-p", proto, "-s", src, "-d", dst, "-t", "300"]
    if proto in ("tcp", "udp"):
        args += ["--sport", str(sport), "--dport", str(dport)]
    if proto == "tcp":
        args += ["--state", "ESTABLISHED", "-u", "ASSURED"]
    if proto == "icmp":
        args += ["--icmp-type", "8", "--icmp-code", "0", "--icmp-id", str(sport)]
    nsrun(C_CONNTRACK, *args, check=True)


class Daemon(Conntrackd):
    def __init__(self, tmp: Path, name: str, argv0: list[str], extra_general: str = "", stats: bool = True):
        super().__init__(NS.name, tmp / name, argv0)
        self.stats_log = self.dir / "stats.log"
        self.write_conf(extra_general, f"Stats {{\n  LogFile {self.stats_log}\n}}\n" if stats else "")


@pytest.fixture
def make(tmp_path):
    with stopping() as started:

        def factory(name: str = "ours", c: bool = False, **kw) -> Daemon:
            d = Daemon(tmp_path, name, [C_DAEMON] if c else PY_DAEMON, **kw)
            started.append(d)
            return d

        yield factory


# ------------------------------------------------------------------------------------ ours alone


def test_stats_mode_follows_events_and_logs_flows(make) -> None:
    conntrack_insert("10.1.0.1", "10.2.0.1", sport=1111)  # before start: comes from the initial dump
    d = make().start()
    conntrack_insert("10.1.0.1", "10.2.0.2", "udp", 2222, 53)
    conntrack_insert("10.1.0.1", "10.2.0.3", "icmp", 7)
    out = wait_for(lambda: (r := d.client("-i")).stdout.count("\n") == 3 and r.stdout, what="3 cached flows",
                   show=lambda: d.client("-i"))
    assert re.search(r"^tcp      6 ESTABLISHED src=10\.1\.0\.1 dst=10\.2\.0\.1 sport=1111 dport=80 \[UNREPLIED\] "
                     r"src=10\.2\.0\.1 dst=10\.1\.0\.1 sport=80 dport=1111 \[ASSURED\] mark=0 \[active since \d+s\]$",
                     out, re.M), out
    assert "udp      17 src=10.1.0.1 dst=10.2.0.2 sport=2222 dport=53 [UNREPLIED]" in out
    nsrun(C_CONNTRACK, "-D", "-p", "udp", check=True)
    wait_for(lambda: d.client("-i").stdout.count("\n") == 2, what="destroy event")
    log = wait_for(lambda: d.stats_log.read_text(), what="flow log")
    assert re.match(r"^\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\tudp      17 src=10\.1\.0\.1 dst=10\.2\.0\.2 "
                    r"sport=2222 dport=53 \[UNREPLIED\] src=10\.2\.0\.2 dst=10\.1\.0\.1 sport=53 dport=2222", log), log
    s = d.client("-s").stdout
    assert "cache stats:\ncurrent active connections:\t           2\n" in s
    assert "connections destroyed:\t\t           1\tfailed:\t           0\n" in s
    assert "traffic processed:" in s


def test_upstream_simple_stats_scenario(make) -> None:
    """upstream-tests/conntrackd/tests.yaml scenario simple_stats, with our binary."""
    d = make().start()
    assert "cache stats" in d.client("-s").stdout
    assert "uptime" in d.client("-s", "runtime").stdout
    assert "traffic" in d.client("-s", "ct").stdout
    for view in ("network", "process", "queue", "expect"):
        assert d.client("-s", view).returncode == 0


def test_flush_resync_kill(make) -> None:
    d = make(extra_general="  Filter {\n    Address Ignore {\n      IPv4_address 10.9.9.9\n    }\n  }\n").start()
    conntrack_insert("10.1.0.1", "10.2.0.1")
    conntrack_insert("10.9.9.9", "10.2.0.1")  # ignored by the filter
    wait_for(lambda: d.client("-i").stdout.count("\n") == 1, what="filtered event")
    assert d.client("-f", "internal").returncode == 0
    assert d.client("-i").stdout == ""
    assert d.client("-R").stdout == ""
    assert d.client("-i").stdout.count("\n") == 1  # -R re-dumped the kernel table
    assert d.client("-F").returncode == 0  # selective: the ignored flow stays in the kernel
    left = nsrun(C_CONNTRACK, "-L").stdout
    assert "10.9.9.9" in left and "10.1.0.1" not in left
    runtime = d.client("-s", "runtime").stdout
    assert "\tflush kernel table:\t\t           1\n" in runtime
    assert "\tresync with kernel table:\t           1\n" in runtime
    assert "\tevents filtered:\t                   1\n" in runtime
    r = d.client("-k")
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    assert d.proc.wait(5) == 0
    assert not d.sock.exists() and not d.lock.exists()
    err = d.client("-s")
    assert err.returncode == 1 and "can't connect: is conntrackd running? appropriate permissions?" in err.stderr


def test_sigterm_lock_busy_and_stale_lock(make) -> None:
    d = make()
    d.lock.write_text("999999\n")  # a crashed daemon's lock: pid is not alive
    d.start()
    second = nsrun(*PY_DAEMON, "-C", str(d.conf))
    assert second.returncode == 1
    assert f"[ERROR] lockfile `{d.lock}' exists, perhaps conntrackd already running?" in second.stderr
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(5) == 0
    out = d.stdout()
    assert "[notice] -- starting in console mode --" in out and "[notice] ---- shutdown received ----" in out
    assert "removing stale lockfile" in d.stderr()
    assert not d.lock.exists()


def test_daemon_mode_and_systemd_notify(make, tmp_path) -> None:
    import socket

    d = make()
    d.conf.write_text(d.conf.read_text().replace("Systemd off", "Systemd on"))
    notify = tmp_path / "notify"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(notify))
    rx.settimeout(5)
    env = {**os.environ, "NOTIFY_SOCKET": str(notify)}
    r = subprocess.run(["ip", "netns", "exec", NS.name, *PY_DAEMON, "-C", str(d.conf), "-d"], env=env,
                       capture_output=True, text=True, timeout=20, cwd=REPO)
    assert (r.returncode, r.stdout, r.stderr) == (0, "", "")
    msgs = {rx.recv(100).decode() for _ in range(2)}
    assert "READY=1" in msgs and any(m.startswith("MAINPID=") for m in msgs)
    pid = int(d.lock.read_text())
    assert d.client("-k").returncode == 0
    assert rx.recv(100) == b"STOPPING=1"
    wait_for(lambda: not os.path.exists(f"/proc/{pid}"), what="daemon exit")
    rx.close()


# 3000 UDP flows created in one batch: far more events than the small event buffers below hold
_BURST = (
    "from conntrack_tools.flow import Flow, Tuple\n"
    "from conntrack_tools.netlink.socket import CtnlSocket\n"
    "from conntrack_tools.netlink.codec import nlmsg, encode_flow\n"
    "from conntrack_tools.netlink.attrs import ct_type, CtMsg, NLM_F_CREATE, NLM_F_EXCL\n"
    "s = CtnlSocket(); msgs = []\n"
    "for i in range(3000):\n"
    "    o = Tuple(2, bytes([10, 5, i // 250, i % 250 + 1]), bytes([10, 6, 0, 1]), 17, 1000 + i, 53)\n"
    "    f = Flow(2, o, o.reversed(), timeout=300)\n"
    "    seq = s.next_seq(); msgs.append((seq, nlmsg(ct_type(CtMsg.NEW), NLM_F_CREATE | NLM_F_EXCL, seq, 2,"
    " encode_flow(f))))\n"
    "assert not s.batch(msgs)\n"
)


def test_overrun_resync_starts_when_the_storm_is_over(make) -> None:
    """Beyond C: with NetlinkOverrunResync 30 (C's default, what the roles render) the resync after a burst that
    overran the event socket starts once the socket is drained with no new drop, not 30 s later (core._resync_early)."""
    d = make(extra_general="  NetlinkBufferSize 8192\n  NetlinkBufferSizeMaxGrowth 16384\n"
                           "  NetlinkOverrunResync 30\n").start()
    r = nsrun(sys.executable, "-c", _BURST)
    assert r.returncode == 0, r.stderr
    t0 = time.monotonic()
    wait_for(lambda: d.client("-i").stdout.count("\n") == 3000, timeout=10, what="early resync after the burst")
    runtime = d.client("-s", "runtime").stdout
    assert int(re.search(r"netlink overrun:\t\t\s*(\d+)", runtime)[1]) >= 1
    assert int(re.search(r"resync with kernel table:\t\s*(\d+)", runtime)[1]) == 1
    assert time.monotonic() - t0 < 10


def test_overrun_grows_buffer_and_resyncs(make) -> None:
    d = make(extra_general="  NetlinkBufferSize 8192\n  NetlinkBufferSizeMaxGrowth 65536\n"
                           "  NetlinkOverrunResync 1\n").start()
    r = nsrun(sys.executable, "-c", _BURST)
    assert r.returncode == 0, r.stderr
    wait_for(lambda: d.client("-i").stdout.count("\n") == 3000, timeout=15, what="resync after overrun")
    runtime = d.client("-s", "runtime").stdout
    overruns = int(re.search(r"netlink overrun:\t\t\s*(\d+)", runtime)[1])
    resyncs = int(re.search(r"resync with kernel table:\t\s*(\d+)", runtime)[1])
    size = int(re.search(r"current buffer size \(in bytes\):\t\s*(\d+)", runtime)[1])
    assert overruns >= 1 and resyncs >= 1 and size > 8192
    assert "netlink event socket buffer size has been doubled to" in d.stdout()


# ------------------------------------------------------------------------------------ against C


@need_c_daemon
def test_c_client_drives_our_daemon(make) -> None:
    """The C client gets the same answers from our daemon as from the C daemon (same config, same netns, same
    events)."""
    ours = make("ours").start()
    theirs = make("c", c=True).start()
    conntrack_insert("10.1.0.1", "10.2.0.1")
    conntrack_insert("10.1.0.1", "10.2.0.2", "udp", 5, 53)
    for d in (ours, theirs):
        wait_for(lambda d=d: d.client("-i", c=True).stdout.count("\n") == 2, what=f"events in {d.dir.name}")
    for args in (["-i"], ["-i", "-x"], ["-s"], ["-s", "cache"], ["-s", "runtime"], ["-s", "network"],
                 ["-s", "queue"], ["-i", "expect"], ["-e"], ["-n"], ["-t"], ["-s"]):
        want = theirs.client(*args, c=True)
        got = ours.client(*args, c=True)
        assert (got.returncode, got.stderr) == (want.returncode, want.stderr), args
        assert ours.lines(*args, c=True) == theirs.lines(*args, c=True), args
    assert ours.lines("-i", c=True), "nothing cached: the comparison is vacuous"
    for d in (ours, theirs):
        r = d.client("-k", c=True)
        assert r.returncode == 0 and d.proc.wait(5) == 0


@need_c_daemon
def test_our_client_and_daemon_match_c(make) -> None:
    """Same kernel table, same events: C daemon and ours answer every view identically."""
    ours = make("ours").start()
    theirs = make("c", c=True).start()
    conntrack_insert("10.1.0.1", "10.2.0.1", sport=3333)
    conntrack_insert("10.1.0.1", "10.2.0.2", "udp", 5, 53)
    conntrack_insert("10.1.0.1", "10.2.0.3", "icmp", 9)
    for d in (ours, theirs):
        wait_for(lambda d=d: d.client("-i").stdout.count("\n") == 3, what=f"events in {d.dir.name}")
    nsrun(C_CONNTRACK, "-D", "-p", "icmp", check=True)
    for d in (ours, theirs):
        wait_for(lambda d=d: d.client("-i").stdout.count("\n") == 2, what=f"destroy in {d.dir.name}")
    views = (["-i"], ["-i", "-x"], ["-s"], ["-s", "cache"], ["-s", "runtime"], ["-s", "network"], ["-s", "link"])
    for args in views:
        assert ours.lines(*args) == theirs.lines(*args), args
    # flows logged by both, same line after the date
    assert ours.stats_log.read_text().split("\t", 1)[1] == theirs.stats_log.read_text().split("\t", 1)[1]
    # -f (all caches) is not handled by C's stats mode; -f internal is
    for d in (ours, theirs):
        assert d.client("-f").returncode == 0
    assert ours.lines("-s") == theirs.lines("-s")
    for d in (ours, theirs):
        assert d.client("-f", "internal").returncode == 0
    assert ours.lines("-s", "cache") == theirs.lines("-s", "cache")
    for d in (ours, theirs):
        assert d.client("-k").returncode == 0
        assert d.proc.wait(5) == 0


def test_json_views(make) -> None:
    import json

    d = make().start()
    conntrack_insert("10.1.0.1", "10.2.0.1")
    wait_for(lambda: d.client("-i").stdout.count("\n") == 1, what="event")
    for view, key in (("ct", "cache"), ("cache", "cache"), ("runtime", "nl_events_received"), ("network", "view")):
        r = d.client("-s", view, "-o", "json")
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["view"] == view and key in doc
    assert json.loads(d.client("-s", "--json").stdout)["cache"]["stats"]["active"] == 1
    flows = [json.loads(x) for x in d.client("-i", "--json").stdout.splitlines()]
    assert len(flows) == 1
