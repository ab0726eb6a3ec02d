"""Pure FTFW / NOTRACK / ALARM state machines (conntrack_tools/daemon/sync/modes.py).

The capture replays drive our machine as node B of ``wire-captures/*.decoded.txt``: node A's
datagrams are fed in, and every datagram B sent (all of them produced by its 1-s alarm)
must come out of ``tick()`` + ``xmit()`` byte for byte.
"""

from __future__ import annotations

import re
import struct

import pytest

from conntrack_tools.daemon.sync.modes import Alarm, Ftfw, MsgResult, Notrack, encode_data
from conntrack_tools.daemon.sync.seq import SeqCounter
from conntrack_tools.daemon.sync.wire import (
    AckHeader,
    MsgFlag,
    MsgType,
    NetHeader,
    decode_datagram,
    decode_message,
)
from tests.conftest import REFERENCE

CAPS = REFERENCE / "wire-captures"
_DG = re.compile(r"^\S+ (\S+) datagram \d+ bytes: ([0-9a-f]+)")


def datagrams(name: str) -> list[tuple[str, bytes]]:
    path = CAPS / name
    if not path.exists():
        pytest.skip(f"{path} not available")
    out = []
    for line in path.read_text().splitlines():
        m = _DG.match(line)
        if m and not line.rstrip().endswith("..."):
            out.append((m.group(1), bytes.fromhex(m.group(2))))
    return out


def counter(start: int) -> SeqCounter:
    return SeqCounter(lambda: start)


def body(n: int = 0) -> tuple[int, bytes]:
    return MsgType.CT_NEW, struct.pack("!HHII", 12, 0, 0xC0A80100 + n, 0x08080808)


def render(obj):
    return obj


def headers(datagram: bytes) -> list[NetHeader]:
    return [m.header for m in decode_datagram(datagram)]


@pytest.mark.parametrize("cap", ["ftfw-udp-basic.decoded.txt"])
def test_ftfw_replay_node_b(cap):
    dgs = datagrams(cap)
    b_first = next(decode_message(d).seq for src, d in dgs if src == "10.99.0.2")
    b = Ftfw(counter(b_first), window=300)
    checked = 0
    for src, d in dgs:
        if src == "10.99.0.1":
            for h in headers(d):
                assert b.recv("A", h) in (MsgResult.DATA, MsgResult.CTL)
        else:
            b.tick()
            out = b"".join(b.xmit(render))
            assert out == d, f"B sent {d.hex()}, we would send {out.hex()}"
            checked += 1
    assert checked == 16
    assert b.hello_state == Ftfw.HELLO_DONE


def test_notrack_replay_node_b():
    dgs = datagrams("notrack-udp.decoded.txt")
    b_first = next(decode_message(d).seq for src, d in dgs if src == "10.99.0.2")
    b = Notrack(counter(b_first))
    for src, d in dgs:
        if src == "10.99.0.1":
            for h in headers(d):
                assert b.recv("A", h) in (MsgResult.DATA, MsgResult.CTL)
        else:
            b.tick()
            assert b"".join(b.xmit(render)) == d
    assert b.lost == 0


def test_alarm_ignores_control_and_keeps_no_state():
    a = Alarm(counter(100))
    assert a.recv("p", NetHeader(type=MsgType.CTL, flags=MsgFlag.ALIVE, seq=5)) == MsgResult.CTL
    assert a.recv("p", NetHeader(type=MsgType.CT_NEW, seq=5)) == MsgResult.DATA
    a.tick()
    a.request_resync()
    assert a.xmit(render) == []  # ALARM never sends control messages
    a.enqueue("k", body())
    (msg,) = a.xmit(render)
    assert msg[:1] == b"\x10" and decode_message(msg).seq == 100


def test_alarm_replay_decodes_and_is_all_data():
    dgs = datagrams("alarm-udp.decoded.txt")
    a = Alarm(counter(1))
    n = 0
    for _src, d in dgs:
        for h in headers(d):
            assert a.recv("x", h) == MsgResult.DATA
            n += 1
    assert n > 10


def test_ftfw_resync_request_triggers_bulk_callback():
    dgs = datagrams("ftfw-udp-resync-bulk.decoded.txt")
    a = Ftfw(counter(1))
    calls = []
    a.on_resync = lambda: calls.append(1)
    for src, d in dgs:
        if src == "10.99.0.2":
            for h in headers(d):
                a.recv("B", h)
    assert calls == [1]


# ---------------------------------------------------------------- FTFW algorithm


def data_hdr(seq: int, flags: int = 0) -> NetHeader:
    return NetHeader(type=MsgType.CT_NEW, flags=flags, seq=seq)


def ctl(seq: int, flags: int, fr: int = 0, to: int = 0) -> NetHeader:
    if flags & (MsgFlag.ACK | MsgFlag.NACK | MsgFlag.RESYNC):
        return AckHeader(type=MsgType.CTL, flags=flags, seq=seq, from_=fr, to=to)
    return NetHeader(type=MsgType.CTL, flags=flags, seq=seq)


def sent(f: Ftfw) -> list:
    return [decode_message(m).header for m in f.xmit(render)]


def test_ack_every_window():
    f = Ftfw(counter(1000), window=3)
    for s in (10, 11, 12):
        f.recv("p", data_hdr(s))
    (ack,) = sent(f)
    assert ack.is_ack and (ack.from_, ack.to) == (10, 12)
    assert ack.flags & MsgFlag.HELLO  # we still say hello until a HELLO_BACK


def test_nack_on_gap_then_ack_of_what_came_before():
    f = Ftfw(counter(1000), window=100)
    f.recv("p", data_hdr(10))
    f.recv("p", data_hdr(11))
    assert f.recv("p", data_hdr(15)) == MsgResult.DATA  # the message after the gap is processed
    ack, nack = sent(f)
    assert ack.is_ack and (ack.from_, ack.to) == (10, 11)
    assert nack.is_nack and (nack.from_, nack.to) == (12, 14)
    assert f.peers["p"].tracker.lost == 5  # C counts seq - last + 1 (over-counts by 2), kept for -s


def test_before_is_dropped_and_not_recorded():
    f = Ftfw(counter(1000))
    f.recv("p", data_hdr(10))
    assert f.recv("p", data_hdr(9)) == MsgResult.DROP
    assert f.peers["p"].tracker.last == 10


def test_retransmission_with_new_seqs_on_nack_and_release_on_ack():
    f = Ftfw(counter(500))
    for k in range(5):
        f.enqueue(k, body(k))
    out = sent(f)
    assert [h.seq for h in out] == [500, 501, 502, 503, 504]
    assert len(f.rsq) == 5
    f.recv("p", ctl(77, MsgFlag.NACK, 501, 502))
    again = sent(f)
    assert [h.seq for h in again] == [505, 506]  # same objects, new sequence numbers
    f.recv("p", ctl(78, MsgFlag.ACK, 500, 506))
    assert len(f.rsq) == 0


def test_ack_nack_kept_in_resend_queue_alive_not():
    f = Ftfw(counter(1))
    f.recv("p", data_hdr(10))
    f.tick()  # ack_from_set -> ACK
    (h,) = sent(f)
    assert h.is_ack and len(f.rsq) == 1
    f.tick()  # nothing to acknowledge -> ALIVE
    (h,) = sent(f)
    assert h.is_alive and len(f.rsq) == 1
    assert f.rsqueue_text() == f"resent queue (len=1)\ncontrol -> seq:1 flags:{int(MsgFlag.ACK)}\n"


def test_changed_object_waiting_for_ack_goes_back_to_tx_queue():
    f = Ftfw(counter(1))
    f.enqueue("k", body(1))
    sent(f)
    assert "k" in f.rs_index
    f.enqueue("k", body(2))
    assert "k" not in f.rs_index and len(f.rsq) == 0 and "k" in f.tx


def test_hello_handshake_and_peer_restart_resends_what_it_cannot_nack():
    f = Ftfw(counter(1))
    f.enqueue("k", body())
    (h,) = sent(f)
    assert h.flags & MsgFlag.HELLO
    # peer restarted: its HELLO means it knows nothing. C empties the resend queue (k is lost
    # to the peer); we keep it until the peer's first ACK shows where it started counting.
    f.recv("p", ctl(5, MsgFlag.ALIVE | MsgFlag.HELLO))
    assert len(f.rsq) == 1 and f.peers["p"].fresh
    f.tick()
    (h,) = sent(f)
    assert h.flags & MsgFlag.HELLO_BACK and h.is_ack and h.seq == 2
    f.recv("p", ctl(6, MsgFlag.ACK | MsgFlag.HELLO, 2, 2))  # its first seq of ours: 2, not 1
    assert list(f.tx) == ["k"] and not f.rsq and f.targeted_resent == 1
    (h,) = sent(f)
    assert h.seq == 3 and h.is_data
    f.recv("p", ctl(6, MsgFlag.ALIVE | MsgFlag.HELLO_BACK))
    assert f.hello_state == Ftfw.HELLO_DONE
    f.enqueue("j", body())
    (h,) = sent(f)
    assert not h.flags & (MsgFlag.HELLO | MsgFlag.HELLO_BACK)


def test_hello_with_lower_seq_is_accepted_after_restart():
    f = Ftfw(counter(1))
    for s in range(1000, 1005):
        f.recv("p", data_hdr(s))
    # the peer restarted and now numbers from a lower value: HELLO bypasses the BEFORE check
    assert f.recv("p", data_hdr(50, MsgFlag.HELLO)) == MsgResult.DATA
    assert f.recv("p", data_hdr(51, MsgFlag.HELLO)) == MsgResult.DATA
    assert f.peers["p"].tracker.last == 51


def test_resend_queue_overflow_evicts_oldest():
    f = Ftfw(counter(1), rsq_size=3)
    for k in range(5):
        f.enqueue(k, body(k))
    sent(f)
    assert list(f.rsq) == [3, 4, 5] and f.rsq_overflow == 2


def test_bad_ack_range_is_malformed():
    f = Ftfw(counter(1))
    assert f.recv("p", ctl(3, MsgFlag.ACK, 10, 5)) == MsgResult.BAD


def test_seq_wraparound():
    f = Ftfw(counter(0xFFFFFFFE), window=4)
    for k in range(4):
        f.enqueue(k, body(k))
    out = sent(f)
    assert [h.seq for h in out] == [0xFFFFFFFE, 0xFFFFFFFF, 0, 1]
    f.recv("p", ctl(9, MsgFlag.ACK, 0xFFFFFFFE, 1))
    assert not f.rsq
    for s in (0xFFFFFFFF, 0, 1, 2):
        assert f.recv("q", data_hdr(s)) == MsgResult.DATA
    (ack,) = sent(f)
    assert (ack.from_, ack.to) == (0xFFFFFFFF, 2)


# ---------------------------------------------------------------- beyond C: per-peer state


def test_three_nodes_converge_with_per_peer_state():
    """Three nodes, one multicast group: each one's sequence space is tracked separately."""
    nodes = {n: Ftfw(counter(start), window=5) for n, start in (("a", 1000), ("b", 5000), ("c", 1002))}
    received = {n: set() for n in nodes}

    def deliver(src: str, msgs: list[bytes]) -> None:
        for m in msgs:
            msg = decode_message(m)
            for dst, f in nodes.items():
                if dst != src and f.recv(src, msg.header) == MsgResult.DATA:
                    received[dst].add((src, bytes(m[8:])))

    for rnd in range(20):
        for n, f in nodes.items():
            if rnd < 10:
                f.enqueue((n, rnd), (MsgType.CT_NEW, struct.pack("!HHII", 12, 0, rnd, ord(n))))
            f.tick()
            deliver(n, f.xmit(render))
    for n in nodes:
        assert len(received[n]) == 20, n  # 10 flows from each of the two others
        assert nodes[n].lost == 0 and nodes[n].before == 0
        # only the last round's ACK/NACK controls wait (each ACK releases its own [from, to])
        assert len(nodes[n].rsq) <= 4 and all(e[0] is None for e in nodes[n].rsq.values())


def test_shared_tracker_like_c_would_drop_a_third_nodes_messages():
    """What C does with 3 nodes: one last_seq for everybody -> BEFORE drops (documented)."""
    f = Ftfw(counter(1))
    f.recv("same", data_hdr(5000))
    assert f.recv("same", data_hdr(1001)) == MsgResult.DROP
    g = Ftfw(counter(1))
    g.recv("b", data_hdr(5000))
    assert g.recv("c", data_hdr(1001)) == MsgResult.DATA


def test_resend_queue_waits_for_every_live_peer():
    f = Ftfw(counter(100))
    f.recv("b", ctl(1, MsgFlag.ALIVE), now=10.0)
    f.recv("c", ctl(1, MsgFlag.ALIVE), now=10.0)
    f.enqueue("k", body())
    sent(f)
    f.recv("b", ctl(2, MsgFlag.ACK, 100, 100), now=10.5)
    assert len(f.rsq) == 1  # c has not acknowledged yet
    f.recv("c", ctl(2, MsgFlag.ACK, 100, 100), now=10.6)
    assert len(f.rsq) == 0


def test_encode_data_matches_codec():
    m = encode_data(MsgType.CT_UPD, b"\x00\x08\x00\x05\x00\x00\x00\x0e", 7, MsgFlag.HELLO)
    msg = decode_message(m)
    assert (msg.type, msg.seq, int(msg.flags), msg.header.len) == (MsgType.CT_UPD, 7, MsgFlag.HELLO, 16)


def test_unacked_age_dates_the_oldest_message_the_peer_has_not_acknowledged():
    """The pre-check's lag with direct injection (docs/operations.md): how long what we sent has waited for the
    peer's ACK, to a tick (the engine marks every 250 ms), whatever the entry counts of the two nodes."""
    f = Ftfw(counter(100))
    f.mark(0.0)
    assert f.unacked_age(5.0) == 0.0 and f.backlog_age(5.0) == 0.0  # nothing sent: no lag
    f.enqueue("a", body(1))
    sent(f)  # seq 100, sent between the marks at 0.0 and 1.0
    f.mark(1.0)
    f.enqueue("b", body(2))
    sent(f)  # seq 101
    f.mark(2.0)
    f.mark(3.0)  # nothing sent since 2.0: the mark at 2.0 stays the one that dates 101
    assert f.unacked_age(4.0) == 3.0  # 100 was sent by 1.0: waited at least 3 s
    f.recv("p", ctl(7, MsgFlag.ACK, 100, 100), now=4.0)
    assert f.unacked_age(4.0) == 2.0  # now 101 is the oldest: sent by 2.0
    f.mark(4.25)
    assert [s for s, _ in f._marks] == [102]  # the mark at 1.0 dates nothing left
    f.recv("p", ctl(8, MsgFlag.ACK, 101, 101), now=4.5)
    assert f.unacked_age(4.5) == 0.0 and len(f.rsq) == 0
    f.mark(4.75)
    assert not f._marks  # nothing sent since the last mark, nothing unacknowledged
    f.enqueue("c", body(3))
    sent(f)  # seq 102, after every mark: younger than a tick
    assert f.unacked_age(5.0) == 0.0


def test_unacked_age_counts_evicted_messages_and_wraps():
    f = Ftfw(counter(0xFFFFFFFE), rsq_size=2)
    f.mark(0.0)
    for k in range(3):
        f.enqueue(k, body(k))
    sent(f)  # seqs 0xFFFFFFFE, 0xFFFFFFFF, 0; the first evicted unacknowledged
    f.mark(1.0)
    assert list(f.evicted) == [0xFFFFFFFE] and f.unacked_age(10.0) == 9.0
    f.recv("p", ctl(7, MsgFlag.ACK, 0xFFFFFFFE, 0), now=10.0)
    assert f.unacked_age(10.0) == 0.0


def test_backlog_age_is_how_long_the_tx_queue_stayed_non_empty():
    f = Ftfw(counter(1))
    f.enqueue("a", body(1))
    f.mark(1.0)
    f.mark(1.25)
    assert f.backlog_age(3.0) == 2.0
    sent(f)
    f.mark(3.25)
    assert f.backlog_age(4.0) == 0.0


def test_network_json_says_what_the_peer_has_not_acknowledged():
    """``-s network -o json`` (FTFW): ``resend`` carries the unacknowledged depth and ages the pre-check reads."""
    from types import SimpleNamespace
    from unittest import mock

    from conntrack_tools.daemon.sync import engine as engine_mod
    from conntrack_tools.daemon.transition import TransitionLog

    f = Ftfw(counter(100))
    f.recv("p", ctl(1, MsgFlag.ALIVE), now=0.0)
    f.enqueue("a", body(1))
    sent(f)
    f.mark(1.0)
    f.enqueue("b", body(2))  # queued, not sent
    f.mark(1.25)
    eng = SimpleNamespace(mode=f, mode_name="FTFW", errors={}, injector=None, role="primary", role_since=0.0,
                          role_changes=1, transitions=TransitionLog(0.0), tracker=None, _links_json=lambda: [],
                          _auth_json=lambda: {"enabled": False}, pacer=SimpleNamespace(requests=0, current=0))
    clock = mock.Mock(time=lambda: 3.0, monotonic=lambda: 4.0)
    with mock.patch.object(engine_mod, "time", clock):
        d = engine_mod.SyncDaemonEngine.stats_json(eng)  # type: ignore[arg-type]
    assert d["resend"] == {"rsqueue": 1, "overflow": 0, "evicted_pending": 0, "targeted_resent": 0, "unacked": 1,
                           "txqueue": 1, "oldest_unacked_seconds": 3.0, "tx_backlog_seconds": 2.75}
    assert d["peers"]["p"]["acked"] is None


def test_unacked_age_leaves_our_control_messages_out():
    """Our ACKs wait in the resend queue until the peer acknowledges them, which a peer sending data without a pause
    does only every ACK window: they carry no state, the age and the count are the data messages'."""
    f = Ftfw(counter(1))
    f.recv("p", data_hdr(10))
    f.tick()
    sent(f)  # our ACK, seq 1, in the resend queue
    f.mark(1.0)
    assert len(f.rsq) == 1 and f.unacked() == 0 and f.unacked_age(9.0) == 0.0
    f.enqueue("k", body())
    sent(f)  # data, seq 2
    f.mark(2.0)
    assert f.unacked() == 1 and f.unacked_age(9.0) == 7.0
    f.SCAN_MAX = 1  # past the cap the control message at the head stands in: never a shorter age
    assert f.unacked_age(9.0) >= 7.0
