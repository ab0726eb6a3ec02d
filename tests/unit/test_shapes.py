"""The shape-cached fast paths must agree with the reference decoder and renderer on every message."""

from __future__ import annotations

import socket

from hypothesis import given, settings
from hypothesis import strategies as st

from conntrack_tools.flow import AF_INET, AF_INET6, Counters, Flow, TcpInfo, Tuple
from conntrack_tools.formats import OutputOptions, render_flow
from conntrack_tools.formats.fastline import make_line_factory
from conntrack_tools.netlink.attrs import CtMsg, ct_type
from conntrack_tools.netlink.codec import (
    NLMSG_HDR,
    decode_flow,
    encode_flow,
    frame_dump,
    key_request_from_dump,
    nlmsg,
)
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
        spans: list[int] = []
        assert frame_dump(buf, len(buf), 1, spans) == 0
        decoder.lines(buf, spans, lines.append)
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
    spans: list[int] = []
    assert frame_dump(msg, len(msg), 1, spans) is None
    for _ in range(2):
        decoder.lines(msg, spans, lambda line: None, lambda b, s, e, shape: got.append((s, e, shape)))
    (s, e, _), (_, _, shape) = got
    assert shape is not None
    generic = key_request_from_dump(msg, s, e, ct_type(CtMsg.DELETE), 0, 9)
    assert shape.key_request(msg, s, ct_type(CtMsg.DELETE), 0, 9) == generic
    key = decode_flow(generic, 16, len(generic))
    assert (key.orig, key.zone, key.id, key.reply, key.timeout) == (f.orig, 4, 77, None, None)


# ---------------------------------------------------------------- compiled filters

ADDRS4 = ["1.1.1.1", "2.2.2.2"]
ADDRS6 = ["2001:db8::1", "2001:db8::2"]


@st.composite
def filter_argvs(draw):
    argv = [draw(st.sampled_from(["-L", "-D"]))]
    v6 = draw(st.booleans())
    addrs = ADDRS6 if v6 else ADDRS4
    proto = draw(st.sampled_from([None, "tcp", "udp", "icmp", "icmpv6", "99"]))
    for opt in ("-s", "-d", "-r", "-q"):
        if draw(st.booleans()):
            argv += [opt, draw(st.sampled_from(addrs))]
    if draw(st.booleans()):
        argv += ["-f", "ipv6" if v6 else "ipv4"]
    if proto:
        argv += ["-p", proto]
        if proto in ("tcp", "udp"):
            for opt in ("--sport", "--dport", "--reply-port-src", "--reply-port-dst"):
                if draw(st.booleans()):
                    argv += [opt, str(draw(st.integers(0, 3)))]
            if proto == "tcp" and draw(st.booleans()):
                argv += ["--state", draw(st.sampled_from(["ESTABLISHED", "SYN_SENT"]))]
        if proto in ("icmp", "icmpv6"):
            pre = "--icmp" if proto == "icmp" else "--icmpv6"
            for opt in ("-type", "-code", "-id"):
                if draw(st.booleans()):
                    argv += [pre + opt, str(draw(st.integers(0, 2)))]
    if draw(st.booleans()):
        argv += ["-m", draw(st.sampled_from(["0", "1", "3/1", "0x10/0xf0"]))]
    if draw(st.booleans()):
        argv += ["-u", draw(st.sampled_from(["ASSURED", "SEEN_REPLY", "UNREPLIED"]))]
    for opt in ("-w", "--orig-zone", "--reply-zone"):
        if draw(st.booleans()):
            argv += [opt, str(draw(st.integers(0, 2)))]
    return argv


@st.composite
def small_flows(draw):
    """Flows whose values often hit the filters above (few distinct addresses, ports and zones)."""
    family = draw(st.sampled_from([AF_INET, AF_INET6]))
    addrs = [socket.inet_pton(family, a) for a in (ADDRS4 if family == AF_INET else ADDRS6)]
    proto = draw(st.sampled_from([6, 17, 1, 58, 99]))
    small = st.integers(0, 3)

    def tup():
        t = Tuple(family, draw(st.sampled_from(addrs)), draw(st.sampled_from(addrs)), proto)
        if proto in (1, 58):
            t.icmp_type, t.icmp_code, t.icmp_id = draw(small), draw(small), draw(small)
        elif proto != 99:
            t.sport, t.dport = draw(small), draw(small)
        t.zone = draw(st.none() | st.integers(0, 2))
        return t

    f = Flow(family, tup(), tup(), status=draw(st.none() | st.sampled_from([0, 2, 4, 6, 14])),
             mark=draw(st.none() | st.integers(0, 0x20)), zone=draw(st.none() | st.integers(0, 2)), id=5)
    if proto == 6 and draw(st.booleans()):
        f.tcp = TcpInfo(draw(st.sampled_from([1, 3])))
    return f


@settings(max_examples=600, deadline=None)
@given(filter_argvs(), st.lists(small_flows(), min_size=1, max_size=4), st.sampled_from([
    {}, {"kernel_filtered": True, "kernel_tuples": True}, {"kernel_tuples": True},
    {"use_mark": False, "use_status": False}]))
def test_compiled_predicates_match_make_filter(argv, batch, kw):
    from conntrack_tools.cli.errors import CliError
    from conntrack_tools.cli.parse import parse_args
    from conntrack_tools.cli.shapefilter import make_predicate_factory
    from conntrack_tools.cli.template import make_filter
    from conntrack_tools.netlink.shapes import _compile

    try:
        req = parse_args(argv)
    except CliError:
        return
    keep = make_filter(req, **kw)
    factory = make_predicate_factory(req, **kw)
    if factory is None:
        return
    for f in batch:
        payload = bytes((f.family, 0, 0, 0)) + encode_flow(f)
        shape = _compile(payload, 0, len(payload))
        vals = shape.struct.unpack_from(payload, 0)
        pred = factory(shape.slots, f.family)
        assert pred(vals) == keep(shape.build(vals)), (argv, kw, f)
