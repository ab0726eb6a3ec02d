"""`make_filter` compiled for one message shape: a predicate over the unpacked values.

With it a filtered dump (`-D -p udp`, `-L -s A -p tcp`) keeps the single
AF_UNSPEC dump of C (same output order) and still never builds a Flow for the
entries it drops. Same rules as `template.make_filter` (libnetfilter_conntrack's
nfct_cmp); requests using NAT, label, CIDR or SCTP vtag filters are not
compiled (None) and use `make_filter` on decoded flows. Property tests check
that both agree on random requests and flows, and the shape decoder checks each
compiled predicate against `make_filter` on the first message of its shape.
"""

from __future__ import annotations

from collections.abc import Callable

from ..compiled import define
from ..flow import ICMP_PROTOS
from .request import Request
from .request import Tuple as ReqTuple
from .template import template_mark

_ICMP = tuple(sorted(ICMP_PROTOS))


def _slot(slots: dict[str, int], key: str) -> str | None:
    idx = slots.get(key)
    return None if idx is None else f"v[{idx}]"


def _tuple_conds(slots: dict[str, int], name: str, rt: ReqTuple, req: Request, orig: bool) -> str:
    """The condition of template._tuple_match for one direction (unmasked addresses)."""
    present = any(k.startswith(f"{name}.") for k in slots)
    if not present:
        return repr(not (rt.src or rt.dst or rt.sport is not None or rt.dport is not None))
    conds = []
    for field, want in (("src", rt.src), ("dst", rt.dst)):
        if want is not None:
            val = _slot(slots, f"{name}.{field}")
            conds.append("False" if val is None else f"{val} == {want!r}")
    port_conds = []
    for field, want in (("sport", rt.sport), ("dport", rt.dport)):
        if want is not None:
            val = _slot(slots, f"{name}.{field}")
            port_conds.append("False" if val is None else f"{val} == {want}")
    icmp_conds = []
    if orig:
        for field, want in (("icmp_type", req.icmp_type), ("icmp_code", req.icmp_code), ("icmp_id", req.icmp_id)):
            if want is not None:
                val = _slot(slots, f"{name}.{field}")
                icmp_conds.append("False" if val is None else f"{val} == {want}")
    proto = _slot(slots, f"{name}.proto")
    icmp = " and ".join(icmp_conds) or "True"
    ports = " and ".join(port_conds) or "True"
    if proto is None:
        conds.append(f"({ports})")
    elif icmp != ports:
        conds.append(f"(({icmp}) if {proto} in {_ICMP!r} else ({ports}))")
    elif icmp != "True":
        conds.append(f"({icmp})")
    return " and ".join(conds) or "True"


def make_predicate_factory(req: Request, *, use_mark: bool = True, use_status: bool = True,
                           kernel_filtered: bool = False, kernel_tuples: bool = False
                           ) -> Callable[[dict[str, int], int], Callable | None] | None:
    """factory(slots, message family) -> predicate(values) -> bool, or None if this request is not compiled."""
    if (req.src_nat is not None or req.dst_nat is not None or req.any_nat is not None or req.labels
            or req.mask.src is not None or req.mask.dst is not None
            or (req.proto == "sctp" and (req.sctp_vtag_orig is not None or req.sctp_vtag_reply is not None))):
        return None
    family = req.family
    if not family:
        kernel_tuples = False
    proto = req.l4proto
    orig_rt, reply_rt = req.orig, req.reply
    v6_addrs = family == 10 and any(a is not None for a in (orig_rt.src, orig_rt.dst, reply_rt.src, reply_rt.dst))
    tuples_in_kernel = kernel_tuples and proto is not None and not v6_addrs
    check_orig = not tuples_in_kernel and (
        orig_rt.src is not None or orig_rt.dst is not None or orig_rt.sport is not None
        or orig_rt.dport is not None or req.icmp_type is not None or req.icmp_code is not None
        or req.icmp_id is not None)
    check_reply = not tuples_in_kernel and (
        reply_rt.src is not None or reply_rt.dst is not None or reply_rt.sport is not None
        or reply_rt.dport is not None)

    def factory(slots: dict[str, int], msg_family: int) -> Callable | None:
        conds: list[str] = []
        if family and not kernel_tuples and msg_family != family:
            conds.append("False")
        if use_mark and req.mark_filter is not None and not kernel_filtered:
            value, mask = req.mark_filter
            conds.append(f"({_slot(slots, 'mark') or 0} & {mask}) == {value}")
        tmark = template_mark(req) if use_mark else None
        if tmark is not None:
            conds.append(f"({_slot(slots, 'mark') or 0} & {tmark[1]}) == {tmark[0]}")
        if proto is not None and not kernel_tuples:
            val = _slot(slots, "orig.proto")
            conds.append("False" if val is None else f"{val} == {proto}")
        if check_orig:
            conds.append(_tuple_conds(slots, "orig", orig_rt, req, True))
        if check_reply:
            conds.append(_tuple_conds(slots, "reply", reply_rt, req, False))
        if use_status and req.status_filter is not None and not kernel_filtered:
            value, mask = req.status_filter
            conds.append(f"({_slot(slots, 'status') or 0} & {mask}) == {value}")
        if req.state is not None:
            val = _slot(slots, "tcp.state") or _slot(slots, "sctp.state")
            conds.append("False" if val is None else f"{val} == {req.state}")
        if req.secmark is not None:
            conds.append(f"{_slot(slots, 'secmark') or 0} == {req.secmark}")
        if req.id is not None:
            val = _slot(slots, "id")
            conds.append("False" if val is None else f"{val} == {req.id}")
        if req.zone is not None:
            conds.append(f"{_slot(slots, 'zone') or 0} == {req.zone}")
        for name, want in (("orig", req.orig_zone), ("reply", req.reply_zone)):
            if want is not None:
                if not any(k.startswith(f"{name}.") for k in slots):
                    conds.append("False")
                else:
                    conds.append(f"{_slot(slots, f'{name}.zone') or 0} == {want}")
        src = f"def pred(v):\n    return {' and '.join(conds) or 'True'}\n"
        return define(src, "pred", {})  # the request's typed values (ints, bytes) and the slot table

    return factory
