"""Internal/stats cache: keys, C's counters, update merge semantics, memory per entry."""

from __future__ import annotations

import gc
import socket
import tracemalloc

from conntrack_tools.daemon.cache import Cache, entry_flow, pack_tuple, unpack_tuple
from conntrack_tools.flow import AF_INET, AF_INET6, Flow, TcpInfo, Tuple
from conntrack_tools.formats.text import render_default


def ip(a: str) -> bytes:
    return socket.inet_pton(AF_INET6 if ":" in a else AF_INET, a)


def tcp_flow(sport: int = 1000, *, state: int = 3, status: int | None = 0xE, mark: int | None = None,
             nat: bool = False, zone: int | None = None) -> Flow:
    orig = Tuple(AF_INET, ip("10.0.0.1"), ip("10.0.0.2"), 6, sport, 80)
    reply = orig.reversed()
    if nat:
        reply.dst = ip("192.0.2.1")
    return Flow(AF_INET, orig, reply, status=status, timeout=100, mark=mark, zone=zone, tcp=TcpInfo(state=state),
                use=1)


def test_pack_roundtrip_all_kinds() -> None:
    tuples = [
        Tuple(AF_INET, ip("1.2.3.4"), ip("5.6.7.8"), 17, 53, 4000),
        Tuple(AF_INET, ip("1.2.3.4"), ip("5.6.7.8"), 1, icmp_type=8, icmp_code=0, icmp_id=77),
        Tuple(AF_INET6, ip("2001:db8::1"), ip("2001:db8::2"), 58, icmp_type=128, icmp_code=0, icmp_id=1),
        Tuple(AF_INET6, ip("2001:db8::1"), ip("2001:db8::2"), 132, 1, 2, zone=7),
        Tuple(AF_INET, ip("1.2.3.4"), ip("5.6.7.8"), 47, 0x10, 0x20),
    ]
    for t in tuples:
        for fz in (None, 3):
            assert unpack_tuple(pack_tuple(t, fz)) == (t, fz)


def test_key_is_orig_tuple_plus_zone() -> None:
    c = Cache("internal")
    c.add(tcp_flow(), 1)
    assert c.find(tcp_flow(state=7)) is not None
    assert c.find(tcp_flow(zone=1)) is None
    assert c.find(tcp_flow(sport=1001)) is None


def test_counters_like_c() -> None:
    c = Cache("stats", limit=2)
    e, created = c.update_force(tcp_flow(1), 10)
    assert created and e is not None
    c.update_force(tcp_flow(1, state=7), 11)
    c.add(tcp_flow(2), 12)
    assert c.add(tcp_flow(3), 12) is None  # HashLimit reached: ENOSPC
    c.delete(c.find(tcp_flow(1)))
    s = c.stats
    assert (s.objects, s.active, s.add_ok, s.add_fail, s.add_fail_enospc, s.upd_ok, s.del_ok) == (1, 1, 2, 1, 1, 1, 1)
    c.flush()
    assert (len(c), c.stats.active, c.stats.del_ok, c.stats.flush) == (0, 0, 2, 1)


def test_dead_entries_counted_once() -> None:
    c = Cache("internal")
    e = c.add(tcp_flow(), 1)
    c.mark_dead(e)
    assert (c.stats.active, c.stats.del_ok, c.stats.objects, len(c.live())) == (0, 1, 1, 0)
    c.delete(e)
    assert (c.stats.del_ok, c.stats.objects) == (1, 0)
    e, created = c.update_force(tcp_flow(), 2)
    assert created


def test_update_merges_present_attributes_only() -> None:
    c = Cache("internal")
    e = c.add(tcp_flow(mark=5), 1)
    upd = tcp_flow(state=7, status=None, mark=None)
    upd.reply = None
    c.update(e, upd, 9)
    f = entry_flow(e)
    assert (f.tcp.state, f.status, f.mark, e.lifetime, e.lastupdate) == (7, 0xE, 5, 1, 9)
    assert f.timeout is None and f.use is None  # stripped, as C


def test_reply_stored_only_when_not_mirror() -> None:
    c = Cache("internal")
    plain = c.add(tcp_flow(1), 1)
    nat = c.add(tcp_flow(2, nat=True), 1)
    assert plain.reply is None and nat.reply is not None
    assert entry_flow(nat).reply.dst == ip("192.0.2.1")
    assert entry_flow(plain).reply == tcp_flow(1).reply


def test_rendered_line_like_c_internal_dump() -> None:
    c = Cache("internal")
    e = c.add(tcp_flow(44022, state=3, status=0x8, nat=False), 1)
    assert render_default(entry_flow(e)) == (
        "tcp      6 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=44022 dport=80 [UNREPLIED] "
        "src=10.0.0.2 dst=10.0.0.1 sport=80 dport=44022")


def test_memory_per_entry_below_half_a_kilobyte() -> None:
    """The issue's target (C ≈ 0.5 KB/entry); scaled down to 50k entries to stay fast."""
    n = 50_000
    flows = []
    for i in range(n):
        f = tcp_flow(i % 60000 + 1, status=0x18E, mark=0)
        f.orig.src = (0x0A000000 + i // 60000).to_bytes(4, "big")
        f.reply.dst = f.orig.src
        f.id = 3_000_000_000 + i
        f.ts_start = 1_700_000_000_000_000_000 + i
        flows.append(f)
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    c = Cache("internal", limit=n)
    now = 1_700_000_000
    for f in flows:
        c.add(f, now)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    per_entry = used / n
    assert len(c) == n
    assert per_entry < 500, per_entry


def test_tcp_protoinfo_kept_packed_not_in_extra() -> None:
    """Kernel TCP flows carry window scales and flags: kept in one interned int, not a dict per entry."""
    c = Cache("internal")
    f = tcp_flow(4242)
    f.tcp = TcpInfo(state=3, wscale_orig=7, wscale_reply=6, flags_orig=0x23, mask_orig=0, flags_reply=0x33,
                    mask_reply=None)
    e = c.add(f, 1)
    assert e is not None and e.extra is None and e.tcpx is not None
    assert entry_flow(e).tcp == f.tcp
    c.update(e, tcp_flow(4242, state=7), 2)  # an event with the state only keeps the rest
    assert entry_flow(e).tcp == TcpInfo(state=7, wscale_orig=7, wscale_reply=6, flags_orig=0x23, mask_orig=0,
                                        flags_reply=0x33)
    e2 = c.add(tcp_flow(4243, state=3), 1)
    e2.tcpx = None
    assert entry_flow(e2).tcp == TcpInfo(state=3)


def test_purge_after_a_resync_asks_only_for_entries_the_dump_did_not_return():
    """Overrun resync: the dump proved its entries alive; GETs go only to the others (docs/sync.md S2)."""
    from conntrack_tools.daemon.mode import SyncCacheMode
    from conntrack_tools.daemon.stats import RuntimeStats

    asked: list = []

    def exists(flows):
        asked.extend(flows)
        return [False] * len(flows)  # the kernel has none of those asked

    m = SyncCacheMode(1000, RuntimeStats(), exists, lambda lv, msg: None, lambda line: None)

    def flow(i: int) -> Flow:
        o = Tuple(AF_INET, bytes([10, 0, 0, 1]), bytes([10, 0, 2, i]), 17, 1000 + i, 53)
        return Flow(AF_INET, o, o.reversed(), status=8)

    for i in range(10):
        m.new(flow(i), None)
    m.begin_resync()
    for i in range(7):  # the dump returns 7 of the 10; the other 3 died with their events lost
        m.resync(flow(i))
    m.purge(skip_resynced=True)
    assert sorted(f.orig.dst[3] for f in asked) == [7, 8, 9]
    assert len(m.cache) == 7
    asked.clear()
    m.purge()  # polling mode and the C behaviour: every live entry is asked
    assert len(asked) == 7 and len(m.cache) == 0


def _tuples():
    from hypothesis import strategies as st

    small = st.none() | st.integers(0, 3)
    return st.builds(Tuple, st.sampled_from([AF_INET, AF_INET6]), st.sampled_from([b"\1" * 4, b"\2" * 4, None]),
                     st.sampled_from([b"\1" * 4, b"\2" * 4, None]), st.sampled_from([None, 1, 6, 17, 47, 58]),
                     small, small, small, small, small, small)


def test_reply_mirror_check_agrees_with_packed_comparison():
    """Entry.merge skips packing for the common no-NAT reply; it must decide like the packed comparison."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=600, deadline=None)
    @given(_tuples(), _tuples(), st.booleans())
    def check(orig, reply, make_mirror):
        if make_mirror:
            reply = orig.reversed()
        c = Cache("internal")
        e = c.add(Flow(orig.family, orig, reply), 1, key=b"k")
        packed = pack_tuple(reply)
        assert e.reply == (None if packed == pack_tuple(orig.reversed()) else packed)

    check()


def test_resync_sends_only_what_the_dump_shows_changed():
    """Overrun resync/polling: unchanged entries (timeout aside) are not re-sent, new and changed ones are."""
    from conntrack_tools.daemon.mode import SyncCacheMode
    from conntrack_tools.daemon.stats import RuntimeStats

    sent: list[tuple[str, int]] = []

    class Engine:
        external = None

        def on_local_new(self, e, flow, origin):
            sent.append(("new", flow.orig.dst[3]))

        def on_local_update(self, e, flow, origin):
            sent.append(("upd", flow.orig.dst[3]))

    m = SyncCacheMode(1000, RuntimeStats(), lambda f: [True] * len(f), lambda lv, msg: None, lambda line: None,
                      engine=Engine())

    def flow(i: int, mark: int = 0, timeout: int = 100) -> Flow:
        o = Tuple(AF_INET, bytes([10, 0, 0, 1]), bytes([10, 0, 3, i]), 6, 1000 + i, 80)
        return Flow(AF_INET, o, o.reversed(), status=14, mark=mark, timeout=timeout, tcp=TcpInfo(3, 7, 7, 3, 3, 3, 3))

    for i in range(3):
        m.new(flow(i), None)
    sent.clear()
    m.begin_resync()
    m.resync(flow(0, timeout=50))  # same flow, only the remaining timeout moved on
    m.resync(flow(1, mark=7))  # its mark changed while the events were lost
    m.resync(flow(3))  # created while the events were lost
    assert sent == [("upd", 1), ("new", 3)]


def _key_reference(t: Tuple, flow_zone: int | None) -> bytes:
    """The key layout written out field by field: family, proto, zone flags, src, dst, 6 bytes of L4
    (ports + 0, or ICMP type, code, id + 0), tuple zone, flow zone."""
    import struct

    zero = {AF_INET: b"\0" * 4, AF_INET6: b"\0" * 16}.get(t.family, b"")
    zflags = (1 if t.zone is not None else 0) | (2 if flow_zone is not None else 0)
    if (t.proto or 0) in (1, 58):
        l4 = struct.pack("!BBHH", t.icmp_type or 0, t.icmp_code or 0, t.icmp_id or 0, 0)
    else:
        l4 = struct.pack("!HHH", t.sport or 0, t.dport or 0, 0)
    return (struct.pack("!BBB", t.family, t.proto or 0, zflags) + (t.src or zero) + (t.dst or zero) + l4
            + struct.pack("!HH", t.zone or 0, flow_zone or 0))


def test_pack_tuple_one_struct_path_is_the_layout() -> None:
    """pack_tuple packs IPv4/IPv6 keys in one struct call: byte for byte the field-by-field layout,
    odd families and odd address lengths included (random tuples)."""
    import random

    rnd = random.Random(5)
    for _ in range(5000):
        fam = rnd.choice((AF_INET, AF_INET6, AF_INET, 7))
        alen = {AF_INET: 4, AF_INET6: 16}.get(fam, 4)
        t = Tuple(fam, rnd.choice((None, rnd.randbytes(alen), rnd.randbytes(alen + 1))),
                  rnd.choice((None, rnd.randbytes(alen))), rnd.choice((None, 6, 17, 1, 58, 132, 47)))
        if rnd.random() < 0.5:
            t.sport, t.dport = rnd.randrange(65536), rnd.randrange(65536)
        if rnd.random() < 0.5:
            t.icmp_type, t.icmp_code, t.icmp_id = rnd.randrange(256), rnd.randrange(256), rnd.randrange(65536)
        if rnd.random() < 0.3:
            t.zone = rnd.randrange(65536)
        fz = rnd.choice((None, 0, 5))
        assert pack_tuple(t, fz) == _key_reference(t, fz), t


def test_injected_entries_stay_out_of_the_internal_cache():
    """C internal_cache.c: events of a direct inject are skipped.  A backup that cached them would, when
    the kernel later times its idle copy out, send the peer a DEL for a live flow."""
    from conntrack_tools.daemon.mode import SyncCacheMode
    from conntrack_tools.daemon.stats import RuntimeStats

    sent: list[tuple[str, str | None]] = []

    class Engine:
        external = None

        def on_local_new(self, e, flow, origin):
            sent.append(("new", origin))

        def on_local_update(self, e, flow, origin):
            sent.append(("upd", origin))

        def on_local_destroy(self, e, flow, origin):
            sent.append(("del", origin))

    m = SyncCacheMode(1000, RuntimeStats(), lambda f: [True] * len(f), lambda lv, msg: None, lambda line: None,
                      engine=Engine())
    o = Tuple(AF_INET, bytes([10, 0, 0, 1]), bytes([10, 0, 3, 1]), 6, 1000, 80)
    f = Flow(AF_INET, o, o.reversed(), status=14, timeout=100, tcp=TcpInfo(3, 7, 7, 3, 3, 3, 3))
    m.new(f, "inject")
    m.upd(f, "inject")
    assert len(m.cache) == 0 and sent == []
    assert m.destroy(f, None) is False  # the kernel timed the injected copy out: nothing to tell the peer
    assert sent == []
    m.new(f, "commit")  # a committed entry is this node's from now on (C caches it, does not send it)
    assert len(m.cache) == 1 and sent == [("new", "commit")]
