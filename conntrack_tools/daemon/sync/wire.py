"""Sans-I/O codec for the conntrackd sync wire protocol, version 1 (catalog 3.1-3.4).

Why sans-I/O: the same bytes are carried by UDP, multicast and TCP channels and
must be byte-identical to what a C 1.4.7 peer sends, so the codec is a pure
function of bytes that the transport layers and tests share.

Layers:

* ``NetHeader`` / ``AckHeader`` -- the 8/16-byte headers.
* ``Message`` -- header + ordered ``(attr id, value)`` tuple.  Keeps the wire
  order and the exact attribute set, so ``encode_message(decode_message(b)) == b``
  for everything a C peer emits (verified against every captured datagram).
* ``SyncFlow`` / ``SyncExpect`` -- the decoded object view.  Encoding a flow
  emits attributes in the C ``ct2msg``/``exp2msg`` order; a field that is
  ``None`` is simply not transmitted.
* ``iter_datagram`` / ``decode_datagram`` / ``StreamDecoder`` split a datagram
  (or TCP byte stream) into messages with C's acceptance rules; ``Batcher``
  packs messages into datagrams the way ``channel_send`` does.

Errors: every malformed input raises ``WireError`` (a ``ValueError``) whose
``kind`` names the C counter it feeds (``conntrackd -s network``).  Framing
errors (``truncated``, ``bad_size``) are *fatal*: C stops reading the rest of
the datagram.  All others only cost the one message.  The UDP checksum is the
kernel's business.

Authentication: C has none (catalog 3.1).  Ours is opt-in and lives in ``auth.py``: one
version-2 envelope (HMAC-SHA256, 128-bit tag, replay window) around each whole datagram,
framed like a v1 message, so a v1 receiver validates ``len``, counts "Wrong protocol
version" and skips it cleanly.  This codec stays version 1 only.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum, IntFlag, StrEnum
from ipaddress import IPv4Address, IPv6Address
from typing import Any, NamedTuple

from .wire_attrs import (
    CT_ATTRS,
    EXP_ATTRS,
    NTA_HDR,
    NTA_HDR_LEN,
    AttrSpec,
    CtAttr,
    ExpAttr,
    align4,
)

PROTOCOL_VERSION = 1
NETHDR_LEN = 8
NETHDR_ACK_LEN = 16
MAX_MESSAGE_LEN = 0xFFFF  # be16 len

HEADER = struct.Struct("!BBHI")  # ver<<4|type, flags, len, seq: the one definition of the sync header

_ACK_RANGE = struct.Struct("!II")  # from, to
_U32 = 0xFFFFFFFF


class MsgType(IntEnum):
    """``enum nethdr_type``; 6-9 and 11-15 are unassigned."""

    CT_NEW = 0
    CT_UPD = 1
    CT_DEL = 2
    EXP_NEW = 3
    EXP_UPD = 4
    EXP_DEL = 5
    CTL = 10


NET_T_STATE_MAX = MsgType.EXP_DEL
CT_TYPES = frozenset({MsgType.CT_NEW, MsgType.CT_UPD, MsgType.CT_DEL})
EXP_TYPES = frozenset({MsgType.EXP_NEW, MsgType.EXP_UPD, MsgType.EXP_DEL})


class MsgFlag(IntFlag):
    """``NET_F_*``; unknown bits (0x01, 0x80) are kept, not rejected."""

    RESYNC = 0x02
    NACK = 0x04
    ACK = 0x08
    ALIVE = 0x10
    HELLO = 0x20
    HELLO_BACK = 0x40


_ACK_SHAPED = MsgFlag.RESYNC | MsgFlag.NACK | MsgFlag.ACK
_HELLO_BITS = MsgFlag.HELLO | MsgFlag.HELLO_BACK


class WireErrorKind(StrEnum):
    """Named after the ``conntrackd -s network`` recv counters they feed."""

    TRUNCATED = "truncated"  # Truncated message (fatal for the datagram)
    BAD_SIZE = "bad_size"  # Bad message size (fatal for the datagram)
    BAD_VERSION = "bad_version"  # Wrong protocol version
    BAD_TYPE = "bad_type"  # Bad message type (unassigned type nibble)
    BAD_PAYLOAD = "bad_payload"  # Malformed payload (attribute rules, 3.4)
    ENCODE = "encode"  # our side asked to encode something C would reject


FRAMING_ERRORS = frozenset({WireErrorKind.TRUNCATED, WireErrorKind.BAD_SIZE})


class WireError(ValueError):
    """The single exception type of this codec."""

    def __init__(self, reason: str, kind: WireErrorKind = WireErrorKind.BAD_PAYLOAD) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = kind

    @property
    def fatal(self) -> bool:
        """True when C would stop parsing the rest of the datagram."""
        return self.kind in FRAMING_ERRORS

    def __repr__(self) -> str:
        return f"WireError({self.reason!r}, {self.kind.value})"


def is_ack_shaped(type_: int, flags: int) -> bool:
    """IS_ACK || IS_NACK || IS_RESYNC: the 16-byte ``nethdr_ack`` layout."""
    return type_ == MsgType.CTL and bool(flags & _ACK_SHAPED)


# --------------------------------------------------------------------------- headers


@dataclass(frozen=True, slots=True, kw_only=True)
class NetHeader:
    """``struct nethdr``.  ``len`` is filled in by the codec and not compared."""

    version: int = PROTOCOL_VERSION
    type: int
    flags: int = 0
    len: int = field(default=NETHDR_LEN, compare=False)
    seq: int = 0

    # Receiver classification macros (include/network.h).
    @property
    def is_data(self) -> bool:
        return self.type <= NET_T_STATE_MAX and not (self.flags & ~_HELLO_BITS)

    @property
    def is_ctl(self) -> bool:
        return self.type == MsgType.CTL

    @property
    def is_ack(self) -> bool:
        return self.is_ctl and bool(self.flags & MsgFlag.ACK)

    @property
    def is_nack(self) -> bool:
        return self.is_ctl and bool(self.flags & MsgFlag.NACK)

    @property
    def is_resync(self) -> bool:
        return self.is_ctl and bool(self.flags & MsgFlag.RESYNC)

    @property
    def is_alive(self) -> bool:
        return self.is_ctl and bool(self.flags & MsgFlag.ALIVE)

    @property
    def is_hello(self) -> bool:
        return bool(self.flags & MsgFlag.HELLO)

    @property
    def is_hello_back(self) -> bool:
        return bool(self.flags & MsgFlag.HELLO_BACK)


@dataclass(frozen=True, slots=True, kw_only=True)
class AckHeader(NetHeader):
    """``struct nethdr_ack``: ACK/NACK/RESYNC carry an inclusive seq range."""

    len: int = field(default=NETHDR_ACK_LEN, compare=False)
    from_: int = 0
    to: int = 0


Attr = tuple[int, Any]


@dataclass(frozen=True, slots=True)
class Message:
    """One sync message: header plus, for types 0-5, the attributes in wire order."""

    header: NetHeader
    attrs: tuple[Attr, ...] = ()

    @property
    def type(self) -> int:
        return self.header.type

    @property
    def flags(self) -> int:
        return self.header.flags

    @property
    def seq(self) -> int:
        return self.header.seq

    @property
    def is_ct(self) -> bool:
        return self.header.type in CT_TYPES

    @property
    def is_exp(self) -> bool:
        return self.header.type in EXP_TYPES

    def attr_map(self) -> dict[int, Any]:
        """Attributes by id; a repeated attribute keeps its last value, as in C."""
        return dict(self.attrs)

    def flow(self) -> SyncFlow:
        if not self.is_ct:
            raise WireError(f"message type {self.type} is not a conntrack message")
        return SyncFlow.from_attrs(self.attrs)

    def expect(self) -> SyncExpect:
        if not self.is_exp:
            raise WireError(f"message type {self.type} is not an expectation message")
        return SyncExpect.from_attrs(self.attrs)


def ctl_message(flags: int, seq: int, from_: int = 0, to: int = 0) -> Message:
    """Build a control message, choosing the 8- or 16-byte shape from the flags."""
    if is_ack_shaped(MsgType.CTL, flags):
        return Message(AckHeader(type=MsgType.CTL, flags=MsgFlag(flags), seq=seq, from_=from_, to=to))
    return Message(NetHeader(type=MsgType.CTL, flags=MsgFlag(flags), seq=seq))


def data_message(msgtype: int, attrs: Iterable[Attr], seq: int, flags: int = 0) -> Message:
    return Message(NetHeader(type=MsgType(msgtype), flags=MsgFlag(flags), seq=seq), tuple(attrs))


# --------------------------------------------------------------------------- encoding


def _table_for(type_: int) -> Mapping[int, AttrSpec]:
    return EXP_ATTRS if type_ in EXP_TYPES else CT_ATTRS


def encode_attr(spec: AttrSpec, value: Any) -> bytes:
    """One attribute, header + payload + zero padding (``put_header``)."""
    try:
        payload = spec.codec.encode(value)
    except (struct.error, ValueError, TypeError, AttributeError, UnicodeError) as exc:
        raise WireError(f"cannot encode {spec.name}={value!r}: {exc}", WireErrorKind.ENCODE) from None
    nta_len = NTA_HDR_LEN + len(payload)
    fixed = spec.nta_len
    if fixed is not None and nta_len != fixed:
        raise WireError(f"{spec.name}: payload is {len(payload)} bytes, need {fixed - 4}", WireErrorKind.ENCODE)
    if spec.max_len is not None and nta_len > spec.max_len:
        raise WireError(f"{spec.name}: nta_len {nta_len} > {spec.max_len}", WireErrorKind.ENCODE)
    return NTA_HDR.pack(nta_len, spec.id) + payload + bytes(align4(nta_len) - nta_len)


def encode_attrs(attrs: Iterable[Attr], table: Mapping[int, AttrSpec]) -> bytes:
    out = []
    for aid, value in attrs:
        spec = table.get(aid)
        if spec is None:
            raise WireError(f"unknown attribute id {aid}", WireErrorKind.ENCODE)
        out.append(encode_attr(spec, value))
    return b"".join(out)


def _check_range(name: str, value: int, limit: int) -> None:
    if not isinstance(value, int) or not 0 <= value <= limit:
        raise WireError(f"{name}={value!r} out of range 0..{limit}", WireErrorKind.ENCODE)


def encode_message(msg: Message) -> bytes:
    """Serialise one message; ``header.len`` is recomputed, never trusted."""
    h = msg.header
    _check_range("version", h.version, 15)
    _check_range("type", h.type, 15)
    _check_range("flags", h.flags, 0xFF)
    _check_range("seq", h.seq, _U32)
    ack = is_ack_shaped(h.type, h.flags)
    if ack != isinstance(h, AckHeader):
        raise WireError("ACK/NACK/RESYNC need an AckHeader and nothing else may have one", WireErrorKind.ENCODE)
    if h.type <= NET_T_STATE_MAX:
        body = encode_attrs(msg.attrs, _table_for(h.type))
    elif msg.attrs:
        raise WireError("control messages carry no attributes", WireErrorKind.ENCODE)
    else:
        body = b""
    if ack:
        assert isinstance(h, AckHeader)
        _check_range("from", h.from_, _U32)
        _check_range("to", h.to, _U32)
        body = _ACK_RANGE.pack(h.from_, h.to) + body
    total = NETHDR_LEN + len(body)
    if total > MAX_MESSAGE_LEN:
        raise WireError(f"message of {total} bytes does not fit be16 len", WireErrorKind.ENCODE)
    return HEADER.pack((h.version << 4) | h.type, h.flags, total, h.seq) + body


def encode_datagram(msgs: Iterable[Message]) -> bytes:
    """Concatenate messages into one datagram (no size budget; see ``Batcher``)."""
    return b"".join(encode_message(m) for m in msgs)


# --------------------------------------------------------------------------- decoding

Buffer = bytes | bytearray | memoryview


def frame(buf: Buffer, off: int) -> int:
    """Length of the message at ``off``, with ``channel_handler_routine``'s checks."""
    remain = len(buf) - off
    if remain < NETHDR_LEN:
        raise WireError(f"{remain} trailing bytes, shorter than a header", WireErrorKind.TRUNCATED)
    vt, flags, mlen, _seq = HEADER.unpack_from(buf, off)
    if mlen == 0:
        raise WireError("message length 0", WireErrorKind.BAD_SIZE)
    if mlen > remain:
        raise WireError(f"message length {mlen} > {remain} bytes left", WireErrorKind.BAD_SIZE)
    if is_ack_shaped(vt & 0x0F, flags):
        if remain < NETHDR_ACK_LEN:
            raise WireError("ack header truncated", WireErrorKind.TRUNCATED)
        if mlen < NETHDR_ACK_LEN:
            raise WireError(f"ack message length {mlen} < {NETHDR_ACK_LEN}", WireErrorKind.BAD_SIZE)
    elif mlen < NETHDR_LEN:
        raise WireError(f"message length {mlen} < {NETHDR_LEN}", WireErrorKind.BAD_SIZE)
    return mlen


def decode_attrs(buf: Buffer, pos: int, end: int, table: Mapping[int, AttrSpec]) -> tuple[Attr, ...]:
    """``msg2ct``/``msg2exp`` attribute loop (catalog 3.4).

    Like C: stop when <= 4 bytes remain (trailing bytes ignored), the last
    attribute may lack its padding, attributes C ignores (ragged labels) are
    dropped, anything else out of line rejects the whole message.
    """
    attrs: list[Attr] = []
    while end - pos > NTA_HDR_LEN:
        nta_len, aid = NTA_HDR.unpack_from(buf, pos)
        if nta_len > end - pos:
            raise WireError(f"attribute {aid}: nta_len {nta_len} beyond message end")
        if nta_len < NTA_HDR_LEN:
            raise WireError(f"attribute {aid}: nta_len {nta_len} < 4")
        spec = table.get(aid)
        if spec is None:
            raise WireError(f"unknown attribute id {aid}")
        fixed = spec.nta_len
        if fixed is not None and nta_len != fixed:
            raise WireError(f"{spec.name}: nta_len {nta_len} != {fixed}")
        if spec.max_len is not None and nta_len > spec.max_len:
            raise WireError(f"{spec.name}: nta_len {nta_len} > {spec.max_len}")
        value = spec.codec.decode(bytes(buf[pos + NTA_HDR_LEN : pos + nta_len]))
        if value is not None:
            attrs.append((spec.id, value))
        pos += align4(nta_len)
    return tuple(attrs)


def _decode_one(buf: Buffer, off: int, mlen: int) -> Message:
    vt, flags, _len, seq = HEADER.unpack_from(buf, off)
    version, type_ = vt >> 4, vt & 0x0F
    if version != PROTOCOL_VERSION:
        raise WireError(f"protocol version {version}", WireErrorKind.BAD_VERSION)
    if type_ not in MsgType._value2member_map_:
        raise WireError(f"unassigned message type {type_}", WireErrorKind.BAD_TYPE)
    mtype, mflags = MsgType(type_), MsgFlag(flags)
    if is_ack_shaped(type_, flags):
        from_, to = _ACK_RANGE.unpack_from(buf, off + NETHDR_LEN)
        return Message(AckHeader(type=mtype, flags=mflags, len=mlen, seq=seq, from_=from_, to=to))
    header = NetHeader(type=mtype, flags=mflags, len=mlen, seq=seq)
    if type_ > NET_T_STATE_MAX:
        return Message(header)  # bytes after a control header are ignored, as in C
    return Message(header, decode_attrs(buf, off + NETHDR_LEN, off + mlen, _table_for(type_)))


def read_header(buf: Buffer, off: int, mlen: int) -> NetHeader:
    """The header of a framed message (``frame`` checked its length), without its attributes."""
    vt, flags, _len, seq = HEADER.unpack_from(buf, off)
    if is_ack_shaped(vt & 0x0F, flags):
        from_, to = _ACK_RANGE.unpack_from(buf, off + NETHDR_LEN)
        return AckHeader(type=vt & 0x0F, flags=flags, len=mlen, seq=seq, from_=from_, to=to)
    return NetHeader(type=vt & 0x0F, flags=flags, len=mlen, seq=seq)


def decode_message(buf: Buffer, offset: int = 0) -> Message:
    """Decode the single message starting at ``offset`` (bytes after it are ignored)."""
    return _decode_one(buf, offset, frame(buf, offset))


def iter_datagram(buf: Buffer) -> Iterator[Message | WireError]:
    """Yield each message or its error, in order, exactly as C consumes a datagram.

    Per-message errors are yielded and parsing goes on; a framing error is
    yielded last (C drops the rest of the datagram).
    """
    off, end = 0, len(buf)
    while off < end:
        try:
            mlen = frame(buf, off)
        except WireError as exc:
            yield exc
            return
        try:
            yield _decode_one(buf, off, mlen)
        except WireError as exc:
            yield exc
        off += mlen


def decode_datagram(buf: Buffer) -> list[Message]:
    """Strict split of a UDP payload into messages; the first problem raises."""
    out: list[Message] = []
    for item in iter_datagram(buf):
        if isinstance(item, WireError):
            raise item
        out.append(item)
    return out


class StreamDecoder:
    """TCP channel: keeps an incomplete tail for the next read (``channel_stream``)."""

    def __init__(self) -> None:
        self._pending = b""

    @property
    def pending(self) -> int:
        return len(self._pending)

    def feed(self, data: Buffer) -> list[Message | WireError]:
        buf = self._pending + bytes(data)
        self._pending = b""
        out: list[Message | WireError] = []
        off = 0
        while off < len(buf):
            try:
                mlen = frame(buf, off)
            except WireError as exc:
                remain = len(buf) - off
                # Short header, short ack header or len beyond what we have: wait for more.
                if exc.kind is WireErrorKind.TRUNCATED or (
                    exc.kind is WireErrorKind.BAD_SIZE and HEADER.unpack_from(buf, off)[2] > remain
                ):
                    self._pending = buf[off:]
                else:
                    out.append(exc)  # len 0 or too short: C drops the buffered bytes
                return out
            try:
                out.append(_decode_one(buf, off, mlen))
            except WireError as exc:
                out.append(exc)
            off += mlen
        return out


# --------------------------------------------------------------------------- batching

UDP_OVERHEAD = 28  # IPv4 + UDP headers (C uses this for IPv6 too)
UDP6_OVERHEAD = 48  # what an IPv6 channel really needs (catalog 3.10 #8)
TCP_OVERHEAD = 40


def datagram_budget(mtu: int, overhead: int = UDP_OVERHEAD) -> int:
    return mtu - overhead


class Batcher:
    """``channel_send`` buffering: append whole messages while ``used + len < budget``.

    The strict ``<`` is C's, so datagram boundaries match a C sender's.  A
    message that alone reaches the budget is sent on its own (C would spin).
    """

    def __init__(self, budget: int) -> None:
        if budget <= NETHDR_LEN:
            raise ValueError(f"budget {budget} too small")
        self.budget = budget
        self._parts: list[bytes] = []
        self._used = 0

    @property
    def pending(self) -> int:
        return self._used

    def add(self, msg: bytes) -> list[bytes]:
        """Queue one encoded message; return the datagrams that became ready."""
        ready: list[bytes] = []
        if self._used + len(msg) >= self.budget:
            if self._parts:
                ready.append(self._take())
            if len(msg) >= self.budget:
                ready.append(bytes(msg))
                return ready
        self._parts.append(bytes(msg))
        self._used += len(msg)
        return ready

    def add_all(self, msgs: Iterable[bytes]) -> list[bytes]:
        """:meth:`add` for a whole TX run in one loop (the sender's hot path: a call per message less)."""
        ready: list[bytes] = []
        parts, used, budget = self._parts, self._used, self.budget
        for msg in msgs:
            n = len(msg)
            if used + n >= budget:
                if parts:
                    ready.append(b"".join(parts))
                    parts, used = [], 0
                if n >= budget:
                    ready.append(bytes(msg))
                    continue
            parts.append(bytes(msg))
            used += n
        self._parts, self._used = parts, used
        return ready

    def flush(self) -> bytes | None:
        """End of a TX run (``channel_send_flush``): the partial datagram, if any."""
        return self._take() if self._parts else None

    def _take(self) -> bytes:
        out = b"".join(self._parts)
        self._parts, self._used = [], 0
        return out


def pack_datagrams(msgs: Iterable[bytes | Message], budget: int) -> list[bytes]:
    """Batch a run of messages into datagrams of at most ``budget - 1`` bytes."""
    b = Batcher(budget)
    out: list[bytes] = []
    for m in msgs:
        out.extend(b.add(encode_message(m) if isinstance(m, Message) else m))
    last = b.flush()
    if last is not None:
        out.append(last)
    return out


# --------------------------------------------------------------------------- object view

Addr = IPv4Address | IPv6Address


@dataclass(frozen=True, slots=True)
class FlowTuple:
    """An original-direction tuple.  Ports travel as a pair: both or neither."""

    src: Addr
    dst: Addr
    l4proto: int
    sport: int | None = None
    dport: int | None = None

    @property
    def ports(self) -> tuple[int, int] | None:
        if self.sport is None and self.dport is None:
            return None
        if self.sport is None or self.dport is None:
            raise WireError(f"ports must be both set or both None: {self.sport}, {self.dport}", WireErrorKind.ENCODE)
        return self.sport, self.dport


class NatSeqAdj(NamedTuple):
    """``struct nta_attr_natseqadj`` (six be32)."""

    orig_correction_pos: int
    orig_offset_before: int
    orig_offset_after: int
    repl_correction_pos: int
    repl_offset_before: int
    repl_offset_after: int


class Synproxy(NamedTuple):
    """``struct nta_attr_synproxy`` (three be32)."""

    its: int
    isn: int
    tsoff: int


A = CtAttr
# Plain field <-> attribute copies, in ct2msg emission order, split around the
# parts that need code (tuples, master, NAT addresses).
_CT_L4_FIELDS: tuple[tuple[CtAttr, str], ...] = (
    (A.TCP_STATE, "tcp_state"),
    (A.TCP_WSCALE_ORIG, "tcp_wscale_orig"),
    (A.TCP_WSCALE_REPL, "tcp_wscale_repl"),
    (A.SCTP_STATE, "sctp_state"),
    (A.SCTP_VTAG_ORIG, "sctp_vtag_orig"),
    (A.SCTP_VTAG_REPL, "sctp_vtag_repl"),
    (A.DCCP_STATE, "dccp_state"),
    (A.DCCP_ROLE, "dccp_role"),
    (A.ICMP_TYPE, "icmp_type"),
    (A.ICMP_CODE, "icmp_code"),
    (A.ICMP_ID, "icmp_id"),
    (A.TIMEOUT, "timeout"),
    (A.MARK, "mark"),
)
_CT_TAIL_FIELDS: tuple[tuple[CtAttr, str], ...] = (
    (A.SPAT_PORT, "spat"),
    (A.DPAT_PORT, "dpat"),
    (A.NAT_SEQ_ADJ, "nat_seq_adj"),
    (A.HELPER_NAME, "helper"),
    (A.LABELS, "labels"),
    (A.SYNPROXY, "synproxy"),
    (A.ZONE, "zone"),
)
_FIELD_WRAP: dict[str, type] = {"nat_seq_adj": NatSeqAdj, "synproxy": Synproxy}
# Tuples as (address group v4, v6, L4 protocol, port group); NAT addresses as (field, v4, v6).
_CT_ORIG = (A.IPV4, A.IPV6, A.L4PROTO, A.PORT)
_CT_MASTER = (A.MASTER_IPV4, A.MASTER_IPV6, A.MASTER_L4PROTO, A.MASTER_PORT)
_CT_NAT = (("snat", A.SNAT_IPV4, A.SNAT_IPV6), ("dnat", A.DNAT_IPV4, A.DNAT_IPV6))
del A


def _ip_attr(addr: Addr, v4: int, v6: int) -> int:
    return v4 if isinstance(addr, IPv4Address) else v6


def _tuple_attrs(t: FlowTuple, v4: int, v6: int, l4: int, port: int) -> list[Attr]:
    """A tuple's attributes (address group, L4 protocol, ports if the protocol has them): one table row."""
    out: list[Attr] = [(_ip_attr(t.src, v4, v6), (t.src, t.dst)), (l4, t.l4proto)]
    if (ports := t.ports) is not None:
        out.append((port, ports))
    return out


def _tuple_from(a: Mapping[int, Any], v4: int, v6: int, l4: int, port: int) -> FlowTuple | None:
    """The inverse of ``_tuple_attrs`` (None without the address group)."""
    group = a.get(v4, a.get(v6))
    if group is None:
        return None
    sport, dport = a.get(port, (None, None))
    return FlowTuple(group[0], group[1], a.get(l4, 0), sport, dport)


def _fields_attrs(obj: Any, rows: tuple[tuple[int, str], ...]) -> list[Attr]:
    """Plain field -> attribute copies; a ``None`` field is not transmitted."""
    return [(attr, v) for attr, name in rows if (v := getattr(obj, name)) is not None]


def _fields_from(a: Mapping[int, Any], rows: tuple[tuple[int, str], ...], kw: dict[str, Any]) -> None:
    """The inverse of ``_fields_attrs``: absent attributes keep the dataclass default."""
    for attr, name in rows:
        if attr in a:
            wrap = _FIELD_WRAP.get(name)
            kw[name] = wrap(*a[attr]) if wrap else a[attr]


@dataclass(frozen=True, slots=True)
class SyncFlow:
    """What a conntrack sync message says about one flow.

    The reply tuple is never sent; ``reply`` rebuilds it the way the C receiver
    does (swap, then apply SNAT/DNAT/SPAT/DPAT).  ``labels`` are the raw be32
    words (bit ``b`` of word ``i`` = label ``32*i + b``; kernels send 4 words).
    """

    orig: FlowTuple
    status: int = 0
    tcp_state: int | None = None
    tcp_wscale_orig: int | None = None
    tcp_wscale_repl: int | None = None
    sctp_state: int | None = None
    sctp_vtag_orig: int | None = None
    sctp_vtag_repl: int | None = None
    dccp_state: int | None = None
    dccp_role: int | None = None
    icmp_type: int | None = None
    icmp_code: int | None = None
    icmp_id: int | None = None
    timeout: int | None = None
    mark: int | None = None
    master: FlowTuple | None = None
    snat: Addr | None = None
    dnat: Addr | None = None
    spat: int | None = None
    dpat: int | None = None
    nat_seq_adj: NatSeqAdj | None = None
    helper: str | None = None
    labels: tuple[int, ...] | None = None
    synproxy: Synproxy | None = None
    zone: int | None = None

    @property
    def reply(self) -> FlowTuple:
        o = self.orig
        return FlowTuple(
            src=self.dnat if self.dnat is not None else o.dst,
            dst=self.snat if self.snat is not None else o.src,
            l4proto=o.l4proto,
            sport=self.dpat if self.dpat is not None else o.dport,
            dport=self.spat if self.spat is not None else o.sport,
        )

    @property
    def label_bits(self) -> frozenset[int]:
        words = self.labels or ()
        return frozenset(32 * i + b for i, w in enumerate(words) for b in range(32) if w >> b & 1)

    @staticmethod
    def labels_from_bits(bits: Iterable[int], words: int = 4) -> tuple[int, ...]:
        """Word tuple for a set of label bits (at least ``words`` words, as the kernel's 128 bits)."""
        bits = list(bits)
        n = max(words, max(bits, default=-1) // 32 + 1)
        out = [0] * n
        for b in bits:
            out[b // 32] |= 1 << (b % 32)
        return tuple(out)

    def to_attrs(self) -> tuple[Attr, ...]:
        """Attributes in ``ct2msg`` order; ``None`` fields are not transmitted."""
        attrs = _tuple_attrs(self.orig, *_CT_ORIG)
        attrs.insert(1, (CtAttr.STATUS, self.status))  # ct2msg sends the status between addresses and protocol
        attrs += _fields_attrs(self, _CT_L4_FIELDS)
        if self.master is not None:
            attrs += _tuple_attrs(self.master, *_CT_MASTER)
        for name, v4, v6 in _CT_NAT:
            if (addr := getattr(self, name)) is not None:
                attrs.append((_ip_attr(addr, v4, v6), addr))
        attrs += _fields_attrs(self, _CT_TAIL_FIELDS)
        return tuple(attrs)

    @classmethod
    def from_attrs(cls, attrs: Iterable[Attr]) -> SyncFlow:
        """Build the object view; needs the address group and L4PROTO like any C sender sends."""
        a = dict(attrs)
        orig = _tuple_from(a, *_CT_ORIG)
        if orig is None or CtAttr.L4PROTO not in a:
            raise WireError("conntrack message without NTA_IPV4/IPV6 or NTA_L4PROTO")
        kw: dict[str, Any] = {"orig": orig}
        if CtAttr.STATUS in a:
            kw["status"] = a[CtAttr.STATUS]
        _fields_from(a, _CT_L4_FIELDS + _CT_TAIL_FIELDS, kw)
        if (master := _tuple_from(a, *_CT_MASTER)) is not None:
            kw["master"] = master
        for name, v4, v6 in _CT_NAT:
            kw[name] = a.get(v4, a.get(v6))
        return cls(**kw)


_E = ExpAttr
_EXP_MASTER = (_E.MASTER_IPV4, _E.MASTER_IPV6, _E.MASTER_L4PROTO, _E.MASTER_PORT)
_EXP_EXPECT = (_E.EXPECT_IPV4, _E.EXPECT_IPV6, _E.EXPECT_L4PROTO, _E.EXPECT_PORT)
_EXP_MASK = (_E.MASK_IPV4, _E.MASK_IPV6, _E.MASK_L4PROTO, _E.MASK_PORT)
_EXP_NAT = (_E.NAT_IPV4, _E.NAT_IPV4, _E.NAT_L4PROTO, _E.NAT_PORT)  # no NTA_EXP_NAT_IPV6 on the wire
# exp2msg order: the three tuples, these fields, the NAT tuple and its direction, then the tail fields.
_EXP_FIELDS: tuple[tuple[int, str], ...] = ((_E.TIMEOUT, "timeout"), (_E.FLAGS, "flags"), (_E.CLASS, "klass"))
_EXP_TAIL_FIELDS: tuple[tuple[int, str], ...] = ((_E.HELPER_NAME, "helper"), (_E.FN, "fn"))
del _E


@dataclass(frozen=True, slots=True)
class SyncExpect:
    """What an expectation sync message says (``exp2msg``).

    ``nat`` is IPv4-only on the wire (there is no NTA_EXP_NAT_IPV6);
    ``nat_dir`` travels only together with ``nat``.
    """

    master: FlowTuple
    expected: FlowTuple
    mask: FlowTuple
    timeout: int | None = None
    flags: int = 0
    klass: int | None = None
    nat: FlowTuple | None = None
    nat_dir: int = 0
    helper: str | None = None
    fn: str | None = None

    def to_attrs(self) -> tuple[Attr, ...]:
        attrs = _tuple_attrs(self.master, *_EXP_MASTER)
        attrs += _tuple_attrs(self.expected, *_EXP_EXPECT)
        attrs += _tuple_attrs(self.mask, *_EXP_MASK)
        attrs += _fields_attrs(self, _EXP_FIELDS)  # flags (never None) always goes
        if self.nat is not None:
            attrs += _tuple_attrs(self.nat, *_EXP_NAT)
            attrs.append((ExpAttr.NAT_DIR, self.nat_dir))
        attrs += _fields_attrs(self, _EXP_TAIL_FIELDS)
        return tuple(attrs)

    @classmethod
    def from_attrs(cls, attrs: Iterable[Attr]) -> SyncExpect:
        a = dict(attrs)
        master = _tuple_from(a, *_EXP_MASTER)
        expected = _tuple_from(a, *_EXP_EXPECT)
        mask = _tuple_from(a, *_EXP_MASK)
        if master is None or expected is None or mask is None:
            raise WireError("expectation message without master/expected/mask tuple")
        kw: dict[str, Any] = {"master": master, "expected": expected, "mask": mask,
                              "nat": _tuple_from(a, *_EXP_NAT), "nat_dir": a.get(ExpAttr.NAT_DIR, 0)}
        _fields_from(a, _EXP_FIELDS + _EXP_TAIL_FIELDS, kw)
        return cls(**kw)


def encode_flow_message(msgtype: int, flow: SyncFlow, seq: int, flags: int = 0) -> bytes:
    """CT_NEW/CT_UPD/CT_DEL for ``flow`` with C's attribute order and sizes."""
    if msgtype not in CT_TYPES:
        raise WireError(f"{msgtype!r} is not a conntrack message type", WireErrorKind.ENCODE)
    return encode_message(data_message(msgtype, flow.to_attrs(), seq, flags))


def encode_expect_message(msgtype: int, exp: SyncExpect, seq: int, flags: int = 0) -> bytes:
    """EXP_NEW/EXP_UPD/EXP_DEL for ``exp`` with C's attribute order and sizes."""
    if msgtype not in EXP_TYPES:
        raise WireError(f"{msgtype!r} is not an expectation message type", WireErrorKind.ENCODE)
    return encode_message(data_message(msgtype, exp.to_attrs(), seq, flags))


def encode_data(msgtype: int, body: bytes, seq: int, flags: int = 0) -> bytes:
    """A data message from pre-encoded attributes (the hot path of every TX run)."""
    return HEADER.pack(0x10 | msgtype, flags, NETHDR_LEN + len(body), seq) + body


def encode_ctl(flags: int, seq: int, from_: int = 0, to: int = 0) -> bytes:
    """ALIVE (8 bytes) or ACK/NACK/RESYNC (16 bytes, range inclusive)."""
    return encode_message(ctl_message(flags, seq, from_, to))


__all__: Sequence[str] = (
    "AckHeader",
    "Batcher",
    "FlowTuple",
    "HEADER",
    "Message",
    "MsgFlag",
    "MsgType",
    "NatSeqAdj",
    "NetHeader",
    "StreamDecoder",
    "SyncExpect",
    "SyncFlow",
    "Synproxy",
    "WireError",
    "WireErrorKind",
    "ctl_message",
    "data_message",
    "datagram_budget",
    "decode_datagram",
    "decode_message",
    "frame",
    "read_header",
    "encode_ctl",
    "encode_data",
    "encode_datagram",
    "encode_expect_message",
    "encode_flow_message",
    "encode_message",
    "iter_datagram",
    "pack_datagrams",
)
