"""Flow <-> sync message conversion (ct2msg/msg2ct), external cache, commit messages."""

from __future__ import annotations

import re

import pytest

from conntrack_tools.daemon.sync.convert import flow_to_sync, sync_to_create_flow, update_flow
from conntrack_tools.daemon.sync.external import ExternalCache, _timeout_for, build_entry
from conntrack_tools.daemon.sync.wire import CT_TYPES, SyncFlow, decode_datagram, encode_flow_message
from conntrack_tools.flow import IPS_EXPECTED, TCP_FLAG_BE_LIBERAL
from conntrack_tools.netlink.codec import NLMSG_HDRLEN, decode_flow, iter_messages
from tests.conftest import REFERENCE

_DG = re.compile(r"^\S+ (\S+) datagram \d+ bytes: ([0-9a-f]+)$")


def captured_flows() -> list[SyncFlow]:
    out = []
    for name in ("ftfw-udp-basic.decoded.txt", "ftfw-udp-resync-bulk.decoded.txt", "notrack-udp.decoded.txt"):
        p = REFERENCE / "wire-captures" / name
        if not p.exists():
            continue
        for line in p.read_text().splitlines():
            m = _DG.match(line)
            if m:
                for msg in decode_datagram(bytes.fromhex(m.group(2))):
                    if msg.type in CT_TYPES:
                        out.append(msg.flow())
    if not out:
        pytest.skip("wire captures not available")
    return out


def kernel_view(sf: SyncFlow):
    """The flow as the sender's kernel reports it (reply tuple with NAT applied)."""
    f = sync_to_create_flow(sf, window_tracking=True)
    r = f.reply
    if sf.snat is not None:
        r.dst = sf.snat.packed
    if sf.dnat is not None:
        r.src = sf.dnat.packed
    if sf.spat is not None:
        r.dport = sf.spat
    if sf.dpat is not None:
        r.sport = sf.dpat
    f.status = sf.status
    f.timeout = sf.timeout
    return f


def test_ct2msg_reproduces_every_captured_message():
    flows = captured_flows()
    assert len(flows) > 20
    for sf in flows:
        got = flow_to_sync(kernel_view(sf))
        assert got == sf
        assert encode_flow_message(0, got, 1) == encode_flow_message(0, sf, 1)


def test_create_flow_is_what_c_gives_the_kernel():
    for sf in captured_flows():
        f = sync_to_create_flow(sf)
        assert not (f.status or 0) & IPS_EXPECTED
        assert f.reply.src == f.orig.dst and f.reply.dst == f.orig.src  # swapped, NAT by CTA_NAT_*
        if sf.orig.l4proto == 6:
            assert f.tcp.flags_orig == f.tcp.mask_reply == TCP_FLAG_BE_LIBERAL
        if sf.snat is not None:
            assert f.nat_src.min_ip == sf.snat.packed and f.nat_src.min_port == sf.spat
        u = update_flow(f)
        assert u.nat_src is None and u.master is None and u.helper is None


def test_external_cache_counters_and_commit_message():
    flows = captured_flows()[:4]
    c = ExternalCache(100, clock=lambda: 1000.0)
    for sf in flows:
        c.new(sf)
    assert len(c) == len({build_entry(sf, 0, False).key for sf in flows})
    c.upd(flows[0])
    c.new(flows[1])  # NEW on an existing entry replaces it
    assert c.stats.upd_ok == 1
    assert c.delete(flows[2]) and not c.delete(flows[2])
    assert c.stats.del_fail_enoent == 1
    e = next(iter(c))
    msg = e.create_msg(77, 123)
    (mtype, flags, seq, _pid, start, end), = list(iter_messages(msg))
    assert seq == 77 and end == len(msg)
    f = decode_flow(msg, start, end)
    assert f.timeout == 123 and f.orig is not None
    assert start == NLMSG_HDRLEN


def test_commit_timeout_estimate():
    sf = captured_flows()[0]
    e = build_entry(sf, 1000.0, False)
    assert _timeout_for(e, None, 1010.0) == sf.timeout - 10
    assert _timeout_for(e, 5, 1010.0) == 5
    e.timeout = None
    assert _timeout_for(e, None, 1010.0) == 60  # C's fallback


def test_alarm_expiry_oldest_first():
    flows = captured_flows()[:3]
    now = [0.0]
    c = ExternalCache(100, clock=lambda: now[0])
    for i, sf in enumerate(flows):
        now[0] = float(i)
        c.upd(sf)
    now[0] = 10.0
    c.upd(flows[0])  # refreshed: moves to the end
    assert len(c) == 3
    assert c.expire(11.5, 10.0) == 1  # the one refreshed at t=1
    assert c.expire(12.5, 10.0) == 1  # t=2; flows[0] was refreshed at t=10 and stays
    assert len(c) == 1 and c.stats.active == 1
    assert c.expire(20.0, 10.0) == 1 and len(c) == 0


def test_external_dump_has_no_reply_tuple():
    sf = captured_flows()[0]
    c = ExternalCache(10)
    c.new(sf)
    (text,) = list(c.dump_lines(False, False))
    assert text.count("src=") == 1 and "[active since" in text
