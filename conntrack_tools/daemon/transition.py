"""Beyond C: the record of the node's last VRRP transition, for ``-s ... -o json`` and the metrics.

Why: after a failover the first questions are "when did this node take over, from what, how much
state did it put into the kernel and how long did that take, and how long did a restarted node
wait for its resync before it was ready".  C answers with scattered log lines (``Committed N new
entries``, ``commit has taken S seconds``); this keeps the answers in one place, next to the role
the engine already learns from the notify hook's requests (``engine._note_role``).

Pure (no clock, no I/O): the engine passes the times in.  Only the JSON and metrics views show
it; C's text output of ``-s`` is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Transition", "TransitionLog"]


@dataclass(slots=True)
class Transition:
    """One role change, as the notify hook revealed it."""

    at: float  # wall clock of the role change
    from_role: str | None  # None: the first role since the daemon started
    to_role: str
    committed: int | None = None  # entries the commit put into the kernel (None: no commit ran)
    commit_failed: int = 0
    commit_seconds: float | None = None


@dataclass(slots=True)
class TransitionLog:
    """The last transition, the number of transitions and the readiness wait of the last resync readiness
    waited for (the daemon's start, or a backup's -n)."""

    started: float  # when the daemon asked its peers for the resync that readiness waits for
    last: Transition | None = None
    count: int = 0
    ready_at: float | None = None

    def role(self, now: float, old: str | None, new: str) -> None:
        self.last = Transition(now, old, new)
        self.count += 1

    def commit(self, ok: int, failed: int, seconds: float) -> None:
        """The first commit after becoming primary belongs to that transition (later manual ones don't)."""
        t = self.last
        if t is not None and t.to_role == "primary" and t.committed is None:
            t.committed, t.commit_failed, t.commit_seconds = ok, failed, seconds

    def ready(self, now: float) -> None:
        if self.ready_at is None:
            self.ready_at = now

    def waiting(self, now: float) -> None:
        """Not ready again (a backup asked for a resync): the wait shown is that resync's."""
        self.started, self.ready_at = now, None

    @property
    def readiness_wait(self) -> float | None:
        return None if self.ready_at is None else max(0.0, self.ready_at - self.started)

    def as_json(self) -> dict:
        """Numbers become metrics (``conntrackd_sync_transition_*``); role names stay JSON-only."""
        wait = self.readiness_wait
        d: dict = {"count": self.count, "ready": int(self.ready_at is not None),
                   "readiness_wait_seconds": None if wait is None else round(wait, 6)}
        t = self.last
        if t is not None:
            d.update({"at": t.at, "from": t.from_role, "to": t.to_role, "to_primary": int(t.to_role == "primary"),
                      "committed": t.committed, "commit_failed": t.commit_failed,
                      "commit_seconds": None if t.commit_seconds is None else round(t.commit_seconds, 6)})
        return d
