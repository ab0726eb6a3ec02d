"""Name tables shared by the renderers, built once at import.

They mirror libnetfilter_conntrack's ``proto2str``/``l3proto2str``/``states`` arrays
(src/conntrack/snprintf.c) so that unknown numbers fall back exactly like C does.
"""

from __future__ import annotations

import socket
import time

from conntrack_tools.flow import (
    AF_INET,
    AF_INET6,
    DCCP_STATES,
    GRE_PROTO,
    ICMP_PROTOS,
    L3_NAMES,
    L4_NAMES,
    PORT_PROTOS,
    SCTP_STATES,
    TCP_STATES,
)

ZERO4 = bytes(4)
ZERO16 = bytes(16)
U64 = (1 << 64) - 1


# L4 kinds: how a tuple's protocol part is printed (__snprintf_proto), for every u8 protocol number.
K_NONE, K_PORTS, K_GRE, K_ICMP = 0, 1, 2, 3
L4_KIND: tuple[int, ...] = tuple(
    K_PORTS if n in PORT_PROTOS else K_GRE if n == GRE_PROTO else K_ICMP if n in ICMP_PROTOS else K_NONE
    for n in range(256)
)


def l4_name(num: int) -> str:
    return L4_NAMES.get(num, "unknown")


def l3_name(num: int) -> str:
    return L3_NAMES.get(num, "unknown")


# "%-8s %u " for every possible u8 protocol number (C prints the u8, so index & 0xff).
L4_PREFIX: tuple[str, ...] = tuple(f"{l4_name(n):<8} {n} " for n in range(256))
L3_PREFIX: tuple[str, ...] = tuple(f"{l3_name(n):<8} {n} " for n in range(256))

# State text with C's "out of range -> NONE" fallback, padded to 256 entries so that a
# u8 index never fails.
TCP_STATE_TEXT: tuple[str, ...] = tuple(TCP_STATES[n] if n < len(TCP_STATES) else "NONE" for n in range(256))
SCTP_STATE_TEXT: tuple[str, ...] = tuple(
    SCTP_STATES[n] if n < len(SCTP_STATES) else "NONE" for n in range(256)
)
DCCP_STATE_TEXT: tuple[str, ...] = tuple(
    DCCP_STATES[n] if n < len(DCCP_STATES) else "NONE" for n in range(256)
)

EVENT_TAG: dict[str | None, str] = {
    None: "",
    "new": "    [NEW] ",
    "update": " [UPDATE] ",
    "destroy": "[DESTROY] ",
}


def addr_text(family: int, packed: bytes | None) -> str:
    """inet_ntoa/inet_ntop like C; an absent address is the zeroed C field."""
    if family == AF_INET:
        return socket.inet_ntoa(packed or ZERO4)
    if family == AF_INET6:
        return socket.inet_ntop(AF_INET6, packed or ZERO16)
    return ""


def ctime_text(seconds: int) -> str:
    """ctime(3) without the newline, in the local time zone like C."""
    return time.ctime(seconds)


def as_u64(value: int) -> int:
    """C prints time_t differences with %llu: a negative value wraps."""
    return value & U64


def u8(value: int | None) -> int:
    return (value or 0) & 0xFF


def u16(value: int | None) -> int:
    return (value or 0) & 0xFFFF
