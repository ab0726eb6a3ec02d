"""Default (and ``-o extended``) conntrack line, byte-exact with conntrack 1.4.7.

This is libnetfilter_conntrack 1.0.9 ``__snprintf_conntrack_default``: every field is
printed only when its attribute is present (``None`` here), each field ends with a
space and the last space is dropped.  It is the hot path of ``conntrack -L``, so the
function binds what it needs to locals, uses precomputed prefixes and builds the line
with f-strings instead of small helper objects.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping

from conntrack_tools.flow import (
    AF_INET,
    AF_INET6,
    IPS_ASSURED,
    IPS_HW_OFFLOAD,
    IPS_OFFLOAD,
    IPS_SEEN_REPLY,
    Flow,
    Tuple,
    label_bits,
)
from conntrack_tools.formats._tables import (
    DCCP_STATE_TEXT,
    EVENT_TAG,
    K_GRE,
    K_ICMP,
    K_PORTS,
    L3_PREFIX,
    L4_KIND,
    L4_PREFIX,
    SCTP_STATE_TEXT,
    TCP_STATE_TEXT,
    U64,
    ZERO4,
    ZERO16,
    ctime_text,
)

_ntoa = socket.inet_ntoa
_ntop = socket.inet_ntop



def tuple_text(t: Tuple | None, src_tag: str = "src", dst_tag: str = "dst") -> str:
    """``src=A dst=B `` plus the L4 part, with a trailing space (or '' if nothing)."""
    if t is None:
        return ""
    fam = t.family
    if fam == AF_INET:
        s = f"{src_tag}={_ntoa(t.src or ZERO4)} {dst_tag}={_ntoa(t.dst or ZERO4)} "
    elif fam == AF_INET6:
        s = f"{src_tag}={_ntop(AF_INET6, t.src or ZERO16)} {dst_tag}={_ntop(AF_INET6, t.dst or ZERO16)} "
    else:
        s = ""
    kind = L4_KIND[(t.proto or 0) & 0xFF]
    if kind == K_PORTS:
        return f"{s}sport={(t.sport or 0) & 0xFFFF} dport={(t.dport or 0) & 0xFFFF} "
    if kind == K_ICMP:
        return f"{s}type={(t.icmp_type or 0) & 0xFF} code={(t.icmp_code or 0) & 0xFF} id={(t.icmp_id or 0) & 0xFFFF} "
    if kind == K_GRE:
        return f"{s}srckey=0x{(t.sport or 0) & 0xFFFF:x} dstkey=0x{(t.dport or 0) & 0xFFFF:x} "
    return s


def labels_text(labels: bytes, label_map: Mapping[int, str], fmt_sep: str = ",") -> str:
    """``labels=a,b `` exactly as __snprintf_clabels, including its quirk.

    C writes ``labels=``, then ``name,`` per known bit, then steps back one character
    to eat the last comma.  When no bit has a name it eats the ``=`` instead, giving
    ``labels ``.
    """
    names = [name for name in map(label_map.get, label_bits(labels)) if name]
    if not names:
        return "labels "
    return f"labels={fmt_sep.join(names)} "


def render_default(
    flow: Flow,
    event: str | None = None,
    *,
    extended: bool = False,
    show_id: bool = False,
    ktimestamp: bool = False,
    label_map: Mapping[int, str] | None = None,
    now: int = 0,
) -> str:
    """One conntrack line without the newline.

    ``now`` (seconds since the epoch) stands in for C's time(NULL) when computing
    ``delta-time`` of an entry that has not stopped; pass the clock from the caller so
    output is reproducible.  ``label_map`` None means "no label map loaded".
    """
    orig = flow.orig
    out = EVENT_TAG[event] if event else ""
    if extended:
        out += L3_PREFIX[(orig.family if orig is not None else flow.family) & 0xFF]
    proto = orig.proto if orig is not None else None
    if proto is None:
        # C: __snprintf_protocol fails and the buffer holds what was written so far.
        return out
    out += L4_PREFIX[proto & 0xFF]
    timeout = flow.timeout
    if timeout is not None:
        out += f"{timeout} "
    tcp = flow.tcp
    if tcp is not None and tcp.state is not None:
        out += TCP_STATE_TEXT[tcp.state & 0xFF] + " "
    if flow.sctp is not None and flow.sctp.state is not None:
        out += SCTP_STATE_TEXT[flow.sctp.state & 0xFF] + " "
    if flow.dccp is not None and flow.dccp.state is not None:
        out += DCCP_STATE_TEXT[flow.dccp.state & 0xFF] + " "
    out += _tuples_text(flow, orig, proto)
    if flow.status is not None:
        status = flow.status
        if status & IPS_HW_OFFLOAD:
            out += "[HW_OFFLOAD] "
        elif status & IPS_OFFLOAD:
            out += "[OFFLOAD] "
        elif status & IPS_ASSURED:
            out += "[ASSURED] "
    if flow.mark is not None:
        out += f"mark={flow.mark} "
    if flow.secmark is not None:
        out += f"secmark={flow.secmark} "
    if flow.secctx is not None:
        out += f"secctx={flow.secctx} "
    if flow.zone is not None:
        out += f"zone={flow.zone} "
    start = flow.ts_start
    if start is not None:
        stop = flow.ts_stop
        stop_s = stop // 1_000_000_000 if stop else now
        out += f"delta-time={(stop_s - start // 1_000_000_000) & U64} "
        if ktimestamp:
            out += f"[start={ctime_text(start // 1_000_000_000)}] "
    if ktimestamp and flow.ts_stop is not None:
        out += f"[stop={ctime_text(flow.ts_stop // 1_000_000_000)}] "
    if flow.helper is not None:
        out += f"helper={flow.helper} "
    if flow.use is not None:
        out += f"use={flow.use} "
    if show_id and flow.id is not None:
        out += f"id={flow.id} "
    if label_map is not None and flow.labels is not None:
        out += labels_text(flow.labels, label_map)
    return out[:-1]


def _tuples_text(flow: Flow, orig: Tuple, proto: int) -> str:
    """Both tuples with their zones and counters, and [UNREPLIED]; the common IPv4 + ports case is one f-string."""
    reply = flow.reply
    status = flow.status
    co = flow.counters_orig
    cr = flow.counters_reply
    if (
        orig.family == AF_INET
        and L4_KIND[proto & 0xFF] == K_PORTS
        and reply is not None
        and reply.family == AF_INET
        and reply.proto == proto
        and orig.zone is None
        and reply.zone is None
    ):
        return (
            f"src={_ntoa(orig.src or ZERO4)} dst={_ntoa(orig.dst or ZERO4)} "
            f"sport={orig.sport or 0} dport={orig.dport or 0} "
            f"{'' if co is None else f'packets={co.packets} bytes={co.bytes} '}"
            f"{'[UNREPLIED] ' if status is not None and not status & IPS_SEEN_REPLY else ''}"
            f"src={_ntoa(reply.src or ZERO4)} dst={_ntoa(reply.dst or ZERO4)} "
            f"sport={reply.sport or 0} dport={reply.dport or 0} "
            f"{'' if cr is None else f'packets={cr.packets} bytes={cr.bytes} '}"
        )
    out = tuple_text(orig)
    if orig.zone is not None:
        out += f"zone-orig={orig.zone} "
    if co is not None:
        out += f"packets={co.packets} bytes={co.bytes} "
    if status is not None and not status & IPS_SEEN_REPLY:
        out += "[UNREPLIED] "
    if reply is not None:
        out += tuple_text(reply)
        if reply.zone is not None:
            out += f"zone-reply={reply.zone} "
    if cr is not None:
        out += f"packets={cr.packets} bytes={cr.bytes} "
    return out


