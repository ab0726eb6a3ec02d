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
from typing import Any

from ..compiled import SIZES, Layout, Layouts, StructFormat, Uncompilable, checked, define
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


def _walk(b: StructFormat, buf, start: int, end: int, base: int):
    """Yield (type, value_start, value_end) recording every header in the format."""
    off = start
    while off + 4 <= end:
        length, atype = _NLA.unpack_from(buf, off)
        if length < 4 or off + length > end:
            raise DecodeError("bad attribute length")
        b.header(off - base, bytes(buf[off:off + 4]))
        yield atype & NLA_TYPE_MASK, off + 4, off + length
        off += (length + 3) & ~3
    if off != end and off < end:
        raise Uncompilable


class _Compiler:
    """Walks one message, recording its struct format, its slots and the source of its Flow builder."""

    def __init__(self, buf, base: int) -> None:
        self.b = StructFormat()
        self.buf, self.base = buf, base
        self.slots: dict[str, int] = {}  # "orig.src", "status", "tcp.state", ... -> index in the unpacked values
        self.lines = [f"def build(v):\n    f = Flow({buf[base]})"]

    def walk(self, start: int, end: int):
        return _walk(self.b, self.buf, start, end, self.base)

    def field(self, s: int, e: int, code: str, slot: str | None) -> int:
        """The value of ``code`` at ``s`` (its attribute ends at ``e``); recorded as ``slot``."""
        if e - s < SIZES[code]:
            raise Uncompilable
        idx = self.b.field(s - self.base, code)
        if slot is not None:
            self.slots[slot] = idx
        return idx

    def tuple_(self, a: int, s: int, e: int) -> None:
        name = "orig" if a == CTA.TUPLE_ORIG else "reply"
        lines = self.lines
        lines.append(f"    t = Tuple({self.buf[self.base]})")
        tfam = None
        for ta, s2, e2 in self.walk(s, e):
            if ta == TupleAttr.ZONE:
                code, slot = _TUPLE_LEAVES[(TupleAttr.ZONE,)]
                lines.append(f"    t.{slot} = v[{self.field(s2, e2, code, f'{name}.{slot}')}]")
                continue
            if ta not in (TupleAttr.IP, TupleAttr.PROTO):
                raise Uncompilable
            for la, s3, e3 in self.walk(s2, e2):
                leaf = _TUPLE_LEAVES.get((ta, la))
                if leaf is None:
                    raise Uncompilable
                code, slot = leaf
                if e3 - s3 < SIZES[code]:
                    raise Uncompilable
                if ta == TupleAttr.IP:
                    tfam = AF_INET6 if la >= IpAttr.V6_SRC else 2
                lines.append(f"    t.{slot} = v[{self.field(s3, e3, code, f'{name}.{slot}')}]")
        if tfam is not None:
            lines.append(f"    t.family = {tfam}")
            self.slots[f"{name}.family"] = -tfam
        lines.append(f"    f.{name} = t")

    def counters(self, a: int, s: int, e: int) -> None:
        name = "counters_orig" if a == CTA.COUNTERS_ORIG else "counters_reply"
        self.lines.append("    c = Counters()")
        for ca, s2, e2 in self.walk(s, e):
            if ca in (CountersAttr.PACKETS, CountersAttr.BYTES) and e2 - s2 >= 8:
                slot = "packets" if ca == CountersAttr.PACKETS else "bytes"
                self.lines.append(f"    c.{slot} = v[{self.field(s2, e2, 'Q', f'{name}.{slot}')}]")
            else:
                raise Uncompilable
        self.lines.append(f"    f.{name} = c")

    def protoinfo(self, a: int, s: int, e: int) -> None:
        lines = self.lines
        for pa, s2, e2 in self.walk(s, e):
            if pa == ProtoinfoAttr.TCP:
                table, cls, slot_name = _TCP_LEAVES, "TcpInfo", "tcp"
            elif pa == ProtoinfoAttr.SCTP:
                table, cls, slot_name = _SCTP_LEAVES, "SctpInfo", "sctp"
            else:
                raise Uncompilable
            lines.append(f"    p = {cls}()")
            for la, s3, e3 in self.walk(s2, e2):
                leaf = table.get(la)
                if leaf is None:
                    raise Uncompilable
                code, slot = leaf
                idx = self.field(s3, e3, code, f"{slot_name}.{slot}")
                if code == "BB":
                    mask_slot = slot.replace("flags", "mask")
                    lines.append(f"    p.{slot} = v[{idx}]; p.{mask_slot} = v[{idx + 1}]")
                else:
                    lines.append(f"    p.{slot} = v[{idx}]")
            lines.append(f"    f.{slot_name} = p")

    def synproxy(self, a: int, s: int, e: int) -> None:
        # Sent on every entry since Linux 5.x; the values matter only for synproxy flows.
        vals = [f"v[{self.field(s2, e2, 'I', f'synproxy.{i}')}]" for i, (_sa, s2, e2) in enumerate(self.walk(s, e))]
        if len(vals) != 3:
            raise Uncompilable
        self.lines.append(f"    f.synproxy = ({', '.join(vals)})")

    def u32(self, a: int, s: int, e: int) -> None:
        self.lines.append(f"    f.{_TOP_U32[a]} = v[{self.field(s, e, 'I', _TOP_U32[a])}]")

    def zone(self, a: int, s: int, e: int) -> None:
        self.lines.append(f"    f.zone = v[{self.field(s, e, 'H', 'zone')}]")


# top-level attribute -> the _Compiler method that records it; any other attribute: generic only
_TOP: dict[int, Callable] = {CTA.TUPLE_ORIG: _Compiler.tuple_, CTA.TUPLE_REPLY: _Compiler.tuple_,
                             CTA.COUNTERS_ORIG: _Compiler.counters, CTA.COUNTERS_REPLY: _Compiler.counters,
                             CTA.PROTOINFO: _Compiler.protoinfo, CTA.SYNPROXY: _Compiler.synproxy,
                             CTA.ZONE: _Compiler.zone, **dict.fromkeys(_TOP_U32, _Compiler.u32)}


def _compile(buf, start: int, end: int):
    """The compiled shape of this message (raises Uncompilable for layouts the fast path does not cover)."""
    c = _Compiler(buf, start)
    key_spans: list[tuple[int, int]] = [(0, NFGEN_HDRLEN)]
    for a, s, e in c.walk(start + NFGEN_HDRLEN, end):
        if a in (CTA.TUPLE_ORIG, CTA.ZONE, CTA.ID):
            key_spans.append((s - 4 - start, min(((e + 3) & ~3), end) - start))
        record = _TOP.get(a)
        if record is None:
            raise Uncompilable
        record(c, a, s, e)
    c.lines.append("    return f")
    namespace = {"Flow": Flow, "Tuple": Tuple, "Counters": Counters, "TcpInfo": TcpInfo, "SctpInfo": SctpInfo}
    return _Shape(c.b, end - start, define("\n".join(c.lines), "build", namespace), c.slots, key_spans)


class _Shape(Layout):
    __slots__ = ("slots", "line", "pred", "event", "key_spans", "key_len", "_key_makers")

    def __init__(self, fmt: StructFormat, size: int, build: Callable, slots: dict[str, int],
                 key_spans: list[tuple[int, int]]) -> None:
        super().__init__(fmt, size, build)  # no attribute at all: Uncompilable (nothing to compile)
        self.slots = slots
        self.key_spans = key_spans
        self.key_len = sum(e - s for s, e in key_spans)
        self.line: Callable | None = None
        self.pred: Callable | None = None
        self.event: Any = None  # the daemon's compiled event -> cache entry (daemon/event_fill.py)
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
        return define(src, "make", {"PREFIX": prefix, "SEQ": struct.Struct("=II").pack})


class ShapeDecoder:
    """decode(buf, start, end) -> Flow, equal to codec.decode_flow but much faster on dumps.

    With a ``line_factory`` (slots, family -> renderer of the unpacked values, or None),
    ``line()`` also renders a shape's text line straight from the unpacked values,
    skipping the Flow objects. Each generated renderer is checked against the
    reference renderer on the first message of its shape and dropped if they differ.
    ``event_factory`` and ``event_reference`` do the same for the daemon's event path
    (``shape.event``, see daemon/event_fill.py): :meth:`find` gives the shape and its values.
    """

    def __init__(self, max_shapes: int = 256, line_factory: Callable | None = None,
                 reference: Callable[[Flow], str] | None = None, keep: Callable[[Flow], bool] | None = None,
                 predicate_factory: Callable | None = None, event_factory: Callable | None = None,
                 event_reference: Callable[[Flow], Any] | None = None) -> None:
        # buckets by (payload length, family); a few layouts share a length at most
        self.layouts = Layouts(max_layouts=max_shapes, per_bucket=4, max_generic=4 * max_shapes)
        self.line_factory = line_factory
        self.reference = reference
        self.keep = keep  # None: every message is wanted
        self.predicate_factory = predicate_factory
        self.event_factory = event_factory
        self.event_reference = event_reference
        self.hits = 0
        self.misses = 0

    def _lookup(self, buf, start: int, end: int):
        if end - start < NFGEN_HDRLEN:  # no nfgenmsg (and maybe no byte at start): _miss raises DecodeError
            return None, None
        bucket = self.layouts.buckets.get((end - start, buf[start]))  # Layouts.find, inlined (hot)
        if bucket:
            x = int.from_bytes(buf[start:end], "big")
            for shape in bucket:
                if x & shape.mask == shape.want:
                    return shape, shape.struct.unpack_from(buf, start)
        return None, None

    def find(self, buf, start: int, end: int) -> tuple[_Shape | None, tuple | None]:
        """(shape, unpacked values) of a message whose layout is compiled, else (None, None)."""
        shape, vals = self._lookup(buf, start, end)
        if shape is not None:
            self.hits += 1
        return shape, vals

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

    def lines(self, buf, spans: list[int], append: Callable[[str], None],
              on_message: Callable | None = None) -> None:
        """Render the wanted messages among ``spans`` (payload start and end of each message in ``buf``, flat,
        as ``codec.frame_dump`` / ``CtnlSocket.dump_spans`` give them for one receive buffer).

        Decoding only: the socket layer receives and frames. The whole-buffer loop keeps shape lookup,
        filter and rendering in one Python frame: on a 100k dump the per-message call overhead it
        avoids is as large as the rendering itself.
        """
        cache = self.layouts.buckets
        reference = self.reference
        keep = self.keep
        it = iter(spans)
        for start, end in zip(it, it, strict=True):  # zip reuses its result tuple: no allocation a message
            size = end - start
            bucket = cache.get((size, buf[start])) if size >= NFGEN_HDRLEN else None
            x = int.from_bytes(buf[start:end], "big") if bucket else 0
            for shape in (bucket or ()):
                if x & shape.mask == shape.want:
                    vals = shape.struct.unpack_from(buf, start)
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

    def _miss(self, buf, start: int, end: int) -> Flow:
        self.misses += 1
        flow = decode_flow(buf, start, end)  # first: it rejects a payload too short to hold a key
        key = (end - start, buf[start])
        layouts = self.layouts
        if key in layouts.generic or layouts.full():
            return flow
        try:
            shape = _compile(buf, start, end)
        except (Uncompilable, DecodeError, KeyError, struct.error):
            if key not in layouts.buckets:
                layouts.give_up(key)
            return flow
        if not layouts.add(key, shape):
            return flow
        vals = shape.struct.unpack_from(buf, start)
        family = buf[start]
        if self.line_factory is not None and self.reference is not None:
            shape.line = checked(lambda: self.line_factory(shape.slots, family), (vals,), lambda: self.reference(flow))
        if self.predicate_factory is not None and self.keep is not None:
            shape.pred = checked(lambda: self.predicate_factory(shape.slots, family), (vals,), lambda: self.keep(flow))
        if self.event_factory is not None and self.event_reference is not None:
            shape.event = checked(lambda: self.event_factory(shape.slots, family), (vals,),
                                  lambda: self.event_reference(flow))
        return flow


def make_decoder() -> Callable[[bytes | memoryview, int, int], Flow]:
    return ShapeDecoder().decode
