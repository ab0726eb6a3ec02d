"""Gap healing (conntrack_tools/daemon/sync/heal.py and its use by the modes), pure: no sockets, no clock.

The decisions under test: which losses make a receiver ask for a resync, when the request goes out
(coalesced, rate-limited, backing off), and that the receive fast path leaves the same state as
``recv``.
"""

from __future__ import annotations

import random

import pytest

from conntrack_tools.daemon.sync.heal import BulkPacer, NackDebt, ResyncPolicy
from conntrack_tools.daemon.sync.modes import Alarm, Ftfw, MsgResult, Notrack
from conntrack_tools.daemon.sync.seq import SeqCounter
from conntrack_tools.daemon.sync.wire import AckHeader, MsgFlag, MsgType, NetHeader, decode_datagram

PEER = "10.0.0.1"


def data(seq: int, flags: int = 0) -> NetHeader:
    return NetHeader(type=MsgType.CT_NEW, flags=flags, seq=seq)


def resyncs_queued(mode) -> int:
    """RESYNC control messages in the TX queue (what the engine would send)."""
    return sum(1 for k, v in mode.tx.items() if isinstance(k, tuple) and k[0] == "ctl" and v.flags & MsgFlag.RESYNC)


# ----------------------------------------------------------------------------------- the policy


def test_one_loss_one_request_after_settle():
    p = ResyncPolicy(settle=0.25, holdoff=2.0)
    assert not p.due(0.0)
    p.loss(10.0, 3, "gap")
    assert not p.due(10.1)  # the rest of the burst may still come
    assert p.due(10.3)
    assert not p.due(10.4)  # once
    assert (p.requests, p.gap) == (1, 3)


def test_losses_of_a_burst_are_coalesced_into_one_request():
    p = ResyncPolicy(settle=0.25, holdoff=2.0)
    for i in range(100):
        p.loss(5.0 + i * 0.001, 1, "gap")
    assert p.due(5.5) and p.requests == 1 and p.coalesced == 99


def test_requests_are_rate_limited_and_back_off_while_losses_continue():
    p = ResyncPolicy(settle=0.25, holdoff=2.0, max_holdoff=60.0)
    times = []
    t = 0.0
    while t < 300.0:  # a link that loses something every 100 ms, for 5 minutes
        p.loss(t, 1, "gap")
        if p.due(t):
            times.append(t)
        t = round(t + 0.1, 1)
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert gaps[0] == pytest.approx(4.0, abs=0.15)  # second request: hold-off doubled once
    assert all(g >= 2.0 for g in gaps)
    assert max(gaps) == pytest.approx(60.0, abs=0.15)  # capped
    assert len(times) <= 2 + 300 // 60 + 5  # the bound: ~one full resend per max hold-off


def test_holdoff_resets_after_a_quiet_period():
    p = ResyncPolicy(settle=0.25, holdoff=2.0, max_holdoff=60.0)
    for t in (0.0, 1.0, 5.0, 6.0, 13.0, 14.0):  # losses right after each request
        p.loss(t, 1, "gap")
        p.due(t + 0.3)
    assert p.current_holdoff > 2.0
    assert p.due(80.0)  # the last loss's request
    assert not p.due(200.0)  # a quiet minute and more since: back to the first hold-off
    assert p.current_holdoff == 2.0


def test_no_loss_no_request():
    p = ResyncPolicy()
    p.loss(1.0, 0, "gap")
    assert not any(p.due(t) for t in (1.0, 2.0, 100.0))
    assert p.requests == 0


def test_nack_debt_is_paid_by_in_order_messages_and_overdue_otherwise():
    d = NackDebt()
    d.nacked(0.0, 5)
    for _ in range(5):
        d.paid()
    assert d.overdue(10.0, 3.0) == 0
    d.nacked(20.0, 4)
    d.paid()
    assert d.overdue(21.0, 3.0) == 0  # not yet
    assert d.overdue(23.5, 3.0) == 3
    assert d.overdue(30.0, 3.0) == 0  # forgotten once reported


def test_small_nacks_do_not_postpone_an_open_debt():
    """Lost keepalives NACKed one by one while 30 re-sends never come: the fallback fires 3 s after
    the debt last grew, not 3 s after the last of those small NACKs."""
    d = NackDebt()
    d.nacked(0.0, 30)
    for t in (1.0, 2.0, 2.9):
        d.nacked(t, 1)
    assert d.overdue(3.1, 3.0) == 30


def test_a_new_nack_over_an_open_debt_takes_the_larger_not_the_sum():
    d = NackDebt()
    d.nacked(0.0, 100)
    for _ in range(80):
        d.paid()  # 20 of the 100 re-sent messages were lost again ...
    d.nacked(0.5, 20)  # ... and NACKed again
    for _ in range(20):
        d.paid()
    assert d.owed == 0


# ----------------------------------------------------------------------------------- NOTRACK


def test_notrack_gap_asks_for_a_resync_once():
    m = Notrack(SeqCounter(lambda: 1))
    assert m.recv(PEER, data(100), 0.0) == MsgResult.DATA
    assert m.recv(PEER, data(101), 0.0) == MsgResult.DATA
    assert m.recv(PEER, data(110), 0.1) == MsgResult.DATA  # 102..109 lost
    assert m.recv(PEER, data(120), 0.2) == MsgResult.DATA  # 111..119 lost
    assert m.policy.gap == 17
    assert not m.heal(0.2)
    assert m.heal(0.5)
    m.request_resync()
    assert resyncs_queued(m) == 1
    assert not m.heal(0.6)
    out = m.xmit(lambda o: o)
    assert [msg.header.flags for d in out for msg in decode_datagram(d)] == [MsgFlag.RESYNC]


def test_notrack_in_order_and_first_message_are_no_loss():
    m = Notrack(SeqCounter(lambda: 1))
    for s in range(5000, 5100):
        m.recv(PEER, data(s), 0.0)
    assert m.policy.gap == 0 and not m.heal(10.0)


def test_notrack_socket_drop_asks_for_a_resync():
    m = Notrack(SeqCounter(lambda: 1))
    m.socket_dropped(1.0, 7)
    assert m.heal(1.5) and m.policy.socket_drop == 7


def test_alarm_never_asks():
    m = Alarm(SeqCounter(lambda: 1))
    m.recv(PEER, data(1), 0.0)
    m.recv(PEER, data(50), 0.0)
    m.socket_dropped(0.0, 9)
    assert not m.heal(100.0) and m.policy.socket_drop == 9


# ----------------------------------------------------------------------------------- FTFW


def test_ftfw_answered_nack_needs_no_resync():
    m = Ftfw(SeqCounter(lambda: 1), window=1000)
    m.recv(PEER, data(10), 0.0)
    m.recv(PEER, data(15), 0.0)  # 11..14 NACKed
    assert m.peers[PEER].debt.owed == 4
    for s in range(16, 20):  # the sender re-sends them with new seqs
        assert m.recv_fast(PEER, s, 0.5)
    assert not any(m.heal(t) for t in (1.0, 4.0, 10.0))
    assert m.policy.requests == 0


def test_ftfw_unanswered_nack_falls_back_to_a_resync():
    m = Ftfw(SeqCounter(lambda: 1), window=1000)
    m.recv(PEER, data(10), 0.0)
    m.recv(PEER, data(15), 0.0)  # 11..14 NACKed, never re-sent (a C sender whose queue moved on)
    assert not m.heal(2.0)
    assert not m.heal(3.1)  # overdue now: a loss for the policy, which lets it settle
    assert m.heal(3.4)
    assert m.policy.unanswered_nack == 4 and m.policy.requests == 1


def test_ftfw_socket_drops_ask_for_a_resync_once_the_burst_is_over():
    """Drops are NACKed as gaps first; a quiet DROP_QUIET after the last one, they are a loss for the policy
    (the NACK debt can be paid by new traffic while the sender no longer holds the lost messages)."""
    m = Ftfw(SeqCounter(lambda: 1))
    m.socket_dropped(0.0, 5)
    m.socket_dropped(0.8, 3)  # still dropping: no request yet
    assert not m.heal(1.0) and not m.heal(1.7) and m.policy.socket_drop == 0
    assert not m.heal(1.8)  # quiet since 0.8: a loss of 8 now, which the policy lets settle
    assert m.policy.socket_drop == 8
    assert m.heal(2.1) and m.policy.requests == 1
    assert not any(m.heal(t) for t in (3.0, 10.0, 100.0))  # one request for the whole burst


@pytest.mark.parametrize("cls", [Ftfw, Notrack, Alarm])
def test_fast_path_leaves_the_state_recv_leaves(cls):
    """recv_fast and recv on the same random stream (in order, gaps, repeats): same peer state."""
    rnd = random.Random(7)
    fast, slow = cls(SeqCounter(lambda: 1)), cls(SeqCounter(lambda: 1))
    seq, now = 1000, 0.0
    for _ in range(3000):
        r = rnd.random()
        seq = seq + (1 if r < 0.9 else rnd.randint(2, 5) if r < 0.97 else -rnd.randint(0, 3))
        now += 0.001
        h = data(seq & 0xFFFFFFFF)
        if not fast.recv_fast(PEER, h.seq, now):
            fast.recv(PEER, h, now)
        slow.recv(PEER, h, now)
    pf, ps = fast.peers[PEER], slow.peers[PEER]
    assert pf == ps
    assert list(fast.tx) == list(slow.tx) and fast.policy == slow.policy


def test_fast_path_refuses_unknown_peers_and_gaps():
    m = Ftfw(SeqCounter(lambda: 1))
    assert not m.recv_fast(PEER, 5, 0.0)  # unknown
    m.recv(PEER, data(5), 0.0)
    assert not m.recv_fast(PEER, 7, 0.0)  # gap: needs the NACK logic
    assert m.recv_fast(PEER, 6, 0.0)


# ----------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("cls", [Notrack, Ftfw])
def test_spoofed_sequence_numbers_cannot_cause_a_resync_storm(cls):
    """A minute of random headers (any seq, any flags) at 1000/s: requests stay within the bound."""
    rnd = random.Random(11)
    m = cls(SeqCounter(lambda: 1))
    now, requests = 0.0, 0
    while now < 60.0:
        for _ in range(250):
            flags = rnd.choice((0, 0, 0, int(MsgFlag.ALIVE), int(MsgFlag.HELLO), int(MsgFlag.NACK)))
            mtype = MsgType.CTL if flags & (MsgFlag.ALIVE | MsgFlag.NACK) else MsgType.CT_NEW
            seq = rnd.getrandbits(32)
            h = (AckHeader(type=mtype, flags=flags, seq=seq, from_=rnd.getrandbits(32), to=rnd.getrandbits(32))
                 if flags & MsgFlag.NACK else NetHeader(type=mtype, flags=flags, seq=seq))
            m.recv(rnd.choice(("10.0.0.1", "10.0.0.2")), h, now)
        now += 0.25
        if m.heal(now):
            requests += 1
            m.request_resync()
        m.tx.clear()
    assert requests <= 8  # 2 + 4 + 8 + 16 + 32 s of hold-off fill the minute
    assert m.policy.requests == requests
    if cls is Notrack:  # every gap is a loss (FTFW NACKs them, and a NACK every 4 ms keeps its debt open)
        assert requests >= 3 and m.policy.coalesced > 1000


def test_kernel_drops_of_a_full_receive_socket_are_counted():
    """SyncChannel.kernel_drops on a real UDP socket (loopback, no root): the drop counter moves."""
    import socket

    from conntrack_tools.daemon.sync.channels import SyncChannel

    class _Cfg:
        interface = None
        transport = None
        rcvbuf = None

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        rx.bind(("127.0.0.1", 0))
        rx.setblocking(False)
        ch = SyncChannel(_Cfg())  # type: ignore[arg-type]
        assert ch.kernel_drops(rx) == 0
        for _ in range(200):
            tx.sendto(b"x" * 1000, rx.getsockname())
        got = len(ch.recv(rx))
        dropped = ch.kernel_drops(rx)
        assert dropped > 0 and got + dropped + len(ch.recv(rx)) == 200
        assert ch.stats.drop_kernel == dropped and ch.kernel_drops(rx) == 0
    finally:
        rx.close()
        tx.close()


def test_a_receive_buffer_that_dropped_doubles_up_to_the_cap():
    """grow_rcvbuf: RcvSocketBuffer doubled per drop episode up to RCVBUF_GROWTH_MAX, counted in the stats."""
    import os
    import socket

    from conntrack_tools.daemon.sync.channels import RCVBUF_GROWTH_MAX, SyncChannel

    class _Cfg:
        interface = None
        transport = None
        rcvbuf = 1 << 20

    rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ch = SyncChannel(_Cfg())  # type: ignore[arg-type]
        assert ch.stats.rcvbuf == 1 << 20 and ch.stats.rcvbuf_grown == 0
        sizes = []
        while (size := ch.grow_rcvbuf(rx)) is not None:
            sizes.append(size)
        assert sizes == [1 << n for n in range(21, RCVBUF_GROWTH_MAX.bit_length())]
        assert ch.stats.rcvbuf == RCVBUF_GROWTH_MAX and ch.stats.rcvbuf_grown == len(sizes)
        if os.geteuid() == 0:  # SO_RCVBUFFORCE: the kernel books twice what was asked
            assert rx.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) == 2 * RCVBUF_GROWTH_MAX
        _Cfg.rcvbuf = 2 * RCVBUF_GROWTH_MAX  # a configured buffer above the cap is never grown
        assert SyncChannel(_Cfg()).grow_rcvbuf(rx) is None  # type: ignore[arg-type]
    finally:
        rx.close()


# ------------------------------------------------------------------------------ the sender's pace (BulkPacer)


def test_pacer_unpaced_until_asked() -> None:
    p = BulkPacer()
    assert p.delay(0.0, 2000) == 0.0


def test_pacer_halves_while_the_receiver_keeps_asking_then_recovers() -> None:
    p = BulkPacer(rate=100_000, min_rate=10_000, window=30)
    p.on_request(100.0)
    assert p.delay(100.1, 2000) == 2000 / 100_000  # 200k entries in 2 s
    rates = []
    for i in range(1, 6):
        p.on_request(100.0 + 5 * i)  # still losing: asks again within the window
        rates.append(p.current)
    assert rates == [50_000, 25_000, 12_500, 10_000, 10_000]  # halved, never below the floor
    assert p.delay(125.0 + 29.9, 1000) == 1000 / 10_000
    assert p.delay(125.0 + 30.0, 1000) == 0.0 and p.current is None  # a quiet window: full speed again
    p.on_request(200.0)
    assert p.current == 100_000 and p.requests == 7
