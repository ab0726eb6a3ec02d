"""``conntrackd`` entry point: C 1.4.7's command line, client, daemon, plus ``--config-test``.

Exit codes and messages follow C (t3/cmds): client errors exit 1 with
``can't connect: is conntrackd running? appropriate permissions?``; an unknown option prints
the usage and exits 0 (also for ``--help``, a C quirk we keep); ``-s foo`` exits 1.
"""

from __future__ import annotations

import os
import sys

from .config import ConfigError, check_config, load_config
from .config.checks import probe_host
from .control import JSON_FLAG, Action, Invocation, parse_argv
from .control_server import request
from .log import Logger, dlog
from .sync.keyring import read_key_file

__all__ = ["main"]

DUMPS = frozenset((Action.CT_DUMP_INTERNAL, Action.CT_DUMP_EXTERNAL, Action.EXP_DUMP_INTERNAL,
                   Action.EXP_DUMP_EXTERNAL))
CANT_CONNECT = "can't connect: is conntrackd running? appropriate permissions?"


def _emit(inv: Invocation, log: Logger) -> None:
    for step in inv.output:
        if step[0] == "stdout":
            sys.stdout.write(step[1])
            sys.stdout.flush()
        else:
            log(step[1], step[2])  # type: ignore[arg-type]


def config_test(path: str) -> int:
    """Beyond C: parse + cross-field checks; findings as ``file:line:col: severity: message``."""
    try:
        cfg = load_config(path)
    except ConfigError as exc:
        print(f"{exc.file}:{exc.line}:{exc.column}: error: {exc.message}", file=sys.stderr)
        return 1
    findings = check_config(cfg, probe_host())
    for f in findings:
        print(str(f), file=sys.stderr)
    errors = sum(1 for f in findings if f.severity == "error")
    warnings = len(findings) - errors
    if errors:
        print(f"{path}: configuration is NOT valid ({errors} error(s), {warnings} warning(s))", file=sys.stderr)
        return 1
    print(f"{path}: configuration OK ({warnings} warning(s))")
    return 0


def key_test(path: str) -> int:
    """Beyond C: parse an AuthKey key file as the daemon would (a role's ``validate:`` before it goes live).
    Prints key ids only, never key material."""
    try:
        ring = read_key_file(path)
    except (OSError, ValueError) as exc:
        print(f"{path}: key file is NOT valid: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return 1
    kind = "keyring" if ring.keyring else "single key"
    print(f"{path}: key file OK ({kind}: {ring.describe()})")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "conntrackd"
    log = dlog
    inv = parse_argv(args, prog=sys.argv[0] if sys.argv and sys.argv[0] else prog)
    _emit(inv, log)
    if inv.exit_code is not None:
        return inv.exit_code
    if inv.mode == "config-test":
        return config_test(inv.config)
    if inv.mode == "key-test":
        assert inv.key_file is not None
        return key_test(inv.key_file)

    if not os.access(inv.config, os.R_OK) or os.path.isdir(inv.config):
        log("ERROR", f"can't open config file `{inv.config}'")
        return 1
    try:
        cfg = load_config(inv.config)
    except ConfigError as exc:
        log("ERROR", f"parsing config file {exc.file}:{exc.line}:{exc.column}: {exc.message}")
        return 1
    for w in cfg.warnings:
        if w.code != "c-incompatible":
            log("warning", w.message)

    if inv.mode == "request":
        assert inv.action is not None
        code = inv.action | (JSON_FLAG if inv.json else 0)
        out = sys.stdout.buffer
        got: list[int] = [0]

        def sink(data: bytes) -> None:
            got[0] += len(data)
            out.write(data)

        if not request(cfg.general.unix_path, code, sink):
            log("ERROR", CANT_CONNECT)
            return 1
        out.flush()
        if inv.json and not got[0] and inv.action not in DUMPS:
            log("ERROR", "no JSON answer: the daemon does not support `-o json' for this request")
            return 1
        return 0

    errors = [f for f in check_config(cfg) if f.severity == "error"]
    if errors:
        for f in errors:
            log("ERROR", str(f))
        log("ERROR", "conntrackd cannot start, please review your configuration")
        return 1
    if cfg.sync is not None and cfg.sync.effective_commit_timeout is None and cfg.sync.commit_timeout:
        log("warning", "`CommitTimeout' can't be combined with `DisableExternalCache', ignoring this option. "
            "Fix your configuration file.")
    if cfg.helper is not None:
        log("warning", "user-space helpers (Helper section) are not supported, ignoring it")

    from .core import Daemon, StartError  # the daemon's imports are not needed by the client

    os.umask(0o177)
    daemon = Daemon(cfg, log, daemonize=inv.mode == "daemon")
    try:
        daemon.start()
    except StartError:
        return 1
    except OSError as exc:  # e.g. the log file cannot be opened (C prints to stderr, exit 1)
        print(exc.strerror or exc, file=sys.stderr)
        return 1
    listen = inv.metrics_listen or cfg.general.metrics_listen  # the command line wins over conntrackd.conf
    textfile = inv.metrics_textfile or cfg.general.metrics_textfile
    if listen or textfile:
        from .metrics import Metrics

        try:
            daemon.metrics = Metrics(daemon, listen, textfile, cfg.general.metrics_pair)
        except (OSError, ValueError) as exc:
            log("ERROR", f"can't open metrics endpoint `{listen}': {getattr(exc, 'strerror', None) or exc}; "
                "running without metrics")
    return daemon.run()


if __name__ == "__main__":
    sys.exit(main())
