"""The running daemon: lifecycle (C src/main.c, src/run.c) wired on one :class:`~.loop.Loop`.

Start order as C: logs, LockFile, UNIX server, mode init, initial dump into the cache, the
event socket last (events arriving during the dump are not lost, only possibly duplicated),
signals, fork when ``-d``, READY=1.  SIGINT/SIGTERM and ``-k`` run the same clean shutdown
(STOPPING=1, socket and lock file removed, ``---- shutdown received ----``).
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable

from ..flow import Flow
from . import lockfile, sdnotify
from .bypass import InternalBypass
from .config.model import Config, SyncMode
from .control import Action, split_json
from .control_server import ControlServer, request
from .ctnl import EV_DESTROY, EV_NEW, EV_UPDATE, Ctnl
from .filter import compile_filter
from .log import Logger
from .loop import Loop, Timer
from .mode import StatsMode, SyncCacheMode, SyncEngine
from .readiness import ReadinessFile
from .stats import RuntimeStats, runtime_text, to_json

__all__ = ["Daemon", "StartError"]

GC_FULL_PERIOD = 600.0  # seconds between full garbage collections (see Daemon._tame_gc)
RESYNC_SETTLE = 0.25  # seconds between the end of an overrun storm and its resync dump (Daemon._resync_early)
RX_EVERY = 256  # dumped entries between two reads of the sync input during -R (Daemon._resync_ct)
JSON_VIEWS = {
    Action.STATS: "ct", Action.STATS_NETWORK: "network", Action.STATS_CACHE: "cache",
    Action.STATS_RUNTIME: "runtime", Action.STATS_LINK: "link", Action.STATS_RSQUEUE: "rsqueue",
    Action.STATS_PROCESS: "process", Action.STATS_QUEUE: "queue", Action.EXP_STATS: "expect",
}


class StartError(Exception):
    """Initialisation failed; the message was already logged."""


class Daemon:
    def __init__(self, cfg: Config, log: Logger, daemonize: bool = False,
                 engine: SyncEngine | None = None) -> None:
        self.cfg = cfg
        self.g = cfg.general
        self.log = log
        self.daemonize = daemonize
        self.engine = engine
        self.loop = Loop()
        self.runtime = RuntimeStats()
        self.lock_fd: int | None = None
        self.server: ControlServer | None = None
        self.ctnl: Ctnl | None = None
        self.resync_timer: Timer | None = None
        self._resync_at = 0.0  # when resync_timer fires (loop clock)
        self._last_overrun_resync: float | None = None
        self._storm_check: Timer | None = None
        self.readiness: ReadinessFile | None = None
        self.metrics = None
        self.exit_code = 0
        self.stopped = False

    # ================================================================= start
    def start(self) -> None:
        g, cfg, log = self.g, self.cfg, self.log
        stats = cfg.stats
        log.setup(g.logfile, g.syslog_facility,
                  stats.logfile if stats and cfg.mode == "stats" else None,
                  stats.syslog_facility if stats and cfg.mode == "stats" else None,
                  console=not self.daemonize)
        try:
            self.lock_fd = lockfile.acquire(g.lockfile, self._socket_alive, log)
        except lockfile.LockBusy:
            log("ERROR", f"lockfile `{g.lockfile}' exists, perhaps conntrackd already running?")
            raise StartError from None
        except OSError as exc:
            log("ERROR", f"lockfile `{g.lockfile}' can't be created: {exc.strerror}")
            raise StartError from None
        try:
            self._init()
        except StartError:
            log("ERROR", "conntrackd cannot start, please review your configuration")
            self.close()
            raise
        os.chdir("/")
        self._watchdog()
        self._tame_gc()
        if self.daemonize:
            pid = os.fork()
            if pid:
                if g.systemd:
                    sdnotify.notify(f"MAINPID={pid}")
                os._exit(0)
            os.setsid()
            lockfile.rewrite_pid(self.lock_fd)
            devnull = os.open(os.devnull, os.O_RDWR)
            for fd in (0, 1, 2):
                os.dup2(devnull, fd)
            os.close(devnull)
            log("notice", "-- starting in daemon mode --")
        else:
            log("notice", "-- starting in console mode --")
        if g.systemd:
            sdnotify.notify("READY=1")

    def _socket_alive(self) -> bool:
        return request(self.g.unix_path, -1, lambda _b: None, timeout=1.0) if self.g.unix_path else False

    def _init(self) -> None:
        g, log = self.g, self.log
        self._scheduler()
        if not g.unix_path:
            log("ERROR", "can't open unix socket!")
            raise StartError
        try:
            self.server = ControlServer(g.unix_path, self.loop, self.dispatch, self._read_failed)
        except OSError:
            log("ERROR", "can't open unix socket!")
            raise StartError from None
        for sig in (signal.SIGINT, signal.SIGTERM):
            self.loop.add_signal(sig, self._on_signal)
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)
        try:
            self.ctnl = Ctnl(self.cfg, compile_filter(g.filter), log, self.runtime)
        except OSError as exc:
            log("ERROR", f"can't open netlink handler: {exc.strerror}")
            log("ERROR", "no ctnetlink kernel support?")
            raise StartError from None
        ctnl = self.ctnl
        if g.readiness_file:  # beyond C: not ready until the synced state is complete (readiness.py)
            self.readiness = ReadinessFile(g.readiness_file, g.readiness_weight, log)
            self.readiness.not_ready()
        if self.cfg.mode == "stats":
            if self.cfg.stats is None:
                log("warning", "No running mode specified. Defaulting to statistics mode.")
            self.mode = StatsMode(g.hashlimit, self.runtime, ctnl.existing, log, log.flow)
        else:
            if self.engine is None and self.cfg.sync is not None:
                from .sync.engine import build_engine  # the sync engine (channels, FTFW/NOTRACK/ALARM)

                try:
                    self.engine = build_engine(self)
                except OSError:
                    raise StartError from None
            sc = self.cfg.sync
            if sc is not None and sc.disable_internal_cache and sc.mode == SyncMode.NOTRACK:
                self.mode = InternalBypass(g.hashlimit, self.runtime, ctnl.existing, log, log.flow, self.engine,
                                           expect=ctnl.expect, exp_exists=ctnl.existing_expects,
                                           dump_kernel=ctnl.dump, flush_kernel=ctnl.flush_selective,
                                           dump_kernel_expect=ctnl.dump_expect)
            else:
                self.mode = SyncCacheMode(g.hashlimit, self.runtime, ctnl.existing, log, log.flow, self.engine,
                                          expect=ctnl.expect, exp_exists=ctnl.existing_expects)
        try:
            ctnl.dump(self.mode.populate)
        except OSError as exc:
            log("ERROR", f"can't get kernel conntrack table: {exc.strerror}")
            raise StartError from None
        if ctnl.expect:  # after the conntracks: an expectation is kept only when its master is cached
            try:
                ctnl.dump_expect(self.mode.exp_populate)
            except OSError:
                log("ERROR", "can't get kernel expect table")
                raise StartError from None
        if g.poll_secs:
            self.loop.add_timer(g.poll_secs, self._poll)
            log("notice", "running in polling mode")
        else:
            ev = ctnl.open_events()
            self.loop.add_reader(ev.fileno(), self._on_events)
        self.runtime.daemon_start_time = int(time.time())
        if self.readiness is not None and self.engine is None:
            self.readiness.ready()  # nothing to wait for: no peer holds state for us
        log("notice", "initialization completed")

    def _tame_gc(self) -> None:
        """No automatic full collections; one every GC_FULL_PERIOD seconds instead.

        Why: a full (generation 2) collection walks every cached entry (~0.2 s at 1M entries in a
        bare process) and CPython runs one each time the heap has grown by 25 %. Each such pause
        let tens of thousands of events pile up on the event socket at a high event rate, and an
        overflow costs a resync. Cache entries hold no reference cycles (reference counting frees
        them), so deferring full collections only delays freeing rare cyclic garbage.
        """
        gen0, gen1, _gen2 = gc.get_threshold()
        gc.set_threshold(gen0, gen1, 1 << 30)
        self.loop.every(GC_FULL_PERIOD, gc.collect)

    def _scheduler(self) -> None:
        """Only an explicit ``Scheduler { Type }`` is applied (C defaults to SCHED_RR 99; see docs)."""
        sch = self.g.scheduler
        if sch.type is None:
            return
        policy = os.SCHED_RR if sch.type == "RR" else os.SCHED_FIFO
        try:
            os.sched_setscheduler(0, policy, os.sched_param(sch.priority))
        except OSError as exc:
            self.log("warning", f"scheduler configuration failed: {exc.strerror}. Likely a bug in conntrackd, "
                     "please report it. Continuing with system default scheduler.")

    def _watchdog(self) -> None:
        if not self.g.systemd:
            return
        interval = sdnotify.watchdog_interval(os.environ, os.getpid())
        if interval:
            self.loop.every(interval, lambda: sdnotify.notify("WATCHDOG=1"))

    # ================================================================= kernel side
    def _on_events(self) -> None:
        assert self.ctnl is not None
        mode = self.mode

        def handle(kind: str, flow: Flow, origin: str | None) -> None:
            if kind == EV_NEW:
                mode.new(flow, origin)
            elif kind == EV_UPDATE:
                mode.upd(flow, origin)
            elif kind == EV_DESTROY:
                mode.destroy(flow, origin)

        exp_handle = None
        if self.ctnl.expect:
            def exp_handle(kind: str, exp, origin: str | None) -> None:
                if kind == EV_NEW:
                    mode.exp_new(exp, origin)
                elif kind == EV_UPDATE:
                    mode.exp_upd(exp, origin)
                else:
                    mode.exp_destroy(exp, origin)

        fast = mode.event if isinstance(mode, SyncCacheMode) else None
        if self.ctnl.read_events(handle, self.g.event_iteration_limit, exp_handle, fast):
            self._schedule_resync()
        elif self.resync_timer is not None and self.ctnl.drained:
            self._resync_early()

    def _schedule_resync(self) -> None:
        if self.resync_timer is not None:
            self.resync_timer.cancel()
        self.resync_timer = self.loop.add_timer(self.g.netlink_overrun_resync, self._overrun_resync)
        self._resync_at = self.loop.clock() + self.g.netlink_overrun_resync
        if self._storm_check is not None:
            self._storm_check.cancel()
        # the read that ended the storm may have been the last one: look again once it settled
        self._storm_check = self.loop.add_timer(RESYNC_SETTLE, self._check_storm)

    def _check_storm(self) -> None:
        self._storm_check = None
        if self.ctnl is not None and self.ctnl.events is not None and self.resync_timer is not None:
            self._on_events()

    def _resync_early(self) -> None:
        """Beyond C: the overrun resync starts once the storm is over, not NetlinkOverrunResync seconds later.

        C waits N seconds (30 by default, what the roles render) after the last overrun, so that a
        storm does not cause a dump after every overrun. The storm is over when a read empties the
        event socket with no new drop: then the dump starts RESYNC_SETTLE later (a new drop re-arms the
        full wait). At most one early resync per N seconds, so dumps are never more frequent than C's.
        Why: every event the overrun lost is missing on the peer until that dump; our sender overruns
        on bursts C keeps up with (a 20k burst in 0.07 s), and 30 s without those flows is a failover
        that drops them."""
        now = self.loop.clock()
        if now + RESYNC_SETTLE >= self._resync_at:
            return
        if self._last_overrun_resync is not None and now - self._last_overrun_resync < self.g.netlink_overrun_resync:
            return
        assert self.resync_timer is not None
        self.resync_timer.cancel()
        self.resync_timer = self.loop.add_timer(RESYNC_SETTLE, self._overrun_resync)
        self._resync_at = now + RESYNC_SETTLE

    def _overrun_resync(self) -> None:
        """do_overrun_resync_alarm + resync_cb: dump through the resync handler, then purge."""
        self.resync_timer = None
        self._last_overrun_resync = self.loop.clock()
        self.runtime.nl_kernel_table_resync += 1
        self._resync_and_purge(purge_first=False)

    def _poll(self) -> None:
        """do_polling_alarm: purge, then resync from a dump."""
        self._resync_and_purge(purge_first=True)
        self.loop.add_timer(self.g.poll_secs or 1, self._poll)

    def _resync_and_purge(self, purge_first: bool) -> None:
        """Conntracks, then expectations (C polls both; its overrun resync only redoes conntracks)."""
        ctnl = self.ctnl
        assert ctnl is not None
        mode = self.mode
        expect = ctnl.expect and isinstance(mode, SyncCacheMode)
        try:
            if purge_first:
                mode.purge()
                if expect:
                    mode.exp_purge()
            mode.begin_resync()
            ctnl.dump(mode.resync, self._on_events if ctnl.events is not None else None,
                      fast=mode.resync_values if isinstance(mode, SyncCacheMode) else None)
            if expect:
                ctnl.dump_expect(mode.exp_resync)
            if not purge_first:
                mode.purge(skip_resynced=True)
                if expect:
                    mode.exp_purge()
        except OSError as exc:
            self.log("ERROR", f"resync with kernel conntrack table failed: {exc.strerror}")
        if isinstance(self.mode, SyncCacheMode):
            self.mode.engine.on_resync_done()

    # ================================================================= requests
    def _read_failed(self) -> None:
        self.runtime.local_read_failed += 1

    def dispatch(self, code: int) -> Iterable[str] | None:
        """local_handler + ctnl_local + mode.local of C, in that order."""
        action, as_json = split_json(code)
        if action == Action.KILL:
            self.shutdown()
            return None
        out: list[str] = []
        for step in self._STEPS.get(action, ()):
            step(self, as_json, out)
        handled = self.mode.local(action, as_json)
        if handled is not None:
            out = [*out, *handled]
        if as_json and not out and action in JSON_VIEWS:
            return [to_json(JSON_VIEWS[action], {})]  # a view this mode has no data for
        return out

    def _expect_on(self) -> bool:
        assert self.ctnl is not None
        return self.ctnl.expect and isinstance(self.mode, SyncCacheMode)  # C: CTD_EXPECT (sync mode only)

    def _runtime_stats(self, as_json: bool, out: list[str]) -> None:
        ctnl = self.ctnl
        assert ctnl is not None
        if as_json:
            out.append(to_json("runtime", {**self.runtime.as_dict(), "buffer_size": ctnl.buffer_size,
                                           "uptime": int(time.time()) - self.runtime.daemon_start_time}))
        else:
            out.append(runtime_text(self.runtime, int(time.time()), ctnl.buffer_size))

    def _kernel_step(self, what: str, run: Callable[[Ctnl], object]) -> bool:
        """One kernel table request of ctnl_local, logged as C does; False if it failed."""
        assert self.ctnl is not None
        self.log("notice", what)
        try:
            run(self.ctnl)
        except OSError as exc:
            self.log("ERROR", f"{what} failed: {exc.strerror}")
            return False
        return True

    def _flush_ct(self, as_json: bool, out: list[str]) -> None:
        self.runtime.nl_kernel_table_flush += 1
        self._kernel_step("flushing kernel conntrack table", lambda c: c.flush_selective())

    def _flush_exp(self, as_json: bool, out: list[str]) -> None:
        if not self._expect_on():
            return
        self.runtime.nl_kernel_table_flush += 1
        if self._kernel_step("flushing kernel expect table", lambda c: c.flush_expect()):
            # Do not wait for the EXP_DESTROY events of our own flush (one was seen to go missing
            # under load): the table is empty now, drop what the cache still holds.
            self.mode.exp_purge()  # type: ignore[union-attr]

    def _resync_ct(self, as_json: bool, out: list[str]) -> None:
        """-R: the kernel table into the internal cache.  Unlike C, the sync input is read between dump
        messages: the primary hook runs -R while the VIPs move, and the old master's last new flows
        (an FTP data connection opened a millisecond before the switch) must reach this kernel before
        their next packet does, not after the whole dump (docs/failover.md)."""
        self.runtime.nl_kernel_table_resync += 1
        mode, engine = self.mode, self.engine
        fast = mode.populate_values if isinstance(mode, SyncCacheMode) else None
        poll = engine.poll_rx if engine is not None else None
        with engine.receiving_during_dump() if engine is not None else contextlib.nullcontext():
            self._kernel_step("resync with master conntrack table",
                              lambda c: c.dump(mode.populate, poll, RX_EVERY, fast))

    def _resync_exp(self, as_json: bool, out: list[str]) -> None:
        if not self._expect_on():
            return
        self.runtime.nl_kernel_table_resync += 1
        self._kernel_step("resync with master expect table",
                          lambda c: c.dump_expect(self.mode.exp_populate))  # type: ignore[union-attr]

    # What the daemon itself does for a request before the mode answers it (local_handler, ctnl_local),
    # in C's order: the ALL_* requests do the conntrack step, then the expectation step.
    _STEPS: dict[int, tuple[Callable[..., None], ...]] = {
        Action.STATS_RUNTIME: (_runtime_stats,),
        Action.CT_FLUSH_MASTER: (_flush_ct,),
        Action.EXP_FLUSH_MASTER: (_flush_exp,),
        Action.ALL_FLUSH_MASTER: (_flush_ct, _flush_exp),
        Action.CT_RESYNC_MASTER: (_resync_ct,),
        Action.EXP_RESYNC_MASTER: (_resync_exp,),
        Action.ALL_RESYNC_MASTER: (_resync_ct, _resync_exp),
    }

    # ================================================================= run / stop
    def _on_signal(self, signum: int) -> None:
        self.shutdown()

    def run(self) -> int:
        self.loop.run()
        return self.exit_code

    def shutdown(self) -> None:
        """killer(): close everything, remove socket and lock, log, STOPPING=1."""
        if self.stopped:
            return
        self.stopped = True
        self.close()
        self.log("notice", "---- shutdown received ----")
        self.log.close()
        if self.g.systemd:
            sdnotify.notify("STOPPING=1")
        self.loop.stop()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None
        if self.ctnl is not None:
            self.ctnl.close()
            self.ctnl = None
        if isinstance(getattr(self, "mode", None), SyncCacheMode):
            self.mode.engine.close()
        if self.metrics is not None:
            self.metrics.close()
        if self.readiness is not None:
            self.readiness.not_ready()  # a stopped daemon holds no state for a takeover
        lockfile.release(self.lock_fd, self.g.lockfile)
        self.lock_fd = None
        sys.stdout.flush()
