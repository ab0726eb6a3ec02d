"""conntrackd in a network namespace, part 2: expectations (side by side with C 1.4.7), PollSecs mode,
the systemd watchdog and the metrics endpoint configured in conntrackd.conf.

Expectations come from a real FTP exchange on loopback (``diffkit.py ftp-lo``) with an nft
``ct helper`` assignment, as tests/compat does.  C keeps expectations only with
``Options { ExpectationSync on }`` in a Sync config: both daemons get one UDP link on lo with
their own port.  The netns ``ctpy-d2-<id>`` is deleted in the finalizer; only processes
started here are stopped, by pid.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from tests.netns.daemon_proc import C_CONNTRACK, C_DAEMON, PY_DAEMON, REPO, Conntrackd, ModuleNetns, stopping, wait_for

DIFFKIT = [sys.executable, str(REPO / "tests" / "compat" / "diffkit.py")]

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for network namespaces and ctnetlink"),
    pytest.mark.skipif(shutil.which("ip") is None or shutil.which("nft") is None or not os.path.exists(C_CONNTRACK),
                       reason="needs iproute2, nft and /usr/sbin/conntrack"),
]
need_c_daemon = pytest.mark.skipif(not os.path.exists(C_DAEMON), reason="needs the C conntrackd 1.4.7")

NFT = """table inet ctpy {
    ct helper ftp-std { type "ftp" protocol tcp; }
    chain out { type filter hook output priority 0; policy accept; tcp dport 21 ct helper set "ftp-std"; }
    chain inp { type filter hook input priority 0; policy accept; ct state established,related accept; }
}
"""

NS = ModuleNetns("d2", setup=lambda ns: ns.run("nft", "-f", "-", input=NFT, check=True))
netns = NS.fixture()
nsrun = NS.run


@pytest.fixture(autouse=True)
def clean_table():
    nsrun(C_CONNTRACK, "-F")
    nsrun(C_CONNTRACK, "-F", "expect")
    yield


_sessions = iter(range(2, 250))


def ftp_expectation() -> int:
    """One FTP control session on lo whose PORT command makes the kernel expect a data connection.

    ``ftp-lo`` always announces data port 40000 to the client 127.0.0.1: each session uses its
    own server address 127.0.0.N so the expected tuples differ (an equal one is refused by the
    helper, which then drops the PORT packet).  Returns the client port (the master's sport).
    """
    n = next(_sessions)
    port = 40100 + n
    nsrun(*DIFFKIT, "ftp-lo", f"127.0.0.{n}", str(port), check=True)
    return port


def sync_section(port: int, options: str = "ExpectationSync on") -> str:
    return (f"Sync {{\n  Mode FTFW {{ }}\n  UDP {{\n    IPv4_address 127.0.0.1\n"
            f"    IPv4_Destination_Address 127.0.0.2\n    Port {port}\n    Interface lo\n  }}\n"
            f"  Options {{ {options} }}\n}}\n")


class Daemon(Conntrackd):
    def __init__(self, tmp: Path, name: str, argv0: list[str], section: str, general: str = "") -> None:
        super().__init__(NS.name, tmp / name, argv0)
        self.write_conf(general, section)


@pytest.fixture
def make(tmp_path):
    with stopping() as started:

        def factory(name: str, c: bool, section: str, general: str = "") -> Daemon:
            d = Daemon(tmp_path, name, [C_DAEMON] if c else PY_DAEMON, section, general)
            started.append(d)
            return d

        yield factory


def cache_blocks(d: Daemon, *args: str) -> str:
    """``-s expect`` up to the traffic block (what follows are the sync engine's link counters)."""
    out = d.client(*args).stdout
    return out[:out.index("traffic processed:")]


# ------------------------------------------------------------------------------------ expectations vs C


@need_c_daemon
def test_expectations_match_c(make) -> None:
    ftp_expectation()  # before start: from the initial dumps (conntracks first, then expectations)
    ours = make("ours", False, sync_section(3790)).start()
    theirs = make("c", True, sync_section(3780)).start()
    ftp_expectation()  # after start: from EXP_NEW events
    both = (ours, theirs)
    for d in both:
        wait_for(lambda d=d: d.count("-i", "expect") == 2, what=f"2 expectations in {d.dir.name}",
                 show=lambda d=d: d.client("-i", "expect").stdout)
    for args in (["-i", "expect"], ["-i", "expect", "-x"], ["-s", "runtime"], ["-s", "cache"]):
        want = theirs.lines(*args, c=True)
        assert ours.lines(*args, c=True) == want, args  # the C client against our daemon
        assert ours.lines(*args) == want, args  # our client against ours
        assert theirs.lines(*args) == want, args  # our client against C's
    line = ours.lines("-i", "expect")[0]
    assert re.fullmatch(r"proto=6 src=127\.0\.0\.\d+ dst=127\.0\.0\.1 sport=0 dport=40000 mask-src=255\.255\.255\.255 "
                        r"mask-dst=255\.255\.255\.255 sport=0 dport=65535 master-src=127\.0\.0\.1 "
                        r"master-dst=127\.0\.0\.\d+ sport=\d+ dport=21 class=0 helper=ftp \[active since Ns\]", line)
    assert cache_blocks(ours, "-s", "expect") == cache_blocks(theirs, "-s", "expect")

    # -f flushes the expectation caches too; -R expect needs the masters back first (ct_filter_master)
    for d in both:
        assert d.client("-f").returncode == 0
        assert d.client("-R", "expect").returncode == 0
    assert ours.lines("-i", "expect") == theirs.lines("-i", "expect") == []
    for d in both:
        assert d.client("-R").returncode == 0  # conntracks, then expectations
    assert ours.lines("-i", "expect") == theirs.lines("-i", "expect") and len(ours.lines("-i", "expect")) == 2
    assert cache_blocks(ours, "-s", "expect") == cache_blocks(theirs, "-s", "expect")

    # -F expect from our daemon empties the kernel table. Our cache is purged right after our own flush;
    # C's follows the EXP_DESTROY events, and under load the kernel was seen not to deliver one of them
    # for the helper's expectations (C then keeps a stale entry), so C's cache is compared only when it
    # did converge.
    assert ours.client("-F", "expect").returncode == 0
    assert "0 expectations" in nsrun(C_CONNTRACK, "-L", "expect").stderr
    assert ours.count("-i", "expect") == 0
    c_followed = True
    try:
        wait_for(lambda: theirs.count("-i", "expect") == 0, 5, what="destroy events in C's daemon")
    except AssertionError:
        c_followed = False
    assert theirs.client("-F", "expect").returncode == 0
    assert ours.lines("-s", "runtime") == theirs.lines("-s", "runtime")
    if c_followed:
        assert cache_blocks(ours, "-s", "expect") == cache_blocks(theirs, "-s", "expect")
    for d in both:
        for msg in ("resync with master expect table", "flushing kernel expect table", "flushing caches"):
            assert msg in d.stdout(), (d.dir.name, msg)
        assert d.client("-k").returncode == 0 and d.proc.wait(5) == 0


@need_c_daemon
def test_expectation_helper_list_filters_like_c(make) -> None:
    ours = make("ours", False, sync_section(3791, "ExpectationSync {\n    sip\n  }")).start()
    theirs = make("c", True, sync_section(3781, "ExpectationSync {\n    sip\n  }")).start()
    port = ftp_expectation()
    for d in (ours, theirs):
        wait_for(lambda d=d: f"sport={port} dport=21" in d.client("-i").stdout, what=f"master in {d.dir.name}")
    assert ours.lines("-i", "expect") == theirs.lines("-i", "expect") == []
    r_ours, r_c = (re.search(r"events filtered:\t\s*(\d+)", d.client("-s", "runtime").stdout)[1]
                   for d in (ours, theirs))
    assert r_ours == r_c and int(r_ours) >= 1


def test_stats_mode_has_no_expectations(make) -> None:
    d = make("ours", False, "Stats {\n}\n").start()
    ftp_expectation()
    assert d.client("-i", "expect").stdout == "" and d.client("-s", "expect").stdout == ""
    assert json.loads(d.client("-s", "expect", "--json").stdout) == {"view": "expect"}


# ------------------------------------------------------------------------------------ PollSecs, watchdog, metrics


def test_poll_secs_keeps_cache_in_sync_without_events(make, tmp_path) -> None:
    prom = tmp_path / "ctd.prom"
    d = make("ours", False, sync_section(3792),
             f"  PollSecs 1\n  Metrics {{\n    Listen 127.0.0.1:9109\n    Textfile {prom}\n  }}\n").start()
    assert "running in polling mode" in d.stdout()
    for i in (1, 2):
        args = ["-I", "-p", "udp", "-s", "10.1.0.1", "-d", f"10.2.0.{i}", "--sport", "5", "--dport", "53", "-t", "300"]
        nsrun(C_CONNTRACK, *args, check=True)

    def mine() -> list[str]:
        return [x for x in d.client("-i").stdout.splitlines() if "10.1.0.1" in x]

    wait_for(lambda: len(mine()) == 2, what="2 flows after a poll", show=mine)
    nsrun(C_CONNTRACK, "-D", "-d", "10.2.0.1", check=True)
    wait_for(lambda: len(mine()) == 1 and "10.2.0.2" in mine()[0], what="purge after a poll", show=mine)
    ftp_expectation()
    wait_for(lambda: d.count("-i", "expect") == 1, what="expectation after a poll")
    nsrun(C_CONNTRACK, "-F", "expect", check=True)
    wait_for(lambda: d.count("-i", "expect") == 0, what="expectation purged after a poll")
    runtime = d.client("-s", "runtime").stdout
    assert "\tevents received:\t                   0\n" in runtime  # no event socket at all
    # metrics configured in conntrackd.conf: textfile and HTTP, with the expectation caches
    text = wait_for(lambda: prom.exists() and prom.read_text(), what="metrics textfile")
    assert 'conntrackd_cache_entries{cache="internal"}' in text
    assert 'conntrackd_cache_created_total{cache="expect-internal"}' in text
    get = ("import socket, sys; s = socket.create_connection(('127.0.0.1', 9109), 5);"
           "s.sendall(b'GET /metrics HTTP/1.0\\r\\n\\r\\n');"
           "b = b''.join(iter(lambda: s.recv(65536), b'')); sys.stdout.write(b.decode())")
    http = nsrun(sys.executable, "-c", get)
    assert http.stdout.startswith("HTTP/1.0 200 OK") and 'conntrackd_cache_entries{cache="expect-internal"} 0.0' in \
        http.stdout, http.stdout + http.stderr


def test_systemd_watchdog_pings(make, tmp_path) -> None:
    d = make("ours", False, "Stats {\n}\n")
    d.conf.write_text(d.conf.read_text().replace("Systemd off", "Systemd on"))
    notify = tmp_path / "notify"
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(str(notify))
    rx.settimeout(5)
    try:
        env = {**os.environ, "NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "200000"}
        env.pop("WATCHDOG_PID", None)
        d.start(env=env, wait=False)
        got: list[tuple[float, bytes]] = []
        while sum(m == b"WATCHDOG=1" for _t, m in got) < 4:
            got.append((time.monotonic(), rx.recv(100)))
        msgs = [m for _t, m in got]
        assert msgs[0] == b"READY=1", msgs  # the loop starts pinging once the daemon is up
        pings = [t for t, m in got if m == b"WATCHDOG=1"]
        gaps = [b - a for a, b in zip(pings, pings[1:], strict=False)]
        assert all(0.05 < g < 0.5 for g in gaps), gaps  # every half WATCHDOG_USEC (0.1 s)
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(5) == 0
        rest = []
        rx.settimeout(0.2)
        try:
            while True:
                rest.append(rx.recv(100))
        except TimeoutError:
            pass
        assert rest and rest[-1] == b"STOPPING=1" and set(rest[:-1]) <= {b"WATCHDOG=1"}, rest
    finally:
        rx.close()


def scrape(port: int, wait_silent: bool = False) -> tuple[str, float]:
    """GET /metrics inside the namespace; with ``wait_silent`` a second client that sends nothing is
    left connected first (the responder must not wait for it).  Returns (reply, seconds)."""
    silent = f"s0 = socket.create_connection(('127.0.0.1', {port}), 5);" if wait_silent else ""
    get = ("import socket, sys, time; " + silent + "t = time.monotonic();"
           f"s = socket.create_connection(('127.0.0.1', {port}), 5);"
           "s.sendall(b'GET /metrics HTTP/1.0\\r\\n\\r\\n');"
           "b = b''.join(iter(lambda: s.recv(65536), b'')); sys.stdout.write(b.decode());"
           "sys.stderr.write(str(time.monotonic() - t))")
    r = nsrun(sys.executable, "-c", get)
    return r.stdout, float(r.stderr.strip().splitlines()[-1]) if r.stderr.strip() else -1.0


@pytest.mark.parametrize("mode", ["FTFW", "NOTRACK", "ALARM"])
def test_metrics_scrape_parses_in_every_sync_mode(make, mode) -> None:
    """A running daemon in each sync mode, scraped over HTTP: Prometheus' parser takes the page whole,
    FTFW's per-peer statistics carry the peer as a label, and a silent client does not hold the loop."""
    from prometheus_client.parser import text_string_to_metric_families

    port = {"FTFW": 9121, "NOTRACK": 9122, "ALARM": 9123}[mode]
    section = (f"Sync {{\n  Mode {mode} {{ }}\n  UDP {{\n    IPv4_address 127.0.0.1\n"  # talks to itself
               f"    IPv4_Destination_Address 127.0.0.1\n    Port {port + 100}\n    Interface lo\n  }}\n}}\n")
    d = make(mode.lower(), False, section, f"  Metrics {{\n    Listen 127.0.0.1:{port}\n  }}\n").start()
    nsrun(C_CONNTRACK, "-I", "-p", "udp", "-s", "10.9.0.1", "-d", "10.9.0.2", "--sport", "5", "--dport", "53",
          "-t", "300", check=True)
    wait_for(lambda: json.loads(d.client("-s", "network", "-o", "json").stdout).get("peers"),
             what="the daemon hears itself as a peer")
    text, secs = scrape(port, wait_silent=True)
    assert text.startswith("HTTP/1.0 200 OK"), text
    body = text.replace("\r\n", "\n").split("\n\n", 1)[1]
    fams = {f.name: f for f in text_string_to_metric_families(body)}
    assert "conntrackd_cache_entries" in fams and "conntrackd_sync_heal_requests" in fams, sorted(fams)
    names = [s.name for f in fams.values() for s in f.samples]
    assert not [n for n in names if re.search(r"\d+_\d+_\d+", n)], "an address in a metric name"
    links = [s for s in fams["conntrackd_sync_link_pkts_sent"].samples]
    assert links and links[0].labels["device"] == "lo", links
    age = {s.labels["peer"]: s.value for s in fams["conntrackd_sync_peers_last_heard_seconds_ago"].samples}
    assert set(age) == {"127.0.0.1"} and 0 <= age["127.0.0.1"] < 5, age
    kernel = fams["conntrackd_kernel_table_entries"].samples[0].value
    assert kernel >= 1 and fams["conntrackd_kernel_table_max"].samples[0].value > 0
    assert "conntrackd_commit_duration_seconds" in fams
    assert secs < 0.5, f"scrape took {secs:.2f}s with a silent client connected (a blocking read waits 1 s)"
    assert d.client("-s").returncode == 0


def test_every_metric_the_alert_rules_use_is_exported(make, tmp_path) -> None:
    """monitoring/conntrackd-alerts.yml against what running daemons export: FTFW with an external
    cache, NOTRACK with DisableExternalCache (the inject counters) and FTFW with a keyring AuthKey file
    (the auth counters), scraped, not listed here."""
    from prometheus_client.parser import text_string_to_metric_families

    from tests.unit.test_monitoring import rule_metric_names

    keyfile = tmp_path / "sync.key"
    keyfile.write_text("key 1 " + "ab" * 32 + "\n")
    keyfile.chmod(0o600)
    exported: set[str] = set()
    for i, (mode, options, auth) in enumerate((("FTFW", "", ""), ("NOTRACK", "DisableExternalCache on", ""),
                                               ("FTFW", "", f"  AuthKey {keyfile}\n"))):
        port = 9131 + i
        section = (f"Sync {{\n  Mode {mode} {{ {options} }}\n{auth}  UDP {{\n    IPv4_address 127.0.0.1\n"
                   f"    IPv4_Destination_Address 127.0.0.1\n    Port {port + 100}\n    Interface lo\n  }}\n}}\n")
        d = make(f"rules{i}", False, section, f"  Metrics {{\n    Listen 127.0.0.1:{port}\n  }}\n").start()
        wait_for(lambda d=d: json.loads(d.client("-s", "network", "-o", "json").stdout).get("peers"),
                 what="the daemon hears itself")
        text, _ = scrape(port)
        body = text.replace("\r\n", "\n").split("\n\n", 1)[1]
        exported |= {s.name for f in text_string_to_metric_families(body) for s in f.samples}
    used = rule_metric_names()
    assert used and used <= exported, sorted(used - exported)


def test_role_follows_the_notify_steps(make) -> None:
    """The daemon learns its VRRP role from the notify hook's requests: commit = primary, -t = backup
    (what conntrackd-notify and upstream's primary-backup.sh both send); JSON and metrics show it."""
    from prometheus_client.parser import text_string_to_metric_families

    port = 9141
    section = ("Sync {\n  Mode FTFW { }\n  UDP {\n    IPv4_address 127.0.0.1\n"
               f"    IPv4_Destination_Address 127.0.0.1\n    Port {port + 100}\n    Interface lo\n  }}\n}}\n")
    d = make("role", False, section, f"  Metrics {{\n    Listen 127.0.0.1:{port}\n  }}\n").start()

    def role() -> dict:
        return json.loads(d.client("-s", "network", "-o", "json").stdout)["role"]

    assert role() == {"primary": 0, "backup": 0, "since": 0.0, "changes": 0}
    notify = [str(Path(sys.executable).parent / "conntrackd-notify"), "-C", str(d.conf)]
    assert nsrun(*notify, "primary").returncode == 0
    r = role()
    assert (r["primary"], r["backup"], r["changes"]) == (1, 0, 1) and r["since"] > 0
    assert nsrun(*notify, "backup").returncode == 0
    r = role()
    assert (r["primary"], r["backup"], r["changes"]) == (0, 1, 2)
    text, _ = scrape(port)
    body = text.replace("\r\n", "\n").split("\n\n", 1)[1]
    got = {s.name: s.value for f in text_string_to_metric_families(body) for s in f.samples}
    assert (got["conntrackd_sync_role_primary"], got["conntrackd_sync_role_changes"]) == (0, 2)
