"""The daemon's single event loop: selectors for file descriptors, a heap of timers, signals.

Why not asyncio: every input is a plain non-blocking fd with a callback (netlink event and
resync sockets, the UNIX control socket, sync channels later), exactly C's select() loop,
and a synchronous loop keeps the hot path (one recv, many decoded events) free of task
overhead.  Signals arrive through ``signal.set_wakeup_fd`` so handlers run inside the loop.
"""

from __future__ import annotations

import heapq
import itertools
import os
import selectors
import signal
import time
from collections.abc import Callable

__all__ = ["Loop", "Timer"]


class Timer:
    """A one-shot alarm (C's alarm_block); re-arm with Loop.add_timer."""

    __slots__ = ("when", "callback", "cancelled", "seq")

    def __init__(self, when: float, callback: Callable[[], None], seq: int) -> None:
        self.when = when
        self.callback = callback
        self.cancelled = False
        self.seq = seq

    def __lt__(self, other: Timer) -> bool:
        return (self.when, self.seq) < (other.when, other.seq)

    def cancel(self) -> None:
        self.cancelled = True


class Loop:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.sel = selectors.DefaultSelector()
        self.timers: list[Timer] = []
        self.clock = clock
        self.running = False
        self._seq = itertools.count()
        self._signal_handlers: dict[int, Callable[[int], None]] = {}
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.sel.register(self._wake_r, selectors.EVENT_READ, self._on_wakeup)

    # ---------------------------------------------------------------- fds
    def add_reader(self, fd: int, callback: Callable[[], None]) -> None:
        self.sel.register(fd, selectors.EVENT_READ, callback)

    def add_writer(self, fd: int, callback: Callable[[], None]) -> None:
        self.sel.register(fd, selectors.EVENT_WRITE, callback)

    def remove(self, fd: int) -> None:
        try:
            self.sel.unregister(fd)
        except (KeyError, ValueError):
            pass

    # ---------------------------------------------------------------- timers
    def add_timer(self, delay: float, callback: Callable[[], None]) -> Timer:
        t = Timer(self.clock() + delay, callback, next(self._seq))
        heapq.heappush(self.timers, t)
        return t

    def every(self, interval: float, callback: Callable[[], None]) -> Timer:
        """A periodic timer; cancel the returned handle's ``.current`` to stop it."""
        holder: dict[str, Timer] = {}

        def tick() -> None:
            callback()
            holder["t"] = self.add_timer(interval, tick)

        holder["t"] = self.add_timer(interval, tick)
        return holder["t"]

    def _run_timers(self) -> float | None:
        """Run the timers due when this pass started.

        A timer armed (or come due) during the pass waits for the next one, after a select():
        a callback that re-arms itself with delay 0 (the sync TX run, in chunks) cannot starve
        the file descriptors.
        """
        start = self.clock()
        while self.timers and (self.timers[0].when <= start or self.timers[0].cancelled):
            t = heapq.heappop(self.timers)
            if not t.cancelled:
                t.callback()
        if not self.timers:
            return None
        return max(0.0, self.timers[0].when - self.clock())

    # ---------------------------------------------------------------- signals
    def add_signal(self, signum: int, handler: Callable[[int], None]) -> None:
        if not self._signal_handlers:
            signal.set_wakeup_fd(self._wake_w, warn_on_full_buffer=False)
        self._signal_handlers[signum] = handler
        signal.signal(signum, lambda *_: None)  # real work happens in the loop

    def _on_wakeup(self) -> None:
        try:
            data = os.read(self._wake_r, 512)
        except BlockingIOError:
            return
        for signum in data:
            h = self._signal_handlers.get(signum)
            if h is not None:
                h(signum)

    # ---------------------------------------------------------------- run
    def stop(self) -> None:
        self.running = False

    def run(self) -> None:
        self.running = True
        while self.running:
            timeout = self._run_timers()
            if not self.running:
                break
            try:
                events = self.sel.select(timeout)
            except InterruptedError:
                continue
            for key, _mask in events:
                key.data()
                if not self.running:
                    break

    def close(self) -> None:
        if self._signal_handlers:
            signal.set_wakeup_fd(-1)
        self.sel.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
