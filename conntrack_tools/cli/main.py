"""`conntrack` entry point: parse argv, then run the request (execute.py), printing what C prints.

Kept thin on purpose: `-V`, `-h` and parse errors never import the netlink and
rendering layers, so they cost little more than the interpreter's start-up.
"""

from __future__ import annotations

import os
import signal
import sys

from .errors import OTHER_PROBLEM, PREFIX, CliError
from .request import Command, Request


def _print_warnings(req: Request) -> None:
    for w in req.warnings:
        sys.stderr.write(w + "\n")


def _run_batch(runner, path: str, prog: str) -> int:
    from .batch import load_batch
    from .parse import exec_checks
    reqs = load_batch(path, prog=prog)
    for req in reqs:
        _print_warnings(req)
    for req in reqs:
        err = exec_checks(req)
        if err is not None:
            raise err
        runner.run(req, batch=True)
    return 0


def run(argv: list[str], prog: str = "conntrack") -> int:
    from .help import usage_text, version_text
    from .parse import parse_args

    runner = None
    try:
        req = parse_args(argv, prog=prog)
        _print_warnings(req)
        if req.command in (Command.NONE, Command.HELP):
            from .help import extension_help_text
            sys.stdout.write(usage_text(prog))
            if req.command is Command.HELP and req.proto and req.proto != "unknown":
                sys.stdout.write(extension_help_text(req.proto, req.l4proto))
            return 0
        if req.command is Command.VERSION:
            sys.stdout.write(version_text())
            return 0
        from .execute import Runner

        runner = Runner()
        if req.command is Command.LOAD_FILE:
            return _run_batch(runner, req.load_file or "-", prog)
        return runner.run(req)
    except CliError as exc:
        sys.stdout.flush()
        sys.stderr.write(str(exc))
        return exc.exit_code
    except ValueError as exc:  # netlink.codec.DecodeError: a reply we cannot parse
        sys.stderr.write(f"{PREFIX}Operation failed: malformed netlink reply ({exc})\n")
        return OTHER_PROBLEM
    except BrokenPipeError:
        _silence_stdout()
        return 0
    except OSError as exc:
        sys.stdout.flush()
        sys.stderr.write(f"{PREFIX}Operation failed: {exc.strerror or exc}\n")
        return OTHER_PROBLEM
    except KeyboardInterrupt:
        return 130
    finally:
        if runner is not None:
            runner.close()


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except OSError:
        pass


def main() -> None:
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    prog = sys.argv[0] if sys.argv else "conntrack"
    code = run(sys.argv[1:], prog=prog)
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence_stdout()
    sys.exit(code)


__all__ = ["main", "run"]
