"""Flow <-> sync message conversion (ct2msg/msg2ct), external cache, commit messages."""

from __future__ import annotations

import dataclasses
import errno
import re
from ipaddress import IPv4Address

import pytest

from conntrack_tools.daemon.cache import pack_tuple
from conntrack_tools.daemon.sync.convert import flow_to_sync, sync_to_create_flow, update_flow
from conntrack_tools.daemon.sync.external import ExternalCache, _delete_msg, _timeout_for, build_entry, commit
from conntrack_tools.daemon.sync.wire import CT_TYPES, FlowTuple, SyncFlow, decode_datagram, encode_flow_message
from conntrack_tools.flow import IPS_EXPECTED, TCP_FLAG_BE_LIBERAL
from conntrack_tools.netlink.attrs import NLM_F_ACK, CtMsg, ct_type
from conntrack_tools.netlink.codec import NLMSG_HDRLEN, decode_flow, encode_lookup, iter_messages
from tests.conftest import REFERENCE

_DELETE_T = ct_type(CtMsg.DELETE)
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
    assert _timeout_for(e.value, None, 1010.0) == sf.timeout - 10
    assert _timeout_for(e.value, 5, 1010.0) == 5
    e = build_entry(dataclasses.replace(sf, timeout=None), 1000.0, False)
    assert e.timeout is None
    assert _timeout_for(e.value, None, 1010.0) == 60  # C's fallback
    assert _timeout_for(build_entry(sf, 1000.0, False).value, None, 990.0) == sf.timeout - 60  # clock went back


def test_value_view_and_refresh():
    sf = captured_flows()[0]
    now = [1000.25]
    c = ExternalCache(10, clock=lambda: now[0])
    e = c.new(sf)
    assert (e.lastupdate, e.lifetime, e.timeout, e.related) == (1000.25, 1000, sf.timeout, False)
    assert e.body == build_entry(sf, 0.0, False).body
    assert e.flow() == decode_flow(e.body, 0, len(e.body))
    now[0] = 2000.5
    (e2,) = [c.upd(dataclasses.replace(sf, timeout=None))]  # no timeout: keeps the old one and the lifetime
    assert (e2.lastupdate, e2.lifetime, e2.timeout) == (2000.5, 1000, sf.timeout)
    e3 = c.upd(dataclasses.replace(sf, timeout=7))
    assert (e3.lifetime, e3.timeout) == (1000, 7)
    assert [x.value for x in c] == [e3.value] and c.stats.upd_ok == 2


def _values(n: int, now: float = 1000.0) -> ExternalCache:
    c = ExternalCache(1 << 20, clock=lambda: now)
    for i in range(n):
        c.new(SyncFlow(FlowTuple(IPv4Address(0x0A000000 + i), IPv4Address(0x0A630001), 6 if i % 2 else 17,
                                 1000 + i % 50000, 443), status=0x18E, tcp_state=3 if i % 2 else None,
                       timeout=100 + i if i % 5 else None, zone=i if i % 7 == 0 else None,
                       master=FlowTuple(IPv4Address(1), IPv4Address(2), 6, 1, 21) if i % 11 == 3 else None))
    return c


class _FakeSock:
    """Records the batches commit sends; answers with the errors ``fail(msg_type, flow)`` gives."""

    def __init__(self, fail=lambda mtype, f: None) -> None:
        self.seq = 0
        self.sent: list[tuple[int, int, int, object]] = []  # (type, flags, seq, flow)
        self.fail = fail

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def batch_raw(self, data, last_seq):
        errors = {}
        msgs = list(iter_messages(bytes(data)))
        assert msgs[-1][2] == last_seq
        for i, (mtype, flags, seq, pid, start, end) in enumerate(msgs):
            assert pid == 0 and bool(flags & NLM_F_ACK) == (i == len(msgs) - 1)
            f = decode_flow(data, start, end)
            self.sent.append((mtype, flags & ~NLM_F_ACK, seq, f))
            err = self.fail(mtype, f)
            if err:
                errors[seq] = err
        return errors

    def batch(self, msgs):
        errors = {}
        for seq, m in msgs:
            (mtype, flags, mseq, _pid, start, end), = list(iter_messages(m))
            assert mseq == seq
            f = decode_flow(m, start, end)
            self.sent.append((mtype, flags, seq, f))
            err = self.fail(mtype, f)
            if err:
                errors[seq] = err
        return errors


def test_commit_messages_equal_create_msg():
    c = _values(3000)
    sock = _FakeSock()
    assert commit(c, sock, None, now=1010.0) == (3000, 0)
    masters = [e for e in c if not e.related]
    related = [e for e in c if e.related]
    assert related and masters
    want = [(e.create_msg(0, _timeout_for(e.value, None, 1010.0))) for e in masters + related]
    assert len(sock.sent) == len(want)
    seqs = [s for _t, _fl, s, _f in sock.sent]
    assert len(set(seqs)) == len(seqs) and sock.seq == max(seqs)
    for (mtype, flags, _s, f), m in zip(sock.sent, want, strict=True):
        (wtype, wflags, _ws, _p, start, end), = list(iter_messages(m))
        assert (mtype, flags) == (wtype, wflags)
        assert f == decode_flow(m, start, end)
    assert {f.timeout for *_x, f in sock.sent} >= {60, 91}
    sock = _FakeSock()
    assert commit(c, sock, 33) == (3000, 0)
    assert {f.timeout for *_x, f in sock.sent} == {33}
    assert c.commit_ok == 6000


def test_commit_eexist_deletes_and_creates_again():
    c = _values(600)
    first = {e.key for i, e in enumerate(c) if i % 3 == 0}
    state = {"deleted": set()}

    def fail(mtype, f):
        k = pack_tuple(f.orig, f.zone)
        if mtype == _DELETE_T:
            state["deleted"].add(k)
            return errno.ENOENT if len(state["deleted"]) % 2 else None
        if k in first and k not in state["deleted"]:
            return errno.EEXIST
        if f.orig.sport == 1007:
            return errno.EINVAL
        return None

    sock = _FakeSock(fail)
    ok, failed = commit(c, sock, None, now=1000.0)
    assert (ok, failed) == (599, 1)
    dels = [(s, f) for t, _fl, s, f in sock.sent if t == _DELETE_T]
    assert {pack_tuple(f.orig, f.zone) for _s, f in dels} == first
    for s, f in dels:  # the delete cut from the value is the one encode_lookup builds
        e = next(e for e in c if e.key == pack_tuple(f.orig, f.zone))
        assert _delete_msg(e.value, s) == encode_lookup(CtMsg.DELETE, e.flow(), s)


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


def test_apply_with_odd_clocks_never_raises():
    sf = captured_flows()[0]
    msg = encode_flow_message(0, sf, 1)
    for t in (-5.0, 1e12, 0.0):
        c = ExternalCache(10, clock=lambda t=t: t)
        assert c.apply(0, msg, 8, len(msg)) or c.new(sf)
        (e,) = list(c)
        assert e.lastupdate == t and 0 <= e.lifetime <= 0xFFFFFFFF
