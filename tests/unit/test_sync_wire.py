"""Unit and property tests of the sync wire codec (no captures needed)."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conntrack_tools.daemon.sync.wire import (
    AckHeader,
    Batcher,
    FlowTuple,
    Message,
    MsgFlag,
    MsgType,
    NetHeader,
    StreamDecoder,
    SyncExpect,
    SyncFlow,
    WireError,
    WireErrorKind,
    ctl_message,
    data_message,
    datagram_budget,
    decode_datagram,
    decode_message,
    encode_ctl,
    encode_datagram,
    encode_expect_message,
    encode_flow_message,
    encode_message,
    iter_datagram,
    pack_datagrams,
)
from conntrack_tools.daemon.sync.wire_attrs import CT_ATTRS, EXP_ATTRS, NTA_EXP_MAX, NTA_MAX, CtAttr, ExpAttr

K = WireErrorKind
SEQ = 0x6B07F8BD

# Catalog 3.9 worked example (ftfw-udp-basic.pcap, seq ..541).
WORKED = bytes.fromhex(
    "1000005c6b07f8bd"
    "000c0000c0a8010a08080808"
    "000800050000000e"
    "0005000206000000"
    "000800039c4001bb"
    "0005000403000000"
    "000800060000012c"
    "0008000700000007"
    "0010001f000000000000000000000000"
    "0006002000030000"
)
WORKED_FLOW = SyncFlow(
    orig=FlowTuple(ip_address("192.168.1.10"), ip_address("8.8.8.8"), 6, 40000, 443),
    status=0x0E,
    tcp_state=3,
    timeout=300,
    mark=7,
    synproxy=(0, 0, 0),
    zone=3,
)


def hdr(ver_type: int, flags: int, length: int, seq: int = SEQ) -> bytes:
    return struct.pack("!BBHI", ver_type, flags, length, seq)


def attr(aid: int, payload: bytes, nta_len: int | None = None, pad: bool = True) -> bytes:
    n = 4 + len(payload) if nta_len is None else nta_len
    body = struct.pack("!HH", n, aid) + payload
    return body + bytes(-len(body) % 4) if pad else body


def ct_msg(*attrs: bytes, type_: int = 0, version: int = 1) -> bytes:
    body = b"".join(attrs)
    return hdr(version << 4 | type_, 0, 8 + len(body)) + body


# --------------------------------------------------------------------------- known bytes


def test_worked_example_encodes_from_object() -> None:
    assert encode_flow_message(MsgType.CT_NEW, WORKED_FLOW, SEQ) == WORKED
    m = decode_message(WORKED)
    assert m.flow() == WORKED_FLOW
    assert [a for a, _ in m.attrs] == [0, 5, 2, 3, 4, 6, 7, 31, 32]
    assert m.attrs[0][0] is CtAttr.IPV4


@pytest.mark.parametrize(
    ("flags", "frm", "to", "hexbytes"),
    [
        (MsgFlag.ALIVE, 0, 0, "1a1000086b07f8bd"),
        (MsgFlag.ALIVE | MsgFlag.HELLO, 0, 0, "1a3000086b07f8bd"),
        (MsgFlag.RESYNC, 0, 0, "1a0200106b07f8bd0000000000000000"),
        (MsgFlag.ACK | MsgFlag.HELLO | MsgFlag.HELLO_BACK, 1, 2, "1a6800106b07f8bd0000000100000002"),
        (MsgFlag.NACK, 5, 9, "1a0400106b07f8bd0000000500000009"),
    ],
)
def test_control_messages(flags: MsgFlag, frm: int, to: int, hexbytes: str) -> None:
    raw = encode_ctl(flags, SEQ, frm, to)
    assert raw.hex() == hexbytes
    m = decode_message(raw)
    assert m == ctl_message(flags, SEQ, frm, to)
    assert isinstance(m.header, AckHeader) == (len(raw) == 16)


def test_header_classification_macros() -> None:
    data = NetHeader(type=MsgType.CT_UPD, flags=MsgFlag.HELLO)
    assert data.is_data and data.is_hello and not data.is_ctl
    assert not NetHeader(type=MsgType.CT_NEW, flags=MsgFlag.ACK).is_data
    ack = AckHeader(type=MsgType.CTL, flags=MsgFlag.ACK | MsgFlag.HELLO_BACK)
    assert ack.is_ack and ack.is_hello_back and not ack.is_nack and not ack.is_data


def test_len_is_not_part_of_equality() -> None:
    assert NetHeader(type=MsgType.CTL, len=8) == NetHeader(type=MsgType.CTL, len=99)


def test_snat_and_spat_byte_order_quirk() -> None:
    f = SyncFlow(
        orig=FlowTuple(ip_address("192.168.1.11"), ip_address("1.1.1.1"), 17, 5353, 53),
        status=0x19A,
        snat=ip_address("203.0.113.5"),
        spat=61000,
        icmp_id=0x1234,
    )
    raw = encode_flow_message(MsgType.CT_NEW, f, 1)
    assert bytes.fromhex("0008000ccb007105") in raw  # address in network order
    assert bytes.fromhex("0006000e48ee0000") in raw  # port little-endian (x86 C peers)
    assert bytes.fromhex("0006001834120000") in raw  # ICMP id little-endian


def test_ipv6_nat_and_master_attributes() -> None:
    f = SyncFlow(
        orig=FlowTuple(ip_address("2001:db8::1"), ip_address("2001:db8::2"), 6, 1, 2),
        master=FlowTuple(ip_address("2001:db8::1"), ip_address("2001:db8::2"), 6, 1000, 21),
        snat=ip_address("2001:db8::5"),
        dnat=ip_address("2001:db8::6"),
        dpat=8080,
        helper="ftp",
        labels=SyncFlow.labels_from_bits({0, 33, 127}),
        nat_seq_adj=(1, 2, 3, 4, 5, 6),
    )
    m = decode_message(encode_flow_message(MsgType.CT_UPD, f, 7))
    ids = [a for a, _ in m.attrs]
    assert ids == [1, 5, 2, 3, 9, 10, 11, 29, 30, 15, 16, 27, 28]
    assert m.flow() == f
    assert m.flow().label_bits == {0, 33, 127}
    assert dict(m.attrs)[CtAttr.LABELS] == (1, 2, 0, 0x80000000)
    r = f.reply
    assert (r.src, r.dst, r.sport, r.dport) == (ip_address("2001:db8::6"), ip_address("2001:db8::5"), 8080, 1)


def test_expectation_round_trip_and_order() -> None:
    v4 = IPv4Address
    e = SyncExpect(
        master=FlowTuple(v4("10.0.0.1"), v4("10.0.0.2"), 6, 40000, 21),
        expected=FlowTuple(v4("10.0.0.1"), v4("10.0.0.2"), 6, 0, 50000),
        mask=FlowTuple(v4("255.255.255.255"), v4("255.255.255.255"), 255, 0, 0xFFFF),
        timeout=300,
        flags=1,
        klass=0,
        nat=FlowTuple(v4("192.0.2.1"), v4("0.0.0.0"), 6, 0, 50001),
        nat_dir=1,
        helper="ftp",
        fn="nat-follow-master",
    )
    raw = encode_expect_message(MsgType.EXP_NEW, e, 9)
    m = decode_message(raw)
    assert [a for a, _ in m.attrs] == [0, 2, 3, 4, 6, 7, 8, 10, 11, 12, 13, 14, 15, 17, 16, 18, 19, 20]
    assert m.expect() == e and m.is_exp
    with pytest.raises(WireError):
        m.flow()


# --------------------------------------------------------------------------- receiver rules (catalog 3.4)

GOOD = ct_msg(attr(CtAttr.IPV4, bytes(8)), attr(CtAttr.L4PROTO, b"\x06"))


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        (b"", K.TRUNCATED),
        (hdr(0x10, 0, 8)[:7], K.TRUNCATED),
        (hdr(0x10, 0, 0), K.BAD_SIZE),
        (hdr(0x10, 0, 4), K.BAD_SIZE),
        (hdr(0x10, 0, 12), K.BAD_SIZE),  # len beyond buffer
        (hdr(0x1A, MsgFlag.ACK, 8) + bytes(8), K.BAD_SIZE),  # ACK needs len >= 16
        (hdr(0x1A, MsgFlag.ACK, 8), K.TRUNCATED),  # ... and 16 bytes left, checked first
        (hdr(0x1A, MsgFlag.ACK, 12) + bytes(4), K.TRUNCATED),  # fewer than 16 bytes left
        (hdr(0x2A, MsgFlag.ALIVE, 8), K.BAD_VERSION),
        (hdr(0x07, 0, 8), K.BAD_VERSION),
        (hdr(0x17, 0, 8), K.BAD_TYPE),
        (hdr(0x1F, 0, 8), K.BAD_TYPE),
        (ct_msg(attr(NTA_MAX, b"\0")), K.BAD_PAYLOAD),  # unknown attribute: whole message rejected
        (ct_msg(attr(0xFFFF, b"\0")), K.BAD_PAYLOAD),
        (ct_msg(attr(NTA_EXP_MAX, b"\0"), type_=MsgType.EXP_NEW), K.BAD_PAYLOAD),
        (ct_msg(attr(CtAttr.L4PROTO, b"\0" * 4, nta_len=3)), K.BAD_PAYLOAD),
        (ct_msg(attr(CtAttr.L4PROTO, b"\x06\0\0\0", nta_len=12)), K.BAD_PAYLOAD),  # beyond message
        (ct_msg(attr(CtAttr.L4PROTO, b"\x06\0")), K.BAD_PAYLOAD),  # fixed size mismatch
        (ct_msg(attr(CtAttr.IPV4, bytes(9))), K.BAD_PAYLOAD),
        (ct_msg(attr(CtAttr.HELPER_NAME, b"abcdefghijkl\0")), K.BAD_PAYLOAD),  # nta_len 17 > 16
        (ct_msg(attr(CtAttr.LABELS, bytes(1028))), K.BAD_PAYLOAD),  # nta_len 1032 > 1028
        (ct_msg(attr(ExpAttr.FN, b"x" * 28 + b"\0"), type_=MsgType.EXP_UPD), K.BAD_PAYLOAD),
    ],
)
def test_malformed_raises_wire_error(raw: bytes, kind: WireErrorKind) -> None:
    with pytest.raises(WireError) as ei:
        decode_message(raw)
    assert ei.value.kind is kind
    assert ei.value.fatal == (kind in (K.TRUNCATED, K.BAD_SIZE))
    assert isinstance(ei.value, ValueError) and ei.value.reason


@pytest.mark.parametrize(
    "raw",
    [
        ct_msg(attr(CtAttr.HELPER_NAME, b"abcdefghijk\0")),  # nta_len 16: the maximum
        ct_msg(attr(CtAttr.LABELS, bytes(1024))),  # nta_len 1028: the maximum
        ct_msg(attr(ExpAttr.FN, b"x" * 27 + b"\0"), type_=MsgType.EXP_DEL),
        GOOD + b"",
        hdr(0x1A, MsgFlag.ALIVE, 12) + b"junk",  # control body beyond header is ignored
        hdr(0x1A, 0x81, 8),  # unknown flag bits are kept
    ],
)
def test_accepted_like_c(raw: bytes) -> None:
    decode_message(raw)


def test_trailing_bytes_and_missing_padding_are_tolerated() -> None:
    # <= 4 trailing bytes after the last attribute: C's loop stops, so do we.
    m = decode_message(ct_msg(attr(CtAttr.L4PROTO, b"\x11"), b"\xff\xff\xff\xff"))
    assert m.attrs == ((CtAttr.L4PROTO, 17),)
    # Last attribute without its padding (message len not a multiple of 4).
    m = decode_message(ct_msg(attr(CtAttr.STATUS, b"\0\0\0\x08"), attr(CtAttr.L4PROTO, b"\x06", pad=False)))
    assert m.attrs == ((CtAttr.STATUS, 8), (CtAttr.L4PROTO, 6))


def test_body_of_four_bytes_or_less_is_not_parsed() -> None:
    # C's attribute loop runs only while more than 4 bytes remain.
    assert decode_message(ct_msg(attr(0xFFFF, b""))).attrs == ()


def test_ragged_labels_are_ignored_not_rejected() -> None:
    m = decode_message(ct_msg(attr(CtAttr.LABELS, b"\0\0\0\1\2"), attr(CtAttr.MARK, b"\0\0\0\1")))
    assert m.attrs == ((CtAttr.MARK, 1),)


def test_repeated_attribute_last_one_wins_in_object_view() -> None:
    raw = ct_msg(
        attr(CtAttr.IPV4, bytes(8)),
        attr(CtAttr.L4PROTO, b"\x06"),
        attr(CtAttr.MARK, b"\0\0\0\1"),
        attr(CtAttr.MARK, b"\0\0\0\2"),
    )
    assert decode_message(raw).flow().mark == 2


def test_object_view_needs_tuple() -> None:
    with pytest.raises(WireError):
        decode_message(ct_msg(attr(CtAttr.MARK, b"\0\0\0\1"))).flow()
    with pytest.raises(WireError):
        decode_message(ct_msg(type_=MsgType.EXP_NEW)).expect()


def test_datagram_keeps_going_after_message_errors_and_stops_on_framing() -> None:
    alive = encode_ctl(MsgFlag.ALIVE, 1)
    bad_version = hdr(0x2A, MsgFlag.ALIVE, 8)
    bad_attr = ct_msg(attr(40, b"\0"))
    raw = alive + bad_version + bad_attr + alive + hdr(0x1A, MsgFlag.ALIVE, 0) + alive
    items = list(iter_datagram(raw))
    kinds = [i.kind if isinstance(i, WireError) else "msg" for i in items]
    assert kinds == ["msg", K.BAD_VERSION, K.BAD_PAYLOAD, "msg", K.BAD_SIZE]
    with pytest.raises(WireError) as ei:
        decode_datagram(raw)
    assert ei.value.kind is K.BAD_VERSION
    assert decode_datagram(b"") == []
    assert decode_datagram(alive + alive) == [decode_message(alive)] * 2


def test_decode_accepts_memoryview_and_offset() -> None:
    buf = memoryview(b"\0" * 3 + WORKED)
    assert decode_message(buf, 3).flow() == WORKED_FLOW


# --------------------------------------------------------------------------- encoder refuses what C would reject


@pytest.mark.parametrize(
    "msg",
    [
        data_message(MsgType.CT_NEW, [(CtAttr.PORT, (70000, 1))], 1),
        data_message(MsgType.CT_NEW, [(CtAttr.HELPER_NAME, "abcdefghijkl")], 1),
        data_message(MsgType.CT_NEW, [(CtAttr.HELPER_NAME, "a\0b")], 1),
        data_message(MsgType.CT_NEW, [(CtAttr.IPV4, (IPv6Address("::1"), IPv6Address("::2")))], 1),
        data_message(MsgType.CT_NEW, [(CtAttr.LABELS, ())], 1),
        data_message(MsgType.CT_NEW, [(NTA_MAX, 1)], 1),
        data_message(MsgType.EXP_NEW, [(ExpAttr.FN, "x" * 28)], 1),
        data_message(MsgType.CT_NEW, [(CtAttr.MARK, -1)], 1),
        Message(NetHeader(type=MsgType.CTL, flags=MsgFlag.ACK)),  # needs AckHeader
        Message(AckHeader(type=MsgType.CTL, flags=MsgFlag.ALIVE)),
        Message(NetHeader(type=MsgType.CTL, flags=MsgFlag.ALIVE), ((CtAttr.MARK, 1),)),
        Message(NetHeader(type=MsgType.CTL, seq=1 << 32)),
        data_message(MsgType.CT_NEW, [(CtAttr.LABELS, (0,) * 256)] * 70, 1),  # > 65535 bytes
    ],
)
def test_encode_rejects(msg: Message) -> None:
    with pytest.raises(WireError) as ei:
        encode_message(msg)
    assert ei.value.kind is K.ENCODE


def test_encode_flow_rejects_bad_type_and_half_ports() -> None:
    with pytest.raises(WireError):
        encode_flow_message(MsgType.EXP_NEW, WORKED_FLOW, 1)
    half = SyncFlow(orig=FlowTuple(IPv4Address(1), IPv4Address(2), 6, 1, None))
    with pytest.raises(WireError):
        encode_flow_message(MsgType.CT_NEW, half, 1)


# --------------------------------------------------------------------------- batching and streams


def test_batcher_strict_budget_like_channel_send() -> None:
    m = bytes(100)
    b = Batcher(300)
    assert b.add(m) == [] and b.add(m) == []
    assert b.add(m) == [m * 2]  # 200 + 100 is not < 300
    assert b.pending == 100
    assert b.add(bytes(400)) == [m, bytes(400)]  # oversize goes out alone
    assert b.flush() is None and b.pending == 0
    assert pack_datagrams([m] * 5, 301) == [m * 3, m * 2]
    assert datagram_budget(1500) == 1472


@given(st.lists(st.integers(1, 700), max_size=40), st.integers(9, 1500))
def test_batcher_add_all_equals_add(sizes, budget) -> None:
    """The TX run's one-loop batching makes the datagrams message-by-message batching makes."""
    msgs = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    one, run = Batcher(budget), Batcher(budget)
    want = [d for m in msgs for d in one.add(m)]
    assert run.add_all(msgs) == want
    assert run.pending == one.pending and run.flush() == one.flush()


def test_stream_decoder_reassembles_any_split() -> None:
    stream = encode_ctl(MsgFlag.ACK, 1, 2, 3) + WORKED + encode_ctl(MsgFlag.ALIVE, 4)
    want = decode_datagram(stream)
    for cut in range(len(stream) + 1):
        d = StreamDecoder()
        got = d.feed(stream[:cut]) + d.feed(stream[cut:])
        assert got == want and d.pending == 0
    d = StreamDecoder()
    assert [type(x) for x in d.feed(hdr(0x1A, 0x10, 0) + WORKED)] == [WireError]
    assert d.pending == 0  # C drops the buffer after a zero length


def test_encode_datagram_concatenates() -> None:
    msgs = [ctl_message(MsgFlag.ALIVE, 1), decode_message(WORKED)]
    assert decode_datagram(encode_datagram(msgs)) == msgs


# --------------------------------------------------------------------------- properties

u8, u16, u32 = (st.integers(0, (1 << n) - 1) for n in (8, 16, 32))
ip4 = st.builds(IPv4Address, u32)
ip6 = st.builds(IPv6Address, st.integers(0, (1 << 128) - 1))
_VALUES = {
    "u8": u8,
    "be16": u16,
    "le16": u16,
    "be32": u32,
    "ports": st.tuples(u16, u16),
    "be32x3": st.tuples(u32, u32, u32),
    "be32x6": st.tuples(*[u32] * 6),
    "ip4pair": st.tuples(ip4, ip4),
    "ip6pair": st.tuples(ip6, ip6),
    "ip4": ip4,
    "ip6": ip6,
    "words": st.lists(u32, min_size=1, max_size=8).map(tuple),
}


def _attr_strategy(table):
    def one(spec):
        if spec.codec.name == "cstr":
            limit = spec.max_len - 5
            return st.text(st.characters(min_codepoint=1, max_codepoint=127), max_size=limit).map(
                lambda s, a=spec.id: (a, s)
            )
        return _VALUES[spec.codec.name].map(lambda v, a=spec.id: (a, v))

    return st.one_of([one(s) for s in table.values()])


data_messages = st.one_of(
    st.builds(
        lambda t, f, s, a: Message(NetHeader(type=t, flags=MsgFlag(f), seq=s), tuple(a)),
        st.sampled_from([MsgType.CT_NEW, MsgType.CT_UPD, MsgType.CT_DEL]),
        u8,
        u32,
        st.lists(_attr_strategy(CT_ATTRS), max_size=10),
    ),
    st.builds(
        lambda t, f, s, a: Message(NetHeader(type=t, flags=MsgFlag(f), seq=s), tuple(a)),
        st.sampled_from([MsgType.EXP_NEW, MsgType.EXP_UPD, MsgType.EXP_DEL]),
        u8,
        u32,
        st.lists(_attr_strategy(EXP_ATTRS), max_size=10),
    ),
    st.builds(
        lambda f, s, a, b: ctl_message(f, s, a, b) if f & 0x0E else ctl_message(f, s),
        u8,
        u32,
        u32,
        u32,
    ),
)

opt = st.none
addr_pair = st.one_of(st.tuples(ip4, ip4), st.tuples(ip6, ip6))
port_pair = st.one_of(st.tuples(st.none(), st.none()), st.tuples(u16, u16))


def _tuple(pair, ports, proto):
    return FlowTuple(pair[0], pair[1], proto, *ports)


flow_tuples = st.builds(_tuple, addr_pair, port_pair, u8)
flows = st.builds(
    SyncFlow,
    orig=flow_tuples,
    status=u32,
    tcp_state=opt() | u8,
    tcp_wscale_orig=opt() | u8,
    sctp_vtag_repl=opt() | u32,
    dccp_role=opt() | u8,
    icmp_id=opt() | u16,
    timeout=opt() | u32,
    mark=opt() | u32,
    master=opt() | flow_tuples,
    snat=opt() | ip4 | ip6,
    dnat=opt() | ip4 | ip6,
    spat=opt() | u16,
    dpat=opt() | u16,
    nat_seq_adj=opt() | st.tuples(*[u32] * 6),
    helper=opt() | st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz-0123456789"), max_size=11),
    labels=opt() | st.lists(u32, min_size=1, max_size=8).map(tuple),
    synproxy=opt() | st.tuples(u32, u32, u32),
    zone=opt() | u16,
)
v4_tuples = st.builds(_tuple, st.tuples(ip4, ip4), port_pair, u8)
expects = st.builds(
    lambda **kw: SyncExpect(**kw) if kw["nat"] is not None else SyncExpect(**{**kw, "nat_dir": 0}),
    master=flow_tuples,
    expected=flow_tuples,
    mask=flow_tuples,
    timeout=opt() | u32,
    flags=u32,
    klass=opt() | u32,
    nat=opt() | v4_tuples,
    nat_dir=u32,
    helper=opt() | st.text(st.sampled_from("abcxyz"), max_size=11),
    fn=opt() | st.text(st.sampled_from("abc-xyz"), max_size=27),
)

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(data_messages)
def test_property_message_round_trip(msg: Message) -> None:
    raw = encode_message(msg)
    back = decode_message(raw)
    assert back == msg
    assert encode_message(back) == raw
    assert len(raw) % 4 == 0 and back.header.len == len(raw)


@FAST
@given(flows, st.sampled_from([MsgType.CT_NEW, MsgType.CT_UPD, MsgType.CT_DEL]), u32)
def test_property_flow_round_trip(flow: SyncFlow, t: MsgType, seq: int) -> None:
    raw = encode_flow_message(t, flow, seq)
    m = decode_message(raw)
    assert (m.type, m.seq) == (t, seq)
    assert m.flow() == flow


@FAST
@given(expects, u32)
def test_property_expect_round_trip(exp: SyncExpect, seq: int) -> None:
    m = decode_message(encode_expect_message(MsgType.EXP_UPD, exp, seq))
    assert m.expect() == exp


def _only_wire_errors(buf: bytes) -> None:
    items = list(iter_datagram(buf))  # must terminate
    assert all(isinstance(i, Message | WireError) for i in items)
    assert all(not i.fatal for i in items[:-1] if isinstance(i, WireError))
    try:
        for m in decode_datagram(buf):
            encode_message(m)
            if m.is_ct:
                m.flow()
            elif m.is_exp:
                m.expect()
    except WireError:
        pass
    try:
        decode_message(buf)
    except WireError:
        pass
    StreamDecoder().feed(buf)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=256))
def test_fuzz_arbitrary_bytes(buf: bytes) -> None:
    _only_wire_errors(buf)


@settings(max_examples=500, deadline=None)
@given(data_messages, st.data())
def test_fuzz_mutated_valid_messages(msg: Message, data: st.DataObject) -> None:
    raw = bytearray(encode_message(msg) * 2)
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(u8)
    cut = data.draw(st.integers(0, len(raw)))
    _only_wire_errors(bytes(raw[:cut]))


@settings(max_examples=200, deadline=None)
@given(st.lists(data_messages, min_size=1, max_size=12), st.integers(64, 2000))
def test_property_batches_hold_whole_messages(msgs: list[Message], budget: int) -> None:
    raws = [encode_message(m) for m in msgs]
    dgrams = pack_datagrams(raws, budget)
    assert b"".join(dgrams) == b"".join(raws)
    assert [m for d in dgrams for m in decode_datagram(d)] == msgs
    for d in dgrams:
        assert len(d) < budget or len(decode_datagram(d)) == 1
