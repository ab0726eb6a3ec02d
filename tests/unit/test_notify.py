"""conntrackd-notify: argument validation, step plans, error policy, and a fake control server.

The fake server speaks C's control protocol (one native int per connection, answer until EOF)
on a temporary UNIX socket, so ``main()`` runs end to end without root or a daemon.
"""

from __future__ import annotations

import os
import re
import socket
import stat
import sys
import syslog
import threading
import time
from pathlib import Path

import pytest

from conntrack_tools.daemon import notify
from conntrack_tools.daemon.control import Action, decode_request, parse_argv
from conntrack_tools.daemon.notify import CallResult, UsageError, format_summary, parse_args, run_state

# ------------------------------------------------------------------------------ fixtures


def write_conf(tmp: Path, sock: Path | None, name: str = "conntrackd.conf", inject: bool = False,
               ours: bool = False) -> Path:
    conf = tmp / name
    unix = f"  UNIX {{ Path {sock} }}\n" if sock is not None else ""
    if ours:  # an extension only our daemon accepts
        unix += f"  Readiness {{ File {tmp / 'ready'} }}\n"
    mode = " DisableExternalCache on " if inject else " "
    conf.write_text(f"General {{\n  LockFile {tmp / 'lock'}\n{unix}}}\nSync {{\n  Mode NOTRACK {{{mode}}}\n"
                    "  UDP {\n    IPv4_address 10.0.0.1\n    IPv4_Destination_Address 10.0.0.2\n"
                    "    Port 3780\n    Interface lo\n  }\n}\n")
    return conf


class FakeDaemon:
    """C's server loop in a thread: accept, read the 4-byte code, act, close."""

    def __init__(self, path: Path, delays: dict[int, float] | None = None, answers: dict[int, bytes] | None = None,
                 drop: set[int] | None = None) -> None:
        self.path = str(path)
        self.codes: list[int] = []
        self.delays = delays or {}
        self.answers = answers or {}
        self.drop = drop or set()  # codes for which the server never answers (connection held open)
        self.held: list[socket.socket] = []
        self.closed_early: list[int] = []  # codes whose client hung up before the server closed
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(8)
        self.sock.settimeout(0.05)  # so that close() is noticed: accept() is not woken by close
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            held = False
            try:
                data = b""
                while len(data) < 4:
                    chunk = conn.recv(4 - len(data))
                    if not chunk:
                        break
                    data += chunk
                code = decode_request(data)
                if code is None:
                    continue
                self.codes.append(code)
                if code in self.drop:
                    self.held.append(conn)  # a hung daemon: never answers, never closes
                    held = True
                    continue
                if code in self.delays:
                    time.sleep(self.delays[code])
                    try:
                        if conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                            self.closed_early.append(code)
                    except BlockingIOError:
                        pass  # still connected: the client waits for our close
                if code in self.answers:
                    conn.sendall(self.answers[code])
            finally:
                if not held:
                    conn.close()

    def close(self) -> None:
        self.stop.set()
        self.sock.close()
        self.thread.join(5)
        for c in self.held:
            c.close()


@pytest.fixture
def fake(tmp_path):
    made: list[FakeDaemon] = []

    def factory(inject: bool = False, ours: bool = False, **kw) -> tuple[FakeDaemon, Path]:
        sock = tmp_path / "ctl"
        d = FakeDaemon(sock, **kw)
        made.append(d)
        return d, write_conf(tmp_path, sock, inject=inject, ours=ours)

    yield factory
    for d in made:
        d.close()


def run_main(capsys, *argv: str) -> tuple[int, list[str]]:
    rc = notify.main(["--no-syslog", *argv])
    err = capsys.readouterr().err
    return rc, err.splitlines()


SUMMARY = re.compile(r"^conntrackd-notify: (\w+): (.*), total (\d+\.\d{3})s$")


def summary_steps(lines: list[str]) -> list[tuple[str, str]]:
    m = SUMMARY.match(lines[-1])
    assert m, lines
    out = []
    for part in m.group(2).split(", "):
        words = part.split(" ")
        assert re.fullmatch(r"\d+\.\d{3}s", words[1]), part
        out.append((words[0], words[2] if len(words) > 2 else "ok"))
    return out


# ------------------------------------------------------------------------------ plans (pure)


def test_plans_follow_primary_backup_sh() -> None:
    flags = {state: [s.flag for s in steps] for state, steps in notify.PLANS.items()}
    assert flags == {"primary": ["-c", "-f", "-R", "-B"], "backup": ["-s", "-t", "-n"], "fault": ["-t"]}


@pytest.mark.parametrize("state", notify.STATES)
def test_codes_equal_what_the_c_client_sends(state: str) -> None:
    """Each step sends exactly the code `conntrackd -C f <flag>` sends (our C-compatible parser)."""
    for step in notify.PLANS[state]:
        assert parse_argv([step.flag]).action == step.action, step


def test_primary_codes() -> None:
    assert [s.action for s in notify.PLANS["primary"]] == [Action.ALL_COMMIT, Action.ALL_FLUSH_CACHE,
                                                             Action.ALL_RESYNC_MASTER, Action.SEND_BULK]
    assert [int(s.action) for s in notify.PLANS["primary"]] == [46, 45, 44, 22]
    assert [int(s.action) for s in notify.PLANS["backup"]] == [21, 26, 23]
    assert [int(s.action) for s in notify.PLANS["fault"]] == [26]


class Clock:
    def __init__(self, step: float = 0.001) -> None:
        self.t = 0.0
        self.step = step

    def __call__(self) -> float:
        self.t += self.step
        return self.t


def fake_call(results: dict[int, CallResult] | None = None):
    seen: list[int] = []

    def call(action: int) -> CallResult:
        seen.append(int(action))
        return (results or {}).get(int(action), CallResult())

    return call, seen


def test_run_state_order_and_summary() -> None:
    call, seen = fake_call()
    logs: list[tuple[int, str]] = []
    rep = run_state("primary", call, lambda p, m: logs.append((p, m)), clock=Clock())
    assert seen == [46, 45, 44, 22]
    assert rep.ok and logs == []
    assert format_summary(rep) == ("primary: commit 0.001s, flush 0.001s, resync 0.001s, bulk 0.001s, "
                                   "total 0.009s")


def test_primary_failure_still_runs_every_step() -> None:
    down = CallResult("can't connect to `x': No such file or directory", unreachable=True)
    call, seen = fake_call({46: down, 44: CallResult("no answer from `x' within 1s")})
    logs: list[tuple[int, str]] = []
    rep = run_state("primary", call, lambda p, m: logs.append((p, m)), clock=Clock())
    assert seen == [46, 45, 44, 22]
    assert not rep.ok
    assert [m for _, m in logs] == ["primary: commit (-c) failed: can't connect to `x': No such file or directory",
                                    "primary: resync (-R) failed: no answer from `x' within 1s"]
    assert all(p == syslog.LOG_ERR for p, _ in logs)
    assert "commit 0.001s FAILED, flush 0.001s, resync 0.001s FAILED, bulk 0.001s" in format_summary(rep)


def test_backup_without_restart_keeps_going() -> None:
    down = CallResult("can't connect", unreachable=True)
    call, seen = fake_call({21: down, 26: down, 23: down})
    rep = run_state("backup", call, lambda p, m: None)
    assert seen == [21, 26, 23] and not rep.ok


def test_backup_restart_when_not_running() -> None:
    results = {21: CallResult("can't connect", unreachable=True)}
    call, seen = fake_call(results)
    events: list[str] = []

    def restart() -> None:
        events.append("restart")
        return None

    def remove_lock() -> bool:
        events.append("unlock")
        return True

    logs: list[str] = []
    rep = run_state("backup", call, lambda p, m: logs.append(m), restart=restart, remove_lock=remove_lock,
                    clock=Clock())
    assert events == ["unlock", "restart"]  # the script: rm -f $LOCK, then conntrackd -d
    assert seen == [21, 26, 23]
    assert rep.ok  # the daemon is back, -t and -n went through: exit 0 like the script
    assert [s.name for s in rep.steps] == ["check", "restart", "timers", "request-resync"]
    assert format_summary(rep).startswith("backup: check 0.001s DOWN, restart 0.001s, timers")
    assert any("stale LockFile removed" in m for m in logs)


def test_backup_restart_failure_stops_like_the_script() -> None:
    call, seen = fake_call({21: CallResult("can't connect", unreachable=True)})
    rep = run_state("backup", call, lambda p, m: None, restart=lambda: "exited 1", remove_lock=lambda: False)
    assert seen == [21]  # exit 1 before -t / -n
    assert not rep.ok and [s.name for s in rep.steps] == ["check", "restart"]


def test_backup_busy_daemon_is_not_restarted() -> None:
    call, seen = fake_call({21: CallResult("no answer within 1s")})  # connected, then timed out
    restarted: list[int] = []
    rep = run_state("backup", call, lambda p, m: None, restart=lambda: restarted.append(1),
                    remove_lock=lambda: restarted.append(2) or True)
    assert restarted == [] and seen == [21, 26, 23] and not rep.ok


def test_fault() -> None:
    call, seen = fake_call()
    assert run_state("fault", call, lambda p, m: None).ok and seen == [26]


# ------------------------------------------------------------------------------ argument validation


@pytest.fixture
def conf(tmp_path) -> Path:
    return write_conf(tmp_path, tmp_path / "ctl")


@pytest.mark.parametrize("argv", [
    [],
    ["master"],
    ["Primary"],
    ["prim"],
    ["primary", "backup"],
    ["--bogus", "primary"],
    ["-x", "primary"],
    ["--time", "3", "primary"],  # no abbreviations
    ["--timeout", "0", "primary"],
    ["--timeout", "-1", "primary"],
    ["--timeout", "nan", "primary"],
    ["--timeout", "inf", "primary"],
    ["--timeout", "1e9", "primary"],
    ["--timeout", "soon", "primary"],
    ["--timeout", "1", "--timeout", "2", "primary"],
    ["--restart", "--restart", "backup"],
    ["--conntrackd", "/bin/true", "backup"],  # only with --restart
    ["-C"],
])
def test_bad_arguments(argv: list[str], conf: Path) -> None:
    with pytest.raises(UsageError):
        parse_args(["-C", str(conf), *argv] if argv != ["-C"] else ["primary", "-C"])


def test_config_checks(tmp_path: Path, conf: Path) -> None:
    with pytest.raises(UsageError, match="No such file"):
        parse_args(["-C", str(tmp_path / "absent"), "primary"])
    with pytest.raises(UsageError, match="not a regular file"):
        parse_args(["-C", str(tmp_path), "primary"])
    with pytest.raises(UsageError, match="given more than once"):
        parse_args(["-C", str(conf), "-C", str(conf), "primary"])
    bad = tmp_path / "bad.conf"
    bad.write_text("General {\n  UNIX { Path }\n")
    with pytest.raises(UsageError, match=r"bad\.conf:\d+:\d+"):
        parse_args(["-C", str(bad), "primary"])
    nosock = write_conf(tmp_path, None, "nosock.conf")
    with pytest.raises(UsageError, match=r"no UNIX \{ Path \}"):
        parse_args(["-C", str(nosock), "primary"])
    notexec = tmp_path / "conntrackd"
    notexec.write_text("")
    with pytest.raises(UsageError, match="not executable"):
        parse_args(["-C", str(conf), "--restart", "--conntrackd", str(notexec), "backup"])


def test_good_arguments(tmp_path: Path, conf: Path) -> None:
    o = parse_args(["-C", str(conf), "primary"])
    assert o is not None
    assert (o.state, o.socket_path, o.lockfile, o.timeout, o.restart, o.syslog) == (
        "primary", str(tmp_path / "ctl"), str(tmp_path / "lock"), 60.0, False, True)
    o = parse_args(["--config", str(conf), "--timeout", "2.5", "--no-syslog", "--restart",
                    "--conntrackd", "/bin/true", "fault"])  # --restart accepted on every state (one arg list)
    assert o is not None and (o.timeout, o.restart, o.conntrackd, o.syslog) == (2.5, True, "/bin/true", False)


def test_main_exit_2_and_one_line(capsys, conf: Path) -> None:
    rc, lines = run_main(capsys, "-C", str(conf), "master")
    assert rc == 2
    assert len(lines) == 1 and lines[0].startswith("conntrackd-notify: unknown state 'master'")


def test_help(capsys) -> None:
    assert notify.main(["--help"]) == 0
    assert "primary" in capsys.readouterr().out


# ------------------------------------------------------------------------------ against a fake server


@pytest.mark.parametrize(("state", "codes", "names"), [
    ("primary", [46, 45, 44, 22], ["commit", "flush", "resync", "bulk"]),
    ("backup", [21, 26, 23], ["check", "timers", "request-resync"]),
    ("fault", [26], ["timers"]),
])
def test_main_against_fake_server(capsys, fake, state, codes, names) -> None:
    d, conf = fake(answers={21: b"cache internal:\n" * 100})
    rc, lines = run_main(capsys, "-C", str(conf), state)
    assert rc == 0, lines
    assert d.codes == codes  # one connection per step, in order
    assert len(lines) == 1
    assert summary_steps(lines) == [(n, "ok") for n in names]


@pytest.mark.parametrize(("state", "codes"), [
    ("primary", [46, 45, 44, 22]),
    ("backup", [21, 33, 23]),
    ("fault", [33]),
])
def test_direct_inject_never_schedules_the_purge(capsys, fake, state, codes) -> None:
    """DisableExternalCache on: the kernel table is the synced state, and -t would flush all of it;
    the internal cache alone is flushed (code 33, what `conntrackd -f internal` sends)."""
    d, conf = fake(inject=True, answers={21: b"cache internal:\n"})
    rc, lines = run_main(capsys, "-C", str(conf), state)
    assert rc == 0, lines
    assert d.codes == codes
    assert lines[-1].startswith(f"conntrackd-notify: {state}: ") and "timers" not in lines[-1]


@pytest.mark.parametrize(("state", "codes"), [("backup", [21, 26, 23]), ("fault", [26])])
def test_direct_inject_with_our_daemon_keeps_the_delayed_purge(capsys, fake, state, codes) -> None:
    """A config only our daemon accepts: -t, which ours turns into a delayed flush of the internal cache
    alone in this mode (the demoted node keeps syncing what it forwards for PurgeTimeout)."""
    d, conf = fake(inject=True, ours=True, answers={21: b"cache internal:\n"})
    rc, lines = run_main(capsys, "-C", str(conf), state)
    assert rc == 0, lines
    assert d.codes == codes


def test_plan_without_purge() -> None:
    assert notify.plan("backup", direct_inject=True) == (notify.CHECK, notify.FLUSH_INTERNAL, notify.REQUEST)
    assert notify.plan("fault", direct_inject=True) == (notify.FLUSH_INTERNAL,)
    # DisableInternalCache: no cache, and -f internal would flush the kernel table there
    assert notify.plan("backup", direct_inject=True, internal_cache=False) == (notify.CHECK, notify.REQUEST)
    assert notify.plan("fault", direct_inject=True, internal_cache=False) == ()
    assert notify.plan("primary", direct_inject=True) == notify.PLANS["primary"]
    assert notify.plan("backup") == notify.PLANS["backup"]
    assert notify.FLUSH_INTERNAL.action == parse_argv(["-f", "internal"]).action
    assert notify.plan("backup", direct_inject=True, ours=True) == notify.PLANS["backup"]
    assert notify.plan("backup", direct_inject=True, internal_cache=False, ours=True) == (notify.CHECK,
                                                                                           notify.REQUEST)


def test_commit_is_waited_for(capsys, fake) -> None:
    """The commit step lasts until the daemon closes the connection (C keeps it open until done)."""
    d, conf = fake(delays={46: 0.2})
    rc, lines = run_main(capsys, "-C", str(conf), "primary")
    assert rc == 0
    assert re.search(r"commit (\d+\.\d+)s", lines[-1]), lines
    assert d.codes == [46, 45, 44, 22]
    assert d.closed_early == []  # still connected when the server closed: the client waited


def test_timeout_fails_the_step_and_continues(capsys, fake) -> None:
    d, conf = fake(drop={46})
    rc, lines = run_main(capsys, "-C", str(conf), "--timeout", "0.3", "primary")
    assert rc == 1
    assert lines[0] == f"conntrackd-notify: primary: commit (-c) failed: no answer from `{d.path}' within 0.3s"
    assert summary_steps(lines) == [("commit", "FAILED"), ("flush", "ok"), ("resync", "ok"), ("bulk", "ok")]


def test_unreachable_daemon_exit_1_all_steps_tried(capsys, tmp_path) -> None:
    conf = write_conf(tmp_path, tmp_path / "nobody")
    rc, lines = run_main(capsys, "-C", str(conf), "primary")
    assert rc == 1
    assert len(lines) == 5
    assert all("can't connect to" in ln and "No such file or directory" in ln for ln in lines[:4])
    assert [s for _, s in summary_steps(lines)] == ["FAILED"] * 4


def test_refused_socket(capsys, tmp_path) -> None:
    """A socket file nobody listens on (daemon crashed): ECONNREFUSED counts as "not running"."""
    path = tmp_path / "ctl"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()
    res = notify.call_daemon(str(path), 21, 1.0)
    assert res.unreachable and "Connection refused" in (res.error or "")


def test_restart_end_to_end(capsys, tmp_path) -> None:
    """backup --restart with no daemon: LockFile removed, `<conntrackd> -C FILE -d` run without a shell,
    the daemon it starts answers -t and -n."""
    sock = tmp_path / "ctl"
    conf = write_conf(tmp_path, sock)
    (tmp_path / "lock").write_text("")
    argv_log = tmp_path / "argv"
    fake_bin = tmp_path / "conntrackd"
    # A stand-in daemon binary: records its argv, binds the socket, detaches and serves 2 requests.
    fake_bin.write_text(
        f"#!{sys.executable}\n"
        "import os, socket, sys\n"
        f"open({str(argv_log)!r}, 'w').write(repr(sys.argv[1:]))\n"
        "s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[2].replace('conntrackd.conf', 'ctl'))\n"
        "s.listen(4); s.settimeout(10)\n"
        "if os.fork(): os._exit(0)\n"
        "os.setsid(); [os.close(fd) for fd in (0, 1, 2)]\n"
        f"log = open({str(tmp_path / 'served')!r}, 'w')\n"
        "for _ in range(2):\n"
        "    c, _ = s.accept(); log.write(str(int.from_bytes(c.recv(4), sys.byteorder)) + '\\n'); log.flush()"
        "; c.close()\n")
    fake_bin.chmod(fake_bin.stat().st_mode | stat.S_IXUSR)
    rc, lines = run_main(capsys, "-C", str(conf), "--restart", "--conntrackd", str(fake_bin), "backup")
    assert argv_log.read_text() == repr(["-C", str(conf), "-d"])
    assert not (tmp_path / "lock").exists()
    assert rc == 0, lines
    assert (tmp_path / "served").read_text().split() == ["26", "23"]
    assert summary_steps(lines) == [("check", "DOWN"), ("restart", "ok"), ("timers", "ok"), ("request-resync", "ok")]
    assert any("stale LockFile removed" in ln for ln in lines)


def test_restart_failure_exit_1(capsys, tmp_path) -> None:
    conf = write_conf(tmp_path, tmp_path / "ctl")
    fake_bin = tmp_path / "conntrackd"
    fake_bin.write_text(f"#!{sys.executable}\nimport sys\nprint('lockfile exists', file=sys.stderr)\nsys.exit(1)\n")
    fake_bin.chmod(0o755)
    rc, lines = run_main(capsys, "-C", str(conf), "--restart", "--conntrackd", str(fake_bin), "backup")
    assert rc == 1
    assert any(re.search(r"cannot launch conntrackd: `.*conntrackd -d' exited 1: lockfile exists", ln) for ln in lines)
    assert [n for n, _ in summary_steps(lines)] == ["check", "restart"]


def test_no_shell_anywhere() -> None:
    src = Path(notify.__file__).read_text()
    assert "shell=True" not in src and "os.system" not in src and "popen(" not in src.lower().replace("subprocess", "")


def test_syslog_used_by_default(monkeypatch, capsys, fake) -> None:
    calls: list[tuple] = []
    monkeypatch.setattr(notify.syslog, "openlog", lambda *a: calls.append(("open", *a)))
    monkeypatch.setattr(notify.syslog, "syslog", lambda *a: calls.append(("log", *a)))
    monkeypatch.setattr(notify.syslog, "closelog", lambda: calls.append(("close",)))
    _, conf = fake()
    assert notify.main(["-C", str(conf), "fault"]) == 0
    assert calls[0] == ("open", "conntrackd-notify", syslog.LOG_PID, syslog.LOG_DAEMON)
    assert calls[1][:2] == ("log", syslog.LOG_NOTICE) and calls[1][2].startswith("fault: timers ")
    assert calls[-1] == ("close",)
    assert capsys.readouterr().err.startswith("conntrackd-notify: fault: timers ")


def test_entry_point_runs_as_module(tmp_path) -> None:
    import subprocess

    conf = write_conf(tmp_path, tmp_path / "ctl")
    p = subprocess.run([sys.executable, "-m", "conntrack_tools.daemon.notify", "--no-syslog", "-C", str(conf),
                        "fault"], capture_output=True, text=True, timeout=30, env={**os.environ})
    assert p.returncode == 1
    assert p.stderr.splitlines()[-1].startswith("conntrackd-notify: fault: timers ")
