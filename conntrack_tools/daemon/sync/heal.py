"""When a receiver asks its peers for a resync: the gap-healing policy (beyond C), sans-I/O.

Why: a NOTRACK receiver only counts a sequence gap (C too): what was lost stays lost.  An FTFW
sender may not hold a NACKed message any more (C's resend queue is bounded and C 1.4.7 under
heavy loss sometimes never answers), and a datagram the kernel dropped on a full socket shows up
nowhere but in the socket's drop counter.  The one recovery every sender honours, ours and
C 1.4.7 in NOTRACK and FTFW, is a RESYNC request, answered with the sender's whole cache.  That
is expensive, so losses are coalesced and requests rate-limited:

* a loss arms one request ``settle`` seconds later, so that the rest of a burst's losses
  join it;
* after a request the next one waits at least the current hold-off; losses seen meanwhile are
  coalesced into that one request;
* the hold-off starts at ``holdoff`` and doubles, up to ``max_holdoff``, each time losses
  follow a request within the hold-off (a link that keeps losing); it falls back after a
  quiet ``max_holdoff``.

Bound: at most one full-cache resend per hold-off (2 s, doubling to 60 s under continuous
loss) per receiver, however many datagrams are lost.  ALARM never asks (C ignores RESYNC there):
its refresh re-sends every entry within RefreshTime, which is its bound.

FTFW's own recovery stays first: a gap is NACKed and counts here only when the NACK is left
unanswered (:class:`NackDebt`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["LOSS_REASONS", "BulkPacer", "NackDebt", "ResyncPolicy"]

LOSS_REASONS = ("gap", "socket_drop", "unanswered_nack")


@dataclass(slots=True)
class ResyncPolicy:
    """Coalesces losses into rate-limited resync requests; ``due(now)`` says when to ask."""

    settle: float = 0.25
    holdoff: float = 2.0
    max_holdoff: float = 60.0
    current_holdoff: float = 2.0
    pending_since: float | None = None  # first loss not yet covered by a request
    last_request: float | None = None
    last_loss: float | None = None
    requests: int = 0
    coalesced: int = 0  # losses that joined a pending request instead of causing one
    gap: int = 0  # messages lost per reason (seq numbers, datagrams, NACKed seqs)
    socket_drop: int = 0
    unanswered_nack: int = 0

    def __post_init__(self) -> None:
        self.current_holdoff = self.holdoff

    def loss(self, now: float, count: int, reason: str) -> None:
        """``count`` messages (or datagrams) were lost for ``reason`` (one of LOSS_REASONS)."""
        if count <= 0:
            return
        setattr(self, reason, getattr(self, reason) + count)
        if self.pending_since is None:
            self.pending_since = now
            if self.last_request is not None and now - self.last_request < self.current_holdoff:
                # the link still loses right after a resync: back off
                self.current_holdoff = min(self.max_holdoff, self.current_holdoff * 2)
        else:
            self.coalesced += 1
        self.last_loss = now

    def due(self, now: float) -> bool:
        """True once when a request should go out now (the caller sends the RESYNC)."""
        if self.pending_since is None:
            if (self.last_request is not None and self.current_holdoff > self.holdoff
                    and now - max(self.last_request, self.last_loss or 0.0) >= self.max_holdoff):
                self.current_holdoff = self.holdoff
            return False
        if now - self.pending_since < self.settle:
            return False
        if self.last_request is not None and now - self.last_request < self.current_holdoff:
            return False
        self.pending_since = None
        self.last_request = now
        self.requests += 1
        return True

    def counters(self) -> dict[str, int | float]:
        return {"requests": self.requests, "coalesced": self.coalesced, "lost_gap": self.gap,
                "lost_socket_drop": self.socket_drop, "lost_unanswered_nack": self.unanswered_nack,
                "holdoff_seconds": self.current_holdoff}


@dataclass(slots=True)
class NackDebt:
    """FTFW receiver: how many NACKed messages a peer still owes us, and since when.

    A sender answers a NACK by re-sending the range with *new* sequence numbers, so the
    receiver cannot see which seqs were filled; it counts in-order data messages instead.  A
    new NACK while a debt is open most likely covers re-sent messages lost again, so the debt
    becomes the larger of the two rather than their sum (a sum would never reach zero under
    steady loss).  New traffic arriving with the re-sends can pay a debt the sender never
    paid: this errs towards "answered", and the gap then heals only with the next loss.
    """

    owed: int = 0
    since: float = 0.0  # when the open debt last grew

    def nacked(self, now: float, count: int) -> None:
        """A NACK of ``count`` messages.  Only one that raises the debt restarts its clock: on a
        lossy link the peer's lost keepalives are NACKed every few seconds, and each would
        otherwise postpone the fallback (seen: 7-23 s after a burst, bench --matrix)."""
        if count > self.owed:
            self.owed = count
            self.since = now

    def paid(self) -> None:
        """One in-order data message arrived."""
        if self.owed:
            self.owed -= 1

    def overdue(self, now: float, timeout: float) -> int:
        """The unpaid debt once ``timeout`` passed since the last NACK (then forgotten), else 0."""
        if not self.owed or now - self.since < timeout:
            return 0
        owed, self.owed = self.owed, 0
        return owed


@dataclass(slots=True)
class BulkPacer:
    """How fast the answer to a RESYNC request leaves (the sender's half of gap healing; beyond C).

    Why: a RESYNC request says the asking receiver lost messages, most often because its socket
    overflowed while a burst came in faster than it could apply it. Sending the whole cache back
    at full speed overflows it again, and every further request costs another full resend (a
    200k-entry NOTRACK pair took 2-3 rounds). So the answer is paced: ``rate`` messages/s after a
    request, halved for each further request within ``window`` seconds (a receiver still losing),
    never below ``min_rate``; after a quiet ``window`` the sender is unpaced again. The TX queue is
    one queue: live events queued meanwhile leave at the same rate, behind the bulk.

    Bound: a 200k-entry cache goes out in 2 s at the first rate, 20 s at the floor.
    """

    rate: float = 100_000.0
    min_rate: float = 10_000.0
    window: float = 30.0
    current: float | None = None  # messages/s; None: unpaced
    last_request: float | None = None
    requests: int = 0

    def on_request(self, now: float) -> None:
        """A peer asked for a resync (its answer is about to be queued)."""
        if self.current is not None and self.last_request is not None and now - self.last_request < self.window:
            self.current = max(self.min_rate, self.current / 2)
        else:
            self.current = self.rate
        self.last_request = now
        self.requests += 1

    def delay(self, now: float, sent: int) -> float:
        """Seconds until the next TX run, after one that sent ``sent`` messages (0: at once)."""
        if self.current is None:
            return 0.0
        if self.last_request is not None and now - self.last_request >= self.window:
            self.current = None
            return 0.0
        return sent / self.current
