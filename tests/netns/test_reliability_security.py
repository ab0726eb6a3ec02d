"""Security properties: control socket permissions, no shell from config values or notify
arguments, multicast from the wrong interface dropped, roles keep secrets unreadable.

Root tests run our daemon in ``ctpy-sec-<pid>`` (and a peer namespace for multicast); the
socket lives in a 0755 directory so that only the socket's own 0600 mode stops another user.
The non-root user is ``nobody`` through ``setpriv`` (no user is created). Static tests (AST of
the daemon, YAML of the roles) need no root.
"""

from __future__ import annotations

import ast
import errno
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
PKG = REPO / "conntrack_tools"
NS = f"ctpy-sec-{os.getpid()}"
PEER = f"ctpy-secp-{os.getpid()}"
OURS = [sys.executable, "-m", "conntrack_tools.daemon.main"]
NOTIFY = [sys.executable, "-m", "conntrack_tools.daemon.notify"]
IS_ROOT = os.geteuid() == 0
root = [pytest.mark.root, pytest.mark.skipif(not IS_ROOT, reason="needs root for network namespaces and setpriv")]


def nsrun(ns: str, *cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    kw.setdefault("timeout", 30)
    return subprocess.run(["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, check=check,
                          cwd=REPO, **kw)


@pytest.fixture(scope="module")
def netns():
    if not IS_ROOT:
        pytest.skip("needs root")
    subprocess.run(["ip", "netns", "add", NS], check=True)
    nsrun(NS, "ip", "link", "set", "lo", "up")
    yield NS
    subprocess.run(["ip", "netns", "del", NS], check=False)


@pytest.fixture
def workdir():
    """A world-traversable directory (pytest's tmp_path is 0700, which would hide the socket's own mode)."""
    d = Path(f"/tmp/ctpy-sec-{os.getpid()}-{time.monotonic_ns()}")
    d.mkdir(mode=0o755)
    d.chmod(0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def write_conf(d: Path, extra: str = "") -> Path:
    conf = d / "conntrackd.conf"
    conf.write_text("General {\n  HashSize 8192\n  Systemd off\n"
                    f"  LockFile {d / 'lock'}\n  UNIX {{ Path {d / 'ctl'} }}\n{extra}}}\n"
                    f"Stats {{\n  LogFile {d / 'stats.log'}\n}}\n")
    conf.chmod(0o644)
    return conf


def start(conf: Path, d: Path) -> subprocess.Popen:
    out = open(d / "stdout", "w")
    proc = subprocess.Popen(["ip", "netns", "exec", NS, *OURS, "-C", str(conf)], stdout=out,
                            stderr=subprocess.STDOUT, cwd=REPO)
    end = time.monotonic() + 10
    while nsrun(NS, *OURS, "-C", str(conf), "-s", check=False).returncode != 0:
        if proc.poll() is not None or time.monotonic() > end:
            break
        time.sleep(0.1)
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def as_nobody(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", NS, "setpriv", "--reuid=nobody", "--regid=nogroup",
                           "--clear-groups", *cmd], capture_output=True, text=True, timeout=30, cwd="/")


# ------------------------------------------------------------------------------------ control socket


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_control_socket_refuses_other_users(netns, workdir) -> None:
    probe = as_nobody(sys.executable, "-c", "import conntrack_tools")
    if probe.returncode != 0:
        pytest.skip(f"nobody cannot run this checkout's Python: {probe.stderr.strip()[-200:]}")
    conf = write_conf(workdir)
    proc = start(conf, workdir)
    try:
        assert proc.poll() is None, (workdir / "stdout").read_text()
        st = os.stat(workdir / "ctl")
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
        # our client, as nobody: C's message, exit 1, nothing answered
        for args in (["-s"], ["-i"], ["-k"], ["-f"]):
            r = as_nobody(*OURS, "-C", str(conf), *args)
            assert r.returncode == 1, (args, r)
            assert "can't connect: is conntrackd running? appropriate permissions?" in r.stderr, r.stderr
            assert r.stdout == ""
        # a raw connect(2), as nobody: EACCES
        r = as_nobody(sys.executable, "-c", "import socket,sys\ns=socket.socket(socket.AF_UNIX)\n"
                      f"try:\n s.connect({str(workdir / 'ctl')!r})\nexcept OSError as e:\n print(e.errno)\n"
                      "else:\n print('connected')")
        assert r.stdout.strip() == str(errno.EACCES), r
        # the daemon survived the attempts (-k by nobody did nothing) and root still gets answers
        assert proc.poll() is None
        assert "cache stats" in nsrun(NS, *OURS, "-C", str(conf), "-s").stdout
    finally:
        stop(proc)


# ------------------------------------------------------------------------------------ no shell

SHELLISH = {"os.system", "os.popen", "os.execv", "os.execve", "os.execvp", "os.execvpe", "os.execl", "os.execlp",
            "os.spawnv", "os.spawnl", "os.spawnvp", "os.posix_spawn", "os.posix_spawnp", "pty.spawn",
            "subprocess.run", "subprocess.Popen", "subprocess.call", "subprocess.check_call",
            "subprocess.check_output", "subprocess.getoutput", "subprocess.getstatusoutput", "eval", "exec"}
# Every process the daemon side may start, with why it is safe. A new one must be added here.
ALLOWED_CALLS = {
    ("daemon/notify.py", "start_daemon", "subprocess.run"):
        "conntrackd-notify --restart: argv list [conntrackd, -C, config, -d], no shell; the binary is "
        "checked to be a regular executable file by parse_args",
}


def _calls(path: Path):
    tree = ast.parse(path.read_text(), str(path))
    funcs = [(n, n.name) for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = ast.unparse(node.func)
        owner = next((fname for f, fname in funcs if f.lineno <= node.lineno <= (f.end_lineno or 0)), "<module>")
        yield name, owner, node


def test_daemon_runs_no_shell_commands() -> None:
    """AST over conntrack_tools/daemon: process/eval calls only where documented; shell=True nowhere."""
    found = {}
    for path in sorted((PKG / "daemon").rglob("*.py")):
        rel = str(path.relative_to(PKG))
        for name, owner, node in _calls(path):
            if name in SHELLISH:
                found[(rel, owner, name)] = node
    assert set(found) == set(ALLOWED_CALLS), f"undocumented process/eval calls: {set(found) - set(ALLOWED_CALLS)}"
    for node in found.values():
        assert isinstance(node.args[0], ast.List), "process started from a string, not an argv list"
    for path in sorted(PKG.rglob("*.py")):
        for _name, _owner, node in _calls(path):
            for kw in node.keywords:
                assert not (kw.arg == "shell" and not (isinstance(kw.value, ast.Constant) and not kw.value.value)), \
                    f"{path}:{node.lineno}: shell=True"
    text = "\n".join(p.read_text() for p in (PKG / "daemon").rglob("*.py"))
    assert not re.search(r"\bimport (pty|commands)\b|/bin/sh|bash -c", text)


INJECTIONS = ["$(touch${IFS}MARK)", "`touch${IFS}MARK`", ";touch${IFS}MARK", "|touch${IFS}MARK", "&&touch${IFS}MARK",
              '"$(touch MARK)"', "$(touch MARK)"]
FIELDS = ["  LogFile {d}/log{v}\n", "  LockFile {d}/lock{v}\n", "  UNIX {{ Path {d}/ctl{v} }}\n",
          "  Syslog {v}\n", "  NetlinkBufferSize {v}\n"]


def test_config_values_never_reach_a_shell(workdir) -> None:
    """--config-test (and, as root, a daemon start in a netns) on configs with shell syntax in values.

    The marker is named absolutely (a value with '/' is never a usable path, so the daemon
    refuses it) and relatively (the daemon then really creates files with these names, in
    the working directory it was started from: still no shell).
    """
    name = f"ctpy-pwned-{os.getpid()}"
    mark = workdir / name
    marks = [mark, REPO / name, Path("/") / name]
    outcomes = {"rejected": 0, "accepted": 0, "started": 0}
    values = [v.replace("MARK", str(mark)) for v in INJECTIONS] + [v.replace("MARK", name) for v in INJECTIONS]
    for i, v in enumerate(values):
        for j, field in enumerate(FIELDS):
            d = workdir / f"c{i}-{j}"
            d.mkdir()
            line = field.format(d=d, v=v)
            conf = d / "conntrackd.conf"
            if "LockFile" in field or "UNIX" in field:
                conf.write_text(f"General {{\n  Systemd off\n{line}"
                                + ("" if "LockFile" in field else f"  LockFile {d}/lock\n")
                                + ("" if "UNIX" in field else f"  UNIX {{ Path {d}/ctl }}\n") + "}\n")
            else:
                conf.write_text(f"General {{\n  Systemd off\n  LockFile {d}/lock\n  UNIX {{ Path {d}/ctl }}\n"
                                f"{line}}}\n")
            r = subprocess.run([*OURS, "--config-test", "-C", str(conf)], capture_output=True, text=True,
                               timeout=30, cwd=REPO)
            assert "Traceback" not in r.stderr, r.stderr
            outcomes["rejected" if r.returncode else "accepted"] += 1
            if r.returncode == 0 and IS_ROOT:
                subprocess.run(["ip", "netns", "add", NS + "c"], check=False, capture_output=True)
                proc = subprocess.Popen(["ip", "netns", "exec", NS + "c", *OURS, "-C", str(conf)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=workdir,
                                        env={**os.environ, "PYTHONPATH": str(REPO)})
                end = time.monotonic() + 5
                while proc.poll() is None and time.monotonic() < end and not any(d.glob("ctl*")):
                    time.sleep(0.05)
                time.sleep(0.2)
                outcomes["started"] += proc.poll() is None
                stop(proc)
            assert not any(m.exists() for m in marks), f"config value was executed: {line!r}"
    if IS_ROOT:
        subprocess.run(["ip", "netns", "del", NS + "c"], check=False, capture_output=True)
    print(f"\nshell-syntax config values: {outcomes}; marker never created")
    assert not any(m.exists() for m in marks)
    assert outcomes["accepted"] and (outcomes["started"] or not IS_ROOT), outcomes


def test_notify_arguments_never_reach_a_shell(workdir) -> None:
    mark = workdir / "pwned"
    conf = write_conf(workdir)
    hostile = [
        ["primary; touch " + str(mark)],
        ["primary", "-C", f"$(touch {mark})"],
        ["backup", "-C", str(conf), "--restart", "--conntrackd", f"/bin/sh -c 'touch {mark}'"],
        ["backup", "-C", str(conf), "--restart", "--conntrackd", "/bin/sh", "--timeout", f"1;touch {mark}"],
        ["fault", "-C", str(conf), "--timeout", "nan"],
        ["fault", "-C", str(conf), "--timeout", "1e9"],
        ["backup", "-C", str(conf), "--conntrackd", "/bin/true"],  # --conntrackd needs --restart
        ["primary", "-C", str(workdir)],  # a directory
        ["primary", "-C", str(conf), "-C", str(conf)],  # twice
    ]
    for argv in hostile:
        r = subprocess.run([*NOTIFY, *argv, "--no-syslog"], capture_output=True, text=True, timeout=30, cwd=REPO)
        assert r.returncode == 2, (argv, r.stdout, r.stderr)
        assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert not mark.exists(), argv


# ------------------------------------------------------------------------------------ multicast


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT, reason="needs root for network namespaces")
def test_multicast_from_wrong_interface_is_dropped(netns) -> None:
    """A Multicast channel on veth A never sees the group's datagrams arriving on veth B."""

    subprocess.run(["ip", "netns", "add", PEER], check=True)
    try:
        for i in (1, 2):
            subprocess.run(["ip", "link", "add", f"ctpy-s{i}", "netns", NS, "type", "veth", "peer", "name",
                            f"ctpy-p{i}", "netns", PEER], check=True)
            nsrun(NS, "ip", "addr", "add", f"10.77.{i}.1/24", "dev", f"ctpy-s{i}")
            nsrun(PEER, "ip", "addr", "add", f"10.77.{i}.2/24", "dev", f"ctpy-p{i}")
            nsrun(NS, "ip", "link", "set", f"ctpy-s{i}", "up")
            nsrun(PEER, "ip", "link", "set", f"ctpy-p{i}", "up")
        code = f"""
import json, select, socket, sys, time
sys.path.insert(0, {str(REPO)!r})
from conntrack_tools.daemon.config import parse_config
from conntrack_tools.daemon.sync.channels import open_channel
cfg = parse_config('''Sync {{ Mode FTFW {{ }}
  Multicast {{ IPv4_address 225.0.0.77 Group 3799 IPv4_interface 10.77.1.1 Interface ctpy-s1 Checksum on }} }}
General {{ LockFile /tmp/x UNIX {{ Path /tmp/y }} }}''')
ch = open_channel(cfg.sync.channels[0])
print("ready", flush=True)
got = []
end = time.monotonic() + 3
while time.monotonic() < end:
    r, _, _ = select.select(ch.recv_socks, [], [], 0.2)
    for s in r:
        got += [d.decode() for d, _ in ch.recv(s)]
print(json.dumps(got), flush=True)
"""
        rx = subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-c", code], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
        assert rx.stdout.readline().strip() == "ready", rx.stderr.read()
        send = ("import socket,sys\nfor ifaddr, tag in (('10.77.2.2', 'wrong-if'), ('10.77.1.2', 'right-if')):\n"
                " s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                " s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ifaddr))\n"
                " for _ in range(5): s.sendto(tag.encode(), ('225.0.0.77', 3799))\n")
        time.sleep(0.3)
        nsrun(PEER, sys.executable, "-c", send)
        out, err = rx.communicate(timeout=10)
        got = json.loads(out.strip().splitlines()[-1])
        assert "wrong-if" not in got, got
        assert got.count("right-if") == 5, (got, err)
    finally:
        subprocess.run(["ip", "netns", "del", PEER], check=False)
        for i in (1, 2):
            subprocess.run(["ip", "-n", NS, "link", "del", f"ctpy-s{i}"], check=False, capture_output=True)


# ------------------------------------------------------------------------------------ roles

SECRET_RX = re.compile(r"\{\{[^}]*\b\w*(auth_pass|authkey|auth_key|secret|password|passwd|psk|token)\w*\b[^}]*\}\}",
                       re.I)
CONFIG_TEMPLATES = {"conntrackd.conf.j2", "keepalived.conf.j2", "ha_firewall.nft.j2"}


def _role_tasks():
    for path in sorted((REPO / "roles").glob("*/tasks/*.yml")):
        for task in yaml.safe_load(path.read_text()) or []:
            for mod in ("ansible.builtin.template", "template", "ansible.builtin.copy", "copy"):
                if mod in task:
                    yield path, task, mod, task[mod]


def test_roles_keep_secrets_unreadable() -> None:
    """Every rendered file that carries a secret is 0600 + no_log; every daemon config is 0600 anyway."""
    checked = []
    for path, task, _mod, args in _role_tasks():
        src = args.get("src")
        text = ""
        if src:
            cand = REPO / "templates" / src
            text = cand.read_text() if cand.exists() else ""
        text += str(args.get("content", ""))
        secret = [m.group(0) for m in SECRET_RX.finditer(text)]
        where = f"{path.relative_to(REPO)}: {task.get('name')}"
        if secret:
            assert str(args.get("mode")) in ("0600", "0400", "0640"), f"{where}: secret {secret[0]} but mode " \
                f"{args.get('mode')!r}"
            assert str(args.get("mode")) != "0640" or args.get("group") == "root", where
            assert task.get("no_log") not in (None, False, "false"), f"{where}: secret {secret[0]} without no_log"
            checked.append((where, "secret"))
        if src in CONFIG_TEMPLATES:
            assert str(args.get("mode")) == "0600" and args.get("owner") == "root", f"{where}: {args.get('mode')}"
            checked.append((where, "config"))
    kinds = {w.split(":")[0] for w, _ in checked}
    assert any("keepalived" in k for k in kinds) and any("conntrackd" in k for k in kinds), checked
    assert any(kind == "secret" for _, kind in checked), "no secret-bearing template found: detection broken?"


def test_keepalived_verify_hides_the_password() -> None:
    tasks = yaml.safe_load((REPO / "roles/keepalived/tasks/verify.yml").read_text())
    for t in tasks:
        if "keepalived_auth_pass" in str(t):
            assert t.get("no_log") is True, t.get("name")
