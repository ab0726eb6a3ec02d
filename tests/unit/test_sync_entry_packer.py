"""The sender's compiled entry renderer must send exactly what the reference path sends."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conntrack_tools.daemon.cache import Cache
from conntrack_tools.daemon.sync import entry_packer
from conntrack_tools.daemon.sync.entry_packer import EntryRenderer, render_reference
from conntrack_tools.daemon.sync.wire import WireError
from conntrack_tools.flow import AF_INET, AF_INET6, Flow, SctpInfo, TcpInfo, Tuple

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


@st.composite
def flows(draw):
    family = draw(st.sampled_from([AF_INET, AF_INET6]))
    size = 4 if family == AF_INET else 16
    proto = draw(st.sampled_from([6, 17, 33, 132, 136, 47, 1, 58, 99, 0]))
    addrs = st.binary(min_size=size, max_size=size)
    orig = Tuple(family, draw(addrs), draw(addrs), proto)
    if proto in (1, 58):
        orig.icmp_type, orig.icmp_code, orig.icmp_id = draw(st.integers(0, 255)), draw(st.integers(0, 255)), draw(u16)
    else:
        orig.sport, orig.dport = draw(u16), draw(u16)
    orig.zone = draw(st.none() | u16)
    if draw(st.integers(0, 3)):
        reply = orig.reversed()  # the common case: no NAT
    else:
        reply = Tuple(family, draw(addrs), draw(addrs), proto, draw(u16), draw(u16))
    f = Flow(family, orig, reply, status=draw(st.none() | u32), mark=draw(st.none() | u32),
             zone=draw(st.none() | u16), id=draw(st.none() | u32))
    if proto == 6 and draw(st.booleans()):
        wide = draw(st.booleans())
        f.tcp = TcpInfo(draw(st.none() | st.integers(0, 12)), *((7, 7, 3, 3, 3, 3) if wide else ()))
    if proto == 132 and draw(st.booleans()):
        f.sctp = SctpInfo(draw(st.integers(0, 9)), draw(u32), draw(u32))
    if draw(st.booleans()):
        f.synproxy = draw(st.just((0, 0, 0)) | st.tuples(u32, u32, u32))  # kernels send zeros on every flow
    if draw(st.integers(0, 5)) == 0:
        f.helper = draw(st.sampled_from(["ftp", "sip", "tftp"]))
    return f


@settings(max_examples=400, deadline=None)
@given(st.lists(flows(), min_size=1, max_size=5), st.none() | u32, st.booleans(), st.booleans(), st.booleans())
def test_compiled_body_equals_reference(batch, timeout, send_timeout, window_tracking, dead):
    cache = Cache("internal")
    r = EntryRenderer(send_timeout, window_tracking)
    for f in batch:
        e, _ = cache.update_force(f, 1)
        assert e is not None
        e.dead = dead
        assert r.body(e, timeout) == render_reference(e, timeout, send_timeout, window_tracking)
    assert None not in r._packers.values()  # no generated packer failed its first-use check


def test_plain_entries_take_the_compiled_path():
    cache = Cache("internal")
    r = EntryRenderer(send_timeout=True, window_tracking=False)
    for i in range(50):
        o = Tuple(AF_INET, bytes([10, 0, 0, 1]), bytes([10, 0, 1, i]), 6, 40000 + i, 80)
        e, _ = cache.update_force(Flow(AF_INET, o, o.reversed(), status=14, mark=i or None,
                                       tcp=TcpInfo(3, 7, 7, 3, 3, 3, 3), synproxy=(0, 0, 0)), 1)
        assert e is not None and e.extra is None
        assert r.body(e, 120) == render_reference(e, 120, True, False)
    nat = Tuple(AF_INET, bytes([10, 0, 0, 1]), bytes([10, 0, 1, 1]), 17, 1, 2)
    e, _ = cache.update_force(Flow(AF_INET, nat, Tuple(AF_INET, nat.dst, bytes([192, 0, 2, 1]), 17, 2, 1)), 1)
    r.body(e, None)
    assert (r.fast, r.slow) == (50, 1)
    assert len(r._packers) == 2  # with and without mark


def test_value_out_of_range_is_a_wire_error():
    cache = Cache("internal")
    o = Tuple(AF_INET6, bytes(16), bytes(range(16)), 17, 1, 2)
    e, _ = cache.update_force(Flow(AF_INET6, o, o.reversed()), 1)
    r = EntryRenderer(True, False)
    r.body(e, 1)  # compiles and checks the layout
    with pytest.raises(WireError):
        r.body(e, 1 << 40)
    assert r.fast == 1


def test_a_packer_that_disagrees_with_the_reference_is_not_used(monkeypatch):
    """The first-use check (compiled.checked): a wrong generated packer is dropped, the reference path serves."""
    monkeypatch.setattr(entry_packer, "_compile", lambda *layout: lambda *args: b"wrong")
    cache = Cache("internal")
    o = Tuple(AF_INET, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 17, 1, 2)
    e, _ = cache.update_force(Flow(AF_INET, o, o.reversed(), status=8), 1)
    r = EntryRenderer(True, False)
    for _ in range(2):
        assert r.body(e, 30) == render_reference(e, 30, True, False)
    assert (r.fast, r.slow) == (0, 2)
