"""keepalived in network namespaces, shared by the keepalived netns tests (notify, failback readiness, drill).

:func:`link_pair` joins two namespaces with a veth pair and waits for carrier (else keepalived starts in FAULT);
:func:`notify_launcher` is the notify hook the tests point the rendered wrapper at (keepalived sends a hook's
output to /dev/null); :func:`start_keepalived` / :func:`stop_keepalived` run keepalived in the foreground of a
namespace and stop it and its VRRP child by pid (only processes started here are signalled).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import Netns, stop_process
from tests.netns.daemon_proc import wait_for

KEEPALIVED = "/usr/sbin/keepalived"

__all__ = ["KEEPALIVED", "link_pair", "notify_launcher", "notify_target", "start_keepalived", "stop",
           "stop_keepalived"]


def notify_target() -> list[str]:
    """The venv's console script if pyproject already declares it, else the same code via ``-m``."""
    installed = Path(sys.executable).with_name("conntrackd-notify")
    if os.access(installed, os.X_OK):
        return [str(installed)]
    return [sys.executable, "-m", "conntrack_tools.daemon.notify"]


def notify_launcher(tmp: Path, stderr_file: Path) -> str:
    """keepalived sends a notify script's stdout/stderr to /dev/null, so the test points the wrapper at
    this launcher: it appends stderr to ``stderr_file``, notes when keepalived started the hook
    (``launch <state> <CLOCK_MONOTONIC>``) and execs the real ``conntrackd-notify`` (no shell; the
    exec costs one extra interpreter start, ~20 ms, included in the measured notify wall time)."""
    launcher = tmp / "conntrackd-notify"
    launcher.write_text(
        f"#!{sys.executable}\nimport os, sys, time\n"
        f"fd = os.open({str(stderr_file)!r}, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)\n"
        "os.dup2(fd, 2)\n"
        # CLOCK_MONOTONIC is system-wide: the test compares it with its own time.monotonic()
        "os.write(2, f'launch {sys.argv[-1]} {time.monotonic():.6f}\\n'.encode())\n"
        f"target = {notify_target()!r}\n"
        "os.execv(target[0], target + sys.argv[1:])\n")
    launcher.chmod(0o755)
    return str(launcher)


stop = stop_process  # the callers' name for tests.conftest.stop_process


def link_pair(a: Netns, b: Netns, base: str, net: str) -> None:
    """veth ``<base>1`` in ``a`` (``<net>.1/24``) to ``<base>2`` in ``b`` (``<net>.2/24``), both up with carrier."""
    subprocess.run(["ip", "link", "add", f"{base}1", "netns", a.name, "type", "veth", "peer", "name", f"{base}2",
                    "netns", b.name], check=True)
    for idx, ns in ((1, a), (2, b)):
        ns.run(["ip", "addr", "add", f"{net}.{idx}/24", "dev", f"{base}{idx}"], check=True)
        ns.run(["ip", "link", "set", f"{base}{idx}", "up"], check=True)
    for idx, ns in ((1, a), (2, b)):  # carrier up on both ends, else keepalived starts in FAULT
        wait_for(lambda ns=ns, idx=idx: "state UP" in ns.run(["ip", "-o", "link", "show", f"{base}{idx}"]).stdout,
                 5, f"{base}{idx} carrier")


def start_keepalived(prefix: list[str], conf: Path, directory: Path, out_file: Path) -> subprocess.Popen:
    """keepalived in the foreground (``prefix``: ``ip netns exec NS``), its pid files in ``directory``, console
    log appended to ``out_file``."""
    with open(out_file, "a") as out:
        return subprocess.Popen(
            [*prefix, KEEPALIVED, "-n", "-l", "-D", "-G", "-P", "-f", str(conf),
             "-p", str(directory / "keepalived.pid"), "-r", str(directory / "vrrp.pid")],
            stdout=out, stderr=subprocess.STDOUT, cwd=directory)


def stop_keepalived(proc: subprocess.Popen | None, directory: Path) -> None:
    """Stop keepalived started by :func:`start_keepalived`, and its VRRP child (ours too: keepalived -P forks it;
    it exits with its parent, make sure)."""
    stop(proc)
    vrrp_pid = directory / "vrrp.pid"
    if vrrp_pid.exists():
        try:
            pid = int(vrrp_pid.read_text().split()[0])
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(KEEPALIVED.encode()):
                os.kill(pid, signal.SIGKILL)
        except (ValueError, IndexError, OSError):
            pass
