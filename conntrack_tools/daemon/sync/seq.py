"""32-bit sync sequence numbers (catalog 3.5, src/network.c), sans-I/O.

Why separate from the codec: FTFW, NOTRACK statistics and the resend queue all
need the same wraparound-safe arithmetic, and none of it touches bytes.

C semantics mirrored here:

* one counter per daemon shared by every outgoing message, lazily initialised
  to ``time(NULL)`` on the first transmission (the clock is injected);
* TCP-style ``before``/``after`` on the signed 32-bit difference;
* a single ``last_seq_recv`` for all peers; ``track`` classifies without
  updating, ``update`` records -- FTFW calls them separately;
* the "lost" counter adds ``seq - last + 1`` (mod 2**32) on a gap, which
  over-counts by two; kept as is because ``conntrackd -s`` prints it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum

SEQ_MOD = 1 << 32
SEQ_MASK = SEQ_MOD - 1
_HALF = 1 << 31


def seq_add(seq: int, n: int = 1) -> int:
    """``seq + n`` modulo 2**32."""
    return (seq + n) & SEQ_MASK


def seq_diff(a: int, b: int) -> int:
    """Signed 32-bit ``a - b`` (what C's ``(int32_t)(a - b)`` yields)."""
    d = (a - b) & SEQ_MASK
    return d - SEQ_MOD if d & _HALF else d


def before(seq1: int, seq2: int) -> bool:
    """``before()`` from include/network.h: seq1 precedes seq2 (wrap-safe)."""
    return seq_diff(seq1, seq2) < 0


def after(seq2: int, seq1: int) -> bool:
    """``after(seq2, seq1)`` = ``before(seq1, seq2)``."""
    return before(seq1, seq2)


def between(seq1: int, seq2: int, seq3: int) -> bool:
    """C ``between``: is seq2 <= seq1 <= seq3 (modulo 2**32)?"""
    return ((seq3 - seq2) & SEQ_MASK) >= ((seq1 - seq2) & SEQ_MASK)


class SeqStatus(IntEnum):
    """Result of ``nethdr_track_seq`` (SEQ_UNKNOWN is unreachable for callers)."""

    UNKNOWN = 0
    UNSET = 1
    IN_SYNC = 2
    AFTER = 3
    BEFORE = 4


@dataclass(slots=True)
class SeqTracker:
    """Receiver side: ``last_seq_recv`` plus the two statistics counters."""

    last: int | None = None
    lost: int = 0
    before_count: int = 0

    def expected(self) -> int:
        return 0 if self.last is None else seq_add(self.last)

    def track(self, seq: int) -> tuple[SeqStatus, int]:
        """Classify ``seq`` and return (status, expected seq). Does not record it."""
        if self.last is None:
            return SeqStatus.UNSET, self.expected()
        exp = seq_add(self.last)
        if seq == exp:
            return SeqStatus.IN_SYNC, exp
        if after(seq, exp):
            self.lost += (seq - self.last + 1) & SEQ_MASK
            return SeqStatus.AFTER, exp
        self.before_count += 1
        return SeqStatus.BEFORE, exp

    def update(self, seq: int) -> None:
        """``nethdr_track_update_seq``: remember ``seq`` as the last one received."""
        self.last = seq & SEQ_MASK


@dataclass(slots=True)
class SeqCounter:
    """Sender side: the shared outgoing counter, seeded from the injected clock."""

    clock: Callable[[], float]
    current: int | None = None

    def next(self) -> int:
        """Return the seq for the next outgoing message and advance."""
        if self.current is None:
            self.current = int(self.clock()) & SEQ_MASK
        seq = self.current
        self.current = seq_add(seq)
        return seq
