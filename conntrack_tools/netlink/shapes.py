"""Shape-cached decoding of ctnetlink conntrack messages (the dump hot path).

A dump of 100k entries holds only a handful of distinct *shapes*: the same
attributes, in the same order, with the same lengths (IPv4 TCP, IPv4 UDP,
ICMP, ...). For each new shape we walk the message once with the generic
decoder, compile one ``struct.Struct`` that unpacks every attribute header and
every value in a single C call, and a small builder that turns the unpacked
values into a :class:`Flow`. A later message of the same length is decoded by
that struct; its headers are compared with the recorded ones, so a different
layout of the same length is never mis-decoded: it falls back to the generic
decoder (``codec.decode_flow``), which stays the reference. Property tests
check that both paths agree on arbitrary messages.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from operator import itemgetter

from ..flow import AF_INET6, Counters, Flow, SctpInfo, TcpInfo, Tuple
from .attrs import CTA, NLA_TYPE_MASK, CountersAttr, IpAttr, ProtoAttr, ProtoinfoAttr, SctpAttr, TcpAttr, TupleAttr
from .codec import NFGEN_HDRLEN, DecodeError, decode_flow

_NLA = struct.Struct("=HH")

# Leaf attributes the compiled path understands: path -> (struct code, slot name).
# Anything else in a message makes its shape "generic only".
_TUPLE_LEAVES = {
    (TupleAttr.IP, IpAttr.V4_SRC): ("4s", "src"),
    (TupleAttr.IP, IpAttr.V4_DST): ("4s", "dst"),
    (TupleAttr.IP, IpAttr.V6_SRC): ("16s", "src"),
    (TupleAttr.IP, IpAttr.V6_DST): ("16s", "dst"),
    (TupleAttr.PROTO, ProtoAttr.NUM): ("B", "proto"),
    (TupleAttr.PROTO, ProtoAttr.SRC_PORT): ("H", "sport"),
    (TupleAttr.PROTO, ProtoAttr.DST_PORT): ("H", "dport"),
    (TupleAttr.PROTO, ProtoAttr.ICMP_ID): ("H", "icmp_id"),
    (TupleAttr.PROTO, ProtoAttr.ICMP_TYPE): ("B", "icmp_type"),
    (TupleAttr.PROTO, ProtoAttr.ICMP_CODE): ("B", "icmp_code"),
    (TupleAttr.PROTO, ProtoAttr.ICMPV6_ID): ("H", "icmp_id"),
    (TupleAttr.PROTO, ProtoAttr.ICMPV6_TYPE): ("B", "icmp_type"),
    (TupleAttr.PROTO, ProtoAttr.ICMPV6_CODE): ("B", "icmp_code"),
    (TupleAttr.ZONE,): ("H", "zone"),
}
_TOP_U32 = {CTA.STATUS: "status", CTA.TIMEOUT: "timeout", CTA.MARK: "mark", CTA.USE: "use", CTA.ID: "id",
            CTA.SECMARK: "secmark"}
_TCP_LEAVES = {TcpAttr.STATE: ("B", "state"), TcpAttr.WSCALE_ORIGINAL: ("B", "wscale_orig"),
               TcpAttr.WSCALE_REPLY: ("B", "wscale_reply"), TcpAttr.FLAGS_ORIGINAL: ("BB", "flags_orig"),
               TcpAttr.FLAGS_REPLY: ("BB", "flags_reply")}
_SCTP_LEAVES = {SctpAttr.STATE: ("B", "state"), SctpAttr.VTAG_ORIGINAL: ("I", "vtag_orig"),
                SctpAttr.VTAG_REPLY: ("I", "vtag_reply")}


class _Uncompilable(Exception):
    pass


class _ShapeBuilder:
    """Accumulates a struct format (big endian, explicit padding) while walking one message."""

    def __init__(self) -> None:
        self.fmt: list[str] = []
        self.pos = 0  # byte offset inside the payload
        self.nvals = 0
        self.header_idx: list[int] = []
        self.header_vals: list[bytes] = []
        self.code: list[str] = []  # builder statements

    def skip_to(self, off: int) -> None:
        if off < self.pos:
            raise _Uncompilable
        if off > self.pos:
            self.fmt.append(f"{off - self.pos}x")
            self.pos = off

    def field(self, off: int, code: str, size: int) -> int:
        self.skip_to(off)
        self.fmt.append(code)
        self.pos += size
        idx = self.nvals
        self.nvals += len(code) if code in ("BB",) else 1
        return idx

    def header(self, buf, off: int, base: int) -> None:
        idx = self.field(off - base, "4s", 4)
        self.header_idx.append(idx)
        self.header_vals.append(bytes(buf[off:off + 4]))


_SIZES = {"4s": 4, "16s": 16, "B": 1, "H": 2, "I": 4, "Q": 8, "BB": 2}


def _walk(b: _ShapeBuilder, buf, start: int, end: int, base: int):
    """Yield (type, value_start, value_end) recording every header in the builder."""
    off = start
    while off + 4 <= end:
        length, atype = _NLA.unpack_from(buf, off)
        if length < 4 or off + length > end:
            raise DecodeError("bad attribute length")
        b.header(buf, off, base)
        yield atype & NLA_TYPE_MASK, off + 4, off + length
        off += (length + 3) & ~3
    if off != end and off < end:
        raise _Uncompilable


def _compile(buf, start: int, end: int):
    """Build (struct, header getter, header values, builder) for this message's shape."""
    b = _ShapeBuilder()
    base = start
    family = buf[start]
    lines = [f"def build(v):\n    f = Flow({family})"]
    for a, s, e in _walk(b, buf, start + NFGEN_HDRLEN, end, base):
        if a in (CTA.TUPLE_ORIG, CTA.TUPLE_REPLY):
            name = "orig" if a == CTA.TUPLE_ORIG else "reply"
            lines.append(f"    t = Tuple({family})")
            tfam = None
            for ta, s2, e2 in _walk(b, buf, s, e, base):
                if ta == TupleAttr.ZONE:
                    code, slot = _TUPLE_LEAVES[(TupleAttr.ZONE,)]
                    if e2 - s2 < 2:
                        raise _Uncompilable
                    lines.append(f"    t.{slot} = v[{b.field(s2 - base, code, 2)}]")
                    continue
                if ta not in (TupleAttr.IP, TupleAttr.PROTO):
                    raise _Uncompilable
                for la, s3, e3 in _walk(b, buf, s2, e2, base):
                    leaf = _TUPLE_LEAVES.get((ta, la))
                    if leaf is None:
                        raise _Uncompilable
                    code, slot = leaf
                    size = _SIZES[code]
                    if e3 - s3 < size:
                        raise _Uncompilable
                    if ta == TupleAttr.IP:
                        tfam = AF_INET6 if la >= IpAttr.V6_SRC else 2
                    lines.append(f"    t.{slot} = v[{b.field(s3 - base, code, size)}]")
            if tfam is not None:
                lines.append(f"    t.family = {tfam}")
            lines.append(f"    f.{name} = t")
        elif a in _TOP_U32:
            if e - s < 4:
                raise _Uncompilable
            lines.append(f"    f.{_TOP_U32[a]} = v[{b.field(s - base, 'I', 4)}]")
        elif a == CTA.ZONE:
            if e - s < 2:
                raise _Uncompilable
            lines.append(f"    f.zone = v[{b.field(s - base, 'H', 2)}]")
        elif a in (CTA.COUNTERS_ORIG, CTA.COUNTERS_REPLY):
            name = "counters_orig" if a == CTA.COUNTERS_ORIG else "counters_reply"
            lines.append("    c = Counters()")
            for ca, s2, e2 in _walk(b, buf, s, e, base):
                if ca in (CountersAttr.PACKETS, CountersAttr.BYTES) and e2 - s2 >= 8:
                    slot = "packets" if ca == CountersAttr.PACKETS else "bytes"
                    lines.append(f"    c.{slot} = v[{b.field(s2 - base, 'Q', 8)}]")
                else:
                    raise _Uncompilable
            lines.append(f"    f.{name} = c")
        elif a == CTA.PROTOINFO:
            for pa, s2, e2 in _walk(b, buf, s, e, base):
                if pa == ProtoinfoAttr.TCP:
                    table, cls, slot_name = _TCP_LEAVES, "TcpInfo", "tcp"
                elif pa == ProtoinfoAttr.SCTP:
                    table, cls, slot_name = _SCTP_LEAVES, "SctpInfo", "sctp"
                else:
                    raise _Uncompilable
                lines.append(f"    p = {cls}()")
                for la, s3, e3 in _walk(b, buf, s2, e2, base):
                    leaf = table.get(la)
                    if leaf is None:
                        raise _Uncompilable
                    code, slot = leaf
                    size = _SIZES[code]
                    if e3 - s3 < size:
                        raise _Uncompilable
                    idx = b.field(s3 - base, code, size)
                    if code == "BB":
                        mask_slot = slot.replace("flags", "mask")
                        lines.append(f"    p.{slot} = v[{idx}]; p.{mask_slot} = v[{idx + 1}]")
                    else:
                        lines.append(f"    p.{slot} = v[{idx}]")
                lines.append(f"    f.{slot_name} = p")
        elif a == CTA.SYNPROXY:
            # Sent on every entry since Linux 5.x; the values matter only for synproxy flows.
            vals = []
            for _sa, s2, e2 in _walk(b, buf, s, e, base):
                if e2 - s2 < 4:
                    raise _Uncompilable
                vals.append(f"v[{b.field(s2 - base, 'I', 4)}]")
            if len(vals) != 3:
                raise _Uncompilable
            lines.append(f"    f.synproxy = ({', '.join(vals)})")
        else:
            raise _Uncompilable
    b.skip_to(end - base)
    lines.append("    return f")
    namespace = {"Flow": Flow, "Tuple": Tuple, "Counters": Counters, "TcpInfo": TcpInfo, "SctpInfo": SctpInfo}
    exec("\n".join(lines), namespace)  # noqa: S102 - code generated from the fixed tables above
    st = struct.Struct(">" + "".join(b.fmt))
    getter = itemgetter(*b.header_idx) if len(b.header_idx) > 1 else (lambda v, i=b.header_idx[0]: (v[i],))
    return st, getter, tuple(b.header_vals), namespace["build"], family


class ShapeDecoder:
    """decode(buf, start, end) -> Flow, equal to codec.decode_flow but much faster on dumps."""

    def __init__(self, max_shapes: int = 256) -> None:
        self.cache: dict[tuple[int, int], list] = {}
        self.generic: set[tuple[int, int]] = set()
        self.max_shapes = max_shapes
        self.hits = 0
        self.misses = 0

    def decode(self, buf, start: int, end: int) -> Flow:
        key = (end - start, buf[start])
        shapes = self.cache.get(key)
        if shapes is not None:
            for st, getter, headers, build, _family in shapes:
                vals = st.unpack_from(buf, start)
                if getter(vals) == headers:
                    self.hits += 1
                    return build(vals)
        self.misses += 1
        flow = decode_flow(buf, start, end)
        if key not in self.generic and len(self.cache) < self.max_shapes:
            try:
                compiled = _compile(buf, start, end)
            except (_Uncompilable, DecodeError, KeyError, struct.error):
                if shapes is None:
                    self.generic.add(key)
            else:
                bucket = self.cache.setdefault(key, [])
                if len(bucket) < 4:  # a few layouts share a length at most; never let a bucket grow unbounded
                    bucket.append(compiled)
        return flow


def make_decoder() -> Callable[[bytes | memoryview, int, int], Flow]:
    return ShapeDecoder().decode
