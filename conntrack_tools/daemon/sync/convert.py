"""Kernel flow <-> sync message (C src/build.c ``ct2msg``, src/parse.c ``msg2ct``, src/netlink.c).

* :func:`flow_to_sync` is what a sender puts on the wire for a cached flow.
* :func:`sync_to_create_flow` is the flow C's ``nl_create_conntrack`` gives the kernel for a
  received one: reply = swapped original (the kernel re-applies NAT from CTA_NAT_SRC/DST),
  IPS_EXPECTED cleared, TCP "be liberal" in both directions unless TCPWindowTracking.
* :func:`update_flow` strips what ``nl_update_conntrack`` strips (NAT, helper, master).
"""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

from ...flow import (
    AF_INET,
    AF_INET6,
    ICMP_PROTOS,
    IPS_DST_NAT,
    IPS_DST_NAT_DONE,
    IPS_EXPECTED,
    IPS_SRC_NAT,
    IPS_SRC_NAT_DONE,
    TCP_FLAG_BE_LIBERAL,
    DccpInfo,
    Flow,
    Nat,
    SctpInfo,
    SeqAdj,
    TcpInfo,
    Tuple,
)
from .wire import FlowTuple, NatSeqAdj, SyncFlow, Synproxy
from .wire_attrs import NTA_PORT_PROTOS

__all__ = ["flow_to_sync", "sync_key_tuple", "sync_to_create_flow", "update_flow"]

IPS_NAT_MASK = IPS_SRC_NAT | IPS_DST_NAT | IPS_SRC_NAT_DONE | IPS_DST_NAT_DONE


def _addr(family: int, b: bytes | None):
    if b is None:
        return None
    return IPv4Address(b) if family == AF_INET else IPv6Address(b)


def _ftuple(t: Tuple) -> FlowTuple:
    fam = t.family
    if t.proto in NTA_PORT_PROTOS:
        return FlowTuple(_addr(fam, t.src), _addr(fam, t.dst), t.proto, t.sport or 0, t.dport or 0)
    return FlowTuple(_addr(fam, t.src), _addr(fam, t.dst), t.proto or 0)


def flow_to_sync(flow: Flow, *, timeout: bool = True, window_tracking: bool = False) -> SyncFlow | None:
    """ct2msg: the attributes a C 1.4.7 sender would transmit for ``flow``."""
    o = flow.orig
    if o is None or o.src is None or o.dst is None or o.family not in (AF_INET, AF_INET6):
        return None
    kw: dict = {"orig": _ftuple(o), "status": flow.status or 0}
    proto = o.proto
    tcp = flow.tcp
    if proto == 6 and tcp is not None and tcp.state is not None:
        kw["tcp_state"] = tcp.state
        if window_tracking:
            if tcp.wscale_orig is not None:
                kw["tcp_wscale_orig"] = tcp.wscale_orig
            if tcp.wscale_reply is not None:
                kw["tcp_wscale_repl"] = tcp.wscale_reply
    elif proto == 132 and flow.sctp is not None and flow.sctp.state is not None:
        s = flow.sctp
        kw["sctp_state"] = s.state
        kw["sctp_vtag_orig"] = s.vtag_orig or 0
        kw["sctp_vtag_repl"] = s.vtag_reply or 0
    elif proto == 33 and flow.dccp is not None and flow.dccp.state is not None:
        kw["dccp_state"] = flow.dccp.state
        kw["dccp_role"] = flow.dccp.role or 0
    elif proto in ICMP_PROTOS and o.icmp_type is not None:
        kw["icmp_type"] = o.icmp_type
        kw["icmp_code"] = o.icmp_code or 0
        kw["icmp_id"] = o.icmp_id or 0
    if timeout and flow.timeout is not None:
        kw["timeout"] = flow.timeout
    if flow.mark is not None:
        kw["mark"] = flow.mark
    m = flow.master
    if m is not None and m.src is not None:
        kw["master"] = _ftuple(m)
    r = flow.reply
    if r is not None and r.src is not None:
        st = flow.status
        fam = o.family
        if (st is None or st & IPS_SRC_NAT_DONE) and r.dst != o.src:
            kw["snat"] = _addr(fam, r.dst)
        if (st is None or st & IPS_DST_NAT_DONE) and r.src != o.dst:
            kw["dnat"] = _addr(fam, r.src)
        if proto in NTA_PORT_PROTOS:
            if (st is None or st & IPS_SRC_NAT_DONE) and r.dport != o.sport:
                kw["spat"] = r.dport
            if (st is None or st & IPS_DST_NAT_DONE) and r.sport != o.dport:
                kw["dpat"] = r.sport
    a, b = flow.seqadj_orig, flow.seqadj_reply
    if a is not None and b is not None:
        kw["nat_seq_adj"] = NatSeqAdj(a.correction_pos, a.offset_before, a.offset_after,
                                      b.correction_pos, b.offset_before, b.offset_after)
    if flow.helper:
        kw["helper"] = flow.helper[:11]
    if flow.labels and any(flow.labels):
        raw = flow.labels + bytes(-len(flow.labels) % 4)
        words = struct.unpack(f"<{len(raw) // 4}I", raw)
        last = max(i for i, w in enumerate(words) if w)
        kw["labels"] = tuple(words[: last + 1])
    if flow.synproxy is not None:
        isn, its, tsoff = flow.synproxy
        kw["synproxy"] = Synproxy(its, isn, tsoff)
    if flow.zone is not None:
        kw["zone"] = flow.zone
    return SyncFlow(**kw)


def _tuple(family: int, t: FlowTuple, icmp: tuple | None = None) -> Tuple:
    tt = Tuple(family, t.src.packed, t.dst.packed, t.l4proto, t.sport, t.dport)
    if icmp is not None:
        tt.icmp_type, tt.icmp_code, tt.icmp_id = icmp
    return tt


def sync_key_tuple(sf: SyncFlow) -> tuple[Tuple, int]:
    """Original tuple + family of a received flow (the external cache key source)."""
    fam = AF_INET if isinstance(sf.orig.src, IPv4Address) else AF_INET6
    icmp = None
    if sf.orig.l4proto in ICMP_PROTOS and sf.icmp_type is not None:
        icmp = (sf.icmp_type, sf.icmp_code or 0, sf.icmp_id or 0)
    return _tuple(fam, sf.orig, icmp), fam


def sync_to_create_flow(sf: SyncFlow, *, window_tracking: bool = False) -> Flow:
    """The kernel create request for a received flow, without timeout (nl_create_conntrack)."""
    orig, fam = sync_key_tuple(sf)
    reply = orig.reversed()
    f = Flow(fam, orig, reply, status=sf.status & ~IPS_EXPECTED, mark=sf.mark, zone=sf.zone)
    p = sf.orig.l4proto
    if p == 6:
        f.tcp = TcpInfo(state=sf.tcp_state, wscale_orig=sf.tcp_wscale_orig, wscale_reply=sf.tcp_wscale_repl)
        if not window_tracking:
            t = f.tcp
            t.flags_orig = t.mask_orig = t.flags_reply = t.mask_reply = TCP_FLAG_BE_LIBERAL
        elif sf.tcp_state is None:
            f.tcp = None
    elif p == 132 and sf.sctp_state is not None:
        f.sctp = SctpInfo(sf.sctp_state, sf.sctp_vtag_orig, sf.sctp_vtag_repl)
    elif p == 33 and sf.dccp_state is not None:
        f.dccp = DccpInfo(sf.dccp_state, sf.dccp_role)
    if sf.master is not None:
        f.master = _tuple(fam, sf.master)
    if sf.snat is not None or sf.spat is not None:
        f.nat_src = Nat(fam, sf.snat.packed if sf.snat is not None else None, None, sf.spat, None)
    if sf.dnat is not None or sf.dpat is not None:
        f.nat_dst = Nat(fam, sf.dnat.packed if sf.dnat is not None else None, None, sf.dpat, None)
    if sf.nat_seq_adj is not None:
        n = sf.nat_seq_adj
        f.seqadj_orig = SeqAdj(n.orig_correction_pos, n.orig_offset_before, n.orig_offset_after)
        f.seqadj_reply = SeqAdj(n.repl_correction_pos, n.repl_offset_before, n.repl_offset_after)
    if sf.helper:
        f.helper = sf.helper
    if sf.labels:
        f.labels = struct.pack(f"<{len(sf.labels)}I", *sf.labels)
    if sf.synproxy is not None:
        s = sf.synproxy
        f.synproxy = (s.isn, s.its, s.tsoff)
    return f


def update_flow(f: Flow) -> Flow:
    """nl_update_conntrack: no NAT, no NAT status bits, no helper, no master; IPS_EXPECTED set
    when there is a master (the kernel refuses an update that clears it: ``inject.update_body``)."""
    status = (f.status or 0) & ~IPS_NAT_MASK & ~IPS_EXPECTED
    if f.master is not None:
        status |= IPS_EXPECTED
    g = Flow(f.family, f.orig, f.reply, status=status,
             mark=f.mark, zone=f.zone, tcp=f.tcp, sctp=f.sctp, dccp=f.dccp, labels=f.labels)
    return g
