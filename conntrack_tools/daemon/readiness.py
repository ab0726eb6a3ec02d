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
  and is ready once that request is acknowledged (FTFW: out of the resend queue; NOTRACK has no
  acknowledgement, the request only has to have left), a peer was heard since, no data message
  arrived for ``quiet`` seconds (the peer's bulk send is over) and no NACK is left open;
* ALARM: C honours no resync there; every entry reaches us within one RefreshTime of refresh,
  so ready one RefreshTime after a peer was first heard.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["ReadinessFile", "ReadinessTracker"]


@dataclass(slots=True)
class ReadinessTracker:
    """Decides when the state is complete from what the sync engine saw (no I/O, no clock)."""

    quiet: float = 1.0  # seconds without a data message that end the peer's bulk send
    refresh_time: float | None = None  # ALARM: the refresh period that bounds a full cycle
    requested_at: float | None = None  # when our startup resync request was queued
    first_heard: float | None = None
    ready: bool = False

    def resync_requested(self, now: float) -> None:
        if self.requested_at is None:
            self.requested_at = now

    def update(self, now: float, last_heard: float | None, last_data: float | None, request_pending: bool,
               nack_open: bool) -> bool:
        """True exactly once: on the step to ready."""
        if self.ready:
            return False
        if last_heard is not None and self.first_heard is None:
            self.first_heard = last_heard
        if self.refresh_time is not None:  # ALARM
            done = self.first_heard is not None and now - self.first_heard >= self.refresh_time
        else:
            req = self.requested_at
            done = (req is not None and not request_pending and not nack_open
                    and last_heard is not None and last_heard > req
                    and now - max(req, last_data or req) >= self.quiet)
        self.ready = done
        return done


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
