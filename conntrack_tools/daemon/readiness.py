"""Beyond C: is this node's synced state complete? Published for keepalived as a ``track_file``.

Why: a node that restarts and preempts before its resync from the peer has finished takes the
VIPs with an empty (or half-full) state table, and the first packets of every flow it lacks are
dropped as invalid (docs/failover.md).  keepalived reads a ``track_file`` without starting a
process: with ``General { Readiness { File PATH  Weight -N } }`` the daemon keeps ``-N`` in the
file until its state is complete and ``0`` from then on (``weight 1`` in keepalived's
``track_file`` block adds the value to the priority).  A peer that is gone does not hold a node
back: keepalived makes the only node master whatever its priority.

When the state is complete (:class:`ReadinessTracker`, pure):

* no sync (statistics mode), or no peer configured to ask: at once;
* NOTRACK and FTFW: the daemon asks its peers for a resync at start (as ``StartupResync on``),
  and is ready once that request is through (FTFW: acknowledged, or sent ``2 * quiet`` seconds ago:
  a peer that transmits without a pause never reaches its 1-s idle ACK, C's and ours alike, and a
  lost request is NACKed and sent again within that time; NOTRACK has no acknowledgement, the
  request only has to have left), a peer was heard since, no NACK is left open, and the peer's
  bulk send is over: no data message for ``quiet`` seconds, or (a pair whose live changes never
  pause for a second, found in the lab with an FTP session's data connections)
  the message rate over the last ``quiet`` seconds has fallen to ``ratio`` of its peak since the
  request, or below ``floor`` messages per second, or has levelled off: it is at most half the
  peak and within ``level`` of the rate over the ``quiet`` seconds before (found with a small
  table under many short connections: 430 live messages/s after a bulk that peaked at 2,500/s is
  above a tenth of the peak, and the node stayed not ready for 160 s; a bulk is sent as fast as
  it goes, so its own rate does not fall to a steady half of its peak and stay there).  The rate
  counts from the request: a small bulk arrives whole within one tick.  The wire has no
  end-of-bulk marker (C sends none); the rate comes from the peers' sequence numbers, so no
  per-message work is added;
* ALARM: C honours no resync there; every entry reaches us within one RefreshTime of refresh,
  so ready one RefreshTime after a peer was first heard.
"""

from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass, field

__all__ = ["ReadinessFile", "ReadinessTracker"]


@dataclass(slots=True)
class ReadinessTracker:
    """Decides when the state is complete from what the sync engine saw (no I/O, no clock)."""

    quiet: float = 1.0  # seconds without a data message that end the peer's bulk send
    refresh_time: float | None = None  # ALARM: the refresh period that bounds a full cycle
    requested_at: float | None = None  # when our startup resync request was queued
    first_heard: float | None = None
    ready: bool = False
    ratio: float = 0.1  # the bulk is over when the message rate fell to this share of its peak ...
    floor: float = 50.0  # ... or below this many messages per second (live changes only) ...
    level: float = 0.2  # ... or, at most half the peak, within this share of the previous window's rate
    peak: float = 0.0  # highest message rate over `quiet` seconds since the request
    sent_at: float | None = None  # when our request was first seen sent (FTFW: before its ACK)
    answered_at: float | None = None  # when a peer was first heard after the request: the quiet second starts there
    rate: float = 0.0  # the message rate over the last `quiet` seconds, at the last update
    waiting_on: tuple[str, ...] = ()  # what the last update found unmet (the transition record shows it)
    slow_after: float = 30.0  # seconds after a request before overdue() says it once
    _said_overdue: bool = False
    _samples: deque[tuple[float, int]] = field(default_factory=deque)

    def resync_requested(self, now: float, received: int | None = None) -> None:
        """``received``: the running count update() is given, at the request (see restart())."""
        if self.requested_at is None:
            self.requested_at = now
            if received is not None:
                self._samples.append((now, received))

    def restart(self, now: float, rearm: bool = False, received: int | None = None) -> bool:
        """A new resync request (messages lost, or ``-n``): complete only once its bulk is in.
        Before we were ready, found at 200,000 entries: a receiver that drops part of a bulk asks
        again and again, and the rate of a bulk it is still absorbing can dip below the criterion
        between two requests.  Once ready, only with ``rearm`` (the engine's call: a backup asking
        again): such a node lacks what that bulk brings, and preempting while it absorbs the bulk
        leaves the live changes queued behind it late (docs/failover.md).  ALARM asks nothing.
        True when a ready tracker went back to not ready (the caller publishes that)."""
        if (self.ready and not rearm) or self.requested_at is None or self.refresh_time is not None:
            return False
        was_ready = self.ready
        self.ready = False
        self._said_overdue = False
        self.requested_at = now
        self.sent_at = None
        self.answered_at = None
        self.peak = 0.0
        self._samples.clear()
        if received is not None:
            # The rate counts from the request: a small bulk can arrive whole before the next tick, and
            # its peak would be missed (then a steady live rate is its own peak and never levels off).
            self._samples.append((now, received))
        return was_ready

    def update(self, now: float, last_heard: float | None, last_data: float | None, request_pending: bool,
               nack_open: bool, received: int | None = None, request_sent: bool = False) -> bool:
        """True exactly once: on the step to ready.  ``received``: messages received from the peers so
        far (any running count; None = judge by silence only); ``request_sent``: our pending request
        has left (FTFW: still waiting for its ACK)."""
        if self.ready:
            return False
        if request_sent and self.sent_at is None and self.requested_at is not None:
            self.sent_at = now
        if request_pending and self.sent_at is not None and now - self.sent_at >= 2 * self.quiet:
            request_pending = False  # through: see the module docstring
        if last_heard is not None and self.first_heard is None:
            self.first_heard = last_heard
        if self.refresh_time is not None:  # ALARM
            done = self.first_heard is not None and now - self.first_heard >= self.refresh_time
            self.waiting_on = () if done else ("one RefreshTime after a peer was first heard",)
        else:
            req = self.requested_at
            rate_fell = received is not None and req is not None and self._rate_fell(now, received)
            if req is not None and self.answered_at is None and last_heard is not None and last_heard > req:
                self.answered_at = last_heard
            # Found with a peer that was slow to answer (stopped for seconds): the quiet second counts from
            # when the peer was first heard after our request, not from the request; else a peer that
            # wakes up is "quiet" before its bulk has even started.
            start = self.answered_at
            over = start is not None and (now - max(start, last_data or start) >= self.quiet
                                          or (rate_fell and now - start >= self.quiet))
            done = over and not request_pending and not nack_open
            self.waiting_on = () if done else tuple(why for why, unmet in (
                ("no peer heard since the request", start is None),
                ("resync request not through", request_pending),
                ("NACKed messages not re-sent yet", nack_open),
                (f"bulk not over ({self.rate:.0f} messages/s, peak {self.peak:.0f})", start is not None and not over),
            ) if unmet)
        self.ready = done
        return done

    def overdue(self, now: float) -> bool:
        """True once per request, ``slow_after`` seconds after it while still not ready: the daemon then
        logs what it waits on (found: one failback in the lab waited 178 s and nothing said why)."""
        req = self.requested_at
        if self.ready or self._said_overdue or req is None or now - req < self.slow_after:
            return False
        self._said_overdue = True
        return True

    def _rate_fell(self, now: float, received: int) -> bool:
        """The rate over the last `quiet` seconds (from the newest sample at least that old) against
        the peak, and against the rate over the `quiet` seconds before that window."""
        samples = self._samples
        samples.append((now, received))
        q = self.quiet
        while len(samples) > 1 and now - samples[1][0] >= 2 * q:
            samples.popleft()  # the oldest sample left is the newest one at least 2 q old
        base = next((x for x in reversed(samples) if now - x[0] >= q), None)
        if base is None:
            return False
        t0, c0 = base
        rate = self.rate = (received - c0) / (now - t0)
        first = samples[0]
        # The peak also over the window from the oldest sample kept (the request's seed, at first): a bulk that
        # arrives whole between the request and the next tick lies before every newer base, and was missed (found
        # in the lab: 1,200 messages within 1 ms, 50 ms after the request, then 300 live messages/s that never
        # fell to half of a "peak" of 328; the failback waited 142-168 s).
        self.peak = max(self.peak, rate, (received - first[1]) / (now - first[0]))
        if rate <= max(self.floor, self.ratio * self.peak):
            return True
        if now - first[0] < 2 * q or t0 <= first[0]:
            return False
        before = (c0 - first[1]) / (t0 - first[0])
        return rate <= 0.5 * self.peak and abs(rate - before) <= self.level * max(rate, before)


class ReadinessFile:
    """The track_file: written atomically (keepalived may read it at any time)."""

    def __init__(self, path: str, weight: int, log) -> None:
        self.path = path
        self.weight = weight
        self.log = log
        self.value: int | None = None

    def write(self, value: int) -> None:
        if value == self.value:
            return
        tmp = f"{self.path}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as fh:
                fh.write(f"{value}\n")
            os.replace(tmp, self.path)
        except OSError as exc:
            self.log("warning", f"cannot write readiness file `{self.path}': {exc.strerror}")
            return
        self.value = value

    def not_ready(self) -> None:
        self.write(self.weight)

    def ready(self) -> None:
        if self.value != 0:
            self.log("notice", f"state complete: readiness file `{self.path}' set to 0")
        self.write(0)
