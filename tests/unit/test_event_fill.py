"""The compiled event path (daemon/event_fill.py) must leave the internal cache exactly as the reference
path does: decode to a Flow, sanity + filter, flow_key, Entry.merge, SyncCacheMode.new/upd."""

from __future__ import annotations

import ipaddress
from functools import partial

from hypothesis import given, settings
from hypothesis import strategies as st

from conntrack_tools.daemon.cache import Entry
from conntrack_tools.daemon.event_fill import _ENTRY_SLOTS, event_fill_factory, reference_snapshot
from conntrack_tools.daemon.filter import ACCEPT_ALL, CompiledFilter
from conntrack_tools.daemon.mode import SyncCacheMode
from conntrack_tools.daemon.stats import RuntimeStats
from conntrack_tools.flow import AF_INET, AF_INET6, ICMP_REPLY_TYPE, Flow, TcpInfo, Tuple
from conntrack_tools.netlink.codec import encode_flow
from conntrack_tools.netlink.shapes import ShapeDecoder

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)


@st.composite
def event_flows(draw):
    """Kernel-like events: mostly mirrored reply tuples, sometimes NAT; ICMP with its reply type; zones."""
    family = draw(st.sampled_from([AF_INET, AF_INET6]))
    size = 4 if family == AF_INET else 16
    proto = draw(st.sampled_from([6, 17, 136, 47, 1, 58, 99]))
    addrs = st.binary(min_size=size, max_size=size) | st.just(b"\x0a" * size)
    zone = draw(st.none() | st.sampled_from([0, 1, 7]))
    o = Tuple(family, draw(addrs), draw(addrs), proto, zone=zone)
    if proto in (1, 58):
        o.icmp_type, o.icmp_code, o.icmp_id = draw(st.sampled_from([0, 8, 13, 128, 3])), draw(st.integers(0, 3)), \
            draw(u16)
    elif proto != 99:
        o.sport, o.dport = draw(u16), draw(u16)
    r = o.reversed()
    if proto in (1, 58) and draw(st.booleans()):
        r.icmp_type = ICMP_REPLY_TYPE.get((proto, o.icmp_type), o.icmp_type)
    if draw(st.integers(0, 3)) == 0:  # NAT: another address or port on the reply side
        r.src = draw(addrs)
        if r.sport is not None:
            r.sport = draw(u16)
    if draw(st.integers(0, 7)) == 0:
        r.zone = draw(st.none() | u16)
    f = Flow(family, o, r, status=draw(st.none() | u32), timeout=draw(st.none() | u32),
             mark=draw(st.none() | st.sampled_from([0, 1, 0x12345678])), zone=draw(st.none() | st.sampled_from([0, 3])),
             id=draw(st.none() | u32), synproxy=draw(st.none() | st.just((0, 0, 0)) | st.tuples(u32, u32, u32)))
    if draw(st.integers(0, 9)) == 0:
        f.secmark = draw(u32)
    if proto == 6 and draw(st.booleans()):
        f.tcp = TcpInfo(draw(st.none() | st.integers(0, 9)), draw(st.none() | st.integers(0, 14)), 7,
                        draw(st.none() | st.sampled_from([0, 0x23])), 0x23, 0, 0)
    return f


@st.composite
def filters(draw):
    nets4 = [ipaddress.ip_network(n) for n in ("10.10.0.0/16", "0.0.0.0/1", "127.0.0.1/32")]
    nets6 = [ipaddress.ip_network(n) for n in ("a0a::/16", "::1/128")]
    kw = {}
    if draw(st.booleans()):
        kw["protocols"], kw["protocol_accept"] = frozenset(draw(st.sets(st.sampled_from([6, 17, 1, 58])))), \
            draw(st.booleans())
    if draw(st.booleans()):
        kw["nets4"] = tuple((int(n.network_address), int(n.netmask)) for n in draw(st.sets(st.sampled_from(nets4))))
        kw["nets6"] = tuple((int(n.network_address), int(n.netmask)) for n in draw(st.sets(st.sampled_from(nets6))))
        kw["address_accept"] = draw(st.booleans())
    if draw(st.booleans()):
        kw["states"], kw["state_accept"] = frozenset(draw(st.sets(st.integers(0, 9)))), draw(st.booleans())
    return CompiledFilter(**kw)


def _payload(f: Flow) -> bytes:
    return bytes((f.family, 0, 0, 0)) + encode_flow(f)


def _decoder(filt: CompiledFilter) -> ShapeDecoder:
    return ShapeDecoder(event_factory=event_fill_factory(filt), event_reference=partial(reference_snapshot, filt))


@settings(max_examples=400, deadline=None)
@given(st.lists(event_flows(), min_size=1, max_size=8), filters())
def test_compiled_event_fill_matches_reference(batch, filt):
    dec = _decoder(filt)
    for _ in range(2):  # the first pass compiles the layouts, the second uses them for every message
        for f in batch:
            p = _payload(f)
            ref = dec.decode(p, 0, len(p))
            shape, vals = dec.find(p, 0, len(p))
            if shape is None or shape.event is None:
                continue
            ev = shape.event
            want = reference_snapshot(filt, ref)
            if ev.accept is not None and not ev.accept(vals):
                assert want[0] is False
                continue
            key = ev.key(vals)
            if key is None:  # the reference path decides (a protocol the layout's kind does not fit)
                continue
            assert ev(vals) == want


def test_kernel_layouts_compile():
    """The layouts a kernel sends for TCP, UDP and ICMP (v4 and v6) get a compiled event path."""
    src4, dst4 = b"\x0a\x00\x00\x01", b"\x0a\x00\x00\x02"
    src6, dst6 = b"\x20" + b"\x00" * 14 + b"\x01", b"\x20" + b"\x00" * 14 + b"\x02"
    for fam, s, d in ((AF_INET, src4, dst4), (AF_INET6, src6, dst6)):
        for proto in (6, 17, 1 if fam == AF_INET else 58):
            o = Tuple(fam, s, d, proto, 1000, 80) if proto in (6, 17) else Tuple(fam, s, d, proto, icmp_type=8,
                                                                                   icmp_code=0, icmp_id=5)
            f = Flow(fam, o, o.reversed(), status=0x18e, timeout=120, mark=0, id=1, synproxy=(0, 0, 0))
            if proto == 6:
                f.tcp = TcpInfo(3, 7, 7, 0x23, 0, 0x23, 0)
            dec = _decoder(ACCEPT_ALL)
            p = _payload(f)
            dec.decode(p, 0, len(p))
            shape, _vals = dec.find(p, 0, len(p))
            assert shape is not None and shape.event is not None, (fam, proto)


class _Engine:
    external = None

    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes]] = []

    def on_local_new(self, e, flow, origin) -> None:
        self.sent.append(("new", e.key))

    def on_local_update(self, e, flow, origin) -> None:
        self.sent.append(("upd", e.key))


def _mode() -> SyncCacheMode:
    return SyncCacheMode(1 << 16, RuntimeStats(), lambda f: [True] * len(f), lambda *a: None, lambda line: None,
                         engine=_Engine())


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(event_flows(), st.booleans(), st.sampled_from([None, "inject"])), min_size=1, max_size=10))
def test_mode_event_equals_new_and_upd(events):
    """SyncCacheMode.event after the compiled fill == new()/upd() after a decode: entries, stats, hooks."""
    ref, fast = _mode(), _mode()
    dec = _decoder(ACCEPT_ALL)
    for f, new, origin in events + events:  # the second round updates the entries the first created
        p = _payload(f)
        flow = dec.decode(p, 0, len(p))
        (ref.new if new else ref.upd)(flow, origin)
        shape, vals = dec.find(p, 0, len(p))
        ev = shape.event if shape is not None else None
        key = ev.key(vals) if ev is not None else None
        if key is None:
            (fast.new if new else fast.upd)(flow, origin)
        else:
            fast.event(new, key, ev.fill, vals, origin)
    assert ref.engine.sent == fast.engine.sent
    assert ref.cache.stats == fast.cache.stats

    def slots(m):
        return {k: tuple(getattr(e, s) for s in _ENTRY_SLOTS) for k, e in m.cache.entries.items()}

    assert slots(ref) == slots(fast)


def test_full_cache_refuses_like_add():
    m = _mode()
    m.cache.limit = 0
    dec = _decoder(ACCEPT_ALL)
    f = Flow(AF_INET, Tuple(AF_INET, b"\1" * 4, b"\2" * 4, 17, 1, 2), Tuple(AF_INET, b"\2" * 4, b"\1" * 4, 17, 2, 1),
             status=8)
    p = _payload(f)
    dec.decode(p, 0, len(p))
    shape, vals = dec.find(p, 0, len(p))
    m.event(True, shape.event.key(vals), shape.event.fill, vals, None)
    assert len(m.cache) == 0 and m.cache.stats.add_fail_enospc == 1 and m.engine.sent == []


def test_entry_slots_cover_merge():
    """The snapshot compares every slot Entry.merge may write (a new slot would be noticed here)."""
    assert set(_ENTRY_SLOTS) == set(Entry.__slots__) - {"lifetime", "lastupdate", "dead"}


@settings(max_examples=100, deadline=None)
@given(st.lists(event_flows(), min_size=1, max_size=8), st.lists(event_flows(), max_size=4))
def test_resync_values_equals_resync(known, dumped):
    """An overrun-resync dump through the compiled path sends what resync() sends, and leaves the same cache."""
    ref, fast = _mode(), _mode()
    dec = _decoder(ACCEPT_ALL)
    for f in known:
        p = _payload(f)
        flow = dec.decode(p, 0, len(p))
        ref.new(flow, None)
        fast.new(flow, None)
    ref.engine.sent.clear()
    fast.engine.sent.clear()
    for f in known[::2] + dumped:  # unchanged entries, and new ones
        p = _payload(f)
        flow = dec.decode(p, 0, len(p))
        ref.resync(flow)
        shape, vals = dec.find(p, 0, len(p))
        ev = shape.event if shape is not None else None
        key = ev.key(vals) if ev is not None else None
        if key is None:
            fast.resync(flow)
        else:
            fast.resync_values(key, ev.fill, vals)
    assert ref.engine.sent == fast.engine.sent
    assert ref.cache.stats == fast.cache.stats
    assert {k: (tuple(getattr(e, s) for s in _ENTRY_SLOTS), e.lastupdate) for k, e in ref.cache.entries.items()} == \
        {k: (tuple(getattr(e, s) for s in _ENTRY_SLOTS), e.lastupdate) for k, e in fast.cache.entries.items()}
