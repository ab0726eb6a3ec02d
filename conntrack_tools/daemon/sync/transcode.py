"""Shape-compiled receiver: sync message attributes -> external cache key + value (create body).

Why: the reference receive path (``decode_attrs`` -> ``SyncFlow.from_attrs`` ->
``external.build_entry``) builds an attribute tuple, a frozen dataclass, a ``Flow``, two
``Tuple``s and ``IPv4Address`` objects, then runs the generic netlink encoder -- about 27 µs
per message, where C spends ~4 µs on everything (docs/sync.md, "Receiver: ranked hot spots",
R1-R4).  A sender emits only a handful of *layouts* (same attributes, same order, same lengths,
same L4 protocol: IPv4 TCP with mark, IPv4 UDP, ...), so, as ``netlink/shapes.py`` does for
kernel messages, each layout is compiled once:

* one ``struct.Struct`` unpacks every attribute header and value of the message in one call;
  the headers (and the L4 protocol byte) are compared with the recorded ones, so a different
  layout of the same length is never mis-read;
* one generated function joins constant byte strings (netlink attribute and nest headers,
  whose lengths are fixed by the layout) with the raw value slices into the cache key and the
  cache value (``make_value``: metadata, create body, CTA_TIMEOUT slot) -- no object is built.

The generated code applies the receiver rules of ``convert.sync_to_create_flow`` (reply =
swapped original with the ICMP reply type, IPS_EXPECTED cleared, TCP BE_LIBERAL flags unless
TCPWindowTracking, SCTP/DCCP protoinfo only with a state, NAT as CTA_NAT_SRC/DST ranges) and
``cache.pack_tuple`` for the key.  The reference path stays the specification: the first message
of every layout is also run through it and the layout is used only if both agree byte for
byte (tests/unit/test_sync_transcode.py checks random flows the same way).

Everything else returns ``None`` and the caller takes the reference path: layouts with master,
helper, labels or NAT seq adjustment, repeated or unknown attributes, both address families,
malformed messages (so their errors are counted where they always were), and layouts that
failed the check.  ``transcode`` never raises.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from ...compiled import Layout, Layouts, StructFormat, Uncompilable, define
from ...flow import ICMP_PROTOS, ICMP_REPLY_TYPE, IPS_EXPECTED, TCP_FLAG_BE_LIBERAL
from ...netlink.attrs import (
    CTA,
    NLA_F_NESTED,
    IpAttr,
    NatAttr,
    ProtoAttr,
    ProtoinfoAttr,
    ProtoNatAttr,
    SctpAttr,
    SynproxyAttr,
    TcpAttr,
    TupleAttr,
)
from ...netlink.attrs import DccpAttr as _DccpAttr
from .wire_attrs import CT_ATTRS, NTA_HDR, CtAttr

__all__ = ["META", "META_LEN", "TAIL", "TAIL_LEN", "HAS_TIMEOUT", "RELATED", "Transcoder", "make_value"]

Result = tuple[bytes, bytes, "int | None"]  # external key, create body (nfgenmsg + attrs), timeout

# ---- the external cache's value: one bytes object per flow (external.py), laid out so that commit
# copies it as is and overwrites two fields per entry:
#   META (16 bytes): lastupdate (double), lifetime (u32 s), timeout (u32, 0 if absent)
#                    -> becomes the create message's nlmsghdr at commit
#   body:            nfgenmsg + CTA attributes of the create request, without CTA_TIMEOUT
#   TAIL (8 bytes):  CTA_TIMEOUT attribute header + flags byte (HAS_TIMEOUT, RELATED) + 3 zero bytes
#                    -> the flags become the be32 timeout at commit
META = struct.Struct("=dII")
META_LEN = 16
TAIL_LEN = 8
HAS_TIMEOUT, RELATED = 1, 2
_CTA_TIMEOUT = 7
TAIL = tuple(struct.pack("=HHB3x", 8, _CTA_TIMEOUT, f) for f in range(4))  # indexed by flags


def make_value(body: bytes, timeout: int | None, lastupdate: float, lifetime: int, related: bool) -> bytes:
    """The external cache value of a flow (reference path; the compiled layouts build the same bytes)."""
    flags = (HAS_TIMEOUT if timeout is not None else 0) | (RELATED if related else 0)
    return META.pack(lastupdate, lifetime, timeout or 0) + body + TAIL[flags]

A = CtAttr
# Attributes the compiled path reads: struct codes of their payload ("s" = raw bytes).
_CODES: dict[int, tuple[str, ...]] = {
    A.IPV4: ("4s", "4s"),
    A.IPV6: ("16s", "16s"),
    A.L4PROTO: ("B",),
    A.PORT: ("2s", "2s"),
    A.TCP_STATE: ("c",),
    A.STATUS: ("I",),
    A.TIMEOUT: ("I",),
    A.MARK: ("4s",),
    A.SNAT_IPV4: ("4s",),
    A.DNAT_IPV4: ("4s",),
    A.SPAT_PORT: ("2s",),  # little endian on the wire (C's double htons)
    A.DPAT_PORT: ("2s",),
    A.SCTP_STATE: ("c",),
    A.SCTP_VTAG_ORIG: ("4s",),
    A.SCTP_VTAG_REPL: ("4s",),
    A.DCCP_STATE: ("c",),
    A.DCCP_ROLE: ("c",),
    A.ICMP_TYPE: ("B",),
    A.ICMP_CODE: ("c",),
    A.ICMP_ID: ("2s",),  # little endian on the wire
    A.TCP_WSCALE_ORIG: ("c",),
    A.TCP_WSCALE_REPL: ("c",),
    A.SNAT_IPV6: ("16s",),
    A.DNAT_IPV6: ("16s",),
    A.SYNPROXY: ("4s", "4s", "4s"),  # its, isn, tsoff
    A.ZONE: ("2s",),
}
_AF_INET, _AF_INET6 = 2, 10
_Z_FLOW = 2  # cache.pack_tuple: the flow has a CTA_ZONE
_STATUS_KEEP = 0xFFFFFFFF & ~IPS_EXPECTED
_LIBERAL = bytes((TCP_FLAG_BE_LIBERAL, TCP_FLAG_BE_LIBERAL))

# Values the generated code indexes: one bytes object per u8, and the ICMP reply type maps.
_B1 = tuple(bytes((i,)) for i in range(256))
_RT = {p: tuple(bytes((ICMP_REPLY_TYPE.get((p, i), i),)) for i in range(256)) for p in ICMP_PROTOS}


# A piece of generated output: (bytes constant | source expression, size in bytes).
Piece = tuple["bytes | str", int]


def _attr(atype: int, payload: list[Piece]) -> list[Piece]:
    size = 4 + sum(n for _, n in payload)
    pad = (-size) % 4
    out: list[Piece] = [(struct.pack("=HH", size, atype), 4), *payload]
    if pad:
        out.append((bytes(pad), pad))
    return out


def _nested(atype: int, *children: list[Piece]) -> list[Piece]:
    return _attr(atype | NLA_F_NESTED, [p for c in children for p in c])


def _join(pieces: list[Piece]) -> str:
    """Source of one expression building the concatenation (adjacent constants merged)."""
    merged: list[bytes | str] = []
    for p, _n in pieces:
        if isinstance(p, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] += p
        else:
            merged.append(p)
    srcs = [repr(p) if isinstance(p, bytes) else p for p in merged]
    if len(srcs) == 1:
        return srcs[0]
    return f"b''.join(({', '.join(srcs)},))"


def _signature(buf, start: int, end: int) -> tuple[int, ...]:
    """(nta_len, id) of every attribute the way ``decode_attrs`` walks them, and the L4 protocol.

    Raises Uncompilable where ``decode_attrs`` would raise."""
    sig: list[int] = []
    pos = start
    while end - pos > 4:
        nta_len, aid = NTA_HDR.unpack_from(buf, pos)
        if nta_len > end - pos or nta_len < 4:
            raise Uncompilable
        sig += (nta_len, aid)
        if aid == A.L4PROTO and nta_len == 5:
            sig.append(buf[pos + 4])
        pos += (nta_len + 3) & ~3
    return tuple(sig)


def _compile(buf, start: int, end: int, window_tracking: bool) -> Layout:
    fmt = StructFormat()
    idx: dict[int, list[int]] = {}  # attr id -> indices of its values
    offs: dict[int, int] = {}  # value index -> byte offset
    p = start
    while end - p > 4:
        nta_len, aid = NTA_HDR.unpack_from(buf, p)
        if nta_len > end - p or nta_len < 4 or aid in idx:
            raise Uncompilable
        codes = _CODES.get(aid)
        spec = CT_ATTRS.get(aid)
        if codes is None or spec is None or spec.nta_len != nta_len:
            raise Uncompilable
        off = p - start
        fmt.header(off, bytes(buf[p:p + 4]))
        idx[aid] = []
        for c in codes:
            offs[fmt.nvals] = fmt.pos
            idx[aid].append(fmt.field(fmt.pos, c))
        if fmt.pos != off + nta_len:
            raise Uncompilable
        p += (nta_len + 3) & ~3
    if (A.IPV4 in idx) == (A.IPV6 in idx) or A.L4PROTO not in idx:
        raise Uncompilable  # from_attrs rejects a missing group; both groups: rare, reference path
    proto = buf[start + offs[idx[A.L4PROTO][0]]]
    fmt.signature(offs[idx[A.L4PROTO][0]], bytes((proto,)))
    src = _compile_build(idx, proto, window_tracking)
    ns: dict = {"S": struct.Struct(">I").pack, "H": struct.Struct(">H").pack, "B1": _B1,
                "RT": _RT.get(proto, _B1), "M": META.pack}
    return Layout(fmt, end - start, define(src, "build", ns))


def _v(i: int) -> str:
    return f"v[{i}]"


Idx = dict[int, list[int]]  # attribute id -> indices of its values in the unpacked message


def _icmp(idx: Idx, proto: int) -> tuple[int, Piece, Piece] | None:
    """(type value index, code piece, id piece) of an ICMP layout with its type, else None."""
    if proto not in ICMP_PROTOS or A.ICMP_TYPE not in idx:
        return None
    code: Piece = (_v(idx[A.ICMP_CODE][0]), 1) if A.ICMP_CODE in idx else (b"\0", 1)
    ident: Piece = (f"v[{idx[A.ICMP_ID][0]}][::-1]", 2) if A.ICMP_ID in idx else (b"\0\0", 2)
    return idx[A.ICMP_TYPE][0], code, ident


def _tuple(idx: Idx, proto: int, v6: bool, atype: int, src: Piece, dst: Piece, reply: bool) -> list[Piece]:
    """One CTA_TUPLE_* nest (sync_key_tuple + Tuple.reversed + encode_tuple)."""
    a, b = (dst, src) if reply else (src, dst)
    ip = _nested(TupleAttr.IP, _attr(IpAttr.V6_SRC if v6 else IpAttr.V4_SRC, [a]),
                 _attr(IpAttr.V6_DST if v6 else IpAttr.V4_DST, [b]))
    leaves = _attr(ProtoAttr.NUM, [(bytes((proto,)), 1)])
    ports = idx.get(A.PORT)
    if ports is not None:
        sp, dp = (_v(ports[0]), 2), (_v(ports[1]), 2)
        if reply:
            sp, dp = dp, sp
        leaves += _attr(ProtoAttr.SRC_PORT, [sp]) + _attr(ProtoAttr.DST_PORT, [dp])
    icmp = _icmp(idx, proto)
    if icmp is not None:
        it, code, ident = icmp
        typ: Piece = (f"{'RT' if reply else 'B1'}[v[{it}]]", 1)
        if proto == 58:
            ids = (ProtoAttr.ICMPV6_ID, ProtoAttr.ICMPV6_TYPE, ProtoAttr.ICMPV6_CODE)
        else:
            ids = (ProtoAttr.ICMP_ID, ProtoAttr.ICMP_TYPE, ProtoAttr.ICMP_CODE)
        leaves += _attr(ids[0], [ident]) + _attr(ids[1], [typ]) + _attr(ids[2], [code])
    return _nested(atype, ip, _nested(TupleAttr.PROTO, leaves))


def _nat(idx: Idx, v6: bool) -> list[Piece]:
    """sync_to_create_flow + encode_nat: address ranges of one address, port ranges of one port."""
    body: list[Piece] = []
    for atype, a4, a6, pat in ((CTA.NAT_SRC, A.SNAT_IPV4, A.SNAT_IPV6, A.SPAT_PORT),
                               (CTA.NAT_DST, A.DNAT_IPV4, A.DNAT_IPV6, A.DPAT_PORT)):
        if a4 in idx and a6 in idx:
            raise Uncompilable
        addr = a6 if a6 in idx else a4 if a4 in idx else None
        if addr is not None and (addr == a6) != v6:
            raise Uncompilable  # NAT address of the other family: reference path
        parts: list[Piece] = []
        if addr is not None:
            ap: Piece = (_v(idx[addr][0]), 16 if v6 else 4)
            parts += _attr(NatAttr.V6_MINIP if v6 else NatAttr.V4_MINIP, [ap])
            parts += _attr(NatAttr.V6_MAXIP if v6 else NatAttr.V4_MAXIP, [ap])
        if pat in idx:
            pp: Piece = (f"v[{idx[pat][0]}][::-1]", 2)
            parts += _nested(NatAttr.PROTO, _attr(ProtoNatAttr.PORT_MIN, [pp]), _attr(ProtoNatAttr.PORT_MAX, [pp]))
        if parts:
            body += _nested(atype, parts)
    return body


def _protoinfo(idx: Idx, proto: int, wt: bool) -> list[Piece]:
    """CTA_PROTOINFO: TCP (BE_LIBERAL flags unless TCPWindowTracking), SCTP/DCCP only with a state."""
    def leaf(atype: int, attr_id: int, size: int) -> list[Piece]:
        return _attr(atype, [(_v(idx[attr_id][0]), size)]) if attr_id in idx else []

    info: list[Piece] | None = None
    if proto == 6:
        tcp = (leaf(TcpAttr.STATE, A.TCP_STATE, 1) + leaf(TcpAttr.WSCALE_ORIGINAL, A.TCP_WSCALE_ORIG, 1)
               + leaf(TcpAttr.WSCALE_REPLY, A.TCP_WSCALE_REPL, 1))
        if not wt:
            info = _nested(ProtoinfoAttr.TCP, tcp + _attr(TcpAttr.FLAGS_ORIGINAL, [(_LIBERAL, 2)])
                           + _attr(TcpAttr.FLAGS_REPLY, [(_LIBERAL, 2)]))
        elif A.TCP_STATE in idx:
            info = _nested(ProtoinfoAttr.TCP, tcp)
    elif proto == 132 and A.SCTP_STATE in idx:
        info = _nested(ProtoinfoAttr.SCTP, leaf(SctpAttr.STATE, A.SCTP_STATE, 1)
                       + leaf(SctpAttr.VTAG_ORIGINAL, A.SCTP_VTAG_ORIG, 4)
                       + leaf(SctpAttr.VTAG_REPLY, A.SCTP_VTAG_REPL, 4))
    elif proto == 33 and A.DCCP_STATE in idx:
        info = _nested(ProtoinfoAttr.DCCP, leaf(_DccpAttr.STATE, A.DCCP_STATE, 1)
                       + leaf(_DccpAttr.ROLE, A.DCCP_ROLE, 1))
    return _nested(CTA.PROTOINFO, info) if info is not None else []


def _flow_attrs(idx: Idx, proto: int, wt: bool) -> list[Piece]:
    """The flow attributes after the tuples and NAT, in encode_flow order."""
    body: list[Piece] = []
    if A.STATUS in idx:
        body += _attr(CTA.STATUS, [(f"S(v[{idx[A.STATUS][0]}] & {_STATUS_KEEP})", 4)])
    else:
        body += _attr(CTA.STATUS, [(b"\0\0\0\0", 4)])
    if A.MARK in idx:
        body += _attr(CTA.MARK, [(_v(idx[A.MARK][0]), 4)])
    if A.ZONE in idx:
        body += _attr(CTA.ZONE, [(_v(idx[A.ZONE][0]), 2)])
    body += _protoinfo(idx, proto, wt)
    if A.SYNPROXY in idx:
        its, isn, tsoff = idx[A.SYNPROXY]
        body += _nested(CTA.SYNPROXY, _attr(SynproxyAttr.ISN, [(_v(isn), 4)]),
                        _attr(SynproxyAttr.ITS, [(_v(its), 4)]), _attr(SynproxyAttr.TSOFF, [(_v(tsoff), 4)]))
    return body


def _key(idx: Idx, proto: int, fam: int, src: Piece, dst: Piece) -> list[Piece]:
    """cache.pack_tuple of the original tuple + the flow's zone."""
    zone = A.ZONE in idx
    key: list[Piece] = [(bytes((fam, proto, _Z_FLOW if zone else 0)), 3), src, dst]
    ports = idx.get(A.PORT)
    icmp = _icmp(idx, proto)
    if proto in ICMP_PROTOS:
        if icmp is not None:
            it, code, ident = icmp
            key += [(f"B1[v[{it}]]", 1), code, ident, (b"\0\0", 2)]
        else:
            key.append((bytes(6), 6))
    elif ports is not None:
        key += [(_v(ports[0]), 2), (_v(ports[1]), 2), (b"\0\0", 2)]
    else:
        key.append((bytes(6), 6))
    key += [(b"\0\0", 2), (_v(idx[A.ZONE][0]), 2) if zone else (b"\0\0", 2)]
    return key


def _compile_build(idx: Idx, proto: int, wt: bool) -> str:
    """Source of ``build(v, lu, lt) -> (key, value)`` for this layout."""
    v6 = A.IPV6 in idx
    fam = _AF_INET6 if v6 else _AF_INET
    alen = 16 if v6 else 4
    s_i, d_i = idx[A.IPV6 if v6 else A.IPV4]
    src, dst = (_v(s_i), alen), (_v(d_i), alen)
    body: list[Piece] = [(bytes((fam, 0, 0, 0)), 4)]
    body += _tuple(idx, proto, v6, CTA.TUPLE_ORIG, src, dst, False)
    body += _tuple(idx, proto, v6, CTA.TUPLE_REPLY, src, dst, True)
    body += _nat(idx, v6)
    body += _flow_attrs(idx, proto, wt)
    if A.TIMEOUT in idx:
        value: list[Piece] = [(f"M(lu, lt, {_v(idx[A.TIMEOUT][0])})", META_LEN), *body, (TAIL[HAS_TIMEOUT], TAIL_LEN)]
    else:
        value = [("M(lu, lt, 0)", META_LEN), *body, (TAIL[0], TAIL_LEN)]
    return f"def build(v, lu, lt):\n    return ({_join(_key(idx, proto, fam, src, dst))}, {_join(value)})\n"


class Transcoder:
    """``entry(buf, start, end, lastupdate, lifetime)`` -> (key, value) of ``build_entry``, or None.

    ``start``/``end`` delimit the attributes of one CT message (after its 8-byte header); the value
    is the external cache's (``make_value``).  ``transcode`` gives (key, body, timeout) instead
    (tests).  ``related`` (a master tuple) is never set on this path: master layouts are not compiled.
    """

    def __init__(self, window_tracking: bool = False, max_layouts: int = 128,
                 reference: Callable | None = None) -> None:
        self.window_tracking = window_tracking
        # buckets by attribute bytes; generic: the (length, signature) of layouts known not to compile
        self.compiled = Layouts(max_layouts=max_layouts, per_bucket=8, max_generic=4 * max_layouts)
        self._buckets = self.compiled.buckets
        self.hits = 0
        self.misses = 0
        self._reference = reference if reference is not None else _reference

    @property
    def layouts(self) -> int:
        return self.compiled.count

    def entry(self, buf, start: int, end: int, lastupdate: float, lifetime: int) -> tuple[bytes, bytes] | None:
        bucket = self._buckets.get(end - start)
        if bucket:
            x = int.from_bytes(buf[start:end], "big")
            for lay in bucket:
                if x & lay.mask == lay.want:
                    self.hits += 1
                    return lay.build(lay.struct.unpack_from(buf, start), lastupdate, lifetime)
        found = self._miss(buf, start, end)
        if found is None:
            return None
        return found[0].build(found[1], lastupdate, lifetime)

    def transcode(self, buf, start: int, end: int) -> Result | None:
        r = self.entry(buf, start, end, 0.0, 0)
        if r is None:
            return None
        key, value = r
        timeout = META.unpack_from(value)[2] if value[-4] & HAS_TIMEOUT else None
        return key, value[META_LEN:-TAIL_LEN], timeout

    def _miss(self, buf, start: int, end: int) -> tuple[Layout, tuple] | None:
        self.misses += 1
        compiled = self.compiled
        if compiled.full() or end - start > 0xFFFF or start < 0 or end > len(buf):
            return None  # full (a peer sending ever new layouts): the reference path from now on
        try:
            sig = (end - start, _signature(buf, start, end))
            if sig in compiled.generic:
                return None
            try:
                lay = _compile(buf, start, end, self.window_tracking)
            except (Uncompilable, struct.error, KeyError, IndexError, ValueError):
                compiled.give_up(sig)
                return None
            vals = lay.struct.unpack_from(buf, start)
            got = lay.build(vals, 0.0, 0)
        except Uncompilable:  # malformed: the reference path counts the error
            return None
        try:
            want = self._reference(buf, start, end, self.window_tracking)
        except Exception:  # noqa: BLE001 - the reference path raises (and counts) it again
            return None
        if want != got:
            compiled.give_up(sig)
            return None
        compiled.add(end - start, lay)
        return lay, vals


def _reference(buf, start: int, end: int, window_tracking: bool) -> tuple[bytes, bytes]:
    """(key, value) of the reference path, with lastupdate 0.0 and lifetime 0."""
    from .external import build_entry
    from .wire import SyncFlow, decode_attrs

    e = build_entry(SyncFlow.from_attrs(decode_attrs(buf, start, end, CT_ATTRS)), 0.0, window_tracking)
    return e.key, e.value
