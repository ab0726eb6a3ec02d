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
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import stop_process
from tests.netns.daemon_proc import wait_for

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
    wait_for(lambda: proc.poll() is not None or nsrun(NS, *OURS, "-C", str(conf), "-s", check=False).returncode == 0,
             10, "daemon answers -s", show=lambda: (d / "stdout").read_text())
    return proc


def as_nobody(*cmd: str, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return subprocess.run(["ip", "netns", "exec", NS, "setpriv", "--reuid=nobody", "--regid=nogroup",
                           "--clear-groups", *cmd], capture_output=True, text=True, timeout=30, cwd="/", env=env)


@pytest.fixture(scope="module")
def nobody_python(netns):
    """(interpreter, package dir) that ``nobody`` can run: the package copied to a 0755 temp dir (the checkout may
    sit in a 0700 directory), and this Python or a system one of the same version (a venv or pyenv under
    /root is not readable by nobody)."""
    d = Path(tempfile.mkdtemp(prefix="ctpy-nobody-"))
    try:
        shutil.copytree(PKG, d / "conntrack_tools", ignore=shutil.ignore_patterns("__pycache__"))
        for path in (d, *d.rglob("*")):
            path.chmod(0o755 if path.is_dir() else 0o644)
        want = f"{sys.version_info[0]}.{sys.version_info[1]}"
        candidates = [sys.executable, getattr(sys, "_base_executable", sys.executable),
                      shutil.which(f"python{want}") or "", f"/usr/bin/python{want}", f"/usr/local/bin/python{want}"]
        tried = []
        for py in dict.fromkeys(c for c in candidates if c):
            code = "import sys, conntrack_tools.daemon.main; print('%d.%d' % sys.version_info[:2])"
            probe = as_nobody(py, "-c", code, pythonpath=d)
            if probe.returncode == 0 and probe.stdout.strip() == want:
                yield py, d
                return
            tried.append(f"{py}: {(probe.stderr or probe.stdout).strip()[-160:]}")
        pytest.skip("no Python " + want + " that nobody can run: " + "; ".join(tried))
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------------------------ control socket


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT or shutil.which("setpriv") is None, reason="needs root and setpriv")
def test_control_socket_refuses_other_users(netns, workdir, nobody_python) -> None:
    py, pkg_copy = nobody_python
    conf = write_conf(workdir)
    proc = start(conf, workdir)
    try:
        assert proc.poll() is None, (workdir / "stdout").read_text()
        st = os.stat(workdir / "ctl")
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == 0
        # our client, as nobody: C's message, exit 1, nothing answered
        for args in (["-s"], ["-i"], ["-k"], ["-f"]):
            r = as_nobody(py, "-m", "conntrack_tools.daemon.main", "-C", str(conf), *args, pythonpath=pkg_copy)
            assert r.returncode == 1, (args, r)
            assert "can't connect: is conntrackd running? appropriate permissions?" in r.stderr, r.stderr
            assert r.stdout == ""
        # a raw connect(2), as nobody: EACCES
        r = as_nobody(py, "-c", "import socket,sys\ns=socket.socket(socket.AF_UNIX)\n"
                      f"try:\n s.connect({str(workdir / 'ctl')!r})\nexcept OSError as e:\n print(e.errno)\n"
                      "else:\n print('connected')")
        assert r.stdout.strip() == str(errno.EACCES), r
        # the daemon survived the attempts (-k by nobody did nothing) and root still gets answers
        assert proc.poll() is None
        assert "cache stats" in nsrun(NS, *OURS, "-C", str(conf), "-s").stdout
    finally:
        stop_process(proc)


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
CODEGEN = {"eval", "exec"}
# exec() of generated Python (speed: per-layout struct packers/decoders/renderers), with why no outside text gets in.
# Searched over the whole package: conntrack_tools/compiled.py is the one place that runs generated code.
ALLOWED_CODEGEN = {
    ("compiled.py", "define", "exec"):
        "compiled layouts (netlink/shapes, formats/fastline, cli/shapefilter, sync/entry_packer, "
        "sync/transcode): sources built from fixed tables, struct codes and integer indices/offsets "
        "recorded from a message's layout (and the typed values of a conntrack request); no string from "
        "a message, a config or a peer; an explicit namespace, never a module's globals",
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
    """AST: process calls only where documented in daemon/, exec/eval only in compiled.py; shell=True nowhere."""
    found = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = str(path.relative_to(PKG))
        in_daemon = rel.startswith("daemon/")
        for name, owner, node in _calls(path):
            if name in CODEGEN or (in_daemon and name in SHELLISH):
                found[(rel, owner, name)] = node
    allowed = set(ALLOWED_CALLS) | set(ALLOWED_CODEGEN)
    assert set(found) == allowed, f"undocumented process/eval calls: {set(found) - allowed}"
    for key, node in found.items():
        if key in ALLOWED_CALLS:
            assert isinstance(node.args[0], ast.List), "process started from a string, not an argv list"
        else:  # generated code: a local source string and an explicit namespace, never the module's globals
            assert isinstance(node.args[0], ast.Name) and len(node.args) == 2, ast.unparse(node)
            assert isinstance(node.args[1], ast.Name) and node.args[1].id != "globals", ast.unparse(node)
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
    try:
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
                    # started = answers -s on its control socket (or it exited: rejected at start-up)
                    try:
                        answers = wait_for(lambda proc=proc, conf=conf: proc.poll() is not None or nsrun(
                            NS + "c", *OURS, "-C", str(conf), "-s", check=False).returncode == 0, 10,
                            f"daemon with {line!r}")
                        outcomes["started"] += answers and proc.poll() is None
                    finally:
                        stop_process(proc)
                assert not any(m.exists() for m in marks), f"config value was executed: {line!r}"
    finally:
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
        for ns, dev in ((NS, "ctpy-s1"), (NS, "ctpy-s2"), (PEER, "ctpy-p1"), (PEER, "ctpy-p2")):
            wait_for(lambda ns=ns, dev=dev: "state UP" in nsrun(ns, "ip", "link", "show", dev).stdout, 10,
                     f"{dev} up in {ns}")
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
NOT_SECRET_RX = re.compile(r"\{\{\s*\w+_(file|path)\s*\}\}")
SECRET_TEMPLATES = {"conntrackd-sync.key.j2"}  # the sync keyring (AuthKey)
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
        # a variable that names where a secret lives (conntrackd_auth_key_file) is not one
        secret = [m.group(0) for m in SECRET_RX.finditer(text) if not NOT_SECRET_RX.search(m.group(0))]
        if src in SECRET_TEMPLATES:  # the whole file is the secret (its expressions name no secret)
            secret.append(src)
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
    assert any("auth_key.yml" in w and kind == "secret" for w, kind in checked), checked  # the keyring task


def test_keepalived_verify_hides_the_password() -> None:
    tasks = yaml.safe_load((REPO / "roles/keepalived/tasks/verify.yml").read_text())
    for t in tasks:
        if "keepalived_auth_pass" in str(t):
            assert t.get("no_log") is True, t.get("name")


# ------------------------------------------------------------------------------------ multicast filter

REL = f"{os.getpid() % 100000}"
REL_A, REL_B = f"ctpy-rel-a{REL}", f"ctpy-rel-b{REL}"
REL_A1, REL_B1 = f"ctpy-rel{REL}a1", f"ctpy-rel{REL}b1"  # the sync link 10.78.1.0/24
REL_A2, REL_B2 = f"ctpy-rel{REL}a2", f"ctpy-rel{REL}b2"  # another link 10.78.2.0/24
GROUP, GPORT = "225.0.0.78", 3798
CONNTRACK = [sys.executable, "-c", "from conntrack_tools.cli.main import main; main()"]  # our conntrack

FORGE = r"""
import socket, sys, time
from ipaddress import IPv4Address
sys.path.insert(0, sys.argv[1])
from conntrack_tools.daemon.sync import wire
from conntrack_tools.flow import IPS_ASSURED, IPS_CONFIRMED
src, ifaddr, group, port, first = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((src, 0))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ifaddr))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
for i in range(5):  # one flow per datagram, each a HELLO (a fresh peer's first message is taken)
    f = wire.SyncFlow(orig=wire.FlowTuple(IPv4Address("192.0.2.%d" % (first + i)), IPv4Address("198.51.100.9"),
                                          6, 40000 + first + i, 80),
                      status=IPS_CONFIRMED | IPS_ASSURED, tcp_state=3, timeout=300, mark=0)
    s.sendto(wire.encode_flow_message(wire.MsgType.CT_NEW, f, i + 1, wire.MsgFlag.HELLO), (group, port))
    time.sleep(0.02)
"""

LISTEN = r"""
import socket, sys, time
group, port, ifaddr = sys.argv[1], int(sys.argv[2]), sys.argv[3]
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
r.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
r.bind((group, port))
r.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, socket.inet_aton(group) + socket.inet_aton(ifaddr))
r.setsockopt(socket.IPPROTO_IP, 49, 0)  # IP_MULTICAST_ALL=0: count only what arrives on its own interface
r.settimeout(0.2)
print("ready", flush=True)
n, end = 0, time.monotonic() + float(sys.argv[4])
while time.monotonic() < end:
    try:
        r.recv(65536)
        n += 1
    except TimeoutError:
        pass
print(n, flush=True)
"""


def _rel_conf(d: Path, dev: str, me: str) -> Path:
    conf = d / "conntrackd.conf"
    conf.write_text(
        "Sync {\n Mode FTFW {\n  ResendQueueSize 131072\n  PurgeTimeout 1\n }\n"
        f" Multicast {{\n  IPv4_address {GROUP}\n  Group {GPORT}\n  IPv4_interface {me}\n  Interface {dev}\n"
        "  Checksum on\n }\n}\n"
        "General {\n Systemd off\n HashSize 8192\n HashLimit 65536\n"
        f" LogFile {d / 'log'}\n Syslog off\n LockFile {d / 'lock'}\n UNIX {{ Path {d / 'ctl'} }}\n"
        " Scheduler { Type RR Priority 0 }\n"
        " Filter From Userspace {\n  Address Ignore {\n   IPv4_address 127.0.0.1\n   IPv4_address 10.78.0.0/16\n"
        "   IPv4_address 10.99.0.0/16\n  }\n }\n}\n")
    return conf


def _rel_client(ns: str, conf: Path, *args: str) -> subprocess.CompletedProcess:
    return nsrun(ns, *OURS, "-C", str(conf), *args, check=False)


def _rel_wait(cond, timeout: float, what: str, show=lambda: ""):
    return wait_for(cond, timeout, what, show, interval=0.1)


C_DAEMON = "/usr/sbin/conntrackd"


@pytest.mark.root
@pytest.mark.skipif(not IS_ROOT, reason="needs root for network namespaces")
@pytest.mark.parametrize("impl", ["py", pytest.param("c", marks=pytest.mark.skipif(
    not os.access(C_DAEMON, os.X_OK), reason="no C conntrackd"))])
def test_multicast_wrong_interface_or_source_is_dropped(tmp_path, impl) -> None:
    """FTFW daemon B on a Multicast channel (Interface b1, 10.78.1.2). From namespace A, well-formed
    CT_NEW datagrams to the group: from 10.78.1.9 (on the link: control, must be taken), over the other
    link b2 (wrong interface, while another socket in B joined the group there), from 10.99.0.9 (right
    interface, source outside b1's prefixes) and from 10.78.1.2 (B's own address, accept_local on so the
    kernel lets it through).  Ours: only the control flows reach B's external cache; the drops are
    counted in ``-s network`` (text and JSON); A's daemon, the legit peer, still syncs its kernel table
    to B.  ``impl=c`` (B is C 1.4.7) records C's behaviour: it takes every forged flow."""
    created: list[str] = []
    procs: list[subprocess.Popen] = []
    try:
        for n in (REL_A, REL_B):
            subprocess.run(["ip", "netns", "add", n], check=True)
            created.append(n)
            nsrun(n, "ip", "link", "set", "lo", "up")
        for i, (a, b) in enumerate(((REL_A1, REL_B1), (REL_A2, REL_B2)), start=1):
            subprocess.run(["ip", "link", "add", a, "netns", REL_A, "type", "veth", "peer", "name", b,
                            "netns", REL_B], check=True)
            nsrun(REL_A, "ip", "addr", "add", f"10.78.{i}.1/24", "dev", a)
            nsrun(REL_B, "ip", "addr", "add", f"10.78.{i}.2/24", "dev", b)
            nsrun(REL_A, "ip", "link", "set", a, "up")
            nsrun(REL_B, "ip", "link", "set", b, "up")
        # forger addresses on A's end of the sync link (after 10.78.1.1, so A's daemon keeps that source)
        for addr in ("10.78.1.9/24", "10.99.0.9/32"):
            nsrun(REL_A, "ip", "addr", "add", addr, "dev", REL_A1)
        # B: no reverse-path filter (the forged source would otherwise be dropped by the kernel before
        # the socket) and accept_local on b1 (else a datagram from B's own address is a martian)
        for key in ("all", "default", REL_B1, REL_B2):
            nsrun(REL_B, "sysctl", "-qw", f"net.ipv4.conf.{key}.rp_filter=0")
        nsrun(REL_B, "sysctl", "-qw", f"net.ipv4.conf.{REL_B1}.accept_local=1")

        da, db = tmp_path / "A", tmp_path / "B"
        da.mkdir()
        db.mkdir()
        conf_a, conf_b = _rel_conf(da, REL_A1, "10.78.1.1"), _rel_conf(db, REL_B1, "10.78.1.2")
        for ns, conf, d, daemon in ((REL_B, conf_b, db, [C_DAEMON] if impl == "c" else OURS),
                                    (REL_A, conf_a, da, OURS)):
            out = open(d / "stdout", "w")
            procs.append(subprocess.Popen(["ip", "netns", "exec", ns, *daemon, "-C", str(conf)], stdout=out,
                                          stderr=subprocess.STDOUT, cwd=REPO))
            _rel_wait(lambda ns=ns, conf=conf: _rel_client(ns, conf, "-s").returncode == 0, 10, f"daemon in {ns}",
                      lambda d=d: (d / "stdout").read_text())

        def external() -> str:
            return _rel_client(REL_B, conf_b, "-e").stdout

        # another application in B joins the group on b2: the host accepts the group there
        listener = subprocess.Popen(["ip", "netns", "exec", REL_B, sys.executable, "-c", LISTEN, GROUP, str(GPORT),
                                     "10.78.2.2", "6"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(listener)
        assert listener.stdout.readline().strip() == "ready", listener.stderr.read()

        def forge(src: str, ifaddr: str, first: int) -> None:
            r = nsrun(REL_A, sys.executable, "-c", FORGE, str(REPO), src, ifaddr, GROUP, str(GPORT), str(first),
                      check=False)
            assert r.returncode == 0, r.stderr

        forge("10.78.1.9", "10.78.1.9", 10)  # control: a source on the link -> 192.0.2.10-14 taken
        forge("10.78.2.1", "10.78.2.1", 20)  # wrong interface (b2)
        forge("10.99.0.9", "10.99.0.9", 30)  # right interface, source outside b1's prefixes
        nsrun(REL_A, "ip", "addr", "add", "10.78.1.2/32", "dev", REL_A1)  # only while forging: B's address
        forge("10.78.1.2", "10.78.1.2", 40)  # B's own address
        nsrun(REL_A, "ip", "addr", "del", "10.78.1.2/32", "dev", REL_A1)
        # the legit peer: a flow in A's kernel table
        r = nsrun(REL_A, *CONNTRACK, "-I", "-p", "tcp", "-s", "192.0.2.200",
                  "-d", "198.51.100.200", "--sport", "1200", "--dport", "443", "--state", "ESTABLISHED", "-u",
                  "ASSURED", "-t", "300", check=False)
        assert r.returncode == 0, r.stderr
        try:  # A follows its kernel table (the flow is in its internal cache), then sends it to B
            _rel_wait(lambda: "src=192.0.2.200 " in _rel_client(REL_A, conf_a, "-i").stdout, 5, "A's cache")
        except AssertionError:  # not this test's subject: say so, and let a resync catch up
            print("\nA's daemon missed the NEW event; resyncing A (-R)")
            _rel_client(REL_A, conf_a, "-R")

        _rel_wait(lambda: "src=192.0.2.200 " in external() and external().count("src=192.0.2.1") >= 5, 20,
                  "control flows and the legit flow in B's external cache",
                  lambda: external() + _rel_client(REL_B, conf_b, "-s", "network").stdout
                  + _rel_client(REL_A, conf_a, "-s").stdout)
        got_b2 = int(listener.communicate(timeout=20)[0].split()[-1])
        assert got_b2 == 5, "the wrong-interface datagrams did not even reach B's host on b2"
        ext = external()
        forged = {first: sum(f"src=192.0.2.{first + i} " in ext for i in range(5)) for first in (20, 30, 40)}
        if impl == "c":  # C 1.4.7: no filter (INADDR_ANY bind, IP_MULTICAST_ALL on, no source check)
            print(f"\nC 1.4.7 took forged flows: wrong interface {forged[20]}/5, wrong source {forged[30]}/5, "
                  f"own address {forged[40]}/5")
            assert forged == {20: 5, 30: 5, 40: 5}, (forged, ext)
            return
        assert forged == {20: 0, 30: 0, 40: 0}, (forged, ext)

        net = _rel_client(REL_B, conf_b, "-s", "network").stdout
        m = re.search(r"(\d+) Dropped recv \(wrong interface (\d+), group (\d+), source (\d+), own (\d+)\)", net)
        assert m, net
        total, iface, group, source, own = map(int, m.groups())
        assert source == 5 and own == 5 and group == 0, net
        # wrong interface: SO_BINDTODEVICE + IP_MULTICAST_ALL=0 stop them in the kernel (the userspace
        # check is the second line), so they are not counted here; 0 or 5 are both correct
        assert iface in (0, 5) and total == source + own + iface + group, net
        js = json.loads(_rel_client(REL_B, conf_b, "-s", "network", "-o", "json").stdout.strip().splitlines()[-1])
        link = js["links"][0] if "links" in js else js["network"]["links"][0]
        assert link["drop_recv"] == total and link["drop_source"] == 5 and link["drop_own"] == 5, js
        print(f"\nmulticast filter: dropped {total} (source {source}, own {own}, iface {iface}); "
              f"wrong-interface datagrams seen by the other socket on b2: {got_b2}; control + legit synced")
    finally:
        for p in procs:
            stop_process(p)
        for n in created:
            subprocess.run(["ip", "netns", "del", n], check=False)
