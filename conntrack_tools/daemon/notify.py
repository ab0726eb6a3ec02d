"""``conntrackd-notify primary|backup|fault``: upstream's doc/sync/primary-backup.sh in one process.

keepalived runs a notify hook on every VRRP transition.  Upstream's shell script runs one
``conntrackd`` client per step (each re-reading the whole config); this does the same steps,
in the same order and with the same "log and carry on" error handling, over one control-socket
connection per step from a single process, and logs how long each step took::

    conntrackd-notify: primary: commit 0.012s, flush 0.001s, resync 0.003s, bulk 0.002s, total 0.018s

Steps (action codes are what the C client sends for the same flags, include/conntrackd.h):

=========  ==========================================================================
primary    ``-c`` commit external cache (ALL_COMMIT, waits until the daemon is done),
           ``-f`` flush internal + external caches, ``-R`` resync internal cache with the
           kernel table, ``-B`` bulk send to the backups
backup     ``-s`` liveness check (``--restart``: start the daemon if it is not there),
           ``-t`` schedule the purge of zombie kernel entries, ``-n`` request a resync
fault      ``-t``
=========  ==========================================================================

Exit status: 0 every step succeeded; 1 the daemon could not be reached or a step failed (the
remaining steps are still tried wherever primary-backup.sh tries them); 2 bad arguments or an
unusable config.  The control protocol is C's (one native int, answer until EOF), so this works
against our daemon and the C conntrackd alike.  No shell is involved anywhere; ``--restart``
runs the daemon binary from an argv list.

Deviations from primary-backup.sh are listed in docs/failover.md.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import socket
import stat
import subprocess
import sys
import syslog
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .config import ConfigError, load_config
from .control import DEFAULT_CONFIGFILE, Action, encode_request

__all__ = [
    "PLANS",
    "STATES",
    "CallResult",
    "Options",
    "Report",
    "StepResult",
    "UsageError",
    "call_daemon",
    "format_summary",
    "main",
    "parse_args",
    "plan",
    "run_state",
]

PROG = "conntrackd-notify"
STATES = ("primary", "backup", "fault")
DEFAULT_TIMEOUT = 60.0  # seconds per step; a C commit of 1M entries takes ~13 s
MAX_TIMEOUT = 3600.0
RESTART_TIMEOUT = 30.0  # `conntrackd -d` returns once the daemon is initialised


@dataclass(frozen=True, slots=True)
class Step:
    name: str  # word used in the summary line
    flag: str  # the conntrackd client flag primary-backup.sh uses
    action: Action


COMMIT = Step("commit", "-c", Action.ALL_COMMIT)
FLUSH = Step("flush", "-f", Action.ALL_FLUSH_CACHE)
RESYNC = Step("resync", "-R", Action.ALL_RESYNC_MASTER)
BULK = Step("bulk", "-B", Action.SEND_BULK)
CHECK = Step("check", "-s", Action.STATS)
TIMERS = Step("timers", "-t", Action.RESET_TIMERS)
FLUSH_INTERNAL = Step("flush-internal", "-f internal", Action.CT_FLUSH_INT_CACHE)
REQUEST = Step("request-resync", "-n", Action.REQUEST_DUMP)

# primary-backup.sh, case by case.  "backup" starts with the liveness check, handled by run_state().
PLANS: dict[str, tuple[Step, ...]] = {
    "primary": (COMMIT, FLUSH, RESYNC, BULK),
    "backup": (CHECK, TIMERS, REQUEST),
    "fault": (TIMERS,),
}


def plan(state: str, direct_inject: bool = False, internal_cache: bool = True, ours: bool = False) -> tuple[Step, ...]:
    """The steps of one transition.  With ``DisableExternalCache on`` the synced states are already in
    the kernel table, and C's ``-t`` would flush that whole table (a selective flush) PurgeTimeout
    later.  What the purge must still do is flush the internal cache: a demoted master's cache holds
    the flows it forwarded, and when their now idle kernel entries time out it would send the new
    master DELs for live flows.  Our daemon (``ours``: the config uses an extension C rejects) flushes
    only that cache on ``-t`` in this mode, PurgeTimeout later, so the demoted node still syncs what
    it forwards while the peers' ARP caches catch up (an FTP helper's expectation made there in that
    second needs its master in the cache); for a config C could run, ``-t`` becomes an immediate
    ``-f internal``.  Without an internal cache (``DisableInternalCache``) there is nothing to flush,
    and C's ``-f internal`` would be a kernel flush there (docs/failover.md, "Direct injection")."""
    steps = PLANS[state]
    if not direct_inject or (ours and internal_cache):
        return steps
    instead = (FLUSH_INTERNAL,) if internal_cache else ()
    return tuple(x for s in steps for x in (instead if s is TIMERS else (s,)))


# ------------------------------------------------------------------------------------ arguments


class UsageError(Exception):
    """Bad command line or unusable config: exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D102 - argparse would print and exit(2) itself
        raise UsageError(message)


class _Once(argparse.Action):
    """Reject an option given twice instead of silently keeping the last one."""

    def __call__(self, parser, namespace, values, option_string=None):
        if getattr(namespace, "_seen_" + self.dest, False):
            raise UsageError(f"option {option_string} given more than once")
        setattr(namespace, "_seen_" + self.dest, True)
        setattr(namespace, self.dest, values)


class _OnceFlag(_Once):
    def __init__(self, option_strings, dest, **kw):
        super().__init__(option_strings, dest, nargs=0, default=False, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        super().__call__(parser, namespace, True, option_string)


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0 or value > MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"must be > 0 and <= {MAX_TIMEOUT:g} seconds: {text!r}")
    return value


def _build_parser() -> _Parser:
    p = _Parser(
        prog=PROG, allow_abbrev=False, add_help=False,
        description="Propagate a keepalived VRRP transition to conntrackd (what upstream's "
                    "primary-backup.sh does, in one process).",
        epilog="exit status: 0 ok, 1 daemon unreachable or a step failed, 2 bad arguments",
    )
    p.add_argument("state", help="primary, backup or fault")
    p.add_argument("-C", "--config", action=_Once, default=DEFAULT_CONFIGFILE, metavar="FILE",
                   help=f"conntrackd.conf holding UNIX {{ Path }} (default {DEFAULT_CONFIGFILE})")
    p.add_argument("--timeout", action=_Once, type=_timeout, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                   help=f"limit for each step, the commit included (default {DEFAULT_TIMEOUT:g})")
    p.add_argument("--restart", action=_OnceFlag,
                   help="backup: if the daemon is not running, remove its LockFile and start "
                        "`conntrackd -C FILE -d` (primary-backup.sh does this always); ignored "
                        "on primary and fault, so one argument list serves all three")
    p.add_argument("--conntrackd", action=_Once, metavar="PATH",
                   help="daemon binary for --restart (default: conntrackd next to this program's "
                        "Python, else /usr/sbin/conntrackd)")
    p.add_argument("--no-syslog", action=_OnceFlag, help="log to stderr only")
    p.add_argument("-h", "--help", action="store_true", help="show this help and exit")
    return p


@dataclass(frozen=True, slots=True)
class Options:
    state: str
    config: str
    socket_path: str
    lockfile: str
    timeout: float = DEFAULT_TIMEOUT
    restart: bool = False
    conntrackd: str | None = None
    syslog: bool = True
    direct_inject: bool = False  # Sync { Mode { DisableExternalCache on } }: no -t (plan())
    internal_cache: bool = True  # False with DisableInternalCache (plan())
    ours: bool = False  # the config uses an extension only our daemon accepts (plan())


def _default_conntrackd() -> str:
    sibling = Path(sys.executable).with_name("conntrackd")
    return str(sibling) if os.access(sibling, os.X_OK) else "/usr/sbin/conntrackd"


def _regular_file(path: str, what: str, executable: bool = False) -> None:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise UsageError(f"{what} `{path}': {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{what} `{path}' is not a regular file")
    if not os.access(path, os.X_OK if executable else os.R_OK):
        raise UsageError(f"{what} `{path}' is not {'executable' if executable else 'readable'}")


def parse_args(argv: Sequence[str]) -> Options | None:
    """Validated options, or None for --help (printed).  Raises UsageError (exit 2)."""
    parser = _build_parser()
    if "-h" in argv or "--help" in argv:
        parser.print_help()
        return None
    ns = parser.parse_args(list(argv))
    if ns.state not in STATES:
        raise UsageError(f"unknown state {ns.state!r} (want primary, backup or fault)")
    if ns.conntrackd is not None and not ns.restart:
        raise UsageError("--conntrackd needs --restart")
    _regular_file(ns.config, "config file")
    try:
        cfg = load_config(ns.config)
    except ConfigError as exc:
        raise UsageError(f"config file {exc.file}:{exc.line}:{exc.column}: {exc.message}") from None
    path = cfg.general.unix_path
    if not path:
        raise UsageError(f"config file `{ns.config}' has no UNIX {{ Path }}: no control socket to talk to")
    conntrackd = None
    if ns.restart:
        conntrackd = ns.conntrackd or _default_conntrackd()
        _regular_file(conntrackd, "conntrackd binary", executable=True)
    return Options(state=ns.state, config=ns.config, socket_path=path, lockfile=cfg.general.lockfile,
                   timeout=ns.timeout, restart=ns.restart, conntrackd=conntrackd, syslog=not ns.no_syslog,
                   direct_inject=cfg.sync is not None and cfg.sync.disable_external_cache,
                   internal_cache=not (cfg.sync is not None and cfg.sync.disable_internal_cache),
                   ours=any(f.code == "c-incompatible" for f in cfg.warnings))


# ------------------------------------------------------------------------------------ transport


@dataclass(frozen=True, slots=True)
class CallResult:
    error: str | None = None  # None = the daemon took the request and closed the connection
    unreachable: bool = False  # nobody listens (ENOENT / ECONNREFUSED): the daemon is not running
    answer: int = 0  # bytes of text the daemon sent back


def call_daemon(path: str, action: int, timeout: float) -> CallResult:
    """One request on its own connection (C do_local_request), bounded by ``timeout`` in total.

    Success means: connected, sent the 4-byte code, read until EOF.  C's client reports no
    more than that either (the protocol has no status), so "failed" is a transport failure.
    """
    deadline = time.monotonic() + timeout
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.settimeout(timeout)
        try:
            s.connect(path)
        except TimeoutError:
            return CallResult(f"can't connect to `{path}': timed out after {timeout:g}s")
        except OSError as exc:
            gone = exc.errno in (errno.ENOENT, errno.ECONNREFUSED)
            return CallResult(f"can't connect to `{path}': {exc.strerror or exc}", unreachable=gone)
        got = 0
        try:
            s.sendall(encode_request(action))
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                s.settimeout(left)
                data = s.recv(65536)
                if not data:
                    return CallResult(answer=got)
                got += len(data)
        except TimeoutError:
            return CallResult(f"no answer from `{path}' within {timeout:g}s", answer=got)
        except OSError as exc:
            return CallResult(f"request to `{path}' failed: {exc.strerror or exc}", answer=got)
    finally:
        s.close()


def start_daemon(conntrackd: str, config: str, timeout: float = RESTART_TIMEOUT) -> str | None:
    """``conntrackd -C config -d`` without a shell; None on success, else the reason."""
    try:
        proc = subprocess.run([conntrackd, "-C", config, "-d"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=timeout,
                              close_fds=True)
    except subprocess.TimeoutExpired:
        return f"`{conntrackd} -d' did not return within {timeout:g}s"
    except OSError as exc:
        return f"cannot run `{conntrackd}': {exc.strerror or exc}"
    if proc.returncode != 0:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
        return f"`{conntrackd} -d' exited {proc.returncode}" + (f": {tail[0]}" if tail[0] else "")
    return None


# ------------------------------------------------------------------------------------ the plan

Log = Callable[[int, str], None]


@dataclass(slots=True)
class StepResult:
    name: str
    seconds: float
    error: str | None = None
    recovered: bool = False  # backup check failed but --restart brought the daemon back

    @property
    def failed(self) -> bool:
        return self.error is not None and not self.recovered


@dataclass(slots=True)
class Report:
    state: str
    steps: list[StepResult] = field(default_factory=list)
    total: float = 0.0

    @property
    def ok(self) -> bool:
        return not any(s.failed for s in self.steps)


def format_summary(report: Report) -> str:
    """``primary: commit 0.012s, flush 0.001s, ..., total 0.018s``.

    A failed step says FAILED; a backup liveness check that failed but was followed by a
    successful restart says DOWN.
    """
    parts = [f"{s.name} {s.seconds:.3f}s" + (" DOWN" if s.recovered else " FAILED" if s.error else "")
             for s in report.steps]
    parts.append(f"total {report.total:.3f}s")
    return f"{report.state}: " + ", ".join(parts)


def run_state(
    state: str,
    call: Callable[[int], CallResult],
    log: Log,
    *,
    restart: Callable[[], str | None] | None = None,
    remove_lock: Callable[[], bool] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    direct_inject: bool = False,
    internal_cache: bool = True,
    ours: bool = False,
) -> Report:
    """Run one transition's steps in primary-backup.sh's order and error policy.

    ``call(action)`` performs one request; ``restart()`` starts the daemon (None = --restart
    off) and ``remove_lock()`` removes a stale LockFile (True if there was one).  Every failure
    is logged at LOG_ERR and the next step still runs, except where the script exits: a failed
    restart on backup ends the transition (``exit 1`` in the script).
    ``direct_inject``, ``internal_cache``, ``ours``: from the config (see plan()).
    """
    report = Report(state)
    t_start = clock()

    def timed(name: str, fn: Callable[[], str | None]) -> StepResult:
        t0 = clock()
        err = fn()
        res = StepResult(name, clock() - t0, err)
        report.steps.append(res)
        return res

    for step in plan(state, direct_inject, internal_cache, ours):
        outcome: list[CallResult] = []

        def do(step: Step = step, outcome: list[CallResult] = outcome) -> str | None:
            res = call(step.action)
            outcome.append(res)
            return res.error

        res = timed(step.name, do)
        if res.error is None:
            continue
        if step is CHECK:
            # primary-backup.sh: `conntrackd -s` failed -> stale lock? -> restart the daemon
            if restart is None:
                log(syslog.LOG_ERR, f"{state}: conntrackd does not answer ({res.error}); "
                                    "not restarting it (no --restart)")
                continue
            if not outcome[0].unreachable:
                # It is there but busy (e.g. timed out during a commit): a restart would kill it.
                log(syslog.LOG_ERR, f"{state}: conntrackd is not answering ({res.error}); "
                                    "it is running, so it is not restarted")
                continue
            log(syslog.LOG_WARNING, f"{state}: conntrackd is not running ({res.error}), restarting it")
            if remove_lock is not None and remove_lock():
                log(syslog.LOG_WARNING, f"{state}: conntrackd was not cleanly stopped: stale LockFile removed")
            rst = timed("restart", restart)
            if rst.error is not None:
                log(syslog.LOG_ERR, f"{state}: cannot launch conntrackd: {rst.error}")
                break  # the script: exit 1, no -t / -n
            res.recovered = True
            continue
        log(syslog.LOG_ERR, f"{state}: {step.name} ({step.flag}) failed: {res.error}")
    report.total = clock() - t_start
    return report


# ------------------------------------------------------------------------------------ logging


class _Logger:
    def __init__(self, use_syslog: bool) -> None:
        self.use_syslog = use_syslog
        if use_syslog:
            syslog.openlog(PROG, syslog.LOG_PID, syslog.LOG_DAEMON)

    def __call__(self, prio: int, msg: str) -> None:
        try:
            sys.stderr.write(f"{PROG}: {msg}\n")
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # keepalived may have closed our stderr; syslog still gets it
        if self.use_syslog:
            syslog.syslog(prio, msg)

    def close(self) -> None:
        if self.use_syslog:
            syslog.closelog()


def _remove_lock(path: str) -> Callable[[], bool]:
    def remove() -> bool:
        try:
            os.unlink(path)
        except FileNotFoundError:
            return False
        except OSError:
            return False
        return True

    return remove


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        opts = parse_args(args)
    except UsageError as exc:
        log = _Logger(use_syslog="--no-syslog" not in args)
        log(syslog.LOG_ERR, f"{exc} (usage: {PROG} [-C FILE] [--timeout S] [--restart [--conntrackd PATH]] "
                            "[--no-syslog] primary|backup|fault)")
        log.close()
        return 2
    if opts is None:
        return 0
    log = _Logger(opts.syslog)
    try:
        report = run_state(
            opts.state,
            lambda action: call_daemon(opts.socket_path, action, opts.timeout),
            log,
            restart=(lambda: start_daemon(opts.conntrackd, opts.config)) if opts.restart and opts.conntrackd else None,
            remove_lock=_remove_lock(opts.lockfile) if opts.restart else None,
            direct_inject=opts.direct_inject,
            internal_cache=opts.internal_cache,
            ours=opts.ours,
        )
        log(syslog.LOG_NOTICE if report.ok else syslog.LOG_WARNING, format_summary(report))
        return 0 if report.ok else 1
    finally:
        log.close()


if __name__ == "__main__":
    sys.exit(main())
