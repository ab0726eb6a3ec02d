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
_NLMSG = struct.Struct("=IHHII")
_I32 = struct.Struct("=i")
NLMSG_ERROR, NLMSG_DONE = 2, 3

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
        self.slots: dict[str, int] = {}  # "orig.src", "status", "tcp.state", ... -> index in the unpacked values

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
    key_spans: list[tuple[int, int]] = [(0, NFGEN_HDRLEN)]
    lines = [f"def build(v):\n    f = Flow({family})"]
    for a, s, e in _walk(b, buf, start + NFGEN_HDRLEN, end, base):
        if a in (CTA.TUPLE_ORIG, CTA.ZONE, CTA.ID):
            key_spans.append((s - 4 - base, min(((e + 3) & ~3), end) - base))
        if a in (CTA.TUPLE_ORIG, CTA.TUPLE_REPLY):
            name = "orig" if a == CTA.TUPLE_ORIG else "reply"
            lines.append(f"    t = Tuple({family})")
            tfam = None
            for ta, s2, e2 in _walk(b, buf, s, e, base):
                if ta == TupleAttr.ZONE:
                    code, slot = _TUPLE_LEAVES[(TupleAttr.ZONE,)]
                    if e2 - s2 < 2:
                        raise _Uncompilable
                    idx = b.field(s2 - base, code, 2)
                    b.slots[f"{name}.{slot}"] = idx
                    lines.append(f"    t.{slot} = v[{idx}]")
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
                    idx = b.field(s3 - base, code, size)
                    b.slots[f"{name}.{slot}"] = idx
                    lines.append(f"    t.{slot} = v[{idx}]")
            if tfam is not None:
                lines.append(f"    t.family = {tfam}")
                b.slots[f"{name}.family"] = -tfam
            lines.append(f"    f.{name} = t")
        elif a in _TOP_U32:
            if e - s < 4:
                raise _Uncompilable
            idx = b.field(s - base, 'I', 4)
            b.slots[_TOP_U32[a]] = idx
            lines.append(f"    f.{_TOP_U32[a]} = v[{idx}]")
        elif a == CTA.ZONE:
            if e - s < 2:
                raise _Uncompilable
            idx = b.field(s - base, 'H', 2)
            b.slots["zone"] = idx
            lines.append(f"    f.zone = v[{idx}]")
        elif a in (CTA.COUNTERS_ORIG, CTA.COUNTERS_REPLY):
            name = "counters_orig" if a == CTA.COUNTERS_ORIG else "counters_reply"
            lines.append("    c = Counters()")
            for ca, s2, e2 in _walk(b, buf, s, e, base):
                if ca in (CountersAttr.PACKETS, CountersAttr.BYTES) and e2 - s2 >= 8:
                    slot = "packets" if ca == CountersAttr.PACKETS else "bytes"
                    idx = b.field(s2 - base, 'Q', 8)
                    b.slots[f"{name}.{slot}"] = idx
                    lines.append(f"    c.{slot} = v[{idx}]")
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
                    b.slots[f"{slot_name}.{slot}"] = idx
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
    if not b.header_idx:  # no attribute at all: nothing to compile
        raise _Uncompilable
    b.skip_to(end - base)
    lines.append("    return f")
    namespace = {"Flow": Flow, "Tuple": Tuple, "Counters": Counters, "TcpInfo": TcpInfo, "SctpInfo": SctpInfo}
    exec("\n".join(lines), namespace)  # noqa: S102 - code generated from the fixed tables above
    st = struct.Struct(">" + "".join(b.fmt))
    getter = itemgetter(*b.header_idx) if len(b.header_idx) > 1 else (lambda v, i=b.header_idx[0]: (v[i],))
    b.slots["_key_spans"] = key_spans  # type: ignore[assignment]
    return st, getter, tuple(b.header_vals), namespace["build"], b.slots


class _Shape:
    __slots__ = ("struct", "getter", "headers", "build", "slots", "line", "pred", "key_spans", "key_len",
                 "_key_makers")

    def __init__(self, st, getter, headers, build, slots) -> None:
        self.key_spans: list[tuple[int, int]] = slots.pop("_key_spans")
        self.key_len = sum(e - s for s, e in self.key_spans)
        self.struct, self.getter, self.headers, self.build, self.slots = st, getter, headers, build, slots
        self.line: Callable | None = None
        self.pred: Callable | None = None
        self._key_makers: dict[tuple[int, int], Callable] = {}

    def key_request(self, buf, start: int, msg_type: int, flags: int, seq: int) -> bytes:
        """A request carrying this message's raw tuple/zone/id attributes (see codec.key_request_from_dump)."""
        maker = self._key_makers.get((msg_type, flags))
        if maker is None:
            maker = self._key_makers[(msg_type, flags)] = self._key_maker(msg_type, flags)
        return maker(buf, start, seq)

    def _key_maker(self, msg_type: int, flags: int) -> Callable:
        """One generated expression: fixed header prefix + seq + the merged raw spans."""
        spans: list[list[int]] = []
        for s, e in self.key_spans:
            if spans and spans[-1][1] == s:
                spans[-1][1] = e
            else:
                spans.append([s, e])
        prefix = struct.pack("=IHH", 16 + self.key_len, msg_type, flags | 1)
        pieces = " + ".join(f"buf[start + {s}:start + {e}]" for s, e in spans)
        src = f"def make(buf, start, seq):\n    return PREFIX + SEQ(seq, 0) + {pieces}\n"
        namespace = {"PREFIX": prefix, "SEQ": struct.Struct("=II").pack}
        exec(src, namespace)  # noqa: S102 - generated from recorded integer offsets
        return namespace["make"]


class ShapeDecoder:
    """decode(buf, start, end) -> Flow, equal to codec.decode_flow but much faster on dumps.

    With a ``line_factory`` (slots, family -> renderer of the unpacked values, or None),
    ``line()`` also renders a shape's text line straight from the unpacked values,
    skipping the Flow objects. Each generated renderer is checked against the
    reference renderer on the first message of its shape and dropped if they differ.
    """

    def __init__(self, max_shapes: int = 256, line_factory: Callable | None = None,
                 reference: Callable[[Flow], str] | None = None, keep: Callable[[Flow], bool] | None = None,
                 predicate_factory: Callable | None = None) -> None:
        self.cache: dict[tuple[int, int], list[_Shape]] = {}
        self.generic: set[tuple[int, int]] = set()
        self.max_shapes = max_shapes
        self.line_factory = line_factory
        self.reference = reference
        self.keep = keep  # None: every message is wanted
        self.predicate_factory = predicate_factory
        self.hits = 0
        self.misses = 0

    def _lookup(self, buf, start: int, end: int):
        if end - start < NFGEN_HDRLEN:  # no nfgenmsg (and maybe no byte at start): _miss raises DecodeError
            return None, None
        shapes = self.cache.get((end - start, buf[start]))
        if shapes is not None:
            for shape in shapes:
                vals = shape.struct.unpack_from(buf, start)
                if shape.getter(vals) == shape.headers:
                    return shape, vals
        return None, None

    def decode(self, buf, start: int, end: int) -> Flow:
        shape, vals = self._lookup(buf, start, end)
        if shape is not None:
            self.hits += 1
            return shape.build(vals)
        return self._miss(buf, start, end)

    def line(self, buf, start: int, end: int) -> str:
        """The reference renderer's line for this message, via the shape's generated renderer if any."""
        shape, vals = self._lookup(buf, start, end)
        if shape is not None:
            self.hits += 1
            if shape.line is not None:
                return shape.line(vals)
            return self.reference(shape.build(vals))
        return self.reference(self._miss(buf, start, end))

    def lines_into(self, buf, n: int, seq: int, append: Callable[[str], None],
                   on_message: Callable | None = None) -> tuple[bool, int]:
        """Render every dump message of one receive buffer; returns (done, errno).

        The whole-buffer loop keeps framing, shape lookup and rendering in one
        Python frame: on a 100k dump the per-message generator and call overhead
        it avoids is as large as the rendering itself.
        """
        off = 0
        cache = self.cache
        unpack_hdr = _NLMSG.unpack_from
        reference = self.reference
        keep = self.keep
        while off + 16 <= n:
            length, mtype, _flags, mseq, _pid = unpack_hdr(buf, off)
            if length < 16 or off + length > n:
                raise DecodeError(f"bad netlink message length {length}")
            if mseq == seq:
                if mtype == NLMSG_DONE:
                    return True, 0
                if mtype == NLMSG_ERROR:
                    return True, -_I32.unpack_from(buf, off + 16)[0] if length >= 20 else 0
                if mtype >= 0x100:
                    start, end = off + 16, off + length
                    for shape in (cache.get((length - 16, buf[start]), ()) if length >= 16 + NFGEN_HDRLEN else ()):
                        vals = shape.struct.unpack_from(buf, start)
                        if shape.getter(vals) == shape.headers:
                            pred = shape.pred
                            if pred is not None:
                                if not pred(vals):
                                    break
                            elif keep is not None and not keep(shape.build(vals)):
                                break
                            line = shape.line
                            append(line(vals) if line is not None else reference(shape.build(vals)))
                            if on_message is not None:
                                on_message(buf, start, end, shape)
                            break
                    else:
                        flow = self._miss(buf, start, end)
                        if keep is None or keep(flow):
                            append(reference(flow))
                            if on_message is not None:
                                on_message(buf, start, end, None)
            off += (length + 3) & ~3
        return False, 0

    def _miss(self, buf, start: int, end: int) -> Flow:
        self.misses += 1
        flow = decode_flow(buf, start, end)  # first: it rejects a payload too short to hold a key
        key = (end - start, buf[start])
        if key in self.generic or len(self.cache) >= self.max_shapes:
            return flow
        try:
            shape = _Shape(*_compile(buf, start, end))
        except (_Uncompilable, DecodeError, KeyError, struct.error):
            if key not in self.cache:
                self.generic.add(key)
            return flow
        bucket = self.cache.setdefault(key, [])
        if len(bucket) >= 4:  # a few layouts share a length at most; never let a bucket grow unbounded
            return flow
        bucket.append(shape)
        if self.line_factory is not None and self.reference is not None:
            vals = shape.struct.unpack_from(buf, start)
            try:
                line = self.line_factory(shape.slots, buf[start])
                if line is not None and line(vals) != self.reference(flow):
                    line = None
            except Exception:  # noqa: BLE001 - a generated renderer that fails is simply not used
                line = None
            shape.line = line
        if self.predicate_factory is not None and self.keep is not None:
            vals = shape.struct.unpack_from(buf, start)
            try:
                pred = self.predicate_factory(shape.slots, buf[start])
                if pred is not None and pred(vals) != self.keep(flow):
                    pred = None
            except Exception:  # noqa: BLE001 - a predicate that fails is simply not used
                pred = None
            shape.pred = pred
        return flow


def make_decoder() -> Callable[[bytes | memoryview, int, int], Flow]:
    return ShapeDecoder().decode
