"""The typed result of parsing a `conntrack` command line.

Contract (parse.py -> main.py):

* `parse_args(argv, prog=...)` takes argv WITHOUT the program name and returns a `Request`, or
  raises `CliError` (errors.py) whose `str()` is C's complete stderr and `.exit_code` its status.
  Nothing is printed by the parser. `Request.warnings` are stderr lines (no trailing newline)
  that C prints while parsing (`WARNING: ignoring ...`, `nfct_labelmap_new: ...`); print them
  first, in order, then execute.
* `Request.deferred_error`, when set, must be raised by the executor right after it prints the
  `-b` "NOTICE: Netlink socket buffer size ..." line of `-E` (C checks `--mask-src without --src`
  only then). For other commands parse_args already raised those execution-time checks.
* Batch mode (`-R FILE` as first argument) returns `command == LOAD_FILE` with `load_file`
  set; use `batch.load_batch()` / `batch.parse_batch_requests()` for the file.
* Addresses are packed network-order `bytes` (4 bytes IPv4, 16 bytes IPv6): cheap to build
  without importing `ipaddress` and exactly what goes into netlink. `family` is 0 (AF_UNSPEC,
  only for -L/-U/-D/-G/-F/-E without any address or -f), 2 (AF_INET) or 10 (AF_INET6).
* Ports, GRE keys, ICMP ids and SCTP vtags are plain host-order integers, already truncated
  the way C truncates them (`--sport 70000` -> 4464, `--sport abc` -> 0); put them on the wire
  in network order. Zones are u16, mark/secmark/id/timeout u32, all as C computes them.
* `options` is the set of C option names given (`"src"`, `"mask-src"`, `"zero"`, ... the
  `optflags` names of src/conntrack.c) -- the executor's equivalent of `cmd->options`.
  `l4_options` is the same for the protocol extension (`"sport"`, `"state"`, `"icmp-type"`...).
* C quirks preserved in the data: `-u` overwrites `mark_value` with the status bits (so
  `-I -m 5 -u ASSURED` creates mark 4); `--tuple-port-*` of tcp/sctp/dccp stores
  `(u8)htons(port)` as the expectation tuple L4 protocol; `-s ADDR/32` sets no mask;
  `--src-nat=ADDR` / `-nADDR` (glued argument) ignores ADDR; `-Lexpect` lists conntrack.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .errors import CliError

AF_UNSPEC, AF_INET, AF_INET6 = 0, 2, 10


class Command(enum.Enum):
    LIST = "list"
    GET = "get"
    DELETE = "delete"
    CREATE = "create"
    ADD = "add"
    UPDATE = "update"
    EVENT = "event"
    FLUSH = "flush"
    COUNT = "count"
    STATS = "stats"
    VERSION = "version"
    HELP = "help"
    LOAD_FILE = "load_file"
    NONE = "none"  # no command given: C prints the usage text to stdout and exits 0


class Table(enum.Enum):
    CONNTRACK = "conntrack"
    EXPECT = "expect"
    DYING = "dying"
    UNCONFIRMED = "unconfirmed"


@dataclass(slots=True)
class Tuple:
    """One template tuple. `orig`/`reply` of the entry, the `mask` (CIDR masks, --mask-*), or the
    expectation tuple `exp` (--tuple-*). None = attribute not set (C: not in the template)."""

    src: bytes | None = None
    dst: bytes | None = None
    l3proto: int | None = None  # AF_INET/AF_INET6 once an address was stored
    l4proto: int | None = None
    sport: int | None = None  # GRE: source key
    dport: int | None = None  # GRE: destination key


@dataclass(slots=True)
class Nat:
    """--src-nat / --dst-nat / --any-nat. addr None = option given without address (filter on
    'is NATed' only); port None = no `:PORT`."""

    addr: bytes | None = None
    port: int | None = None


@dataclass(slots=True)
class Request:
    command: Command
    table: Table = Table.CONNTRACK
    cmd_index: int = 20  # C's bit2cmd(): index into the legality tables (20 = no command)
    prog: str = "conntrack"
    options: frozenset[str] = frozenset()
    l4_options: frozenset[str] = frozenset()
    family: int = AF_UNSPEC
    proto: str | None = None  # extension handler: tcp udp udplite sctp dccp icmp icmpv6 gre unknown
    l4proto: int | None = None  # -p value as a protocol number
    orig: Tuple = field(default_factory=Tuple)
    reply: Tuple = field(default_factory=Tuple)
    mask: Tuple = field(default_factory=Tuple)
    exp: Tuple = field(default_factory=Tuple)
    timeout: int | None = None  # also the expectation timeout
    status: int | None = None  # ATTR_STATUS (bits set by -u)
    status_filter: tuple[int, int] | None = None  # (value, mask) for the kernel dump filter
    mark_value: int = 0  # tmpl->mark (see quirks above); meaningful when "mark" in options
    mark_mask: int = 0
    mark_filter: tuple[int, int] | None = None  # (value, mask) kernel filter, set by -m only
    secmark: int | None = None
    id: int | None = None
    zone: int | None = None
    orig_zone: int | None = None
    reply_zone: int | None = None
    src_nat: Nat | None = None
    dst_nat: Nat | None = None
    any_nat: Nat | None = None
    labels: frozenset[int] | None = None  # -l bits (resolved through connlabel.conf)
    label_names: tuple[str, ...] = ()
    label_modify: frozenset[int] | None = None  # --label-add bits / --label-del bits (None: all)
    label_modify_names: tuple[str, ...] = ()
    event_mask: int = 0  # options.EVENT_* bits
    buffer_size: int | None = None
    output_mask: int = 0  # options.O_* bits
    output: frozenset[str] = frozenset()  # names: xml extended timestamp id ktimestamp labels save json
    state: int | None = None  # tcp / sctp / dccp state number
    tcp_flags: int | None = None  # set by the tcp final_check (flags == mask, both directions)
    sctp_vtag_orig: int | None = None
    sctp_vtag_reply: int | None = None
    dccp_role: int | None = None  # 0 client, 1 server
    icmp_type: int | None = None
    icmp_code: int | None = None
    icmp_id: int | None = None
    load_file: str | None = None
    warnings: list[str] = field(default_factory=list)
    deferred_error: CliError | None = None

    @property
    def zero(self) -> bool:
        return "zero" in self.options

    @property
    def is_expect(self) -> bool:
        return self.table is Table.EXPECT
