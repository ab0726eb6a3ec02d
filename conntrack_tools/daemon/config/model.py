"""Immutable, typed view of a parsed conntrackd.conf with the C 1.4.7 defaults applied.

Every field default below is the value conntrackd 1.4.7 ends up with when the
key is absent (``init_config`` in src/read_config_yy.y plus the zero-initialised
``struct ct_conf``).  ``None`` means "not set, C has no value either" (for
example no UNIX socket path, or NetlinkBufferSize left to the kernel default).
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

__all__ = [
    "DEFAULT_LOCKFILE",
    "DEFAULT_LOGFILE",
    "DEFAULT_STATS_LOGFILE",
    "AddressFilter",
    "Channel",
    "Config",
    "ConfigError",
    "Filter",
    "Finding",
    "General",
    "Helper",
    "HelperPolicy",
    "HelperType",
    "Pos",
    "ProtocolFilter",
    "Scheduler",
    "StateFilter",
    "Stats",
    "Sync",
    "SyncMode",
    "Transport",
]

DEFAULT_LOCKFILE = "/var/lock/conntrackd.lock"
DEFAULT_LOGFILE = "/var/log/conntrackd.log"
DEFAULT_STATS_LOGFILE = "/var/log/conntrackd-stats.log"

Severity = Literal["error", "warning"]
FilterPolicy = Literal["accept", "ignore"]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """A configuration conntrackd 1.4.7 refuses to load, with its source position."""

    def __init__(self, file: str, line: int, column: int, message: str) -> None:
        super().__init__(f"{file}:{line}:{column}: {message}")
        self.file = file
        self.line = line
        self.column = column
        self.message = message


@dataclass(frozen=True, slots=True)
class Finding:
    """One diagnostic of the parser or of :func:`check_config` (--config-test)."""

    severity: Severity
    message: str
    file: str
    line: int = 0
    column: int = 0
    code: str = ""

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else self.file
        return f"{where}: {self.severity}: {self.message}"


@dataclass(frozen=True, slots=True)
class Pos:
    """Source position of a key (1-based line and column)."""

    line: int
    column: int


class Transport(enum.StrEnum):
    MULTICAST = "Multicast"
    UDP = "UDP"
    TCP = "TCP"


class SyncMode(enum.StrEnum):
    FTFW = "FTFW"
    NOTRACK = "NOTRACK"
    ALARM = "ALARM"


@dataclass(frozen=True, slots=True)
class Scheduler:
    """``Scheduler {}``; type None = C default (SCHED_RR at the maximum priority 99)."""

    type: Literal["RR", "FIFO"] | None = None
    priority: int = 0

    @property
    def effective(self) -> tuple[str, int]:
        """(policy, priority) C actually requests: Priority alone is ignored."""
        return ("RR", 99) if self.type is None else (self.type, self.priority)


@dataclass(frozen=True, slots=True)
class ProtocolFilter:
    policy: FilterPolicy
    protocols: tuple[int, ...] = ()  # IP protocol numbers, first occurrence order


@dataclass(frozen=True, slots=True)
class AddressFilter:
    policy: FilterPolicy
    networks: tuple[IPNetwork, ...] = ()  # host addresses are /32 or /128


@dataclass(frozen=True, slots=True)
class StateFilter:
    policy: FilterPolicy
    tcp_states: tuple[str, ...] = ()  # canonical names; CLOSED is stored as CLOSE


@dataclass(frozen=True, slots=True)
class Filter:
    """``Filter [From Userspace|Kernelspace] {}``; repeated blocks merge like in C."""

    from_kernelspace: bool = False
    protocol: ProtocolFilter | None = None
    address: AddressFilter | None = None
    state: StateFilter | None = None


@dataclass(frozen=True, slots=True)
class General:
    systemd: bool = True  # Debian builds conntrackd with systemd support
    hashsize: int = 65536
    hashlimit: int = 262144
    logfile: str | None = None
    syslog_facility: str | None = None  # "daemon", "local0".."local7"; None = off
    lockfile: str = DEFAULT_LOCKFILE
    lockfile_set: bool = False
    unix_path: str | None = None  # no default in C
    netlink_buffer_size: int | None = None
    netlink_buffer_size_max_growth: int | None = None
    netlink_overrun_resync: int = 30  # seconds; -1 = off
    netlink_events_reliable: bool = False
    poll_secs: int | None = None  # None = event-driven
    event_iteration_limit: int = 100
    scheduler: Scheduler = Scheduler()
    filter: Filter | None = None
    metrics_listen: str | None = None  # beyond C: General { Metrics { Listen ADDR:PORT } }
    metrics_textfile: str | None = None  # beyond C: General { Metrics { Textfile /path } }
    metrics_pair: str | None = None  # beyond C: General { Metrics { Pair NAME } }: label pair="NAME"
    readiness_file: str | None = None  # beyond C: General { Readiness { File /path } } (keepalived track_file)
    readiness_weight: int = -100  # beyond C: General { Readiness { Weight -N } }: the file's value until ready


@dataclass(frozen=True, slots=True)
class Channel:
    """One dedicated link.  ``port`` is ``Group`` for Multicast, ``Port`` otherwise.

    For Multicast, ``ipv4_address``/``ipv6_address`` is the group; for UDP/TCP it
    is the local address and ``*_destination`` the peer.  Invalid addresses were
    dropped by the parser with a warning, exactly as C ignores them.
    """

    transport: Transport
    default: bool = False
    ipv4_address: str | None = None
    ipv6_address: str | None = None
    ipv4_destination: str | None = None
    ipv6_destination: str | None = None
    ipv4_interface: str | None = None
    interface: str | None = None
    port: int | None = None
    sndbuf: int | None = None
    rcvbuf: int | None = None
    checksum: bool = True
    error_queue_length: int | None = None
    line: int = 0
    column: int = 0

    @property
    def families(self) -> frozenset[int]:
        """IP versions mentioned by the addresses of this channel."""
        fams = set()
        if self.ipv4_address or self.ipv4_destination or self.ipv4_interface:
            fams.add(4)
        if self.ipv6_address or self.ipv6_destination:
            fams.add(6)
        return frozenset(fams)


@dataclass(frozen=True, slots=True)
class Sync:
    """``Sync {}``.  Mode sub-block values are global in C, hence flat here."""

    modes: tuple[SyncMode, ...] = ()  # every ``Mode`` block, in file order
    resend_queue_size: int = 131072
    ack_window_size: int = 300
    refresh_time: int = 60
    cache_timeout: int = 180
    commit_timeout: int | None = None
    purge_timeout: int = 60
    disable_internal_cache: bool = False
    disable_external_cache: bool = False
    startup_resync: bool = False
    channels: tuple[Channel, ...] = ()
    tcp_window_tracking: bool = False
    expectation_sync: bool = False
    expectation_helpers: tuple[str, ...] = ()  # empty = all helpers
    error_queue_length: int = 128  # global in C: last ErrorQueueLength of any TCP block
    auth_key: str | None = None  # beyond C: ``AuthKey`` hex digits or an absolute key file path

    @property
    def mode(self) -> SyncMode:
        """Mode C runs: FTFW beats ALARM beats NOTRACK; none given means FTFW."""
        for m in (SyncMode.FTFW, SyncMode.ALARM, SyncMode.NOTRACK):
            if m in self.modes:
                return m
        return SyncMode.FTFW

    @property
    def default_channel(self) -> int:
        """Index of the initial channel: the last ``Default`` one, else the first."""
        idx = 0
        for i, ch in enumerate(self.channels):
            if ch.default:
                idx = i
        return idx

    @property
    def effective_commit_timeout(self) -> int | None:
        """C's ``evaluate()`` drops CommitTimeout when the external cache is disabled."""
        return None if self.disable_external_cache else self.commit_timeout


@dataclass(frozen=True, slots=True)
class Stats:
    logfile: str | None = None
    syslog_facility: str | None = None


@dataclass(frozen=True, slots=True)
class HelperPolicy:
    name: str
    expect_max: int = 0
    expect_timeout: int = 0


@dataclass(frozen=True, slots=True)
class HelperType:
    name: str
    l3proto: Literal["inet", "inet6"]
    l4proto: Literal["tcp", "udp"]
    queue_num: int | None = None
    queue_len: int | None = None
    policies: tuple[HelperPolicy, ...] = ()
    line: int = 0


@dataclass(frozen=True, slots=True)
class Helper:
    """``Helper {}``: parsed for completeness; user-space helpers are not supported."""

    setup: bool = False
    types: tuple[HelperType, ...] = ()
    supported: bool = False


def _empty() -> Mapping[str, Pos]:
    return MappingProxyType({})


@dataclass(frozen=True)
class Config:
    """A whole conntrackd.conf.  ``warnings`` are the parser's non-fatal findings."""

    file: str = "conntrackd.conf"
    general: General = General()
    sync: Sync | None = None
    stats: Stats | None = None
    helper: Helper | None = None
    warnings: tuple[Finding, ...] = ()
    positions: Mapping[str, Pos] = field(default_factory=_empty, compare=False, hash=False)
    # where the Sync / Stats / Helper sections (re)appeared, in order
    sections: tuple[tuple[str, Pos], ...] = field(default=(), compare=False, hash=False)

    @property
    def mode(self) -> Literal["sync", "stats"]:
        """Daemon mode as C picks it: Stats wins, no section at all means stats."""
        return "sync" if self.sync is not None and self.stats is None else "stats"

    def pos(self, key: str) -> Pos | None:
        return self.positions.get(key)
