"""One conntrackd (ours or C's) in a network namespace, for the netns tests and bench/sync_run.py.

A :class:`Conntrackd` has its own directory (config, LockFile, UNIX path, output files), starts
the daemon with ``ip netns exec``, waits until it answers ``-s``, runs client commands against
it and stops it by pid (:func:`tests.conftest.stop_process`).  :class:`ModuleNetns` gives a test
module one :class:`tests.conftest.Netns` that plain helper functions can reach.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import C_CONNTRACK, REPO, Netns, stop_process

C_DAEMON = "/usr/sbin/conntrackd"
PY_DAEMON = [sys.executable, "-m", "conntrack_tools.daemon.main"]

__all__ = ["C_CONNTRACK", "C_DAEMON", "PY_DAEMON", "REPO", "Conntrackd", "ModuleNetns", "mask", "ns_run", "sh",
           "stopping", "wait_for"]


def wait_for(cond: Callable[[], object], timeout: float = 5.0, what: str = "condition",
             show: Callable[[], object] | None = None, interval: float = 0.02):
    """Poll ``cond`` until it returns something true (returned) or ``timeout`` passes (AssertionError)."""
    end = time.monotonic() + timeout
    while True:
        got = cond()
        if got:
            return got
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}" + (f": {show()}" if show else ""))
        time.sleep(interval)


def sh(*cmd: str, check: bool = False, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, check=check, timeout=timeout, cwd=REPO, **kw)


def ns_run(netns: str, *cmd: str, check: bool = False, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    """``cmd`` in namespace ``netns``, output captured as text."""
    return sh("ip", "netns", "exec", netns, *cmd, check=check, timeout=timeout, **kw)


class ModuleNetns:
    """One :class:`Netns` for all the tests of a module: ``netns = NS.fixture()`` creates it (then runs
    ``setup``) before the module's first test and deletes it after the last; ``NS.run`` runs in it."""

    def __init__(self, purpose: str, setup: Callable[[ModuleNetns], None] | None = None) -> None:
        self.purpose, self.setup = purpose, setup
        self.ns: Netns | None = None

    @property
    def name(self) -> str:
        assert self.ns is not None, "the module's netns fixture has not run"
        return self.ns.name

    def run(self, *cmd: str, check: bool = False, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
        assert self.ns is not None, "the module's netns fixture has not run"
        return self.ns.run(list(cmd), check=check, timeout=timeout, **kw)

    def fixture(self):
        @pytest.fixture(scope="module", autouse=True)
        def netns() -> Iterator[str]:
            self.ns = Netns(self.purpose)
            try:
                if self.setup:
                    self.setup(self)
                yield self.ns.name
            finally:
                self.ns.close()
                self.ns = None

        return netns


MASKS = [(re.compile(r"\[active since \d+s\]"), "[active since Ns]"),
         (re.compile(r"daemon uptime: .*"), "daemon uptime: X"),
         (re.compile(r"(current buffer size \(in bytes\):\t)\s*\d+"), r"\1N")]


def mask(text: str) -> str:
    """Client output without what differs from run to run (ages, uptime, buffer sizes)."""
    for rx, rep in MASKS:
        text = rx.sub(rep, text)
    return text


class Conntrackd:
    """conntrackd ``daemon`` (argv) in namespace ``netns``, config and files in ``directory``.

    Write ``self.conf`` (e.g. with :meth:`write_conf`) before :meth:`start`.  The daemon's stdout
    and stderr go to files of those names (one ``stdout`` file with ``merge_stderr``), appended to
    across restarts.
    """

    start_timeout = 15.0
    stop_timeout = 5.0
    merge_stderr = False

    def __init__(self, netns: str, directory: Path, daemon: list[str], client: list[str] = PY_DAEMON) -> None:
        self.netns = netns
        self.dir = directory
        self.dir.mkdir(exist_ok=True)
        self.conf = self.dir / "conntrackd.conf"
        self.lock = self.dir / "lock"
        self.sock = self.dir / "ctl"
        self.log_file = self.dir / "log"
        self.argv0 = daemon
        self.client_argv = client
        self.proc: subprocess.Popen | None = None
        self.out = self.err = None

    def write_conf(self, general: str = "", sections: str = "") -> None:
        """A config with a General section (this daemon's LockFile and UNIX path, then ``general``)."""
        self.conf.write_text("General {\n  HashSize 8192\n  Systemd off\n"
                             f"  LockFile {self.lock}\n  UNIX {{ Path {self.sock} }}\n{general}}}\n{sections}")

    def start(self, *args: str, env: dict[str, str] | None = None, wait: bool = True):
        self.out = open(self.dir / "stdout", "a")
        self.err = subprocess.STDOUT if self.merge_stderr else open(self.dir / "stderr", "a")
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.netns, *self.argv0, "-C", str(self.conf), *args],
                                     stdout=self.out, stderr=self.err, cwd=REPO, env=env)
        if wait:
            wait_for(lambda: (self.sock.exists() and self.up()) or self.proc.poll() is not None, self.start_timeout,
                     "daemon up", show=self.logs)
            assert self.proc.poll() is None, self.logs()
        return self

    def up(self) -> bool:
        """Answers ``-s``: the main loop runs, i.e. the event socket is open."""
        return self.client("-s").returncode == 0

    def stop(self) -> None:
        stop_process(self.proc, self.stop_timeout)
        for f in (self.out, self.err):
            if hasattr(f, "close"):
                f.close()
        self.out = self.err = None

    def client(self, *args: str, c: bool = False, timeout: float = 30) -> subprocess.CompletedProcess:
        """Our client (or C's, ``c``) with this daemon's config, in its namespace."""
        return ns_run(self.netns, *([C_DAEMON] if c else self.client_argv), "-C", str(self.conf), *args,
                      timeout=timeout)

    def lines(self, *args: str, c: bool = False) -> list[str]:
        """The client's output lines, masked (for comparing two daemons). Cache dumps (-i, -e, -x) come in hash
        order and are sorted; every other view (-s ...) has a fixed order and is compared as printed."""
        r = self.client(*args, c=c)
        assert r.returncode == 0, r.stderr
        out = mask(r.stdout).splitlines()
        return sorted(out) if args and args[0] in ("-i", "-e", "-x") else out

    def count(self, *args: str) -> int:
        return len(self.client(*args).stdout.splitlines())

    def stdout(self) -> str:
        return (self.dir / "stdout").read_text(errors="replace")

    def stderr(self) -> str:
        p = self.dir / "stderr"
        return p.read_text(errors="replace") if p.exists() else ""

    def logs(self) -> str:
        """LogFile (if any), then stdout and stderr."""
        log = self.log_file.read_text(errors="replace") if self.log_file.exists() else ""
        return log + self.stdout() + self.stderr()


@contextmanager
def stopping() -> Iterator[list[Conntrackd]]:
    """A list to append the daemons one starts to: all are stopped on the way out."""
    started: list[Conntrackd] = []
    try:
        yield started
    finally:
        for d in started:
            d.stop()
