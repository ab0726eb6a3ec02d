"""Recursive-descent parser for conntrackd.conf, table-driven, faithful to C 1.4.7.

What C's bison grammar rejects (syntax errors) and what its actions treat as
fatal (``exit(EXIT_FAILURE)``: bad scheduler, PollSecs 0, unknown helper, ...)
raises :class:`ConfigError`.  What C only logs a warning for (bad IP literal,
unknown protocol or syslog facility, deprecated keys) becomes a warning
:class:`Finding` in ``Config.warnings`` and the value is dropped, as in C.
Cross-field rules that C enforces while reducing whole blocks (mixed
transports, more than four channels, Sync with Stats) are left to
:func:`check_config` so that the model can describe them with positions.

Repeated sections and keys behave like C's single global ``struct ct_conf``:
later values overwrite earlier ones, lists (channels, filters) accumulate.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .lexer import Kind, Token, tokenize
from .model import (
    DEFAULT_LOGFILE,
    DEFAULT_STATS_LOGFILE,
    AddressFilter,
    Channel,
    Config,
    ConfigError,
    Filter,
    Finding,
    General,
    Helper,
    HelperPolicy,
    HelperType,
    Pos,
    ProtocolFilter,
    Scheduler,
    StateFilter,
    Stats,
    Sync,
    SyncMode,
    Transport,
)

__all__ = ["PROTOCOLS", "parse_config"]

FILENAME_MAXLEN = 256  # include/conntrackd.h
UNIX_PATH_MAX = 108
IFNAMSIZ = 16
CTD_HELPER_NAME_LEN = 16
SYSLOG_FACILITIES = ("daemon",) + tuple(f"local{i}" for i in range(8))

#: getprotobyname() table (netbase /etc/protocols names and aliases; case-sensitive).
PROTOCOLS: Mapping[str, int] = MappingProxyType(
    {
        name: int(num)
        for entry in (
            "ip:IP:0 hopopt:HOPOPT:0 icmp:ICMP:1 igmp:IGMP:2 ggp:GGP:3 ipencap:IP-ENCAP:4 st:ST:5 "
            "tcp:TCP:6 egp:EGP:8 igp:IGP:9 pup:PUP:12 udp:UDP:17 hmp:HMP:20 xns-idp:XNS-IDP:22 "
            "rdp:RDP:27 iso-tp4:ISO-TP4:29 dccp:DCCP:33 xtp:XTP:36 ddp:DDP:37 idpr-cmtp:IDPR-CMTP:38 "
            "ipv6:IPv6:41 ipv6-route:IPv6-Route:43 ipv6-frag:IPv6-Frag:44 idrp:IDRP:45 rsvp:RSVP:46 "
            "gre:GRE:47 esp:IPSEC-ESP:50 ah:IPSEC-AH:51 skip:SKIP:57 ipv6-icmp:IPv6-ICMP:58 "
            "ipv6-nonxt:IPv6-NoNxt:59 ipv6-opts:IPv6-Opts:60 rspf:RSPF:CPHB:73 vmtp:VMTP:81 "
            "eigrp:EIGRP:88 ospf:OSPFIGP:89 ax.25:AX.25:93 ipip:IPIP:94 etherip:ETHERIP:97 "
            "encap:ENCAP:98 pim:PIM:103 ipcomp:IPCOMP:108 vrrp:VRRP:112 l2tp:L2TP:115 isis:ISIS:124 "
            "sctp:SCTP:132 fc:FC:133 mobility-header:Mobility-Header:135 udplite:UDPLite:136 "
            "mpls-in-ip:MPLS-in-IP:137 manet:138 hip:HIP:139 shim6:Shim6:140 wesp:WESP:141 "
            "rohc:ROHC:142 ethernet:Ethernet:143 mptcp:MPTCP:262"
        ).split()
        for *names, num in [entry.split(":")]
        for name in names
    }
)

#: Helpers shipped with conntrack-tools 1.4.7: name -> layer-4 protocols it exists for.
#: Every helper has exactly one expectation policy, named like the helper.
KNOWN_HELPERS: Mapping[str, frozenset[str]] = MappingProxyType(
    {
        "amanda": frozenset({"udp"}),
        "dhcpv6": frozenset({"udp"}),
        "ftp": frozenset({"tcp"}),
        "mdns": frozenset({"udp"}),
        "rpc": frozenset({"tcp", "udp"}),
        "sane": frozenset({"tcp"}),
        "slp": frozenset({"udp"}),
        "ssdp": frozenset({"tcp", "udp"}),
        "tftp": frozenset({"udp"}),
        "tns": frozenset({"tcp"}),
    }
)

_SKIP = object()  # reader result: C logged a warning and ignored the line

# --------------------------------------------------------------------------------------
# Grammar tables.  A Key reads one value into ``field`` of the current target dict; a
# Block calls a parser method.  ``zero_default`` mirrors init_config()'s "0 means unset".


@dataclass(frozen=True, slots=True)
class Key:
    reader: str
    field: str | None
    zero_default: bool = False
    maxlen: int = 0
    default_path: str = ""
    note: str = ""


@dataclass(frozen=True, slots=True)
class Block:
    method: str
    arg: Any = None


Table = Mapping[str, Key | Block]

UINT = "uint"
_NICE_NOTE = "deprecated nice configuration, ignoring. The nice value can be set externally with nice(1) and renice(1)."

GENERAL: Table = {
    "Systemd": Key("bool", "systemd"),
    "Nice": Key("signed", None, note=_NICE_NOTE),
    "HashSize": Key(UINT, "hashsize", zero_default=True),
    "HashLimit": Key(UINT, "hashlimit", zero_default=True),
    "LogFile": Key("logfile", "logfile", maxlen=FILENAME_MAXLEN, default_path=DEFAULT_LOGFILE),
    "Syslog": Key("syslog", "syslog_facility"),
    "LockFile": Key("path", "lockfile", maxlen=FILENAME_MAXLEN),
    "UNIX": Block("_sub", "UNIX"),
    "NetlinkBufferSize": Key(UINT, "netlink_buffer_size", zero_default=True),
    "NetlinkBufferSizeMaxGrowth": Key(UINT, "netlink_buffer_size_max_growth", zero_default=True),
    "NetlinkOverrunResync": Key("overrun", "netlink_overrun_resync", zero_default=True),
    "NetlinkEventsReliable": Key("bool", "netlink_events_reliable"),
    "PollSecs": Key("pollsecs", "poll_secs"),
    "EventIterationLimit": Key(UINT, "event_iteration_limit", zero_default=True),
    "Filter": Block("_filter"),
    "Scheduler": Block("_sub", "Scheduler"),
    "Metrics": Block("_metrics"),  # beyond C (not a C keyword: matched as a name, see EXTENSION_WORDS)
    "Readiness": Block("_readiness"),  # beyond C, likewise
}
#: Beyond C: ``General { Metrics { Listen ADDR:PORT  Textfile /path  Pair NAME } }``.  These words are plain
#: names for C's scanner (so C 1.4.7 rejects the block with a syntax error); we accept them only
#: where a keyword is expected and warn that the file is no longer readable by C.
METRICS: Table = {
    "Listen": Key("listen", "metrics_listen"),
    "Textfile": Key("path", "metrics_textfile", maxlen=FILENAME_MAXLEN),
    "Pair": Key("label", "metrics_pair"),  # a `pair` label on every sample (the inventory's pair group)
}
#: Beyond C: ``General { Readiness { File /path  Weight -N } }``: a keepalived ``track_file`` that holds
#: Weight until the daemon's state is complete and 0 from then on (docs/failover.md).
READINESS: Table = {
    "File": Key("path", "readiness_file", maxlen=FILENAME_MAXLEN),
    "Weight": Key("weight", "readiness_weight"),
}
EXTENSION_WORDS = frozenset({"Metrics", "Listen", "Textfile", "Pair", "AuthKey",  # AuthKey: Sync block
                             "Readiness", "File", "Weight"})
UNIX: Table = {
    "Path": Key("path", "unix_path", maxlen=UNIX_PATH_MAX - 1),
    "Backlog": Key(UINT, None, note="deprecated unix backlog configuration, ignoring."),
}
SCHEDULER: Table = {
    "Type": Key("sched_type", "sched_type"),
    "Priority": Key("priority", "sched_priority"),
}
_TIMERS: Table = {
    "RefreshTime": Key(UINT, "refresh_time", zero_default=True),
    "CacheTimeout": Key(UINT, "cache_timeout", zero_default=True),
    "CommitTimeout": Key(UINT, "commit_timeout", zero_default=True),
    "PurgeTimeout": Key(UINT, "purge_timeout", zero_default=True),
}
SYNC: Table = {
    **_TIMERS,
    "Mode": Block("_mode"),
    "Multicast": Block("_channel", Transport.MULTICAST),
    "UDP": Block("_channel", Transport.UDP),
    "TCP": Block("_channel", Transport.TCP),
    "Options": Block("_sub", "Options"),
    "AuthKey": Key("authkey", "auth_key", maxlen=FILENAME_MAXLEN),  # beyond C
}
_DEC = Key("bool", "disable_external_cache")
_RESYNC = Key("bool", "startup_resync")
MODES: Mapping[SyncMode, Table] = {
    SyncMode.ALARM: dict(_TIMERS),
    SyncMode.FTFW: {
        "ResendQueueSize": Key(UINT, "resend_queue_size", zero_default=True),
        "CommitTimeout": _TIMERS["CommitTimeout"],
        "PurgeTimeout": _TIMERS["PurgeTimeout"],
        "ACKWindowSize": Key(UINT, "ack_window_size", zero_default=True),
        "DisableExternalCache": _DEC,
        "StartupResync": _RESYNC,
    },
    SyncMode.NOTRACK: {
        "CommitTimeout": _TIMERS["CommitTimeout"],
        "PurgeTimeout": _TIMERS["PurgeTimeout"],
        "DisableInternalCache": Key("bool", "disable_internal_cache"),
        "DisableExternalCache": _DEC,
        "StartupResync": _RESYNC,
    },
}
OPTIONS: Table = {
    "TCPWindowTracking": Key("bool", "tcp_window_tracking"),
    "ExpectationSync": Block("_expectation_sync"),
}
_CH_COMMON: Table = {
    "Interface": Key("ifname", "interface"),
    "SndSocketBuffer": Key(UINT, "sndbuf"),
    "RcvSocketBuffer": Key(UINT, "rcvbuf"),
    "Checksum": Key("bool", "checksum"),
}
_UNICAST: Table = {
    **_CH_COMMON,
    "IPv4_address": Key("ip4", "ipv4_address"),
    "IPv6_address": Key("ip6", "ipv6_address"),
    "IPv4_Destination_Address": Key("ip4", "ipv4_destination"),
    "IPv6_Destination_Address": Key("ip6", "ipv6_destination"),
    "Port": Key(UINT, "port"),
}
CHANNELS: Mapping[Transport, Table] = {
    Transport.MULTICAST: {
        **_CH_COMMON,
        "IPv4_address": Key("ip4", "ipv4_address"),
        "IPv6_address": Key("ip6", "ipv6_address"),
        "IPv4_interface": Key("ip4", "ipv4_interface"),
        "IPv6_interface": Key("ip", None, note="`IPv6_interface' not required, ignoring"),
        "Group": Key(UINT, "port"),
    },
    Transport.UDP: _UNICAST,
    Transport.TCP: {**_UNICAST, "ErrorQueueLength": Key(UINT, "error_queue_length")},
}
STATS: Table = {
    "LogFile": Key("logfile", "logfile", maxlen=FILENAME_MAXLEN, default_path=DEFAULT_STATS_LOGFILE),
    "Syslog": Key("syslog", "syslog_facility"),
}
HELPER: Table = {
    "Setup": Key("bool", "setup"),
    "Type": Block("_helper_type"),
    "QueueNum": Block("_helper_item", "queue_num"),
    "QueueLen": Block("_helper_item", "queue_len"),
    "Policy": Block("_helper_policy"),
}
HELPER_TYPE: Table = {k: v for k, v in HELPER.items() if k != "Setup"}
POLICY: Table = {
    "ExpectMax": Key(UINT, "expect_max"),
    "ExpectTimeout": Key(UINT, "expect_timeout"),
}
SECTIONS: Table = {
    "General": Block("_section", "General"),
    "Sync": Block("_section", "Sync"),
    "Stats": Block("_section", "Stats"),
    "Helper": Block("_section", "Helper"),
}
_SUB_TABLES: Mapping[str, Table] = {"UNIX": UNIX, "Scheduler": SCHEDULER, "Options": OPTIONS}
TCP_STATES = {
    "SYN_SENT": "SYN_SENT",
    "SYN_RECV": "SYN_RECV",
    "ESTABLISHED": "ESTABLISHED",
    "FIN_WAIT": "FIN_WAIT",
    "CLOSE_WAIT": "CLOSE_WAIT",
    "LAST_ACK": "LAST_ACK",
    "TIME_WAIT": "TIME_WAIT",
    "CLOSE": "CLOSE",
    "CLOSED": "CLOSE",
    "LISTEN": "LISTEN",
}

#: Where each keyword may legally appear, for "belongs in ..." hints.
_PLACES: tuple[tuple[str, Table], ...] = (
    ("the top level", SECTIONS),
    ("General", GENERAL),
    ("UNIX", UNIX),
    ("Scheduler", SCHEDULER),
    ("Metrics", METRICS),
    ("Readiness", READINESS),
    ("Sync", SYNC),
    *((f"Mode {m}", t) for m, t in MODES.items()),
    ("Options", OPTIONS),
    *((f"{t}", tbl) for t, tbl in CHANNELS.items()),
    ("Stats", STATS),
    ("Helper", HELPER),
    ("Policy", POLICY),
)
KEY_HOMES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {key: tuple(place for place, tbl in _PLACES if key in tbl) for key in {k for _, tbl in _PLACES for k in tbl}}
)

_EXPECTED = {
    "bool": "'on' or 'off'",
    UINT: "a number",
    "signed": "a signed number such as -5 or +5",
    "path": "an absolute path",
    "logfile": "'on', 'off' or an absolute path",
    "syslog": "'on', 'off' or a syslog facility",
    "overrun": "'on', 'off' or a number of seconds",
    "ip": "an IP address",
    "ip4": "an IPv4 address",
    "ip6": "an IPv6 address",
    "ifname": "an interface name",
    "sched_type": "RR or FIFO",
    "priority": "a priority between 0 and 99",
    "pollsecs": "a number of seconds",
    "authkey": "hex digits or an absolute path",
    "weight": "a negative number such as -100",
    "label": "a name such as pair_edge (letters, digits, '_', '-', '.', ':')",
}
_ACCEPTED_KINDS = {
    "bool": (Kind.ON, Kind.OFF),
    UINT: (Kind.NUMBER,),
    "signed": (Kind.SIGNED,),
    "path": (Kind.PATH,),
    "logfile": (Kind.ON, Kind.OFF, Kind.PATH),
    "syslog": (Kind.ON, Kind.OFF, Kind.STRING),
    "overrun": (Kind.ON, Kind.OFF, Kind.NUMBER),
    "ip": (Kind.IP,),
    "ip4": (Kind.IP,),
    "ip6": (Kind.IP,),
    "ifname": (Kind.STRING,),
    "sched_type": (Kind.STRING,),
    "priority": (Kind.NUMBER,),
    "pollsecs": (Kind.NUMBER,),
    "weight": (Kind.SIGNED, Kind.NUMBER),
    "label": (Kind.STRING, Kind.NUMBER, Kind.KEYWORD),
    # a hex word is scanned as numbers, IPv6 words and names: r_authkey re-reads the raw text
    "authkey": (Kind.NUMBER, Kind.IP, Kind.STRING, Kind.PATH, Kind.ON, Kind.OFF, Kind.ALARM, Kind.FTFW,
                Kind.NOTRACK, Kind.KEYWORD),
}


_LABEL = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


def _inet_aton(text: str) -> str | None:
    """glibc inet_aton (octal parts, no CIDR) rendered as a dotted quad, or None."""
    try:
        return socket.inet_ntoa(socket.inet_aton(text))
    except (OSError, ValueError):
        return None


def _inet_pton6(text: str) -> str | None:
    try:
        return socket.inet_ntop(socket.AF_INET6, socket.inet_pton(socket.AF_INET6, text))
    except (OSError, ValueError):
        return None


def _describe_kind(tok: Token) -> str:
    """Explain surprising C token classes in error messages."""
    if tok.kind is Kind.IP and tok.text[:1].isalpha():
        return f"{tok.describe()} (conntrackd reads a bare hex word as an IPv6 address)"
    if tok.kind in (Kind.ON, Kind.OFF) and tok.text.isalpha():
        return f"{tok.describe()} (a boolean keyword)"
    if tok.kind is Kind.KEYWORD:
        return f"keyword {tok.describe()}"
    if tok.kind is Kind.CHAR and tok.text == '"':
        return "'\"' (conntrackd.conf has no quoting)"
    if tok.kind is Kind.CHAR and tok.text == "#":
        return "'#' (a comment on the last line needs a trailing newline)"
    return tok.describe()


class _Parser:
    def __init__(self, text: str, filename: str, protocols: Mapping[str, int]) -> None:
        self.text = text
        self.file = filename
        self.protocols = protocols
        self.toks = tokenize(text)
        self.i = 0
        self.warnings: list[Finding] = []
        self.positions: dict[str, Pos] = {}
        self.sections: list[tuple[str, Pos]] = []
        self.general: dict[str, Any] = {}
        self.sync: dict[str, Any] | None = None
        self.stats: dict[str, Any] | None = None
        self.helper: dict[str, Any] | None = None
        self.channels: list[dict[str, Any]] = []
        self.modes: list[SyncMode] = []
        self.filter: dict[str, Any] | None = None
        self.helper_types: list[HelperType] = []
        self.helper_stack: list[tuple[str, Any, Token]] = []
        self.expect_helpers: list[str] = []

    # -- token helpers -------------------------------------------------------------
    def next(self) -> Token:
        tok = self.toks[self.i]
        if tok.kind is not Kind.EOF:
            self.i += 1
        if tok.note:
            self.warn(tok, tok.note, "deprecated")
        return tok

    def peek(self) -> Token:
        return self.toks[self.i]

    def error(self, tok: Token, message: str) -> ConfigError:
        return ConfigError(self.file, tok.line, tok.column, message)

    def warn(self, tok: Token, message: str, code: str = "") -> None:
        self.warnings.append(Finding("warning", message, self.file, tok.line, tok.column, code))

    def expect_char(self, ch: str, context: str) -> Token:
        tok = self.next()
        if tok.kind is not Kind.CHAR or tok.text != ch:
            raise self.error(tok, f"expected '{ch}' {context}, got {_describe_kind(tok)}")
        return tok

    def unexpected(self, tok: Token, where: str, table: Table, opened: Token) -> ConfigError:
        if tok.kind is Kind.EOF:
            return self.error(tok, f"unexpected end of file: '{{' of {where} at line {opened.line} is never closed")
        name = tok.value if tok.kind is Kind.KEYWORD else None
        homes = KEY_HOMES.get(name, ()) if isinstance(name, str) else ()
        if homes:
            return self.error(
                tok,
                f"'{tok.text}' is not valid in {where}; conntrackd 1.4.7 accepts it only in " + ", ".join(homes),
            )
        keys = ", ".join(sorted(table))
        return self.error(tok, f"unexpected {_describe_kind(tok)} in {where}; expected '}}' or one of: {keys}")

    # -- generic block walker ------------------------------------------------------
    def block(self, table: Table, target: dict[str, Any], where: str, prefix: str) -> None:
        opened = self.expect_char("{", f"after {where}")
        while True:
            tok = self.next()
            if tok.kind is Kind.CHAR and tok.text == "}":
                return
            spec = table.get(tok.value) if tok.kind is Kind.KEYWORD else None  # type: ignore[arg-type]
            if spec is None and tok.kind is Kind.STRING and tok.text in EXTENSION_WORDS:
                spec = table.get(tok.text)
            if spec is None:
                raise self.unexpected(tok, where, table, opened)
            if isinstance(spec, Block):
                getattr(self, spec.method)(tok, spec.arg, target, prefix)
                continue
            value = self.read_value(tok, spec)
            if value is _SKIP or spec.field is None:
                continue
            if spec.zero_default and value == 0:
                target.pop(spec.field, None)
            else:
                target[spec.field] = value
            self.positions[f"{prefix}.{spec.field}"] = Pos(tok.line, tok.column)

    def read_value(self, key: Token, spec: Key) -> Any:
        tok = self.next()
        reader = spec.reader
        if reader == "listen":
            return self.r_listen(key, tok)
        if tok.kind not in _ACCEPTED_KINDS[reader]:
            if reader == "logfile":
                rel = self.relative_path(tok)
                if rel is not None:
                    return rel
            raise self.error(tok, f"expected {_EXPECTED[reader]} after {key.text}, got {_describe_kind(tok)}")
        if spec.note:
            self.warn(key, spec.note, "deprecated")
            return _SKIP
        return getattr(self, f"r_{reader}")(key, tok, spec)

    # -- value readers (one per Key.reader) ----------------------------------------
    def r_bool(self, key: Token, tok: Token, spec: Key) -> bool:
        return tok.kind is Kind.ON

    def r_uint(self, key: Token, tok: Token, spec: Key) -> int:
        if str(tok.value) != tok.text.lstrip("0").rjust(1, "0"):
            self.warn(
                tok,
                f"{tok.text} does not fit in a C int; conntrackd 1.4.7 reads it as {tok.value}",
                "overflow",
            )
        assert isinstance(tok.value, int)
        return tok.value

    def r_signed(self, key: Token, tok: Token, spec: Key) -> int:
        assert isinstance(tok.value, int)
        return tok.value

    def r_weight(self, key: Token, tok: Token, spec: Key) -> int:
        assert isinstance(tok.value, int)
        if tok.value >= 0:
            raise self.error(tok, "Readiness Weight must be negative (keepalived adds it to the priority "
                                  "until the state is complete)")
        return tok.value

    def r_label(self, key: Token, tok: Token, spec: Key) -> str:
        if not _LABEL.fullmatch(tok.text):
            raise self.error(tok, f"expected {_EXPECTED['label']} after {key.text}, got {tok.describe()}")
        return tok.text

    def r_path(self, key: Token, tok: Token, spec: Key) -> str:
        if len(tok.text) > spec.maxlen:
            what = "Path" if key.text == "Path" else f"{key.text} path"
            raise self.error(tok, f"{what} is longer than {spec.maxlen} characters")
        if any(c in tok.text for c in "\t\r#"):
            self.warn(
                tok,
                f"path {tok.describe()} contains a tab, carriage return or '#'; "
                "conntrackd 1.4.7 keeps them as part of the file name",
                "path-chars",
            )
        return tok.text

    def r_logfile(self, key: Token, tok: Token, spec: Key) -> Any:
        if tok.kind is Kind.ON:
            return spec.default_path
        if tok.kind is Kind.OFF:
            # C's action for "LogFile off" is empty: an earlier LogFile stays in force.
            if self.current_logfile_set(spec):
                self.warn(key, "'LogFile off' does not undo an earlier LogFile in conntrackd 1.4.7", "noop")
            return _SKIP
        return self.r_path(key, tok, spec)

    def current_logfile_set(self, spec: Key) -> bool:
        target = self.stats if spec.default_path == DEFAULT_STATS_LOGFILE else self.general
        return bool(target and target.get("logfile"))

    def relative_path(self, tok: Token) -> str | None:
        """Extension: a relative LogFile path (C: syntax error) is accepted with a warning."""
        if tok.kind in (Kind.EOF, Kind.CHAR):
            return None
        end = tok.offset
        while end < len(self.text) and self.text[end] not in ' \t\r\n"':
            end += 1
        word = self.text[tok.offset : end]
        if "/" not in word or "#" in word:
            return None
        while self.peek().kind is not Kind.EOF and self.peek().offset < end:
            self.i += 1
        self.warn(
            tok,
            f"relative LogFile path {word!r}: conntrackd 1.4.7 rejects this (syntax error); "
            "accepted here and resolved against the start directory",
            "c-incompatible",
        )
        return word

    def r_syslog(self, key: Token, tok: Token, spec: Key) -> Any:
        if tok.kind is Kind.ON:
            return "daemon"
        if tok.kind is Kind.OFF:
            return None
        if tok.text not in SYSLOG_FACILITIES:
            self.warn(tok, f"'{tok.text}' is not a known syslog facility, ignoring", "ignored")
            return _SKIP
        return tok.text

    def r_overrun(self, key: Token, tok: Token, spec: Key) -> int:
        if tok.kind is Kind.ON:
            return 30
        if tok.kind is Kind.OFF:
            return -1
        return self.r_uint(key, tok, spec)

    def r_ip(self, key: Token, tok: Token, spec: Key) -> Any:
        return tok.text

    def r_ip4(self, key: Token, tok: Token, spec: Key) -> Any:
        addr = _inet_aton(tok.text)
        if addr is None:
            self.warn(tok, f"{tok.text} is not a valid IPv4 address (ignored, as conntrackd does)", "ignored")
            return _SKIP
        return addr

    def r_ip6(self, key: Token, tok: Token, spec: Key) -> Any:
        addr = _inet_pton6(tok.text)
        if addr is None:
            self.warn(tok, f"{tok.text} is not a valid IPv6 address (ignored, as conntrackd does)", "ignored")
            return _SKIP
        return addr

    def r_ifname(self, key: Token, tok: Token, spec: Key) -> str:
        return tok.text

    def r_sched_type(self, key: Token, tok: Token, spec: Key) -> str:
        kind = tok.text.upper()
        if kind not in ("RR", "FIFO"):
            raise self.error(tok, f"unknown scheduler '{tok.text}': expected RR or FIFO")
        return kind

    def r_priority(self, key: Token, tok: Token, spec: Key) -> int:
        assert isinstance(tok.value, int)
        if not 0 <= tok.value <= 99:
            raise self.error(tok, f"'Priority' must be [0, 99], got {tok.text}")
        return tok.value

    def r_listen(self, key: Token, tok: Token) -> str:
        """``ADDR:PORT`` (``[v6]:PORT``) read as one raw word, like ``--metrics-listen``."""
        end = tok.offset
        while end < len(self.text) and self.text[end] not in " \t\r\n":
            end += 1
        word = self.text[tok.offset:end] if tok.kind is not Kind.EOF else ""
        while self.peek().kind is not Kind.EOF and self.peek().offset < end:
            self.i += 1
        host, sep, port = word.rpartition(":")
        bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            ok = bool(sep) and port.isdigit() and 0 < int(port) < 65536 and bool(ipaddress.ip_address(bare))
        except ValueError:
            ok = False
        if not ok:
            shown = repr(word) if word else "end of file"
            raise self.error(tok, f"expected ADDRESS:PORT after Listen (e.g. 127.0.0.1:9101 or [::1]:9101), "
                                  f"got {shown}")
        return word

    def _metrics(self, tok: Token, _a: Any, target: dict[str, Any], prefix: str) -> None:
        self.warn(tok, "'Metrics' is an extension: conntrackd 1.4.7 (and its client) reject this file "
                  "(syntax error)", "c-incompatible")
        self.block(METRICS, target, "Metrics", prefix)

    def _readiness(self, tok: Token, _a: Any, target: dict[str, Any], prefix: str) -> None:
        self.warn(tok, "'Readiness' is an extension: conntrackd 1.4.7 (and its client) reject this file "
                  "(syntax error)", "c-incompatible")
        self.block(READINESS, target, "Readiness", prefix)

    def r_pollsecs(self, key: Token, tok: Token, spec: Key) -> int:
        value = self.r_uint(key, tok, spec)
        if value == 0:
            raise self.error(tok, "'PollSecs' clause must be > 0")
        return value

    def r_authkey(self, key: Token, tok: Token, spec: Key) -> str:
        """Beyond C: ``AuthKey <hex>`` (>= 32 digits) or ``AuthKey /path/to/keyfile``."""
        end = tok.offset
        while end < len(self.text) and self.text[end] not in " \t\r\n":
            end += 1
        word = self.text[tok.offset : end]
        while self.peek().kind is not Kind.EOF and self.peek().offset < end:
            self.i += 1
        if word.startswith("/"):
            if len(word) > spec.maxlen:
                raise self.error(tok, f"AuthKey path is longer than {spec.maxlen} characters")
        elif not re.fullmatch(r"(?:[0-9a-fA-F]{2}){16,}", word):
            raise self.error(tok, "AuthKey needs an even number (>= 32) of hex digits or an absolute key file path")
        self.warn(key, "AuthKey (authenticated sync) is an extension: conntrackd 1.4.7 rejects it (syntax error)",
                  "c-incompatible")
        return word

    # -- blocks ----------------------------------------------------------------------
    def parse(self) -> Config:
        while True:
            tok = self.next()
            if tok.kind is Kind.EOF:
                break
            spec = SECTIONS.get(tok.value) if tok.kind is Kind.KEYWORD else None  # type: ignore[arg-type]
            if not isinstance(spec, Block):
                homes = KEY_HOMES.get(tok.value, ()) if tok.kind is Kind.KEYWORD else ()  # type: ignore[arg-type]
                hint = f"; '{tok.text}' belongs in " + ", ".join(homes) if homes else ""
                raise self.error(
                    tok, f"expected a section (General, Sync, Stats or Helper), got {_describe_kind(tok)}{hint}"
                )
            self._section(tok, spec.arg, {}, "")
        return self.build()

    def _section(self, tok: Token, name: str, _target: dict[str, Any], _prefix: str) -> None:
        if name == "General":
            self.block(GENERAL, self.general, "General", "general")
            return
        attr = name.lower()
        table = {"Sync": SYNC, "Stats": STATS, "Helper": HELPER}[name]
        target = getattr(self, attr)
        if target is None:
            target = {}
            setattr(self, attr, target)
        self.block(table, target, name, attr)
        self.sections.append((name, Pos(tok.line, tok.column)))

    def _sub(self, tok: Token, name: str, target: dict[str, Any], prefix: str) -> None:
        self.block(_SUB_TABLES[name], target, name, prefix)

    def _mode(self, tok: Token, _arg: Any, target: dict[str, Any], prefix: str) -> None:
        mtok = self.next()
        modes = {Kind.FTFW: SyncMode.FTFW, Kind.NOTRACK: SyncMode.NOTRACK, Kind.ALARM: SyncMode.ALARM}
        if mtok.kind not in modes:
            raise self.error(mtok, f"expected FTFW, NOTRACK or ALARM after Mode, got {_describe_kind(mtok)}")
        mode = modes[mtok.kind]
        self.block(MODES[mode], target, f"Mode {mode}", prefix)
        self.modes.append(mode)
        self.positions[f"sync.mode[{len(self.modes) - 1}]"] = Pos(tok.line, tok.column)

    def _channel(self, tok: Token, transport: Transport, _t: dict[str, Any], _p: str) -> None:
        idx = len(self.channels)
        chan: dict[str, Any] = {"transport": transport, "line": tok.line, "column": tok.column}
        if self.peek().kind is Kind.KEYWORD and self.peek().value == "Default":
            self.next()
            chan["default"] = True
        self.block(CHANNELS[transport], chan, str(transport), f"sync.channels[{idx}]")
        if transport is Transport.MULTICAST and "ipv4_address" in chan and "ipv6_address" in chan:
            self.warn(tok, "Multicast block has both an IPv4 and an IPv6 group", "family")
        if "error_queue_length" in chan and chan["error_queue_length"] != 0:
            assert self.sync is not None
            self.sync["error_queue_length"] = chan["error_queue_length"]
        self.channels.append(chan)

    def _expectation_sync(self, tok: Token, _a: Any, target: dict[str, Any], prefix: str) -> None:
        nxt = self.peek()
        self.positions[f"{prefix}.expectation_sync"] = Pos(tok.line, tok.column)
        if nxt.kind in (Kind.ON, Kind.OFF):
            self.next()
            target["expectation_sync"] = nxt.kind is Kind.ON
            return
        if nxt.kind is not Kind.CHAR or nxt.text != "{":
            raise self.error(
                nxt, f"expected 'on', 'off' or '{{ helper ... }}' after ExpectationSync, got {_describe_kind(nxt)}"
            )
        self.next()
        while True:
            item = self.next()
            if item.kind is Kind.CHAR and item.text == "}":
                break
            if item.kind is not Kind.STRING:
                raise self.error(item, f"expected a helper name or '}}' in ExpectationSync, got {_describe_kind(item)}")
            self.expect_helpers.append(item.text)
        target["expectation_sync"] = True

    # -- Filter ----------------------------------------------------------------------
    def _filter(self, tok: Token, _a: Any, _t: dict[str, Any], _p: str) -> None:
        kernel = False
        if self.peek().kind is Kind.KEYWORD and self.peek().value == "From":
            self.next()
            side = self.next()
            if side.kind is not Kind.KEYWORD or side.value not in ("Userspace", "Kernelspace"):
                raise self.error(
                    side, f"expected Userspace or Kernelspace after 'Filter From', got {_describe_kind(side)}"
                )
            kernel = side.value == "Kernelspace"
        if self.filter is None:
            self.filter = {"protocol": None, "address": None, "state": None}
        self.positions["general.filter"] = Pos(tok.line, tok.column)
        opened = self.expect_char("{", "after Filter")
        kinds = {"Protocol": self._filter_protocols, "Address": self._filter_addresses, "State": self._filter_states}
        while True:
            item = self.next()
            if item.kind is Kind.CHAR and item.text == "}":
                break
            handler = kinds.get(item.value) if item.kind is Kind.KEYWORD else None  # type: ignore[arg-type]
            if handler is None:
                raise self.unexpected(item, "Filter", dict.fromkeys(kinds), opened)
            pol = self.next()
            if pol.kind is not Kind.KEYWORD or pol.value not in ("Accept", "Ignore"):
                raise self.error(pol, f"expected Accept or Ignore after {item.text}, got {_describe_kind(pol)}")
            policy = "accept" if pol.value == "Accept" else "ignore"
            key = item.text.lower()
            prev = self.filter[key]
            if prev is not None and prev[0] != policy:
                self.warn(
                    pol, f"{item.text} filter policy changed to {pol.text}; it now applies to all entries", "filter"
                )
            items = prev[1] if prev is not None else []
            self.expect_char("{", f"after {item.text} {pol.text}")
            handler(items)
            self.filter[key] = (policy, items)
        self.filter["from_kernelspace"] = kernel

    def _filter_protocols(self, items: list[int]) -> None:
        while True:
            tok = self.next()
            if tok.kind is Kind.CHAR and tok.text == "}":
                return
            if tok.kind is Kind.STRING or (tok.kind is Kind.KEYWORD and tok.value in ("TCP", "UDP")):
                name = tok.text.lower() if tok.kind is Kind.KEYWORD else tok.text
                num = self.protocols.get(name)
                if num is None:
                    self.warn(tok, f"getprotobyname() cannot find protocol `{tok.text}' in /etc/protocols", "ignored")
                elif num not in items:
                    items.append(num)
                continue
            raise self.error(tok, f"expected a protocol name or '}}' in Protocol filter, got {_describe_kind(tok)}")

    def _filter_addresses(self, items: list[Any]) -> None:
        while True:
            tok = self.next()
            if tok.kind is Kind.CHAR and tok.text == "}":
                return
            if tok.kind is not Kind.KEYWORD or tok.value not in ("IPv4_address", "IPv6_address"):
                raise self.error(
                    tok, f"expected IPv4_address, IPv6_address or '}}' in Address filter, got {_describe_kind(tok)}"
                )
            val = self.next()
            if val.kind is not Kind.IP:
                raise self.error(val, f"expected an IP address after {tok.text}, got {_describe_kind(val)}")
            net = self._filter_network(val, 4 if tok.value == "IPv4_address" else 6)
            if net is None:
                continue
            if net in items:
                what = "IP" if net.prefixlen == net.max_prefixlen else "netmask"
                self.warn(val, f"{what} {val.text} is repeated in the address filter", "duplicate")
            else:
                items.append(net)

    def _filter_network(self, tok: Token, version: int) -> Any:
        maxlen = 32 if version == 4 else 128
        text, _, cidr_text = tok.text.partition("/")
        cidr = int(cidr_text) if cidr_text else maxlen
        if cidr > maxlen:
            self.warn(tok, f"{tok.text} is not a valid network, ignoring", "ignored")
            return None
        addr = _inet_aton(text) if version == 4 else _inet_pton6(text)
        if addr is None:
            self.warn(tok, f"{text} is not a valid IPv{version}, ignoring", "ignored")
            return None
        return ipaddress.ip_network(f"{addr}/{cidr}", strict=False)

    def _filter_states(self, items: list[str]) -> None:
        pending: list[Token] = []
        while True:
            tok = self.next()
            if tok.kind is Kind.KEYWORD and tok.value in TCP_STATES:
                pending.append(tok)
                continue
            if tok.kind is Kind.KEYWORD and tok.value == "for":
                proto = self.next()
                if proto.kind is not Kind.KEYWORD or proto.value != "TCP":
                    raise self.error(proto, f"expected TCP after 'for', got {_describe_kind(proto)}")
                for st in pending:
                    name = TCP_STATES[st.text]
                    if name not in items:
                        items.append(name)
                pending.clear()
                continue
            if tok.kind is Kind.CHAR and tok.text == "}" and not pending:
                return
            if pending:
                raise self.error(tok, f"expected a TCP state or 'for TCP' in State filter, got {_describe_kind(tok)}")
            raise self.error(tok, f"expected a TCP state, 'for TCP' or '}}' in State filter, got {_describe_kind(tok)}")

    # -- Helper ----------------------------------------------------------------------
    def _helper_item(self, tok: Token, field: str, _t: dict[str, Any], _p: str) -> None:
        val = self.next()
        if val.kind is not Kind.NUMBER:
            raise self.error(val, f"expected a number after {tok.text}, got {_describe_kind(val)}")
        self.helper_stack.append((field, val.value, tok))

    def _helper_policy(self, tok: Token, _a: Any, _t: dict[str, Any], _p: str) -> None:
        name = self.next()
        if name.kind is not Kind.STRING:
            raise self.error(name, f"expected a policy name after Policy, got {_describe_kind(name)}")
        leaf: dict[str, Any] = {}
        self.block(POLICY, leaf, f"Policy {name.text}", "helper.policy")
        if not leaf:
            raise self.error(tok, "Helper policy configuration empty, fix your configuration file, please")
        if len(name.text) > CTD_HELPER_NAME_LEN:
            raise self.error(name, f"Helper Policy is longer than {CTD_HELPER_NAME_LEN} characters")
        self.helper_stack.append(("policy", HelperPolicy(name.text, **leaf), tok))

    def _helper_type(self, tok: Token, _a: Any, _t: dict[str, Any], _p: str) -> None:
        words = []
        for what in ("helper name", "layer 3 protocol (inet or inet6)", "layer 4 protocol (tcp or udp)"):
            w = self.next()
            if w.kind is not Kind.STRING:
                raise self.error(
                    w,
                    f"expected {what} after {' '.join([tok.text, *(x.text for x in words)])}, got {_describe_kind(w)}",
                )
            words.append(w)
        self.block(HELPER_TYPE, {}, f"Type {' '.join(w.text for w in words)}", "helper")
        name, l3, l4 = words
        if l3.text not in ("inet", "inet6"):
            raise self.error(l3, f"unknown layer 3 protocol '{l3.text}': expected inet or inet6")
        if l4.text not in ("tcp", "udp"):
            raise self.error(l4, f"unknown layer 4 protocol '{l4.text}': expected tcp or udp")
        if l4.text not in KNOWN_HELPERS.get(name.text, ()):
            known = ", ".join(f"{h}/{'+'.join(sorted(p))}" for h, p in KNOWN_HELPERS.items())
            raise self.error(name, f"Unknown `{name.text}' helper for {l4.text} (known: {known})")
        # C pops its symbol stack newest-first, so the oldest value of a field wins.
        fields: dict[str, Any] = {}
        policies: dict[str, HelperPolicy] = {}
        for field, value, where in reversed(self.helper_stack):
            if field == "policy":
                if value.name != name.text:
                    raise self.error(where, f"Unknown policy `{value.name}' in helper configuration")
                policies[value.name] = value
            else:
                fields[field] = value
        self.helper_stack.clear()
        self.helper_types.append(
            HelperType(
                name.text,
                l3.text,
                l4.text,
                policies=tuple(policies.values()),  # type: ignore[arg-type]
                line=tok.line,
                **fields,
            )
        )

    # -- freeze ----------------------------------------------------------------------
    def build(self) -> Config:
        g = dict(self.general)
        sched = Scheduler(type=g.pop("sched_type", None), priority=g.pop("sched_priority", 0))
        flt = None
        if self.filter is not None:
            f = self.filter
            flt = Filter(
                from_kernelspace=f.get("from_kernelspace", False),
                protocol=ProtocolFilter(f["protocol"][0], tuple(f["protocol"][1])) if f["protocol"] else None,
                address=AddressFilter(f["address"][0], tuple(f["address"][1])) if f["address"] else None,
                state=StateFilter(f["state"][0], tuple(f["state"][1])) if f["state"] else None,
            )
        if "lockfile" in g:
            g["lockfile_set"] = True
        general = General(**g, scheduler=sched, filter=flt)
        sync = None
        if self.sync is not None:
            s = dict(self.sync)
            channels = tuple(Channel(**c) for c in self.channels)
            sync = Sync(
                **s,
                modes=tuple(self.modes),
                channels=channels,
                expectation_helpers=tuple(dict.fromkeys(self.expect_helpers)),
            )
        stats = Stats(**self.stats) if self.stats is not None else None
        helper = None
        if self.helper is not None:
            for _field, _value, where in self.helper_stack:
                self.warn(where, f"{where.text} outside a Type block is ignored", "ignored")
            helper = Helper(setup=self.helper.get("setup", False), types=tuple(self.helper_types))
        return Config(
            file=self.file,
            general=general,
            sync=sync,
            stats=stats,
            helper=helper,
            warnings=tuple(self.warnings),
            positions=MappingProxyType(dict(self.positions)),
            sections=tuple(self.sections),
        )


def parse_config(text: str, filename: str = "conntrackd.conf", *, protocols: Mapping[str, int] | None = None) -> Config:
    """Parse conntrackd.conf text.  Raises only :class:`ConfigError`.

    ``protocols`` replaces the built-in getprotobyname() table (name -> number).
    """
    try:
        return _Parser(text, filename, PROTOCOLS if protocols is None else protocols).parse()
    except ConfigError:
        raise
    except RecursionError:  # nested helper Type blocks thousands deep
        raise ConfigError(filename, 0, 0, "configuration nested too deeply") from None
