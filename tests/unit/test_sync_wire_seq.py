"""Sequence-number arithmetic for FTFW (catalog 3.5), wraparound included."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from conntrack_tools.daemon.sync.seq import (
    SEQ_MASK,
    SeqCounter,
    SeqStatus,
    SeqTracker,
    after,
    before,
    between,
    seq_add,
    seq_diff,
)

u32 = st.integers(0, SEQ_MASK)


def test_before_after_across_wrap() -> None:
    assert before(0xFFFFFFFF, 0) and after(0, 0xFFFFFFFF)
    assert before(1, 2) and not before(2, 1) and not before(5, 5)
    # Exactly half a range apart, each is 'before' the other: the int32 cast in C.
    assert before(0x80000001, 1) and before(1, 0x80000001)
    assert seq_diff(0, 0xFFFFFFFF) == 1 and seq_diff(0xFFFFFFFF, 0) == -1


def test_between_inclusive_with_wrap() -> None:
    assert between(0xFFFFFFFF, 0xFFFFFFFE, 1) and between(0, 0xFFFFFFFE, 1) and between(1, 0xFFFFFFFE, 1)
    assert not between(2, 0xFFFFFFFE, 1) and not between(0xFFFFFFFD, 0xFFFFFFFE, 1)


@settings(max_examples=300, deadline=None)
@given(u32, st.integers(1, (1 << 31) - 1))
def test_property_before_is_offset_sign(a: int, n: int) -> None:
    b = seq_add(a, n)
    assert before(a, b) and after(b, a) and not before(b, a)
    assert between(seq_add(a, n // 2), a, b)


def test_tracker_classification_like_nethdr_track_seq() -> None:
    t = SeqTracker()
    assert t.track(100) == (SeqStatus.UNSET, 0)
    t.update(100)
    assert t.track(101) == (SeqStatus.IN_SYNC, 101)
    assert t.track(105) == (SeqStatus.AFTER, 101)
    assert t.lost == 105 - 100 + 1  # C's formula, over-counts by two
    assert t.track(90) == (SeqStatus.BEFORE, 101)
    assert t.track(100) == (SeqStatus.BEFORE, 101)
    assert t.before_count == 2 and t.last == 100  # track() never records


def test_tracker_wraps() -> None:
    t = SeqTracker()
    t.update(SEQ_MASK)
    assert t.track(0) == (SeqStatus.IN_SYNC, 0)
    assert t.track(3)[0] is SeqStatus.AFTER
    assert t.track(SEQ_MASK - 5)[0] is SeqStatus.BEFORE


def test_counter_seeds_from_injected_clock_once_and_wraps() -> None:
    calls = []

    def clock() -> float:
        calls.append(1)
        return 1795684538.7

    c = SeqCounter(clock)
    assert [c.next(), c.next(), c.next()] == [1795684538, 1795684539, 1795684540]
    assert len(calls) == 1
    c = SeqCounter(lambda: 0, current=SEQ_MASK)
    assert [c.next(), c.next()] == [SEQ_MASK, 0]
