"""The shape-cached fast paths must agree with the reference decoder and renderer on every message."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from conntrack_tools.flow import AF_INET, AF_INET6, Counters, Flow, TcpInfo, Tuple
from conntrack_tools.formats import OutputOptions, render_flow
from conntrack_tools.formats.fastline import make_line_factory
from conntrack_tools.netlink.attrs import CtMsg, ct_type
from conntrack_tools.netlink.codec import NLMSG_HDR, decode_flow, encode_flow, key_request_from_dump, nlmsg
from conntrack_tools.netlink.shapes import ShapeDecoder

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


@st.composite
def flows(draw):
    family = draw(st.sampled_from([AF_INET, AF_INET6]))
    size = 4 if family == AF_INET else 16
    proto = draw(st.sampled_from([6, 17, 136, 47, 1, 58, 132, 99]))
    addrs = st.binary(min_size=size, max_size=size)

    def tup():
        t = Tuple(family, draw(addrs), draw(addrs), proto)
        if proto in (1, 58):
            t.icmp_type, t.icmp_code, t.icmp_id = draw(st.integers(0, 255)), draw(st.integers(0, 255)), draw(u16)
        elif proto != 99:
            t.sport, t.dport = draw(u16), draw(u16)
        t.zone = draw(st.none() | u16)
        return t

    f = Flow(family, tup(), tup(), status=draw(st.none() | u32), timeout=draw(st.none() | u32),
             mark=draw(st.none() | u32), zone=draw(st.none() | u16), id=draw(st.none() | u32),
             secmark=draw(st.none() | u32))
    if proto == 6 and draw(st.booleans()):
        f.tcp = TcpInfo(draw(st.integers(0, 12)), 7, 7, 3, 3, 3, 3)
    if draw(st.booleans()):
        f.counters_orig = Counters(draw(u32), draw(u32))
        f.counters_reply = Counters(draw(u32), draw(u32))
    return f


def _dump_message(flow: Flow, seq: int = 1) -> bytes:
    return nlmsg(ct_type(CtMsg.NEW), 2, seq, flow.family, encode_flow(flow))


OPTION_SETS = [OutputOptions(), OutputOptions(extended=True, id=True)]


@settings(max_examples=300, deadline=None)
@given(st.lists(flows(), min_size=1, max_size=6), st.sampled_from(OPTION_SETS))
def test_fast_paths_match_reference(batch, opts):
    def reference(f):
        return render_flow(f, opts, now_ns=0)

    decoder = ShapeDecoder(line_factory=make_line_factory(opts), reference=reference)
    # Twice: the first pass compiles shapes, the second uses them.
    for _ in range(2):
        buf = b"".join(_dump_message(f) for f in batch) + NLMSG_HDR.pack(20, 3, 2, 1, 0) + bytes(4)
        lines: list[str] = []
        done, err = decoder.lines_into(buf, len(buf), 1, lines.append)
        assert (done, err) == (True, 0)
        expected = []
        for f in batch:
            body = encode_flow(f)
            payload = bytes((f.family, 0, 0, 0)) + body
            ref = decode_flow(payload, 0, len(payload))
            assert decoder.decode(payload, 0, len(payload)) == ref
            expected.append(reference(ref))
        assert lines == expected


def test_shape_key_request_equals_generic():
    f = Flow(AF_INET, Tuple(AF_INET, b"\x01" * 4, b"\x02" * 4, 17, 5, 6),
             Tuple(AF_INET, b"\x02" * 4, b"\x01" * 4, 17, 6, 5), status=8, timeout=3, zone=4, id=77, use=1)
    msg = _dump_message(f)
    decoder = ShapeDecoder(reference=lambda fl: "")
    got = []
    decoder.lines_into(msg, len(msg), 1, lambda line: None, lambda b, s, e, shape: got.append((s, e, shape)))
    decoder.lines_into(msg, len(msg), 1, lambda line: None, lambda b, s, e, shape: got.append((s, e, shape)))
    (s, e, _), (_, _, shape) = got
    assert shape is not None
    generic = key_request_from_dump(msg, s, e, ct_type(CtMsg.DELETE), 0, 9)
    assert shape.key_request(msg, s, ct_type(CtMsg.DELETE), 0, 9) == generic
    key = decode_flow(generic, 16, len(generic))
    assert (key.orig, key.zone, key.id, key.reply, key.timeout) == (f.orig, 4, 77, None, None)
