"""Value types shared by the CLI, the daemon and the sync layer.

A field that is ``None`` is *absent* (the kernel did not send the attribute, or
the user did not give the option). Output formats print only what is present,
exactly as libnetfilter_conntrack does, so "absent" and "zero" must stay apart.

Addresses are kept packed (4 or 16 bytes): that is what netlink and the sync
wire carry, comparisons and masks are byte operations, and text is produced
only when something is printed.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

AF_INET = int(socket.AF_INET)
AF_INET6 = int(socket.AF_INET6)

# Status bits (include/uapi/linux/netfilter/nf_conntrack_common.h).
IPS_EXPECTED = 1 << 0
IPS_SEEN_REPLY = 1 << 1
IPS_ASSURED = 1 << 2
IPS_CONFIRMED = 1 << 3
IPS_SRC_NAT = 1 << 4
IPS_DST_NAT = 1 << 5
IPS_SEQ_ADJUST = 1 << 6
IPS_SRC_NAT_DONE = 1 << 7
IPS_DST_NAT_DONE = 1 << 8
IPS_DYING = 1 << 9
IPS_FIXED_TIMEOUT = 1 << 10
IPS_TEMPLATE = 1 << 11
IPS_UNTRACKED = 1 << 12
IPS_HELPER = 1 << 13
IPS_OFFLOAD = 1 << 14
IPS_HW_OFFLOAD = 1 << 15

# L4 protocol numbers and the names the C tools print for them.
L4_NAMES: dict[int, str] = {
    1: "icmp",
    6: "tcp",
    17: "udp",
    33: "dccp",
    47: "gre",
    58: "icmpv6",
    132: "sctp",
    136: "udplite",
}
L3_NAMES: dict[int, str] = {AF_INET: "ipv4", AF_INET6: "ipv6"}
# The protocol facts every layer shares (libnetfilter_conntrack's per-protocol tables): tuples of these carry
# ports, of these ICMP type/code/id, GRE carries keys in the port slots.
PORT_PROTOS = frozenset((6, 17, 33, 132, 136))  # tcp udp dccp sctp udplite
ICMP_PROTOS = frozenset((1, 58))
GRE_PROTO = 47

TCP_STATES = (
    "NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT",
    "LAST_ACK", "TIME_WAIT", "CLOSE", "SYN_SENT2",
)
SCTP_STATES = (
    "NONE", "CLOSED", "COOKIE_WAIT", "COOKIE_ECHOED", "ESTABLISHED", "SHUTDOWN_SENT",
    "SHUTDOWN_RECD", "SHUTDOWN_ACK_SENT", "HEARTBEAT_SENT", "HEARTBEAT_ACKED",
)
DCCP_STATES = (
    "NONE", "REQUEST", "RESPOND", "PARTOPEN", "OPEN", "CLOSEREQ", "CLOSING",
    "TIMEWAIT", "IGNORE", "INVALID",
)
DCCP_ROLES = ("client", "server")

# TCP flags carried in CTA_PROTOINFO_TCP_FLAGS_*.
TCP_FLAG_WINDOW_SCALE = 0x01
TCP_FLAG_SACK_PERM = 0x02
TCP_FLAG_CLOSE_INIT = 0x04
TCP_FLAG_BE_LIBERAL = 0x08


def addr_to_text(family: int, packed: bytes) -> str:
    return socket.inet_ntop(family, packed)


@dataclass(slots=True)
class Tuple:
    """One direction of a connection (CTA_TUPLE_ORIG / CTA_TUPLE_REPLY / master)."""

    family: int = 0
    src: bytes | None = None
    dst: bytes | None = None
    proto: int | None = None
    sport: int | None = None  # also GRE source key (the kernel reuses the port attribute)
    dport: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    icmp_id: int | None = None
    zone: int | None = None

    def reversed(self) -> Tuple:
        """The tuple seen from the other side, as the kernel builds a reply tuple."""
        rev = Tuple(self.family, self.dst, self.src, self.proto, self.dport, self.sport,
                    self.icmp_type, self.icmp_code, self.icmp_id, self.zone)
        if self.proto in ICMP_PROTOS and self.icmp_type is not None:
            rev.icmp_type = ICMP_REPLY_TYPE.get((self.proto, self.icmp_type), self.icmp_type)
        return rev


# ICMP request -> reply types (for auto-completing the reply tuple like libnetfilter_conntrack).
ICMP_REPLY_TYPE: dict[tuple[int, int], int] = {
    (1, 8): 0, (1, 0): 8, (1, 13): 14, (1, 14): 13, (1, 15): 16, (1, 16): 15,
    (1, 17): 18, (1, 18): 17,
    (58, 128): 129, (58, 129): 128, (58, 139): 140, (58, 140): 139,
}


@dataclass(slots=True)
class Counters:
    packets: int = 0
    bytes: int = 0


@dataclass(slots=True)
class TcpInfo:
    state: int | None = None
    wscale_orig: int | None = None
    wscale_reply: int | None = None
    flags_orig: int | None = None
    mask_orig: int | None = None
    flags_reply: int | None = None
    mask_reply: int | None = None


@dataclass(slots=True)
class SctpInfo:
    state: int | None = None
    vtag_orig: int | None = None
    vtag_reply: int | None = None


@dataclass(slots=True)
class DccpInfo:
    state: int | None = None
    role: int | None = None
    handshake_seq: int | None = None


@dataclass(slots=True)
class SeqAdj:
    correction_pos: int = 0
    offset_before: int = 0
    offset_after: int = 0


@dataclass(slots=True)
class Nat:
    """A NAT request for create (CTA_NAT_SRC/DST): address range and optional port range."""

    family: int
    min_ip: bytes | None = None
    max_ip: bytes | None = None
    min_port: int | None = None
    max_port: int | None = None


@dataclass(slots=True)
class Flow:
    """A conntrack entry as ctnetlink describes it; every field optional."""

    family: int = 0
    orig: Tuple | None = None
    reply: Tuple | None = None
    status: int | None = None
    timeout: int | None = None
    mark: int | None = None
    mark_mask: int | None = None
    secmark: int | None = None
    secctx: str | None = None
    zone: int | None = None
    use: int | None = None
    id: int | None = None
    counters_orig: Counters | None = None
    counters_reply: Counters | None = None
    ts_start: int | None = None  # ns since epoch
    ts_stop: int | None = None
    ts_event: int | None = None
    helper: str | None = None
    labels: bytes | None = None  # little bitmap as the kernel sends it (bit n = label n)
    labels_mask: bytes | None = None
    tcp: TcpInfo | None = None
    sctp: SctpInfo | None = None
    dccp: DccpInfo | None = None
    seqadj_orig: SeqAdj | None = None
    seqadj_reply: SeqAdj | None = None
    synproxy: tuple[int, int, int] | None = None  # isn, its, tsoff
    nat_src: Nat | None = None
    nat_dst: Nat | None = None
    master: Tuple | None = None
    unknown: list[tuple[int, bytes]] = field(default_factory=list)

    @property
    def proto(self) -> int | None:
        return self.orig.proto if self.orig is not None else None

    def proto_state(self) -> int | None:
        for info in (self.tcp, self.sctp, self.dccp):
            if info is not None:
                return info.state
        return None


@dataclass(slots=True)
class Expect:
    """An expectation (CTNETLINK_EXP)."""

    family: int = 0
    master: Tuple | None = None
    tuple: Tuple | None = None
    mask: Tuple | None = None
    timeout: int | None = None
    id: int | None = None
    helper: str | None = None
    zone: int | None = None
    flags: int | None = None
    klass: int | None = None
    nat_dir: int | None = None
    nat_tuple: Tuple | None = None
    fn: str | None = None


EXPECT_PERMANENT = 1
EXPECT_INACTIVE = 2
EXPECT_USERSPACE = 4


def label_bits(labels: bytes | None) -> list[int]:
    """Indices of the set bits of a kernel label bitmap (u32 words in host order)."""
    if not labels:
        return []
    value = int.from_bytes(labels, "little")
    out = []
    i = 0
    while value:
        if value & 1:
            out.append(i)
        value >>= 1
        i += 1
    return out
