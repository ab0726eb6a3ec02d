"""Sans-I/O control protocol and command line of ``conntrackd`` (C 1.4.7 src/main.c, src/local.c).

Wire protocol (as C): the client connects to the AF_UNIX stream socket ``UNIX { Path }``,
sends **one native int** (4 bytes, host byte order) holding an action code, then reads text
until EOF and prints it verbatim.  The server handles one request per connection.

Beyond C: an action code with :data:`JSON_FLAG` set asks *our* daemon for JSON instead of
text (a C daemon ignores unknown codes and closes the connection without output).

The command line is parsed the way C does it, into an :class:`Invocation` holding everything
to print and the exit code, so ``main.py`` only performs it: each argv's **second character**
selects the option (so ``--help`` is "Unknown option"), optional table words come from the
next argv when it does not start with ``-`` and are prefix-matched.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "Action",
    "Answers",
    "DEFAULT_CONFIGFILE",
    "Invocation",
    "JSON_FLAG",
    "USAGE",
    "VERSION_TEXT",
    "decode_request",
    "encode_request",
    "handles",
    "parse_argv",
]

VERSION = "1.4.7"
DEFAULT_CONFIGFILE = "/etc/conntrackd/conntrackd.conf"
PATH_MAX = 4096
JSON_FLAG = 1 << 16  # beyond C: "answer in JSON"

_INT = struct.Struct("=i")


class Action(enum.IntEnum):
    """UNIX-socket action codes (include/conntrackd.h)."""

    CT_FLUSH_MASTER = 0
    CT_RESYNC_MASTER = 1
    CT_DUMP_INTERNAL = 16
    CT_DUMP_EXTERNAL = 17
    CT_COMMIT = 18
    CT_FLUSH_CACHE = 19
    KILL = 20
    STATS = 21
    SEND_BULK = 22
    REQUEST_DUMP = 23
    CT_DUMP_INT_XML = 24
    CT_DUMP_EXT_XML = 25
    RESET_TIMERS = 26
    DEBUG_INFO = 27
    STATS_NETWORK = 28
    STATS_CACHE = 29
    STATS_RUNTIME = 30
    STATS_LINK = 31
    STATS_RSQUEUE = 32
    CT_FLUSH_INT_CACHE = 33
    CT_FLUSH_EXT_CACHE = 34
    STATS_PROCESS = 35
    STATS_QUEUE = 36
    EXP_STATS = 37
    EXP_FLUSH_MASTER = 38
    EXP_RESYNC_MASTER = 39
    EXP_DUMP_INTERNAL = 40
    EXP_DUMP_EXTERNAL = 41
    EXP_COMMIT = 42
    ALL_FLUSH_MASTER = 43
    ALL_RESYNC_MASTER = 44
    ALL_FLUSH_CACHE = 45
    ALL_COMMIT = 46
    EXP_DUMP_INT_XML = 47
    EXP_DUMP_EXT_XML = 48


def encode_request(action: int) -> bytes:
    """The 4 bytes a client sends."""
    return _INT.pack(action)


def decode_request(data: bytes) -> int | None:
    """The action code of a request, or None when fewer than 4 bytes arrived (C: local read failed)."""
    if len(data) < _INT.size:
        return None
    return _INT.unpack_from(data)[0]


def split_json(code: int) -> tuple[int, bool]:
    """(action, json wanted) of a received code."""
    return code & ~JSON_FLAG, bool(code & JSON_FLAG)


# ------------------------------------------------------------------------------ answering requests

def handles(*actions: int) -> Callable[[Callable], Callable]:
    """Mark a method ``(self, action, as_json) -> chunks`` as the answer to these actions (see Answers)."""
    def mark(fn: Callable) -> Callable:
        fn.actions = actions  # type: ignore[attr-defined]
        return fn
    return mark


class Answers:
    """A dispatch table for control-socket requests: ``local(action, as_json)`` looks the action up.

    The table is built once per class from its ``@handles`` methods and its bases' (action ->
    method name, so a subclass's method of the same name answers instead of its base's, and may
    call ``super()``); an action nobody handles goes to ``unhandled`` (None: not this object's)."""

    answers: dict[int, str] = {}

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        table: dict[int, str] = {}
        for klass in reversed(cls.__mro__):
            for name, fn in vars(klass).items():
                for action in getattr(fn, "actions", ()):
                    table[action] = name
        cls.answers = table

    def local(self, action: int, as_json: bool) -> Iterable[str] | None:
        name = self.answers.get(action)
        if name is None:
            return self.unhandled(action, as_json)
        return getattr(self, name)(action, as_json)

    def unhandled(self, action: int, as_json: bool) -> Iterable[str] | None:
        return None


# ------------------------------------------------------------------------------ command line

USAGE_GENERAL = (
    "General commands:\n"
    "  -d, run in daemon mode\n"
    "  -C [configfile], configuration file path\n"
    "  -v, display conntrackd version\n"
    "  -h, display this help information\n"
)
USAGE_CLIENT = (
    "Client mode commands:\n"
    "  -c [ct|expect], commit external cache to conntrack table\n"
    "  -f [internal|external], flush internal and external cache\n"
    "  -F [ct|expect], flush kernel conntrack table\n"
    "  -i [ct|expect], display content of the internal cache\n"
    "  -e [ct|expect], display the content of the external cache\n"
    "  -k, kill conntrack daemon\n"
    "  -s  [network|cache|runtime|link|rsqueue|queue|ct|expect], dump statistics\n"
    "  -R [ct|expect], resync with kernel conntrack table\n"
    "  -n, request resync with other node (only FT-FW and NOTRACK modes)\n"
    "  -B, force a bulk send to other replica firewalls\n"
    "  -x, dump cache in XML format (requires -i or -e)\n"
    "  -t, reset the kernel timeout (see PurgeTimeout clause)\n"
)


def USAGE(prog: str) -> str:  # noqa: N802 - mirrors C's show_usage()
    return (
        f"Connection tracking userspace daemon v{VERSION}\n"
        f"Usage: {prog} [commands] [options]\n\n"
        f"{USAGE_GENERAL}\n{USAGE_CLIENT}\n"
    )


VERSION_TEXT = (
    f"Connection tracking userspace daemon v{VERSION}. Licensed under GPLv2.\n"
    "(C) 2006-2009 Pablo Neira Ayuso <pablo@netfilter.org>\n"
)

Mode = Literal["console", "daemon", "request", "config-test"]
Level = Literal["notice", "warning", "ERROR", "info"]

# -s sub-commands in C's test order (prefix match: the first that matches wins)
STATS_WORDS: tuple[tuple[str, Action], ...] = (
    ("network", Action.STATS_NETWORK),
    ("cache", Action.STATS_CACHE),
    ("runtime", Action.STATS_RUNTIME),
    ("multicast", Action.STATS_LINK),  # deprecated alias, warns
    ("link", Action.STATS_LINK),
    ("rsqueue", Action.STATS_RSQUEUE),
    ("process", Action.STATS_PROCESS),
    ("queue", Action.STATS_QUEUE),
    ("ct", Action.STATS),
    ("expect", Action.EXP_STATS),
)

# option letter -> (ct action, expect action, action without argument)
TABLE_OPTS: dict[str, tuple[Action, Action, Action]] = {
    "c": (Action.CT_COMMIT, Action.EXP_COMMIT, Action.ALL_COMMIT),
    "i": (Action.CT_DUMP_INTERNAL, Action.EXP_DUMP_INTERNAL, Action.CT_DUMP_INTERNAL),
    "e": (Action.CT_DUMP_EXTERNAL, Action.EXP_DUMP_EXTERNAL, Action.CT_DUMP_EXTERNAL),
    "F": (Action.CT_FLUSH_MASTER, Action.EXP_FLUSH_MASTER, Action.ALL_FLUSH_MASTER),
    "R": (Action.CT_RESYNC_MASTER, Action.EXP_RESYNC_MASTER, Action.ALL_RESYNC_MASTER),
}
PLAIN_OPTS: dict[str, Action] = {
    "B": Action.SEND_BULK,
    "t": Action.RESET_TIMERS,
    "k": Action.KILL,
    "n": Action.REQUEST_DUMP,
}
XML_OF: dict[int, Action] = {
    Action.CT_DUMP_INTERNAL: Action.CT_DUMP_INT_XML,
    Action.CT_DUMP_EXTERNAL: Action.CT_DUMP_EXT_XML,
    Action.EXP_DUMP_INTERNAL: Action.EXP_DUMP_INT_XML,
    Action.EXP_DUMP_EXTERNAL: Action.EXP_DUMP_EXT_XML,
}


@dataclass
class Invocation:
    """What one command line asks for.

    ``output`` is a list of ("stdout", text) / ("log", level, text) steps to perform in order
    *before* anything else; when ``exit_code`` is not None the program stops after them.
    """

    mode: Mode = "console"
    action: int | None = None
    config: str = DEFAULT_CONFIGFILE
    json: bool = False
    metrics_listen: str | None = None
    metrics_textfile: str | None = None
    output: list[tuple[str, ...]] = field(default_factory=list)
    exit_code: int | None = None

    def log(self, level: Level, text: str) -> None:
        self.output.append(("log", level, text))

    def stdout(self, text: str) -> None:
        self.output.append(("stdout", text))


def _prefix(word: str, keyword: str) -> bool:
    """C's ``strncmp(arg, kw, strlen(arg)) == 0`` (so "" matches everything)."""
    return keyword.startswith(word)


def parse_argv(argv: list[str], prog: str = "conntrackd") -> Invocation:
    """Parse argv (without the program name) exactly as conntrackd 1.4.7, plus our long options."""
    inv = Invocation()
    mode_set: str | None = None
    action: int = -1
    config = ""
    i = 0
    n = len(argv)

    def set_mode(want: str) -> bool:
        nonlocal mode_set
        if mode_set is None:
            mode_set = want
            return True
        if mode_set != want:
            inv.stdout(USAGE(prog))
            inv.log("ERROR", "Invalid parameters")
            inv.exit_code = 1
            return False
        return True

    def next_word() -> str | None:
        if i + 1 < n and not argv[i + 1].startswith("-"):
            return argv[i + 1]
        return None

    while i < n:
        arg = argv[i]
        # --- beyond C: long options C would reject as "Unknown option"
        if arg == "--config-test":
            inv.mode = "config-test"
            mode_set = mode_set or "config-test"
            i += 1
            continue
        if arg == "--json":
            inv.json = True
            i += 1
            continue
        if arg in ("--metrics-listen", "--metrics-textfile") and i + 1 < n:
            if arg == "--metrics-listen":
                inv.metrics_listen = argv[i + 1]
            else:
                inv.metrics_textfile = argv[i + 1]
            i += 2
            continue
        if arg == "-o" and i + 1 < n and argv[i + 1] == "json":
            inv.json = True
            i += 2
            continue
        opt = arg[1] if len(arg) > 1 else ""
        if opt == "d":
            if not set_mode("daemon"):
                return inv
        elif opt in TABLE_OPTS:
            if not set_mode("request"):
                return inv
            ct_a, exp_a, dfl = TABLE_OPTS[opt]
            word = next_word()
            if word is None:
                action = dfl
            elif _prefix(word, "ct"):
                action = ct_a
                i += 1
            elif _prefix(word, "expect"):
                action = exp_a
                i += 1
            # any other word: left for the next round (C: "Unknown option: word")
        elif opt == "C":
            i += 1
            if i < n:
                if len(argv[i]) > PATH_MAX:
                    inv.log("warning", f"Path to config file to long. Cutting it down to {PATH_MAX} characters")
                config = argv[i][: PATH_MAX - 1]
            else:
                inv.stdout(USAGE(prog))
                inv.log("ERROR", "Missing config filename")
        elif opt == "f":
            if not set_mode("request"):
                return inv
            word = next_word()
            if word is None:
                action = Action.ALL_FLUSH_CACHE
            elif _prefix(word, "internal"):
                action = Action.CT_FLUSH_INT_CACHE
                i += 1
            elif _prefix(word, "external"):
                action = Action.CT_FLUSH_EXT_CACHE
                i += 1
            else:
                inv.log("ERROR", f"unknown parameter `{word}' for option `-f'")
                inv.exit_code = 1
                return inv
        elif opt in PLAIN_OPTS:
            if not set_mode("request"):
                return inv
            action = PLAIN_OPTS[opt]
        elif opt == "s":
            if not set_mode("request"):
                return inv
            word = next_word()
            if word is None:
                action = Action.STATS
            else:
                for kw, code in STATS_WORDS:
                    if _prefix(word, kw):
                        if kw == "multicast":
                            inv.log("warning", "use `link' instead of `multicast' as parameter.")
                        action = code
                        i += 1
                        break
                else:
                    inv.log("ERROR", f"unknown parameter `{word}' for option `-s'")
                    inv.exit_code = 1
                    return inv
        elif opt == "x":
            if action in XML_OF:
                action = XML_OF[action]
            else:
                inv.stdout(USAGE(prog))
                inv.log("ERROR", "Invalid parameters")
                inv.exit_code = 1
                return inv
        elif opt == "v":
            inv.stdout(VERSION_TEXT)
            inv.exit_code = 0
            return inv
        elif opt == "h":
            inv.stdout(USAGE(prog))
            inv.exit_code = 0
            return inv
        else:
            # C: show_usage(); dlog(LOG_ERR, "Unknown option: %s"); return 0 -- also for --help
            inv.stdout(USAGE(prog))
            inv.log("ERROR", f"Unknown option: {arg}")
            inv.exit_code = 0
            return inv
        i += 1

    inv.config = config or DEFAULT_CONFIGFILE
    if inv.mode != "config-test":
        inv.mode = {"daemon": "daemon", "request": "request"}.get(mode_set or "", "console")  # type: ignore[assignment]
    inv.action = action if inv.mode == "request" else None
    return inv
