"""Attribute tables of the conntrackd sync protocol (version 1), as data.

Why a table: the C sender (src/build.c) and receiver (src/parse.c) are two
hand-written switch statements over the same facts -- attribute id, exact
``nta_len`` (or maximum for the two string/array attributes), and the byte
order of the payload.  Keeping those facts in one table lets the encoder,
the decoder, the validator and the tests share them.

Every attribute on the wire is ``be16 nta_len, be16 nta_attr, payload``;
``nta_len`` = 4 + payload length (not padded), the attribute then occupies
``align4(nta_len)`` bytes, padding zero.  See catalog section 3.3.

Byte-order quirk (catalog 3.3 "byte-order trap"): ``NTA_ICMP_ID``,
``NTA_SPAT_PORT`` and ``NTA_DPAT_PORT`` are network-order values that C
passes through ``htons()`` once more, so between x86 peers they are
**little-endian** on the wire.  The ``le16`` codec reproduces that; all
other integers are big-endian, addresses and port groups are raw
(network order).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum
from ipaddress import IPv4Address, IPv6Address
from types import MappingProxyType
from typing import Any

from ...flow import PORT_PROTOS

# C's build.c sends NTA_PORT (and exp_l4proto_fcn the expectation ports) for these protocols only: not udplite.
NTA_PORT_PROTOS = PORT_PROTOS - {136}
NTA_HDR = struct.Struct("!HH")  # nta_len, nta_attr
NTA_HDR_LEN = NTA_HDR.size


def align4(n: int) -> int:
    """NTA_ALIGN / nethdr_align: round up to the 4-byte boundary."""
    return (n + 3) & ~3


class CtAttr(IntEnum):
    """``enum nta_attr`` (include/network.h)."""

    IPV4 = 0
    IPV6 = 1
    L4PROTO = 2
    PORT = 3
    TCP_STATE = 4
    STATUS = 5
    TIMEOUT = 6
    MARK = 7
    MASTER_IPV4 = 8
    MASTER_IPV6 = 9
    MASTER_L4PROTO = 10
    MASTER_PORT = 11
    SNAT_IPV4 = 12
    DNAT_IPV4 = 13
    SPAT_PORT = 14
    DPAT_PORT = 15
    NAT_SEQ_ADJ = 16
    SCTP_STATE = 17
    SCTP_VTAG_ORIG = 18
    SCTP_VTAG_REPL = 19
    DCCP_STATE = 20
    DCCP_ROLE = 21
    ICMP_TYPE = 22
    ICMP_CODE = 23
    ICMP_ID = 24
    TCP_WSCALE_ORIG = 25
    TCP_WSCALE_REPL = 26
    HELPER_NAME = 27
    LABELS = 28
    SNAT_IPV6 = 29
    DNAT_IPV6 = 30
    SYNPROXY = 31
    ZONE = 32


NTA_MAX = 33


class ExpAttr(IntEnum):
    """``enum nta_exp_attr`` (include/network.h)."""

    MASTER_IPV4 = 0
    MASTER_IPV6 = 1
    MASTER_L4PROTO = 2
    MASTER_PORT = 3
    EXPECT_IPV4 = 4
    EXPECT_IPV6 = 5
    EXPECT_L4PROTO = 6
    EXPECT_PORT = 7
    MASK_IPV4 = 8
    MASK_IPV6 = 9
    MASK_L4PROTO = 10
    MASK_PORT = 11
    TIMEOUT = 12
    FLAGS = 13
    CLASS = 14
    NAT_IPV4 = 15
    NAT_PORT = 16
    NAT_L4PROTO = 17
    NAT_DIR = 18
    HELPER_NAME = 19
    FN = 20


NTA_EXP_MAX = 21


# --------------------------------------------------------------------------- codecs


@dataclass(frozen=True, slots=True)
class Codec:
    """How one payload kind maps to a Python value.

    ``size`` is the fixed payload length (``None`` = variable, bounded by the
    attribute's ``max_len``).  ``decode`` gets exactly the payload bytes and
    returns ``None`` when C would silently ignore the attribute.
    ``encode`` may raise ``struct.error``/``ValueError``/``TypeError``; the
    caller turns those into ``WireError``.
    """

    name: str
    size: int | None
    decode: Callable[[bytes], Any]
    encode: Callable[[Any], bytes]


def _struct_codec(name: str, fmt: str, *, scalar: bool) -> Codec:
    s = struct.Struct(fmt)
    if scalar:
        return Codec(name, s.size, lambda b: s.unpack(b)[0], s.pack)
    return Codec(name, s.size, lambda b: tuple(s.unpack(b)), lambda v: s.pack(*v))


def _addr_bytes(v: Any, cls: type) -> bytes:
    if not isinstance(v, cls):
        raise TypeError(f"expected {cls.__name__}, got {type(v).__name__}")
    return v.packed


def _pair_codec(name: str, cls: type, n: int) -> Codec:
    def dec(b: bytes) -> tuple[Any, Any]:
        return cls(b[:n]), cls(b[n:])

    def enc(v: Any) -> bytes:
        src, dst = v
        return _addr_bytes(src, cls) + _addr_bytes(dst, cls)

    return Codec(name, 2 * n, dec, enc)


def _addr_codec(name: str, cls: type, n: int) -> Codec:
    return Codec(name, n, cls, lambda v: _addr_bytes(v, cls))


def _cstr_decode(b: bytes) -> str:
    # C treats the payload as a C string (reads up to the NUL); surrogateescape
    # keeps arbitrary bytes loss-free instead of raising UnicodeDecodeError.
    return b.split(b"\0", 1)[0].decode("ascii", "surrogateescape")


def _cstr_encode(v: Any) -> bytes:
    if not isinstance(v, str) or "\0" in v:
        raise ValueError("string attribute must be a str without NUL")
    return v.encode("ascii", "surrogateescape") + b"\0"  # strlen()+1, like ct_build_str


_BE32 = struct.Struct("!I")


def _words_decode(b: bytes) -> tuple[int, ...] | None:
    # ct_parse_clabel ignores (but does not reject) empty or ragged payloads.
    if not b or len(b) % 4:
        return None
    return tuple(w for (w,) in _BE32.iter_unpack(b))


def _words_encode(v: Any) -> bytes:
    words = tuple(v)
    if not words:
        raise ValueError("labels need at least one 32-bit word")
    return b"".join(_BE32.pack(w) for w in words)


CODECS: Mapping[str, Codec] = MappingProxyType(
    {
        c.name: c
        for c in (
            _struct_codec("u8", "B", scalar=True),
            _struct_codec("be16", "!H", scalar=True),
            _struct_codec("le16", "<H", scalar=True),  # x86 double-htons quirk
            _struct_codec("be32", "!I", scalar=True),
            _struct_codec("ports", "!HH", scalar=False),  # (sport, dport), raw group
            _struct_codec("be32x3", "!3I", scalar=False),
            _struct_codec("be32x6", "!6I", scalar=False),
            _pair_codec("ip4pair", IPv4Address, 4),  # (src, dst)
            _pair_codec("ip6pair", IPv6Address, 16),
            _addr_codec("ip4", IPv4Address, 4),
            _addr_codec("ip6", IPv6Address, 16),
            Codec("cstr", None, _cstr_decode, _cstr_encode),
            Codec("words", None, _words_decode, _words_encode),
        )
    }
)


# --------------------------------------------------------------------------- tables


@dataclass(frozen=True, slots=True)
class AttrSpec:
    """One row of the attribute table.

    ``nta_len`` is the exact on-wire ``nta_len`` the C receiver demands for
    fixed-size attributes (``None`` for variable ones, which are bounded by
    ``max_len`` instead -- both counted including the 4-byte header, as C does).
    """

    id: IntEnum  # CtAttr / ExpAttr member (an int)
    name: str
    codec: Codec
    max_len: int | None = None

    @property
    def nta_len(self) -> int | None:
        size = self.codec.size
        return None if size is None else NTA_HDR_LEN + size


def _table(rows: list[tuple[IntEnum, str, int | None]]) -> Mapping[int, AttrSpec]:
    return MappingProxyType({int(a): AttrSpec(a, a.name, CODECS[kind], mx) for a, kind, mx in rows})


NFCT_HELPER_NAME_MAX = 16  # compared against nta_len (header included): <= 11 chars + NUL
NTA_LABELS_MAX_LEN = NTA_HDR_LEN + 4096 // 4  # NTA_SIZE(NTA_LABELS_MAX_SIZE) = 1028
NTA_EXP_FN_MAX = 32  # "XXX: artificial limit" in parse.c

C = CtAttr
CT_ATTRS: Mapping[int, AttrSpec] = _table(
    [
        (C.IPV4, "ip4pair", None),
        (C.IPV6, "ip6pair", None),
        (C.L4PROTO, "u8", None),
        (C.PORT, "ports", None),
        (C.TCP_STATE, "u8", None),
        (C.STATUS, "be32", None),
        (C.TIMEOUT, "be32", None),
        (C.MARK, "be32", None),
        (C.MASTER_IPV4, "ip4pair", None),
        (C.MASTER_IPV6, "ip6pair", None),
        (C.MASTER_L4PROTO, "u8", None),
        (C.MASTER_PORT, "ports", None),
        (C.SNAT_IPV4, "ip4", None),  # captured in network order (203.0.113.5 = cb007105)
        (C.DNAT_IPV4, "ip4", None),
        (C.SPAT_PORT, "le16", None),
        (C.DPAT_PORT, "le16", None),
        (C.NAT_SEQ_ADJ, "be32x6", None),
        (C.SCTP_STATE, "u8", None),
        (C.SCTP_VTAG_ORIG, "be32", None),
        (C.SCTP_VTAG_REPL, "be32", None),
        (C.DCCP_STATE, "u8", None),
        (C.DCCP_ROLE, "u8", None),
        (C.ICMP_TYPE, "u8", None),
        (C.ICMP_CODE, "u8", None),
        (C.ICMP_ID, "le16", None),
        (C.TCP_WSCALE_ORIG, "u8", None),
        (C.TCP_WSCALE_REPL, "u8", None),
        (C.HELPER_NAME, "cstr", NFCT_HELPER_NAME_MAX),
        (C.LABELS, "words", NTA_LABELS_MAX_LEN),
        (C.SNAT_IPV6, "ip6", None),
        (C.DNAT_IPV6, "ip6", None),
        (C.SYNPROXY, "be32x3", None),  # struct nta_attr_synproxy: its, isn, tsoff
        (C.ZONE, "be16", None),
    ]
)

E = ExpAttr
EXP_ATTRS: Mapping[int, AttrSpec] = _table(
    [
        (E.MASTER_IPV4, "ip4pair", None),
        (E.MASTER_IPV6, "ip6pair", None),
        (E.MASTER_L4PROTO, "u8", None),
        (E.MASTER_PORT, "ports", None),
        (E.EXPECT_IPV4, "ip4pair", None),
        (E.EXPECT_IPV6, "ip6pair", None),
        (E.EXPECT_L4PROTO, "u8", None),
        (E.EXPECT_PORT, "ports", None),
        (E.MASK_IPV4, "ip4pair", None),
        (E.MASK_IPV6, "ip6pair", None),
        (E.MASK_L4PROTO, "u8", None),
        (E.MASK_PORT, "ports", None),
        (E.TIMEOUT, "be32", None),
        (E.FLAGS, "be32", None),
        (E.CLASS, "be32", None),
        (E.NAT_IPV4, "ip4pair", None),
        (E.NAT_PORT, "ports", None),
        (E.NAT_L4PROTO, "u8", None),
        (E.NAT_DIR, "be32", None),
        (E.HELPER_NAME, "cstr", NFCT_HELPER_NAME_MAX),
        (E.FN, "cstr", NTA_EXP_FN_MAX),
    ]
)
del C, E

assert len(CT_ATTRS) == NTA_MAX and len(EXP_ATTRS) == NTA_EXP_MAX
