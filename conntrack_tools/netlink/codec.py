"""Sans-I/O ctnetlink codec: bytes <-> Flow / Expect values.

Nothing here touches a socket. Decoders take a buffer and offsets and raise
only :class:`DecodeError`; encoders return bytes ready to send. The decoder is
on the hot path of ``conntrack -L`` (100k entries), so it walks attributes with
precompiled structs and a dispatch table instead of building an object per
attribute.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator

from ..flow import (
    AF_INET,
    AF_INET6,
    Counters,
    DccpInfo,
    Expect,
    Flow,
    Nat,
    SctpInfo,
    SeqAdj,
    TcpInfo,
    Tuple,
)
from .attrs import (
    CTA,
    NLA_F_NESTED,
    NLA_TYPE_MASK,
    NLM_F_REQUEST,
    NLMSG_DONE,
    NLMSG_ERROR,
    CountersAttr,
    DccpAttr,
    ExpectAttr,
    ExpectNatAttr,
    FilterAttr,
    HelpAttr,
    IpAttr,
    NatAttr,
    ProtoAttr,
    ProtoinfoAttr,
    ProtoNatAttr,
    SctpAttr,
    SecctxAttr,
    SeqAdjAttr,
    SynproxyAttr,
    TcpAttr,
    TimestampAttr,
    TupleAttr,
    ct_type,
)


class DecodeError(ValueError):
    """A malformed netlink message or attribute."""


NLMSG_HDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
NFGEN_HDR = struct.Struct("=BBH")  # family, version, res_id (big endian, unused)
NLA_HDR = struct.Struct("=HH")
NLMSG_HDRLEN = NLMSG_HDR.size
NFGEN_HDRLEN = NFGEN_HDR.size
_U8 = struct.Struct("B")
_BE16 = struct.Struct(">H")
_BE32 = struct.Struct(">I")
_BE64 = struct.Struct(">Q")
_I32 = struct.Struct("=i")
_U16 = struct.Struct("=H")
_U32 = struct.Struct("=I")
_TCP_FLAGS = struct.Struct("BB")

_unpack_nla = NLA_HDR.unpack_from
_unpack_be16 = _BE16.unpack_from
_unpack_be32 = _BE32.unpack_from


# Leaf attributes of the small nests, as data: attribute -> (field names, struct). One decoder and
# one encoder walk these tables instead of an if-chain per nest.
Leaves = dict[int, tuple[tuple[str, ...], struct.Struct]]
PROTO_LEAVES: Leaves = {
    ProtoAttr.NUM: (("proto",), _U8),
    ProtoAttr.SRC_PORT: (("sport",), _BE16),
    ProtoAttr.DST_PORT: (("dport",), _BE16),
    ProtoAttr.ICMP_ID: (("icmp_id",), _BE16),
    ProtoAttr.ICMP_TYPE: (("icmp_type",), _U8),
    ProtoAttr.ICMP_CODE: (("icmp_code",), _U8),
    ProtoAttr.ICMPV6_ID: (("icmp_id",), _BE16),
    ProtoAttr.ICMPV6_TYPE: (("icmp_type",), _U8),
    ProtoAttr.ICMPV6_CODE: (("icmp_code",), _U8),
}
COUNTER_LEAVES: Leaves = {
    CountersAttr.PACKETS: (("packets",), _BE64),
    CountersAttr.BYTES: (("bytes",), _BE64),
    CountersAttr.PACKETS32: (("packets",), _BE32),
    CountersAttr.BYTES32: (("bytes",), _BE32),
}
TCP_LEAVES: Leaves = {
    TcpAttr.STATE: (("state",), _U8),
    TcpAttr.WSCALE_ORIGINAL: (("wscale_orig",), _U8),
    TcpAttr.WSCALE_REPLY: (("wscale_reply",), _U8),
    TcpAttr.FLAGS_ORIGINAL: (("flags_orig", "mask_orig"), _TCP_FLAGS),
    TcpAttr.FLAGS_REPLY: (("flags_reply", "mask_reply"), _TCP_FLAGS),
}
SCTP_LEAVES: Leaves = {
    SctpAttr.STATE: (("state",), _U8),
    SctpAttr.VTAG_ORIGINAL: (("vtag_orig",), _BE32),
    SctpAttr.VTAG_REPLY: (("vtag_reply",), _BE32),
}
DCCP_LEAVES: Leaves = {
    DccpAttr.STATE: (("state",), _U8),
    DccpAttr.ROLE: (("role",), _U8),
    DccpAttr.HANDSHAKE_SEQ: (("handshake_seq",), _BE64),
}
SEQADJ_LEAVES: Leaves = {
    SeqAdjAttr.CORRECTION_POS: (("correction_pos",), _BE32),
    SeqAdjAttr.OFFSET_BEFORE: (("offset_before",), _BE32),
    SeqAdjAttr.OFFSET_AFTER: (("offset_after",), _BE32),
}
TIMESTAMP_LEAVES: Leaves = {
    TimestampAttr.START: (("ts_start",), _BE64),
    TimestampAttr.STOP: (("ts_stop",), _BE64),
}
# protoinfo nest -> (flow field, value class, leaves), in the order encode_protoinfo tries them
PROTOINFO_KINDS = (
    (ProtoinfoAttr.TCP, "tcp", TcpInfo, TCP_LEAVES),
    (ProtoinfoAttr.SCTP, "sctp", SctpInfo, SCTP_LEAVES),
    (ProtoinfoAttr.DCCP, "dccp", DccpInfo, DCCP_LEAVES),
)


def align4(n: int) -> int:
    return (n + 3) & ~3


# ---------------------------------------------------------------- framing


def nlmsg(msg_type: int, flags: int, seq: int, family: int, body: bytes = b"", pid: int = 0) -> bytes:
    """One nfnetlink message: nlmsghdr + nfgenmsg + attributes."""
    length = NLMSG_HDRLEN + NFGEN_HDRLEN + len(body)
    return NLMSG_HDR.pack(length, msg_type, flags | NLM_F_REQUEST, seq, pid) + bytes((family, 0, 0, 0)) + body


Buffer = bytes | bytearray | memoryview


def iter_messages(buf: Buffer, size: int | None = None) -> Iterator[tuple[int, int, int, int, int, int]]:
    """Yield ``(type, flags, seq, pid, payload_start, msg_end)`` for each message in a receive buffer."""
    end = len(buf) if size is None else size
    off = 0
    while off + NLMSG_HDRLEN <= end:
        length, mtype, flags, seq, pid = NLMSG_HDR.unpack_from(buf, off)
        if length < NLMSG_HDRLEN or off + length > end:
            raise DecodeError(f"bad netlink message length {length} at offset {off}")
        yield mtype, flags, seq, pid, off + NLMSG_HDRLEN, off + length
        off += align4(length)


NLMSG_MIN_TYPE = 0x10  # types below are netlink control messages (NOOP, ERROR, DONE, OVERRUN)


def frame_dump(buf: Buffer, size: int, seq: int, spans: list[int]) -> int | None:
    """Frame one receive buffer of a dump: append ``payload_start, msg_end`` of each data message answering
    ``seq`` to ``spans`` (flat: two ints a message); return None while the dump goes on, else its end: 0
    (NLMSG_DONE or an ACK) or the errno of an NLMSG_ERROR. Other sequence numbers and control messages are skipped.

    The socket's receive loop calls it once per buffer and the decoders take the spans: framing is here once, in
    one Python frame per buffer (a generator or a tuple per message costs as much as the rendering on -L)."""
    off = 0
    unpack_hdr = NLMSG_HDR.unpack_from
    append = spans.append
    while off + NLMSG_HDRLEN <= size:
        length, mtype, _flags, mseq, _pid = unpack_hdr(buf, off)
        if length < NLMSG_HDRLEN or off + length > size:
            raise DecodeError(f"bad netlink message length {length} at offset {off}")
        if mseq == seq:
            if mtype >= NLMSG_MIN_TYPE:
                append(off + NLMSG_HDRLEN)
                append(off + length)
            elif mtype == NLMSG_DONE:
                return 0
            elif mtype == NLMSG_ERROR:
                return decode_error(buf, off + NLMSG_HDRLEN, off + length)
        off += (length + 3) & ~3
    return None


def message_type(buf: Buffer, payload_start: int) -> int:
    """The nlmsg_type of the message whose payload starts at ``payload_start`` (a frame_dump span)."""
    return _U16.unpack_from(buf, payload_start - NLMSG_HDRLEN + 4)[0]


def decode_error(buf: bytes | memoryview, start: int, end: int) -> int:
    """errno of an NLMSG_ERROR payload, positive; 0 means an ACK."""
    if end - start < 4:
        raise DecodeError("truncated NLMSG_ERROR")
    return -_I32.unpack_from(buf, start)[0]


def iter_attrs(buf: bytes | memoryview, start: int, end: int) -> Iterator[tuple[int, int, int]]:
    """Yield ``(type, value_start, value_end)`` for each attribute in ``buf[start:end]``."""
    off = start
    while off + 4 <= end:
        length, atype = _unpack_nla(buf, off)
        if length < 4 or off + length > end:
            raise DecodeError(f"bad attribute length {length} (type {atype & NLA_TYPE_MASK})")
        yield atype & NLA_TYPE_MASK, off + 4, off + length
        off += (length + 3) & ~3


def attr(atype: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return NLA_HDR.pack(length, atype) + value + b"\0" * (align4(length) - length)


def nested(atype: int, *children: bytes) -> bytes:
    return attr(atype | NLA_F_NESTED, b"".join(children))


def _need(start: int, end: int, n: int, what: str) -> None:
    if end - start < n:
        raise DecodeError(f"attribute {what} too short: {end - start} < {n}")


def decode_leaves(obj, leaves: Leaves, buf, start: int, end: int) -> None:
    """Set obj's fields from the leaf attributes of one nest (unknown attributes are skipped)."""
    for atype, s, e in iter_attrs(buf, start, end):
        spec = leaves.get(atype)
        if spec is None:
            continue
        fields, st = spec
        if e - s < st.size:
            raise DecodeError(f"attribute {fields[0]} too short: {e - s} < {st.size}")
        values = st.unpack_from(buf, s)
        for name, value in zip(fields, values, strict=True):
            setattr(obj, name, value)


def encode_leaves(obj, leaves: Leaves, skip: frozenset[int] = frozenset()) -> bytes:
    """The leaf attributes of obj's fields that are set, in attribute order."""
    parts = []
    for atype, (fields, st) in leaves.items():
        if atype in skip:
            continue
        first = getattr(obj, fields[0])
        if first is None:
            continue
        values = [first] + [getattr(obj, f) or 0 for f in fields[1:]]
        parts.append(attr(atype, st.pack(*values)))
    return b"".join(parts)


# ---------------------------------------------------------------- decode: tuples


def decode_tuple(buf: bytes | memoryview, start: int, end: int, family: int) -> Tuple:
    t = Tuple(family)
    for atype, s, e in iter_attrs(buf, start, end):
        if atype == TupleAttr.IP:
            for ia, s2, e2 in iter_attrs(buf, s, e):
                if ia <= IpAttr.V4_DST:
                    _need(s2, e2, 4, "IPv4 address")
                    if t.family == AF_INET6 and (t.src or t.dst):
                        raise DecodeError("IPv4 and IPv6 addresses in one tuple")
                    t.family = AF_INET
                    if ia == IpAttr.V4_SRC:
                        t.src = bytes(buf[s2:s2 + 4])
                    else:
                        t.dst = bytes(buf[s2:s2 + 4])
                elif ia <= IpAttr.V6_DST:
                    _need(s2, e2, 16, "IPv6 address")
                    if t.family == AF_INET and (t.src or t.dst):
                        raise DecodeError("IPv4 and IPv6 addresses in one tuple")
                    t.family = AF_INET6
                    if ia == IpAttr.V6_SRC:
                        t.src = bytes(buf[s2:s2 + 16])
                    else:
                        t.dst = bytes(buf[s2:s2 + 16])
        elif atype == TupleAttr.PROTO:
            decode_leaves(t, PROTO_LEAVES, buf, s, e)
        elif atype == TupleAttr.ZONE:
            _need(s, e, 2, "tuple zone")
            t.zone = _unpack_be16(buf, s)[0]
    return t


# ---------------------------------------------------------------- decode: conntrack


def _scalar(st: struct.Struct, what: str) -> Callable[[Buffer, int, int, int], int]:
    """A decoder of one big-endian integer attribute; ``what`` names it in the error for a short one."""
    size, unpack = st.size, st.unpack_from

    def decode(buf, s, e, _family=0):
        if e - s < size:
            raise DecodeError(f"attribute {what} too short: {e - s} < {size}")
        return unpack(buf, s)[0]

    return decode


def _string(buf, s, e, _family=0) -> str:
    raw = bytes(buf[s:e])
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def _raw(buf, s, e, _family=0) -> bytes:
    return bytes(buf[s:e])


def _counters(buf, s, e, _family=0) -> Counters:
    c = Counters()
    decode_leaves(c, COUNTER_LEAVES, buf, s, e)
    return c


def _protoinfo(flow: Flow, buf, s, e, _family=0) -> None:
    for a, s2, e2 in iter_attrs(buf, s, e):
        for kind, field, cls, leaves in PROTOINFO_KINDS:
            if a == kind:
                info = cls()
                decode_leaves(info, leaves, buf, s2, e2)
                setattr(flow, field, info)


def _seqadj(buf, s, e, _family=0) -> SeqAdj:
    adj = SeqAdj()
    decode_leaves(adj, SEQADJ_LEAVES, buf, s, e)
    return adj


def _timestamps(flow: Flow, buf, s, e, _family=0) -> None:
    decode_leaves(flow, TIMESTAMP_LEAVES, buf, s, e)


_synproxy_u32 = _scalar(_BE32, "synproxy")


def _synproxy(buf, s, e, _family=0) -> tuple[int, int, int]:
    vals = {}
    for sa, s2, e2 in iter_attrs(buf, s, e):
        vals[sa] = _synproxy_u32(buf, s2, e2)
    return vals.get(SynproxyAttr.ISN, 0), vals.get(SynproxyAttr.ITS, 0), vals.get(SynproxyAttr.TSOFF, 0)


def _nat(buf, s, e, family: int) -> Nat:
    nat = Nat(family)
    for a, s2, e2 in iter_attrs(buf, s, e):
        if a == NatAttr.V4_MINIP:
            _need(s2, e2, 4, "nat ip")
            nat.family, nat.min_ip = AF_INET, bytes(buf[s2:s2 + 4])
        elif a == NatAttr.V4_MAXIP:
            _need(s2, e2, 4, "nat ip")
            nat.max_ip = bytes(buf[s2:s2 + 4])
        elif a == NatAttr.V6_MINIP:
            _need(s2, e2, 16, "nat ip")
            nat.family, nat.min_ip = AF_INET6, bytes(buf[s2:s2 + 16])
        elif a == NatAttr.V6_MAXIP:
            _need(s2, e2, 16, "nat ip")
            nat.max_ip = bytes(buf[s2:s2 + 16])
        elif a == NatAttr.PROTO:
            for pa, s3, e3 in iter_attrs(buf, s2, e2):
                _need(s3, e3, 2, "nat port")
                if pa == ProtoNatAttr.PORT_MIN:
                    nat.min_port = _unpack_be16(buf, s3)[0]
                elif pa == ProtoNatAttr.PORT_MAX:
                    nat.max_port = _unpack_be16(buf, s3)[0]
    return nat


# The attributes of a message, as data: attribute -> (field, decoder). A decoder is called as
# decoder(buf, start, end, family) and its result set as the object's field; with a field of None it
# is called as decoder(obj, buf, start, end, family) and sets the fields of a nest on obj itself.
Fields = dict[int, tuple[str | None, Callable[..., object]]]


def decode_fields(obj, fields: Fields, buf, start: int, end: int, family: int,
                  unknown: list[tuple[int, bytes]] | None = None) -> None:
    """Set obj's fields from the attributes in ``buf[start:end]``; others go to ``unknown`` if given."""
    for a, s, e in iter_attrs(buf, start, end):
        spec = fields.get(a)
        if spec is None:
            if unknown is not None:
                unknown.append((a, bytes(buf[s:e])))
            continue
        name, decode = spec
        if name is None:
            decode(obj, buf, s, e, family)
        else:
            setattr(obj, name, decode(buf, s, e, family))


def _nest(fields: Fields) -> Callable[..., None]:
    """A decoder (field None) setting obj's fields from the attributes of a nest."""

    def decode(obj, buf, s, e, family) -> None:
        decode_fields(obj, fields, buf, s, e, family)

    return decode


FLOW_FIELDS: Fields = {
    CTA.TUPLE_ORIG: ("orig", decode_tuple),
    CTA.TUPLE_REPLY: ("reply", decode_tuple),
    CTA.STATUS: ("status", _scalar(_BE32, "status")),
    CTA.TIMEOUT: ("timeout", _scalar(_BE32, "timeout")),
    CTA.MARK: ("mark", _scalar(_BE32, "mark")),
    CTA.USE: ("use", _scalar(_BE32, "use")),
    CTA.ID: ("id", _scalar(_BE32, "id")),
    CTA.PROTOINFO: (None, _protoinfo),
    CTA.COUNTERS_ORIG: ("counters_orig", _counters),
    CTA.COUNTERS_REPLY: ("counters_reply", _counters),
    CTA.ZONE: ("zone", _scalar(_BE16, "zone")),
    CTA.SECMARK: ("secmark", _scalar(_BE32, "secmark")),
    CTA.SECCTX: (None, _nest({SecctxAttr.NAME: ("secctx", _string)})),
    CTA.HELP: (None, _nest({HelpAttr.NAME: ("helper", _string)})),
    CTA.TIMESTAMP: (None, _timestamps),
    CTA.TIMESTAMP_EVENT: ("ts_event", _scalar(_BE64, "event timestamp")),
    CTA.LABELS: ("labels", _raw),
    CTA.LABELS_MASK: ("labels_mask", _raw),
    CTA.SEQ_ADJ_ORIG: ("seqadj_orig", _seqadj),
    CTA.SEQ_ADJ_REPLY: ("seqadj_reply", _seqadj),
    CTA.TUPLE_MASTER: ("master", decode_tuple),
    CTA.NAT_SRC: ("nat_src", _nat),
    CTA.NAT_DST: ("nat_dst", _nat),
    CTA.MARK_MASK: ("mark_mask", _scalar(_BE32, "mark mask")),
    CTA.SYNPROXY: ("synproxy", _synproxy),
}

EXPECT_FIELDS: Fields = {
    ExpectAttr.MASTER: ("master", decode_tuple),
    ExpectAttr.TUPLE: ("tuple", decode_tuple),
    ExpectAttr.MASK: ("mask", decode_tuple),
    ExpectAttr.TIMEOUT: ("timeout", _scalar(_BE32, "timeout")),
    ExpectAttr.ID: ("id", _scalar(_BE32, "id")),
    ExpectAttr.HELP_NAME: ("helper", _string),
    ExpectAttr.ZONE: ("zone", _scalar(_BE16, "zone")),
    ExpectAttr.FLAGS: ("flags", _scalar(_BE32, "flags")),
    ExpectAttr.CLASS: ("klass", _scalar(_BE32, "class")),
    ExpectAttr.FN: ("fn", _string),
    ExpectAttr.NAT: (None, _nest({
        ExpectNatAttr.DIR: ("nat_dir", _scalar(_BE32, "nat dir")),
        ExpectNatAttr.TUPLE: ("nat_tuple", decode_tuple),
    })),
}


def _family(buf: Buffer, start: int, end: int) -> int:
    if end - start < NFGEN_HDRLEN:
        raise DecodeError("truncated nfgenmsg")
    return buf[start]


def decode_flow(buf: bytes | memoryview, start: int, end: int) -> Flow:
    """Decode a ctnetlink conntrack message payload (from the nfgenmsg on)."""
    family = _family(buf, start, end)
    flow = Flow(family)
    decode_fields(flow, FLOW_FIELDS, buf, start + NFGEN_HDRLEN, end, family, flow.unknown)
    return flow


# ---------------------------------------------------------------- decode: expectations


def decode_expect(buf: bytes | memoryview, start: int, end: int) -> Expect:
    family = _family(buf, start, end)
    exp = Expect(family)
    decode_fields(exp, EXPECT_FIELDS, buf, start + NFGEN_HDRLEN, end, family)
    return exp


_stat_u32 = _scalar(_BE32, "stat")


def decode_u32_attrs(buf: bytes | memoryview, start: int, end: int) -> dict[int, int]:
    """Flat be32 attributes after an nfgenmsg (the CPU and global stats replies)."""
    out: dict[int, int] = {}
    for a, s, e in iter_attrs(buf, start + NFGEN_HDRLEN, end):
        out[a] = _stat_u32(buf, s, e)
    return out


# ---------------------------------------------------------------- encode


def encode_tuple(atype: int, t: Tuple) -> bytes:
    parts = []
    if t.src is not None or t.dst is not None:
        v6 = t.family == AF_INET6
        ip = b""
        if t.src is not None:
            ip += attr(IpAttr.V6_SRC if v6 else IpAttr.V4_SRC, t.src)
        if t.dst is not None:
            ip += attr(IpAttr.V6_DST if v6 else IpAttr.V4_DST, t.dst)
        parts.append(nested(TupleAttr.IP, ip))
    if t.proto is not None:
        # ICMP fields go in the attributes of the tuple's ICMP flavour; ports are plain 16-bit values.
        skip = _ICMP4_ATTRS if t.proto == 58 else _ICMP6_ATTRS
        masked = _Masked(t)
        parts.append(nested(TupleAttr.PROTO, encode_leaves(masked, PROTO_LEAVES, skip)))
    if t.zone is not None:
        parts.append(attr(TupleAttr.ZONE, _BE16.pack(t.zone & 0xFFFF)))
    return nested(atype, *parts)


_ICMP4_ATTRS = frozenset((ProtoAttr.ICMP_ID, ProtoAttr.ICMP_TYPE, ProtoAttr.ICMP_CODE))
_ICMP6_ATTRS = frozenset((ProtoAttr.ICMPV6_ID, ProtoAttr.ICMPV6_TYPE, ProtoAttr.ICMPV6_CODE))


class _Masked:
    """A tuple's L4 fields truncated to their wire widths (C stores them in u8/u16 fields)."""

    __slots__ = ("proto", "sport", "dport", "icmp_id", "icmp_type", "icmp_code")

    def __init__(self, t: Tuple) -> None:
        self.proto = t.proto & 0xFF if t.proto is not None else None
        self.sport = t.sport & 0xFFFF if t.sport is not None else None
        self.dport = t.dport & 0xFFFF if t.dport is not None else None
        self.icmp_id = t.icmp_id & 0xFFFF if t.icmp_id is not None else None
        self.icmp_type = t.icmp_type & 0xFF if t.icmp_type is not None else None
        self.icmp_code = t.icmp_code & 0xFF if t.icmp_code is not None else None


def _be32attr(atype: int, value: int) -> bytes:
    return attr(atype, _BE32.pack(value & 0xFFFFFFFF))


def encode_nat(atype: int, nat: Nat) -> bytes:
    v6 = nat.family == AF_INET6
    parts = []
    if nat.min_ip is not None:
        parts.append(attr(NatAttr.V6_MINIP if v6 else NatAttr.V4_MINIP, nat.min_ip))
        parts.append(attr(NatAttr.V6_MAXIP if v6 else NatAttr.V4_MAXIP, nat.max_ip or nat.min_ip))
    if nat.min_port is not None:
        maxp = nat.max_port if nat.max_port is not None else nat.min_port
        parts.append(nested(NatAttr.PROTO, attr(ProtoNatAttr.PORT_MIN, _BE16.pack(nat.min_port)),
                            attr(ProtoNatAttr.PORT_MAX, _BE16.pack(maxp))))
    return nested(atype, *parts)


def encode_protoinfo(flow: Flow) -> bytes:
    for kind, field, _cls, leaves in PROTOINFO_KINDS:
        info = getattr(flow, field)
        if info is not None:
            return nested(CTA.PROTOINFO, nested(kind, encode_leaves(info, leaves)))
    return b""


def encode_flow(flow: Flow) -> bytes:
    """Attributes for IPCTNL_MSG_CT_NEW / DELETE / GET, in the order the kernel's policy expects."""
    parts = []
    if flow.orig is not None:
        parts.append(encode_tuple(CTA.TUPLE_ORIG, flow.orig))
    if flow.reply is not None:
        parts.append(encode_tuple(CTA.TUPLE_REPLY, flow.reply))
    if flow.master is not None:
        parts.append(encode_tuple(CTA.TUPLE_MASTER, flow.master))
    if flow.nat_src is not None:
        parts.append(encode_nat(CTA.NAT_SRC, flow.nat_src))
    if flow.nat_dst is not None:
        parts.append(encode_nat(CTA.NAT_DST, flow.nat_dst))
    if flow.status is not None:
        parts.append(_be32attr(CTA.STATUS, flow.status))
    if flow.timeout is not None:
        parts.append(_be32attr(CTA.TIMEOUT, flow.timeout))
    if flow.mark is not None:
        parts.append(_be32attr(CTA.MARK, flow.mark))
    if flow.mark_mask is not None:
        parts.append(_be32attr(CTA.MARK_MASK, flow.mark_mask))
    if flow.secmark is not None:
        parts.append(_be32attr(CTA.SECMARK, flow.secmark))
    if flow.id is not None:
        parts.append(_be32attr(CTA.ID, flow.id))
    if flow.zone is not None:
        parts.append(attr(CTA.ZONE, _BE16.pack(flow.zone & 0xFFFF)))
    if flow.helper is not None:
        parts.append(nested(CTA.HELP, attr(HelpAttr.NAME, flow.helper.encode() + b"\0")))
    parts.append(encode_protoinfo(flow))
    if flow.seqadj_orig is not None:
        parts.append(_encode_seqadj(CTA.SEQ_ADJ_ORIG, flow.seqadj_orig))
    if flow.seqadj_reply is not None:
        parts.append(_encode_seqadj(CTA.SEQ_ADJ_REPLY, flow.seqadj_reply))
    if flow.labels is not None:
        parts.append(attr(CTA.LABELS, flow.labels))
    if flow.labels_mask is not None:
        parts.append(attr(CTA.LABELS_MASK, flow.labels_mask))
    if flow.synproxy is not None:
        isn, its, tsoff = flow.synproxy
        parts.append(nested(CTA.SYNPROXY, _be32attr(SynproxyAttr.ISN, isn), _be32attr(SynproxyAttr.ITS, its),
                            _be32attr(SynproxyAttr.TSOFF, tsoff)))
    return b"".join(parts)


def _encode_seqadj(atype: int, adj: SeqAdj) -> bytes:
    return nested(atype, encode_leaves(adj, SEQADJ_LEAVES))


def encode_expect(exp: Expect) -> bytes:
    parts = []
    if exp.master is not None:
        parts.append(encode_tuple(ExpectAttr.MASTER, exp.master))
    if exp.tuple is not None:
        parts.append(encode_tuple(ExpectAttr.TUPLE, exp.tuple))
    if exp.mask is not None:
        parts.append(encode_tuple(ExpectAttr.MASK, exp.mask))
    if exp.timeout is not None:
        parts.append(_be32attr(ExpectAttr.TIMEOUT, exp.timeout))
    if exp.id is not None:
        parts.append(_be32attr(ExpectAttr.ID, exp.id))
    if exp.helper is not None:
        parts.append(attr(ExpectAttr.HELP_NAME, exp.helper.encode() + b"\0"))
    if exp.zone is not None:
        parts.append(attr(ExpectAttr.ZONE, _BE16.pack(exp.zone)))
    if exp.flags is not None:
        parts.append(_be32attr(ExpectAttr.FLAGS, exp.flags))
    if exp.klass is not None:
        parts.append(_be32attr(ExpectAttr.CLASS, exp.klass))
    if exp.fn is not None:
        parts.append(attr(ExpectAttr.FN, exp.fn.encode() + b"\0"))
    return b"".join(parts)


def encode_dump_filter(
    *,
    mark: int | None = None,
    mark_mask: int | None = None,
    status: int | None = None,
    status_mask: int | None = None,
    zone: int | None = None,
    orig: Tuple | None = None,
    orig_flags: int = 0,
    reply: Tuple | None = None,
    reply_flags: int = 0,
) -> bytes:
    """Kernel-side dump filter attributes (CTA_MARK/MASK, CTA_STATUS/MASK, CTA_ZONE, CTA_FILTER)."""
    parts = []
    if orig is not None and orig_flags:
        parts.append(encode_tuple(CTA.TUPLE_ORIG, orig))
    if reply is not None and reply_flags:
        parts.append(encode_tuple(CTA.TUPLE_REPLY, reply))
    if mark is not None:
        parts.append(_be32attr(CTA.MARK, mark))
        parts.append(_be32attr(CTA.MARK_MASK, 0xFFFFFFFF if mark_mask is None else mark_mask))
    if status is not None:
        parts.append(_be32attr(CTA.STATUS, status))
        parts.append(_be32attr(CTA.STATUS_MASK, 0xFFFFFFFF if status_mask is None else status_mask))
    if zone is not None:
        parts.append(attr(CTA.ZONE, _BE16.pack(zone)))
    if orig_flags or reply_flags:
        parts.append(nested(CTA.FILTER, attr(FilterAttr.ORIG_FLAGS, _U32.pack(orig_flags)),
                            attr(FilterAttr.REPLY_FLAGS, _U32.pack(reply_flags))))
    return b"".join(parts)


# A request naming one entry (GET, DELETE) carries its key: the original tuple, the zone, and (from a dump) the id.
_KEY_ATTRS = frozenset((CTA.TUPLE_ORIG, CTA.ZONE, CTA.ID))


def encode_lookup(msg: int, flow: Flow, seq: int) -> bytes:
    """A GET/DELETE request (``msg``: a CtMsg) naming a flow by its original tuple (+ zone)."""
    body = encode_tuple(CTA.TUPLE_ORIG, flow.orig)
    if flow.zone is not None:
        body += attr(CTA.ZONE, _BE16.pack(flow.zone))
    return nlmsg(ct_type(msg), 0, seq, flow.orig.family, body)


def key_request_from_dump(buf: Buffer, start: int, end: int, msg_type: int, flags: int, seq: int) -> bytes:
    """A request for the entry of a dumped message, reusing its raw tuple, zone and id attributes.

    ``encode_lookup``'s request, cut from bytes: from a dump (``-D``; ``shapes`` compiles it per
    layout) or from a stored create body (conntrackd's external cache at commit).

    Deleting what a dump returned needs no decode/encode round trip: the kernel
    accepts its own CTA_TUPLE_ORIG bytes back, and CTA_ID makes the delete miss
    (ENOENT) rather than hit a new entry that reused the tuple meanwhile.
    """
    parts = [bytes(buf[start:start + NFGEN_HDRLEN])]
    off = start + NFGEN_HDRLEN
    while off + 4 <= end:
        length, atype = _unpack_nla(buf, off)
        if length < 4 or off + length > end:
            raise DecodeError(f"bad attribute length {length}")
        if atype & NLA_TYPE_MASK in _KEY_ATTRS:
            parts.append(bytes(buf[off:off + ((length + 3) & ~3)]))
        off += (length + 3) & ~3
    body = b"".join(parts)
    return NLMSG_HDR.pack(NLMSG_HDRLEN + len(body), msg_type, flags | NLM_F_REQUEST, seq, 0) + body


__all__ = [
    "DecodeError", "NLMSG_DONE", "NLMSG_ERROR", "nlmsg", "iter_messages", "frame_dump",
    "message_type", "iter_attrs", "decode_error",
    "decode_flow", "decode_expect", "decode_tuple", "decode_u32_attrs", "encode_flow", "encode_expect",
    "encode_tuple", "encode_dump_filter", "encode_lookup", "key_request_from_dump", "attr", "nested",
]
