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
    PORT_PROTOS,
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


def apply_protoinfo(req: Request, flow: Flow, *, update: bool = False) -> None:
    """The protocol info of the template; ``update``: TCP flags even without --state (C's -U sends them)."""
    if req.proto == "tcp" and (req.state is not None or (update and req.tcp_flags is not None)):
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
    apply_protoinfo(req, flow)
    flow.nat_src = _nat(req.src_nat, family)
    flow.nat_dst = _nat(req.dst_nat, family)
    return flow


def build_get(req: Request) -> Flow | None:
    """The lookup key of `-G`: the original tuple plus zone.

    Like libnetfilter_conntrack's query builder: without an original address (-s/-d) there is
    no key at all (C fails with EINVAL before sending anything), and an address that was not
    given is sent as zeros, so `-G -s A -r B ...` is looked up with dst 0.0.0.0.
    """
    if not _has_orig(req):
        return None
    family = _family(req)
    flow = Flow(family)
    flow.orig = _tuple_from(req, req.orig, family, True)
    zero = bytes(16 if family == AF_INET6 else 4)
    if flow.orig.src is None:
        flow.orig.src = zero
    if flow.orig.dst is None:
        flow.orig.dst = zero
    if flow.orig.proto in PORT_PROTOS:  # ports always sent (as 0 if unset)
        flow.orig.sport = flow.orig.sport or 0
        flow.orig.dport = flow.orig.dport or 0
    flow.orig.zone = req.orig_zone
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
    """NFCT_GOPT_IS_SNAT: SRC_NAT_DONE and the reply dst differs; libnetfilter_conntrack compares the
    `v4` member of the address union, i.e. the first 4 bytes (also for IPv6)."""
    if f.status is None or not f.status & IPS_SRC_NAT_DONE:
        return False
    return f.orig is not None and f.reply is not None and (f.reply.dst or b"")[:4] != (f.orig.src or b"")[:4]


def _is_dnat(f: Flow) -> bool:
    if f.status is None or not f.status & IPS_DST_NAT_DONE:
        return False
    return f.orig is not None and f.reply is not None and (f.reply.src or b"")[:4] != (f.orig.dst or b"")[:4]


def _l4src_all(t: Tuple) -> int:
    """libnetfilter_conntrack's `l4src.all` union: the ICMP id for ICMP, else the source port/key."""
    return (t.icmp_id or 0) if t.proto in ICMP_PROTOS else (t.sport or 0)


def _l4dst_all(t: Tuple) -> int:
    """`l4dst.all`: ICMP type and code share it (non-zero if either is), else the destination port/key."""
    if t.proto in ICMP_PROTOS:
        return (t.icmp_type or 0) | (t.icmp_code or 0) << 8
    return t.dport or 0


def _is_snat_port(f: Flow) -> bool:
    """NFCT_GOPT_IS_SPAT: SRC_NAT_DONE and reply dport (0 when the tuple has no ports) != orig l4src.

    An ICMP entry has no reply ports, so any ICMP entry with SRC_NAT_DONE and a non-zero id counts as
    port-NATed: that is C's "--src-nat lists ICMP entries" quirk (every entry that went through a NAT
    hook gets SRC_NAT_DONE/DST_NAT_DONE from the null binding)."""
    if f.status is None or not f.status & IPS_SRC_NAT_DONE or f.orig is None or f.reply is None:
        return False
    rport = 0 if f.reply.proto in ICMP_PROTOS else (f.reply.dport or 0)
    return rport != _l4src_all(f.orig)


def _is_dnat_port(f: Flow) -> bool:
    if f.status is None or not f.status & IPS_DST_NAT_DONE or f.orig is None or f.reply is None:
        return False
    rport = 0 if f.reply.proto in ICMP_PROTOS else (f.reply.sport or 0)
    return rport != _l4dst_all(f.orig)


def _nat_match(f: Flow, nat, snat: bool) -> bool:
    """One NAT direction of filter_nat(); C only compares IPv4 NAT addresses."""
    if f.orig is None or f.reply is None:
        return False
    if snat:
        is_nat, addr, port, is_port = _is_snat(f), f.reply.dst, f.reply.dport, _is_snat_port(f)
    else:
        is_nat, addr, port, is_port = _is_dnat(f), f.reply.src, f.reply.sport, _is_dnat_port(f)
    if nat.addr is None and nat.port is None:
        return is_nat or is_port
    if nat.addr is not None:
        if len(nat.addr) == 4 and not (is_nat and addr == nat.addr):
            return False
        if len(nat.addr) == 16 and not is_nat:
            return False
    if nat.port is not None and not (is_port and port == nat.port):
        return False
    return True


def accept_all(_flow: Flow) -> bool:
    """The filter of a request without filter options (callers may skip decoding for it)."""
    return True


def kernel_dumps(req: Request, *, mark: bool = True, status: bool = False) -> list[tuple[int, bytes]]:
    """The dump requests (family, filter attributes) that let the kernel do most of the filtering.

    CTA_FILTER compares exact tuple fields (addresses without CIDR mask, protocol,
    ports, ICMP fields) but the kernel refuses it for AF_UNSPEC. Mark and status
    filters ride along.
    What the kernel cannot do stays in `make_filter(..., kernel_tuples=True)`.
    """
    from ..netlink.codec import encode_dump_filter

    mark_f = req.mark_filter if mark else None
    status_f = req.status_filter if status else None
    # CTA_FILTER needs a family; for AF_UNSPEC one dump per family would list IPv4 before IPv6,
    # unlike C's single dump in hash order, so without -f/an address the tuple filter stays in userspace.
    if req.family:
        orig, oflags, reply, rflags = _tuple_filter(req, req.family)
    else:
        orig, oflags, reply, rflags = None, 0, None, 0
    body = encode_dump_filter(mark=mark_f[0] if mark_f else None, mark_mask=mark_f[1] if mark_f else None,
                              status=status_f[0] if status_f else None,
                              status_mask=status_f[1] if status_f else None,
                              orig=orig, orig_flags=oflags, reply=reply, reply_flags=rflags)
    return [(req.family, body)]


def _tuple_filter(req: Request, family: int) -> tuple[Tuple, int, Tuple, int]:
    from ..netlink import attrs as A

    proto = req.l4proto
    orig = Tuple(family, proto=proto)
    reply = Tuple(family, proto=proto)
    oflags = rflags = 0
    # Linux (seen on 6.18) inverts the IPv6 address comparison of CTA_FILTER: IPv6 addresses stay in userspace.
    v4 = family == AF_INET
    if proto is not None:
        if req.orig.src is not None and req.mask.src is None and v4:
            orig.src, oflags = req.orig.src, oflags | A.FILTER_IP_SRC
        if req.orig.dst is not None and req.mask.dst is None and v4:
            orig.dst, oflags = req.orig.dst, oflags | A.FILTER_IP_DST
        if proto in ICMP_PROTOS:
            v6 = proto == 58
            for value, attr_name, flag4, flag6 in (
                (req.icmp_type, "icmp_type", A.FILTER_ICMP_TYPE, A.FILTER_ICMPV6_TYPE),
                (req.icmp_code, "icmp_code", A.FILTER_ICMP_CODE, A.FILTER_ICMPV6_CODE),
                (req.icmp_id, "icmp_id", A.FILTER_ICMP_ID, A.FILTER_ICMPV6_ID),
            ):
                if value is not None:
                    setattr(orig, attr_name, value)
                    oflags |= flag6 if v6 else flag4
        else:
            if req.orig.sport is not None:
                orig.sport, oflags = req.orig.sport, oflags | A.FILTER_PROTO_SRC_PORT
            if req.orig.dport is not None:
                orig.dport, oflags = req.orig.dport, oflags | A.FILTER_PROTO_DST_PORT
            if req.reply.sport is not None:
                reply.sport, rflags = req.reply.sport, rflags | A.FILTER_PROTO_SRC_PORT
            if req.reply.dport is not None:
                reply.dport, rflags = req.reply.dport, rflags | A.FILTER_PROTO_DST_PORT
        if req.reply.src is not None and v4:
            reply.src, rflags = req.reply.src, rflags | A.FILTER_IP_SRC
        if req.reply.dst is not None and v4:
            reply.dst, rflags = req.reply.dst, rflags | A.FILTER_IP_DST
        oflags |= A.FILTER_PROTO_NUM
        if rflags:
            rflags |= A.FILTER_PROTO_NUM
    return orig, oflags, reply, rflags


def template_mark(req: Request) -> tuple[int, int] | None:
    """C's userspace mark comparison when `-u` came after `-m`: (value, mask) or None.

    `-u` overwrites the template's mark value with the status bits (see request.py) while the
    kernel dump filter keeps the `-m` value, so `-L/-D -m 42 -u SEEN_REPLY` also requires
    `mark & mask == 2`: C 1.4.7 lists/deletes only what satisfies both.
    """
    if req.mark_filter is None or req.mark_value == req.mark_filter[0]:
        return None
    return req.mark_value, req.mark_mask


def make_filter(req: Request, *, use_mark: bool = True, use_status: bool = True, use_protoinfo: bool = True,
                kernel_filtered: bool = False, kernel_tuples: bool = False) -> Callable[[Flow], bool]:
    """The userspace filter of nfct_filter() for this request.

    ``use_mark``/``use_status``/``use_protoinfo`` are False for `-U`: there -m, -u and the protocol
    options (`--state`, SCTP vtags) are new values, not filters (`-U -p tcp --state X` sets X on every
    entry the tuple options match).
    ``kernel_filtered`` skips the mark/status filters the dump request already carries;
    ``kernel_tuples`` skips family, protocol and exact tuple fields (see `kernel_dumps`).
    """
    family = req.family
    if not family:
        kernel_tuples = False  # kernel_dumps() sent no tuple filter
    masked = (req.mask.src is not None, req.mask.dst is not None)
    checks: list[Callable[[Flow], bool]] = []

    if family and not kernel_tuples:
        checks.append(lambda f: f.family == family)
    _nat_checks(req, checks)
    if use_mark:
        _mark_checks(req, kernel_filtered, checks)
    _label_and_net_checks(req, checks)
    _tuple_checks(req, kernel_tuples, masked, checks)
    if use_status and req.status_filter is not None and not kernel_filtered:
        svalue, smask = req.status_filter
        checks.append(lambda f: ((f.status or 0) & smask) == svalue)
    _value_checks(req, use_protoinfo, checks)

    if not checks:
        return accept_all
    if len(checks) == 1:
        return checks[0]
    return lambda f: all(c(f) for c in checks)


def _nat_checks(req: Request, checks: list[Callable[[Flow], bool]]) -> None:
    """filter_nat: --src-nat, --dst-nat, --any-nat."""
    snat, dnat, anat = req.src_nat, req.dst_nat, req.any_nat
    if anat is not None:
        checks.append(lambda f: _nat_match(f, anat, True) or _nat_match(f, anat, False))
    else:
        if snat is not None:
            checks.append(lambda f: _nat_match(f, snat, True))
        if dnat is not None:
            checks.append(lambda f: _nat_match(f, dnat, False))


def _mark_checks(req: Request, kernel_filtered: bool, checks: list[Callable[[Flow], bool]]) -> None:
    """-m (unless the dump request carried it), then the template's mark when -u came after -m."""
    if req.mark_filter is not None and not kernel_filtered:
        value, mmask = req.mark_filter
        checks.append(lambda f: ((f.mark or 0) & mmask) == value)
    tmark = template_mark(req)
    if tmark is not None:
        tvalue, tmask = tmark
        checks.append(lambda f: ((f.mark or 0) & tmask) == tvalue)


def _label_and_net_checks(req: Request, checks: list[Callable[[Flow], bool]]) -> None:
    """-l labels (all wanted bits set), then the CIDR parts of --src/--dst (--mask-src/--mask-dst)."""
    if req.labels:
        want = 0
        for b in req.labels:
            want |= 1 << b
        checks.append(lambda f: f.labels is not None and int.from_bytes(f.labels, "little") & want == want)
    if req.mask.src is not None:
        def _src_net(f: Flow, net=req.orig.src, mask=req.mask.src) -> bool:
            return f.orig is not None and _masked_eq(f.orig.src, net, mask)
        checks.append(_src_net)
    if req.mask.dst is not None:
        def _dst_net(f: Flow, net=req.orig.dst, mask=req.mask.dst) -> bool:
            return f.orig is not None and _masked_eq(f.orig.dst, net, mask)
        checks.append(_dst_net)


def _tuple_checks(req: Request, kernel_tuples: bool, masked: tuple[bool, bool],
                  checks: list[Callable[[Flow], bool]]) -> None:
    """nfct_cmp on the template: protocol and the exact fields of both tuples (unless the kernel did it)."""
    proto = req.l4proto
    if proto is not None and not kernel_tuples:
        checks.append(lambda f: f.orig is not None and f.orig.proto == proto)
    orig_rt, reply_rt = req.orig, req.reply
    v6_addrs = req.family == AF_INET6 and any(
        a is not None for a in (orig_rt.src, orig_rt.dst, reply_rt.src, reply_rt.dst))
    if kernel_tuples and proto is not None and not v6_addrs:
        return  # the kernel compared every exact tuple field (CIDR parts are checked above)
    if (orig_rt.src is not None or orig_rt.dst is not None or orig_rt.sport is not None
            or orig_rt.dport is not None or req.icmp_type is not None or req.icmp_code is not None
            or req.icmp_id is not None):
        checks.append(lambda f: _tuple_match(f.orig, orig_rt, req, True, masked))
    if (reply_rt.src is not None or reply_rt.dst is not None or reply_rt.sport is not None
            or reply_rt.dport is not None):
        checks.append(lambda f: _tuple_match(f.reply, reply_rt, req, False, (False, False)))


def _value_checks(req: Request, use_protoinfo: bool, checks: list[Callable[[Flow], bool]]) -> None:
    """--state, --secmark, --id, the zones and the SCTP verification tags (protoinfo: not for -U)."""
    if req.state is not None and use_protoinfo:
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
    if req.proto == "sctp" and use_protoinfo:
        if req.sctp_vtag_orig is not None:
            vo = req.sctp_vtag_orig
            checks.append(lambda f: f.sctp is not None and f.sctp.vtag_orig == vo)
        if req.sctp_vtag_reply is not None:
            vr = req.sctp_vtag_reply
            checks.append(lambda f: f.sctp is not None and f.sctp.vtag_reply == vr)


def family_of(addr: bytes | None) -> int:
    if addr is None:
        return 0
    return AF_INET6 if len(addr) == 16 else AF_INET
