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

Mode = Literal["console", "daemon", "request", "config-test", "key-test"]
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
    key_file: str | None = None  # --key-test FILE
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
    return _Argv(argv, prog).run()


class _Argv:
    """C's option loop in main(): one handler per option character (its ``switch``).

    A handler returns True when parsing stops there (the Invocation then says what to print
    and the exit code); ``i`` is the index of the current argument."""

    def __init__(self, argv: list[str], prog: str) -> None:
        self.argv, self.prog, self.n = argv, prog, len(argv)
        self.inv = Invocation()
        self.mode_set: str | None = None
        self.action: int = -1
        self.config = ""
        self.i = 0
        handlers: dict[str, Callable[[str], bool]] = {o: self._plain for o in PLAIN_OPTS}
        handlers.update({"s": self._stats, "x": self._xml, "v": self._version, "h": self._help,
                         "C": self._config, "f": self._flush})
        handlers.update({o: self._table for o in TABLE_OPTS})
        handlers["d"] = self._daemon
        self.handlers = handlers

    def run(self) -> Invocation:
        inv = self.inv
        while self.i < self.n:
            arg = self.argv[self.i]
            if self._beyond_c(arg):
                continue
            opt = arg[1] if len(arg) > 1 else ""
            if self.handlers.get(opt, self._unknown)(opt):
                return inv
            self.i += 1
        inv.config = self.config or DEFAULT_CONFIGFILE
        if inv.mode not in ("config-test", "key-test"):
            inv.mode = {"daemon": "daemon", "request": "request"}.get(self.mode_set or "", "console")  # type: ignore[assignment]
        inv.action = self.action if inv.mode == "request" else None
        return inv

    # ---- helpers
    def _stop(self, text: str, code: int, usage: bool = True) -> bool:
        if usage:
            self.inv.stdout(USAGE(self.prog))
        self.inv.log("ERROR", text)
        self.inv.exit_code = code
        return True

    def _set_mode(self, want: str) -> bool:
        """False (and the usage error) when another mode was already chosen."""
        if self.mode_set is None:
            self.mode_set = want
            return True
        if self.mode_set != want:
            self._stop("Invalid parameters", 1)
            return False
        return True

    def _next_word(self) -> str | None:
        i, argv = self.i, self.argv
        if i + 1 < self.n and not argv[i + 1].startswith("-"):
            return argv[i + 1]
        return None

    def _beyond_c(self, arg: str) -> bool:
        """Our long options (C would reject them as "Unknown option"); True when ``arg`` was one."""
        inv, argv, i = self.inv, self.argv, self.i
        if arg == "--config-test":
            inv.mode = "config-test"
            self.mode_set = self.mode_set or "config-test"
            self.i += 1
        elif arg == "--key-test" and i + 1 < self.n:
            inv.mode = "key-test"
            inv.key_file = argv[i + 1]
            self.mode_set = self.mode_set or "key-test"
            self.i += 2
        elif arg == "--json":
            inv.json = True
            self.i += 1
        elif arg in ("--metrics-listen", "--metrics-textfile") and i + 1 < self.n:
            if arg == "--metrics-listen":
                inv.metrics_listen = argv[i + 1]
            else:
                inv.metrics_textfile = argv[i + 1]
            self.i += 2
        elif arg == "-o" and i + 1 < self.n and argv[i + 1] == "json":
            inv.json = True
            self.i += 2
        else:
            return False
        return True

    # ---- one handler per option
    def _daemon(self, opt: str) -> bool:
        return not self._set_mode("daemon")

    def _table(self, opt: str) -> bool:
        if not self._set_mode("request"):
            return True
        ct_a, exp_a, dfl = TABLE_OPTS[opt]
        word = self._next_word()
        if word is None:
            self.action = dfl
        elif _prefix(word, "ct"):
            self.action = ct_a
            self.i += 1
        elif _prefix(word, "expect"):
            self.action = exp_a
            self.i += 1
        # any other word: left for the next round (C: "Unknown option: word")
        return False

    def _config(self, opt: str) -> bool:
        self.i += 1
        if self.i < self.n:
            path = self.argv[self.i]
            if len(path) > PATH_MAX:
                self.inv.log("warning", f"Path to config file to long. Cutting it down to {PATH_MAX} characters")
            self.config = path[: PATH_MAX - 1]
        else:
            self.inv.stdout(USAGE(self.prog))
            self.inv.log("ERROR", "Missing config filename")
        return False

    def _flush(self, opt: str) -> bool:
        if not self._set_mode("request"):
            return True
        word = self._next_word()
        if word is None:
            self.action = Action.ALL_FLUSH_CACHE
        elif _prefix(word, "internal"):
            self.action = Action.CT_FLUSH_INT_CACHE
            self.i += 1
        elif _prefix(word, "external"):
            self.action = Action.CT_FLUSH_EXT_CACHE
            self.i += 1
        else:
            return self._stop(f"unknown parameter `{word}' for option `-f'", 1, usage=False)
        return False

    def _plain(self, opt: str) -> bool:
        if not self._set_mode("request"):
            return True
        self.action = PLAIN_OPTS[opt]
        return False

    def _stats(self, opt: str) -> bool:
        if not self._set_mode("request"):
            return True
        word = self._next_word()
        if word is None:
            self.action = Action.STATS
            return False
        for kw, code in STATS_WORDS:
            if _prefix(word, kw):
                if kw == "multicast":
                    self.inv.log("warning", "use `link' instead of `multicast' as parameter.")
                self.action = code
                self.i += 1
                return False
        return self._stop(f"unknown parameter `{word}' for option `-s'", 1, usage=False)

    def _xml(self, opt: str) -> bool:
        if self.action not in XML_OF:
            return self._stop("Invalid parameters", 1)
        self.action = XML_OF[self.action]
        return False

    def _version(self, opt: str) -> bool:
        self.inv.stdout(VERSION_TEXT)
        self.inv.exit_code = 0
        return True

    def _help(self, opt: str) -> bool:
        self.inv.stdout(USAGE(self.prog))
        self.inv.exit_code = 0
        return True

    def _unknown(self, opt: str) -> bool:
        # C: show_usage(); dlog(LOG_ERR, "Unknown option: %s"); return 0 -- also for --help
        return self._stop(f"Unknown option: {self.argv[self.i]}", 0)
