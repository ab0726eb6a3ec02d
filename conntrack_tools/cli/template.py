"""Request -> netlink values: the entry to create, the tuple to get, and the userspace filter.

Pure functions. The filter mirrors conntrack.c's nfct_filter(): explicit NAT,
mark, label and network (CIDR) filters, then a comparison of every attribute
the user set (libnetfilter_conntrack's nfct_cmp with NFCT_CMP_MASK semantics).
"""

from __future__ import annotations

from collections.abc import Callable

from ..flow import (
    AF_INET,
    AF_INET6,
    ICMP_PROTOS,
    IPS_CONFIRMED,
    IPS_DST_NAT_DONE,
    IPS_SRC_NAT_DONE,
    DccpInfo,
    Expect,
    Flow,
    Nat,
    SctpInfo,
    TcpInfo,
    Tuple,
)
from .request import Request
from .request import Tuple as ReqTuple

GRE = 47


def _family(req: Request) -> int:
    return req.family or AF_INET


def _l4(req: Request) -> int | None:
    return req.l4proto


def _tuple_from(req: Request, rt: ReqTuple, family: int, with_icmp: bool) -> Tuple:
    t = Tuple(family, rt.src, rt.dst, rt.l4proto if rt.l4proto is not None else req.l4proto, rt.sport, rt.dport)
    if with_icmp and t.proto in ICMP_PROTOS:
        t.icmp_type, t.icmp_code, t.icmp_id = req.icmp_type, req.icmp_code, req.icmp_id
        t.sport = t.dport = None
    return t


def _has_orig(req: Request) -> bool:
    return req.orig.src is not None or req.orig.dst is not None


def _has_reply(req: Request) -> bool:
    return req.reply.src is not None or req.reply.dst is not None


def _labels_bitmap(bits) -> bytes:
    """CTA_LABELS payload: a bitmap of u32 words, as long as the highest bit needs (>= 4 bytes)."""
    top = max(bits) if bits else 0
    nwords = top // 32 + 1
    value = 0
    for b in bits:
        value |= 1 << b
    return value.to_bytes(nwords * 4, "little")


def _protoinfo(req: Request, flow: Flow) -> None:
    if req.proto == "tcp" and req.state is not None:
        flow.tcp = TcpInfo(state=req.state)
        if req.tcp_flags is not None:
            flow.tcp.flags_orig = flow.tcp.mask_orig = req.tcp_flags
            flow.tcp.flags_reply = flow.tcp.mask_reply = req.tcp_flags
    elif req.proto == "sctp" and (req.state is not None or req.sctp_vtag_orig is not None):
        flow.sctp = SctpInfo(req.state, req.sctp_vtag_orig, req.sctp_vtag_reply)
    elif req.proto == "dccp" and (req.state is not None or req.dccp_role is not None):
        flow.dccp = DccpInfo(req.state, req.dccp_role)


def _nat(req_nat, family: int) -> Nat | None:
    if req_nat is None or (req_nat.addr is None and req_nat.port is None):
        return None
    return Nat(family, req_nat.addr, req_nat.addr, req_nat.port, req_nat.port)


def build_create(req: Request) -> Flow:
    """The entry `-I`/`-A` send; the missing direction is derived like NFCT_SOPT_SETUP_*."""
    family = _family(req)
    orig = _tuple_from(req, req.orig, family, True) if _has_orig(req) else None
    reply = _tuple_from(req, req.reply, family, False) if _has_reply(req) else None
    if reply is not None and reply.proto in ICMP_PROTOS and orig is not None:
        reply = None
    if orig is None and reply is not None:
        orig = reply.reversed()
        if orig.proto in ICMP_PROTOS:
            orig.icmp_type, orig.icmp_code, orig.icmp_id = req.icmp_type, req.icmp_code, req.icmp_id
    if reply is None and orig is not None:
        reply = orig.reversed()
    for t, zone in ((orig, req.orig_zone), (reply, req.reply_zone)):
        if t is not None:
            t.zone = zone
    flow = Flow(family, orig, reply)
    flow.timeout = req.timeout
    # libnetfilter_conntrack always adds IPS_CONFIRMED: the kernel refuses (EBUSY) to change that bit.
    flow.status = None if req.status is None else req.status | IPS_CONFIRMED
    if "mark" in req.options:
        flow.mark = req.mark_value
    flow.zone = req.zone
    if req.label_modify:
        flow.labels = _labels_bitmap(req.label_modify)
    _protoinfo(req, flow)
    flow.nat_src = _nat(req.src_nat, family)
    flow.nat_dst = _nat(req.dst_nat, family)
    return flow


def build_get(req: Request) -> Flow:
    """The lookup key of `-G` (and of a single-tuple `-D`/`-U`): one tuple plus zone."""
    family = _family(req)
    flow = Flow(family)
    if _has_orig(req):
        flow.orig = _tuple_from(req, req.orig, family, True)
        flow.orig.zone = req.orig_zone
    else:
        flow.reply = _tuple_from(req, req.reply, family, True)
        flow.reply.zone = req.reply_zone
    flow.zone = req.zone
    return flow


def build_expect(req: Request) -> Expect:
    """`-I expect`: master (orig tuple), expected tuple (--tuple-*) and mask (--mask-*)."""
    family = _family(req)
    master = Tuple(family, req.orig.src, req.orig.dst, req.l4proto, req.orig.sport, req.orig.dport)
    exp_t = Tuple(family, req.exp.src, req.exp.dst,
                  req.exp.l4proto if req.exp.l4proto is not None else req.l4proto, req.exp.sport, req.exp.dport)
    mask = Tuple(family, req.mask.src, req.mask.dst,
                 req.mask.l4proto if req.mask.l4proto is not None else req.l4proto, req.mask.sport, req.mask.dport)
    return Expect(family, master=master, tuple=exp_t, mask=mask, timeout=req.timeout, zone=req.zone)


def build_expect_key(req: Request) -> Expect:
    """`-G expect` / `-D expect`: the master tuple identifies the expectation."""
    family = _family(req)
    master = Tuple(family, req.orig.src, req.orig.dst, req.l4proto, req.orig.sport, req.orig.dport)
    if master.proto in ICMP_PROTOS:
        master.sport = master.dport = None
        master.icmp_type, master.icmp_code, master.icmp_id = req.icmp_type, req.icmp_code, req.icmp_id
    return Expect(family, master=master)


# ------------------------------------------------------------------ filtering


def _masked_eq(addr: bytes | None, net: bytes, mask: bytes) -> bool:
    if addr is None or len(addr) != len(mask):
        return False
    return all((a & m) == (n & m) for a, n, m in zip(addr, net, mask, strict=True))


def _tuple_match(t: Tuple | None, rt: ReqTuple, req: Request, orig: bool, masked: tuple[bool, bool]) -> bool:
    if t is None:
        return not (rt.src or rt.dst or rt.sport is not None or rt.dport is not None)
    if rt.src is not None and not masked[0] and t.src != rt.src:
        return False
    if rt.dst is not None and not masked[1] and t.dst != rt.dst:
        return False
    if t.proto in ICMP_PROTOS:
        if orig:
            if req.icmp_type is not None and t.icmp_type != req.icmp_type:
                return False
            if req.icmp_code is not None and t.icmp_code != req.icmp_code:
                return False
            if req.icmp_id is not None and t.icmp_id != req.icmp_id:
                return False
        return True
    if rt.sport is not None and t.sport != rt.sport:
        return False
    if rt.dport is not None and t.dport != rt.dport:
        return False
    return True


def _is_snat(f: Flow) -> bool:
    if f.status is not None and not f.status & IPS_SRC_NAT_DONE:
        return False
    return f.orig is not None and f.reply is not None and f.reply.dst != f.orig.src


def _is_dnat(f: Flow) -> bool:
    if f.status is not None and not f.status & IPS_DST_NAT_DONE:
        return False
    return f.orig is not None and f.reply is not None and f.reply.src != f.orig.dst


def _is_snat_port(f: Flow) -> bool:
    return f.orig is not None and f.reply is not None and f.reply.dport != f.orig.sport


def _is_dnat_port(f: Flow) -> bool:
    return f.orig is not None and f.reply is not None and f.reply.sport != f.orig.dport


def _nat_match(f: Flow, nat, snat: bool) -> bool:
    """One NAT direction of filter_nat(); C only compares IPv4 NAT addresses."""
    if f.orig is None or f.reply is None:
        return False
    if snat:
        is_nat, addr, port, is_port = _is_snat(f), f.reply.dst, f.reply.dport, _is_snat_port(f)
    else:
        is_nat, addr, port, is_port = _is_dnat(f), f.reply.src, f.reply.sport, _is_dnat_port(f)
    if nat.addr is None and nat.port is None:
        return is_nat
    if nat.addr is not None:
        if len(nat.addr) == 4 and not (is_nat and addr == nat.addr):
            return False
        if len(nat.addr) == 16 and not is_nat:
            return False
    if nat.port is not None and not (is_port and port == nat.port):
        return False
    return True


def _c_icmp_nat_quirk(f: Flow) -> bool:
    """1.4.7 quirk: `--src-nat`/`--dst-nat` without an IP also list every IPv4 ICMP entry."""
    return f.family == AF_INET and f.orig is not None and f.orig.proto == 1


def make_filter(req: Request, *, use_mark: bool = True, use_status: bool = True,
                kernel_filtered: bool = False) -> Callable[[Flow], bool]:
    """The userspace filter of nfct_filter() for this request.

    ``use_mark``/``use_status`` are False for `-U` (there -m and -u are new values, not filters).
    ``kernel_filtered`` skips what the dump request already asked the kernel to filter.
    """
    family = req.family
    mask_src = req.mask.src
    mask_dst = req.mask.dst
    masked = (mask_src is not None, mask_dst is not None)
    checks: list[Callable[[Flow], bool]] = []

    if family:
        checks.append(lambda f: f.family == family)

    # filter_nat
    snat, dnat, anat = req.src_nat, req.dst_nat, req.any_nat
    if anat is not None:
        checks.append(lambda f: _nat_match(f, anat, True) or _nat_match(f, anat, False)
                      or (anat.addr is None and anat.port is None and _c_icmp_nat_quirk(f)))
    else:
        if snat is not None:
            quirk = snat.addr is None and snat.port is None
            checks.append(lambda f: _nat_match(f, snat, True) or (quirk and _c_icmp_nat_quirk(f)))
        if dnat is not None:
            quirk = dnat.addr is None and dnat.port is None
            checks.append(lambda f: _nat_match(f, dnat, False) or (quirk and _c_icmp_nat_quirk(f)))

    if use_mark and req.mark_filter is not None and not kernel_filtered:
        value, mmask = req.mark_filter
        checks.append(lambda f: ((f.mark or 0) & mmask) == value)

    if req.labels:
        want = 0
        for b in req.labels:
            want |= 1 << b
        checks.append(lambda f: f.labels is not None and int.from_bytes(f.labels, "little") & want == want)

    if masked[0]:
        net = req.orig.src

        def _src_net(f: Flow, net=net, mask=mask_src) -> bool:
            return f.orig is not None and _masked_eq(f.orig.src, net, mask)
        checks.append(_src_net)
    if masked[1]:
        net = req.orig.dst

        def _dst_net(f: Flow, net=net, mask=mask_dst) -> bool:
            return f.orig is not None and _masked_eq(f.orig.dst, net, mask)
        checks.append(_dst_net)

    # nfct_cmp on the template
    proto = req.l4proto
    if proto is not None:
        checks.append(lambda f: f.orig is not None and f.orig.proto == proto)
    orig_rt, reply_rt = req.orig, req.reply
    if (orig_rt.src is not None or orig_rt.dst is not None or orig_rt.sport is not None
            or orig_rt.dport is not None or req.icmp_type is not None or req.icmp_code is not None
            or req.icmp_id is not None):
        checks.append(lambda f: _tuple_match(f.orig, orig_rt, req, True, masked))
    if (reply_rt.src is not None or reply_rt.dst is not None or reply_rt.sport is not None
            or reply_rt.dport is not None):
        checks.append(lambda f: _tuple_match(f.reply, reply_rt, req, False, (False, False)))
    if use_status and req.status_filter is not None and not kernel_filtered:
        svalue, smask = req.status_filter
        checks.append(lambda f: ((f.status or 0) & smask) == svalue)
    if req.state is not None:
        state = req.state
        checks.append(lambda f: f.proto_state() == state)
    if req.secmark is not None:
        secmark = req.secmark
        checks.append(lambda f: (f.secmark or 0) == secmark)
    if req.id is not None:
        fid = req.id
        checks.append(lambda f: f.id == fid)
    if req.zone is not None:
        zone = req.zone
        checks.append(lambda f: (f.zone or 0) == zone)
    if req.orig_zone is not None:
        oz = req.orig_zone
        checks.append(lambda f: f.orig is not None and (f.orig.zone or 0) == oz)
    if req.reply_zone is not None:
        rz = req.reply_zone
        checks.append(lambda f: f.reply is not None and (f.reply.zone or 0) == rz)
    if req.proto == "sctp":
        if req.sctp_vtag_orig is not None:
            vo = req.sctp_vtag_orig
            checks.append(lambda f: f.sctp is not None and f.sctp.vtag_orig == vo)
        if req.sctp_vtag_reply is not None:
            vr = req.sctp_vtag_reply
            checks.append(lambda f: f.sctp is not None and f.sctp.vtag_reply == vr)

    if not checks:
        return lambda f: True
    if len(checks) == 1:
        return checks[0]
    return lambda f: all(c(f) for c in checks)


def family_of(addr: bytes | None) -> int:
    if addr is None:
        return 0
    return AF_INET6 if len(addr) == 16 else AF_INET
