"""Readiness for keepalived's track_file (conntrack_tools/daemon/readiness.py): the decisions, pure."""

from __future__ import annotations

import pytest

from conntrack_tools.daemon.readiness import ReadinessFile, ReadinessTracker
from conntrack_tools.daemon.sync.modes import Ftfw, Notrack
from conntrack_tools.daemon.sync.seq import SeqCounter
from conntrack_tools.daemon.sync.wire import AckHeader, MsgFlag, MsgType, decode_datagram


def test_ready_after_the_answer_to_our_request_and_a_quiet_second():
    t = ReadinessTracker(quiet=1.0)
    assert not t.update(0.5, None, None, False, False)  # nothing asked yet
    t.resync_requested(1.0)
    assert not t.update(1.2, 1.1, 1.15, True, False)  # request not through yet
    assert not t.update(1.5, 1.4, 1.45, False, False)  # the bulk is still arriving
    assert not t.update(2.2, 2.0, 1.9, False, True)  # a NACK is open
    assert t.update(3.0, 2.9, 1.9, False, False)
    assert t.ready and not t.update(9.0, 9.0, 8.9, False, False)  # once


def test_a_silent_peer_never_makes_us_ready():
    t = ReadinessTracker(quiet=1.0)
    t.resync_requested(1.0)
    assert not any(t.update(x, None, None, False, False) for x in (2.0, 10.0, 100.0))


def test_a_peer_with_an_empty_cache_answers_with_alives_only():
    t = ReadinessTracker(quiet=1.0)
    t.resync_requested(1.0)
    assert not t.update(1.5, 1.4, None, False, False)
    assert not t.update(2.1, 2.0, None, False, False)  # a quiet second from the peer's first sign of life
    assert t.update(2.5, 2.4, None, False, False)


def test_a_peer_slow_to_answer_is_not_quiet_before_its_bulk():
    """Found by tests/netns/test_failback_readiness_keepalived.py: the peer's daemon did not run for 4 s after
    our request; the first thing heard from it was not the end of its bulk (rate and silence alike)."""
    t = ReadinessTracker(quiet=1.0)
    t.resync_requested(1.0)
    for now in (1.25, 2.0, 3.0, 4.0, 5.0):
        assert not t.update(now, None, None, False, False, received=0, request_sent=True)
    assert not t.update(5.25, 5.1, None, False, False, received=3)  # woke up: ALIVE/ACK first ...
    assert not t.update(5.5, 5.5, 5.4, False, False, received=4000)  # ... then the bulk
    assert not t.update(6.0, 6.0, 5.9, False, False, received=20000)
    assert not t.update(6.5, 6.5, 6.45, False, False, received=30000)
    assert t.update(7.5, 7.5, 6.45, False, False, received=30003)


def test_alarm_waits_one_refresh_period_after_the_peer_was_first_heard():
    t = ReadinessTracker(refresh_time=15.0)
    assert not t.update(3.0, None, None, False, False)
    assert not t.update(4.0, 3.5, 3.5, False, False)
    assert not t.update(18.0, 17.9, 17.9, False, False)
    assert t.update(18.6, 18.5, 18.5, False, False)


def test_ftfw_resync_request_is_pending_until_acknowledged():
    m = Ftfw(SeqCounter(lambda: 100))
    m.request_resync()
    assert m.resync_pending()
    out = m.xmit(lambda o: o)
    (msg,) = [x for d in out for x in decode_datagram(d)]
    assert msg.header.flags & MsgFlag.RESYNC and m.resync_pending()  # sent, not acknowledged
    m.recv("peer", AckHeader(type=MsgType.CTL, flags=int(MsgFlag.ACK), seq=7, from_=msg.header.seq,
                             to=msg.header.seq), 1.0)
    assert not m.resync_pending()


def test_ftfw_resync_request_pushed_out_of_a_full_resend_queue_is_asked_again():
    m = Ftfw(SeqCounter(lambda: 100), rsq_size=2)
    m.request_resync()
    m.xmit(lambda o: o)
    for k in range(3):
        m.enqueue(k, (1, b"x"))
    m.xmit(lambda o: o)  # the RESYNC is evicted by the data messages ...
    assert m.resync_pending()
    again = [x for d in m.xmit(lambda o: o) for x in decode_datagram(d)]
    assert [x.header.flags & MsgFlag.RESYNC for x in again] == [MsgFlag.RESYNC]  # ... and sent again


def test_notrack_resync_request_is_through_once_sent():
    m = Notrack(SeqCounter(lambda: 100))
    m.request_resync()
    assert m.resync_pending()
    m.xmit(lambda o: o)
    assert not m.resync_pending()


def test_readiness_file_holds_the_weight_then_zero(tmp_path):
    logged = []
    f = ReadinessFile(str(tmp_path / "ready"), -100, lambda lvl, msg: logged.append(msg))
    f.not_ready()
    assert (tmp_path / "ready").read_text() == "-100\n"
    f.ready()
    assert (tmp_path / "ready").read_text() == "0\n" and len(logged) == 1
    f.ready()
    assert len(logged) == 1
    f.not_ready()
    assert (tmp_path / "ready").read_text() == "-100\n"
    bad = ReadinessFile(str(tmp_path / "absent" / "ready"), -5, lambda lvl, msg: logged.append(msg))
    bad.not_ready()
    assert "cannot write readiness file" in logged[-1]


# ------------------------------------------------------------------ General { Readiness { ... } } (beyond C)


BASE = "General {{\n UNIX {{ Path /run/ct.ctl }}\n{body}}}\nStats {{\n}}\n"


def parse(body: str):
    from conntrack_tools.daemon.config import parse_config

    return parse_config(BASE.format(body=body))


def test_readiness_block_in_general():
    cfg = parse(" Readiness {\n  File /run/conntrackd/ready\n  Weight -50\n }\n")
    assert (cfg.general.readiness_file, cfg.general.readiness_weight) == ("/run/conntrackd/ready", -50)
    w = [f for f in cfg.warnings if f.code == "c-incompatible"]
    assert len(w) == 1 and "Readiness" in w[0].message and (w[0].line, w[0].column) == (3, 2)
    assert parse(" Readiness {\n  File /r\n }\n").general.readiness_weight == -100
    plain = parse("")
    assert plain.general.readiness_file is None
    assert not [f for f in plain.warnings if f.code == "c-incompatible"]


@pytest.mark.parametrize(("body", "where", "words"), [
    (" Readiness {\n  Weight 5\n }\n", (4, 10), "negative"),
    (" Readiness {\n  Weight +5\n }\n", (4, 10), "negative"),
    (" Readiness {\n  Weight 0\n }\n", (4, 10), "negative"),
    (" Readiness {\n  File relative\n }\n", (4, 8), "absolute path"),
    (" Readiness {\n  Listen 127.0.0.1:1\n }\n", (4, 3), "Readiness"),
    (" File /run/x\n", (3, 2), "General"),
])
def test_readiness_block_errors(body, where, words):
    from conntrack_tools.daemon.config import ConfigError

    with pytest.raises(ConfigError) as ei:
        parse(body)
    assert (ei.value.line, ei.value.column) == where and words in ei.value.message, ei.value


def test_readiness_words_stay_names_elsewhere():
    """'File' and 'Weight' are names for C's scanner: still valid where C takes a name."""
    from conntrack_tools.daemon.config import parse_config

    text = ("General {\n UNIX { Path /run/ct.ctl }\n}\nSync {\n Mode FTFW { }\n UDP {\n  IPv4_address 10.0.0.1\n"
            "  IPv4_Destination_Address 10.0.0.2\n  Port 3780\n  Interface Weight\n }\n"
            " Options { ExpectationSync { File Readiness } }\n}\n")
    cfg = parse_config(text)
    assert cfg.sync is not None and cfg.sync.channels[0].interface == "Weight"
    assert cfg.sync.expectation_helpers == ("File", "Readiness")


def test_ready_when_the_bulk_is_over_although_live_changes_never_pause():
    """An FTP session opens a data connection every 0.5 s: never a quiet second, but the bulk's rate
    (here 20,000 messages in 2 s) falls to the live rate."""
    t = ReadinessTracker(quiet=1.0)
    t.resync_requested(1.0)
    received = 0
    ready_at = None
    for i in range(1, 41):  # 0.25-s ticks from t=1.25 to t=11
        now = 1.0 + i * 0.25
        received += 2500 if now <= 3.0 else 1  # the bulk, then live changes (4 messages per second)
        if t.update(now, now - 0.01, now - 0.01, False, False, received):
            ready_at = now
            break
    assert ready_at is not None and 3.75 <= ready_at <= 4.25, ready_at
    assert t.peak >= 9000


def _ticks(t: ReadinessTracker, rate_at, start: float, end: float) -> float | None:
    """Feed ``t`` 0.25-s ticks of messages at ``rate_at(now)`` per second; the time it became ready."""
    received, now = 0.0, start
    t.resync_requested(start, 0)
    while now < end:
        now += 0.25
        received += rate_at(now) * 0.25
        if t.update(now, now - 0.01, now - 0.01, False, False, int(received)):
            return now
    return None


def test_ready_when_live_changes_stay_above_a_tenth_of_a_small_bulk():
    """The lab under five FTP clients: a bulk of ~2,500 messages, then 430 live messages/s for good.
    The rate never falls to a tenth of its peak; it levels off at a steady half of it or less."""
    t = ReadinessTracker(quiet=1.0)
    ready_at = _ticks(t, lambda now: 10_000 + 430 if now <= 0.25 else 430, 0.0, 30.0)  # whole before the 1st tick
    assert ready_at is not None and 2.0 <= ready_at <= 3.0, ready_at


def test_a_paced_bulk_is_not_levelled_off():
    """A bulk sent at a steady 5,000 messages/s for 6 s (over 430 live/s) is flat at its peak: not the end."""
    t = ReadinessTracker(quiet=1.0)
    ready_at = _ticks(t, lambda now: 5430 if now <= 6.0 else 430, 0.0, 30.0)
    assert ready_at is not None and 6.5 <= ready_at <= 9.0, ready_at  # a tenth of the peak a second after


def test_live_changes_before_the_bulk_are_not_its_end():
    """A peer slow to answer (its live changes arrive, its bulk not yet): a steady rate is its own peak."""
    t = ReadinessTracker(quiet=1.0)
    assert _ticks(t, lambda now: 430, 0.0, 10.0) is None


def test_a_slowing_bulk_is_not_the_end():
    t = ReadinessTracker(quiet=1.0)
    t.resync_requested(0.0)
    received = 0
    for i in range(1, 17):  # 4 s of a bulk whose rate halves every second: 1/8 of its peak is not the end
        now = i * 0.25
        received += int(4000 / 2 ** int(now))
        assert not t.update(now, now, now, False, False, received), now


def test_live_changes_below_the_floor_count_as_quiet():
    t = ReadinessTracker(quiet=1.0)
    t.resync_requested(1.0)
    assert not t.update(1.5, 1.4, 1.45, False, False, 10)
    assert not t.update(1.75, 1.7, 1.7, False, False, 20)
    assert t.update(2.5, 2.4, 2.45, False, False, 40)  # 30 messages in the last second: < 50/s


def test_an_unacknowledged_request_counts_as_through_two_quiet_periods_after_it_left():
    """FTFW: a peer that never pauses sends no idle ACK; the request that left 2 s ago is through
    (a lost one would have been NACKed and sent again by then)."""
    t = ReadinessTracker(quiet=1.0)
    t.resync_requested(1.0)
    received = 0
    for i in range(1, 13):
        now = 1.0 + i * 0.25
        received += 4
        ready = t.update(now, now - 0.01, now - 0.01, True, False, received, request_sent=True)
        assert ready == (now >= 3.25), now  # sent first seen at 1.25: through at 3.25
        if ready:
            break


def test_asking_again_restarts_the_wait():
    """Losses during the bulk make the receiver ask again: ready only after the bulk of the last request."""
    t = ReadinessTracker(quiet=1.0)
    t.resync_requested(1.0)
    assert not t.update(1.5, 1.4, 1.45, False, False, 5000)
    assert not t.restart(1.6)  # not ready yet: a restart, nothing to publish
    assert t.requested_at == 1.6 and t.peak == 0.0
    assert not t.update(2.2, 2.1, 1.5, False, False, 5000)  # quiet since 1.5, but the new request is 0.6 s old
    assert not t.update(2.7, 2.65, 1.5, False, False, 5000)  # the peer was first heard again at 2.1 ...
    assert t.update(3.15, 3.1, 1.5, False, False, 5000)  # ... last data before the request: quiet a second after
    assert not t.restart(3.0)  # no effect once ready
    assert t.requested_at == 1.6


def test_a_ready_node_asking_again_waits_for_that_bulk():
    """keepalived restarted, the daemon did not: the backup hook's -n re-arms a ready node (the engine's call)."""
    t = ReadinessTracker(quiet=1.0)
    t.resync_requested(1.0)
    assert not t.update(1.5, 1.4, 1.45, False, False)
    assert t.update(3.0, 2.9, 1.9, False, False)
    assert not t.restart(10.0)  # losses on a ready node without rearm: nothing changes
    assert t.ready and t.requested_at == 1.0
    assert t.restart(10.0, rearm=True)  # the caller publishes "not ready"
    assert not t.ready and t.requested_at == 10.0 and t.answered_at is None
    assert not t.update(10.5, 10.4, 10.45, False, False)  # the new bulk is arriving
    assert not t.update(11.2, 11.1, 10.9, False, False)  # answered at 10.4, last data 10.9: not a second yet
    assert t.update(12.0, 11.9, 10.9, False, False)
    assert t.ready


def test_alarm_is_never_rearmed():
    t = ReadinessTracker(quiet=1.0, refresh_time=5.0)
    assert t.update(6.0, 1.0, 1.0, False, False)
    assert not t.restart(7.0, rearm=True)  # C honours no resync in ALARM: nothing to wait for
    assert t.ready


def test_a_rearmed_node_counts_the_rate_from_its_new_request():
    """keepalived restarted under load: the -n's bulk (whole before the next tick) is seen as the peak."""
    t = ReadinessTracker(quiet=1.0)
    assert _ticks(t, lambda now: 5000 if now <= 0.5 else 0, 0.0, 3.0) is not None
    received = 1_000_000  # the running count by then
    assert t.restart(20.0, rearm=True, received=received)
    received += 2500  # the bulk, before the next tick
    ready_at = None
    for i in range(1, 40):
        now = 20.0 + i * 0.25
        received += 107  # 430 live messages per second
        if t.update(now, now - 0.01, now - 0.01, False, False, received):
            ready_at = now
            break
    assert ready_at is not None and 22.0 <= ready_at <= 23.0, ready_at


def test_what_readiness_waits_on_is_named():
    """The transition record shows it (operators: "why does this node not take the VIPs back?")."""
    t = ReadinessTracker(quiet=1.0)
    t.resync_requested(0.0, 0)
    assert not t.update(0.25, None, None, True, False, 0)
    assert t.waiting_on == ("no peer heard since the request", "resync request not through")
    received = 0
    for i in range(2, 12):  # a peer that keeps sending 2,000 messages/s, NACKs open
        now = i * 0.25
        received += 500
        assert not t.update(now, now - 0.01, now - 0.01, False, True, received)
    assert t.waiting_on[0] == "NACKed messages not re-sent yet"
    assert t.waiting_on[1].startswith("bulk not over (2000 messages/s, peak 2000)"), t.waiting_on
    assert t.update(3.8, 3.7, 2.75, False, False, received)  # a quiet second, NACKs paid
    assert t.waiting_on == ()


def test_an_overdue_request_is_said_once_per_request():
    """The daemon logs what readiness waits on once, `slow_after` seconds after each request still open."""
    t = ReadinessTracker(quiet=1.0, slow_after=30.0)
    assert not t.overdue(100.0)  # nothing asked yet
    t.resync_requested(0.0, 0)
    assert not t.overdue(29.9)
    assert t.overdue(30.0)
    assert not t.overdue(31.0)  # once
    t.restart(40.0, received=0)  # asked again: a new request, said again 30 s after it
    assert not t.overdue(69.0)
    assert t.overdue(70.0)
    t.restart(80.0, received=0)
    assert t.update(90.0, 85.0, 85.0, False, False, 0)  # ready: nothing overdue
    assert not t.overdue(200.0)


def test_a_bulk_that_arrives_before_the_first_tick_still_counts():
    """The lab's trace (churn run, session 10): the request's seed, then the peer's whole answer (1,212 messages in
    1 ms) before the next tick 0.207 s later, then ~290 live messages/s.  Every 1-s window from the first tick on
    starts after the bulk; only the window from the seed holds it.  Without it the peak stayed ~310, the live rate
    never fell to half of it, and the node stayed not ready for minutes."""
    t = ReadinessTracker(quiet=1.0)
    t.resync_requested(0.0, 0)
    t.update(0.05, 0.04, 0.04, False, False, 0)
    assert t.update(2.0, 1.9, 1.0, False, False, 0)  # ready after the start-up request (quiet peer)
    assert t.restart(100.0, rearm=True, received=0)
    received = 1212  # the bulk, all before the first tick
    now = 100.207
    ready_at = None
    while now < 130.0:
        if t.update(now, now - 0.01, now - 0.01, False, False, received):
            ready_at = now
            break
        now += 0.25
        received += 73  # ~290/s live
    assert t.peak >= 1000, t.peak
    assert ready_at is not None and ready_at - 100.0 <= 3.0, (ready_at, t.rate, t.peak, t.waiting_on)
