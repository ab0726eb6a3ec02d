"""Daemon modes: what happens to kernel flows and to UNIX-socket requests.

C splits this into ``struct internal_handler`` (populate/resync/purge/new/upd/del on kernel
flows) and ``struct ct_mode`` (init/local/kill).  We keep the same seams:

* :class:`StatsMode` is C's src/stats-mode.c: a "stats" cache, the flow log on destroy.
* :class:`SyncCacheMode` is the internal-cache half of src/sync-mode.c.  What crosses the
  network is delegated to a :class:`SyncEngine` (the sync engineer's plug-in point); the
  default :class:`NullSync` keeps an empty external cache and answers sync-only requests
  with a log notice, so a Sync config runs (and can be inspected) before sync exists.

Request handlers return an iterable of text chunks to stream to the client (possibly
empty), or None when the request is not theirs.

Expectations (C: ``internal->exp``) are kept by :class:`SyncCacheMode` when
``Options { ExpectationSync }`` is on: an :class:`~.cache.ExpCache` fed by the EXP event groups
and dumps, accepted only when the master conntrack is in the internal cache (C
``ct_filter_master``).  The engine may implement ``on_exp_new/on_exp_update/on_exp_destroy``
(same signature as the ct hooks) and provide ``external_exp`` (its expectation cache).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

from ..flow import Expect, Flow
from ..formats.expect import render_expect_default, render_expect_xml
from ..formats.json import render_expect_json, render_flow_json
from ..formats.text import render_default
from ..formats.xml import render_flow_xml
from .cache import Cache, Entry, ExpCache, ExpEntry, entry_exp, entry_flow, flow_key, master_key
from .control import Action, Answers, handles
from .filter import master_sane
from .stats import RuntimeStats, cache_stats_extended_text, cache_stats_text, to_json, traffic_text

__all__ = ["InternalHandler", "NullSync", "StatsMode", "SyncCacheMode", "SyncEngine", "dump_cache", "dump_exp_cache"]

Chunks = Iterable[str]
_U32 = 0xFFFFFFFF
# purge checks the cache against the kernel this many entries at a time: only one chunk's
# rebuilt flows and GET requests exist at once (all of them at 1M entries peaked at ~1.5 GiB).
PURGE_CHUNK = 1 << 14


class InternalHandler(Protocol):
    """Kernel-side hooks (C: struct internal_handler)."""

    def populate(self, flow: Flow) -> None: ...  # initial dump and -R
    def begin_resync(self) -> None: ...  # before the dump that feeds resync()
    def resync(self, flow: Flow) -> None: ...  # overrun resync and polling
    def purge(self, skip_resynced: bool = False) -> None: ...  # drop what the kernel no longer has
    def new(self, flow: Flow, origin: str | None) -> None: ...
    def upd(self, flow: Flow, origin: str | None) -> None: ...
    def destroy(self, flow: Flow, origin: str | None) -> bool: ...


def _dump(cache: Cache, view: Callable, text: Callable, xml_text: Callable, json_text: Callable, xml: bool,
          as_json: bool, chunk: int) -> Iterator[str]:
    """The cache dumpers' one routine: one line per live entry in chunks, ``[active since Ns]`` in text mode."""
    entries = cache.live()
    for i in range(0, len(entries), chunk):
        now = int(time.time())
        lines = []
        for e in entries[i:i + chunk]:
            obj = view(e)
            if as_json:
                lines.append(json_text(obj) + "\n")
            elif xml:
                lines.append(xml_text(obj, now) + "\n")
            else:
                lines.append(f"{text(obj, now)} [active since {now - e.lifetime}s]\n")
        yield "".join(lines)


def dump_cache(cache: Cache, xml: bool, as_json: bool = False, chunk: int = 256) -> Iterator[str]:
    """cache_dump() (C cache-ct.c)."""
    return _dump(cache, entry_flow, lambda f, now: render_default(f, now=now),
                 lambda f, now: render_flow_xml(f, now=now), render_flow_json, xml, as_json, chunk)


def dump_exp_cache(cache: Cache, xml: bool, as_json: bool = False, chunk: int = 256) -> Iterator[str]:
    """cache_exp_dump_step(): nfexp_snprintf without the cached timeout."""
    return _dump(cache, entry_exp, lambda x, _now: render_expect_default(x),
                 lambda x, _now: render_expect_xml(x), render_expect_json, xml, as_json, chunk)


def _add_traffic(st: RuntimeStats, flow: Flow) -> None:
    """update_traffic_stats(): C sums the counters through 32-bit getters."""
    if flow.counters_orig is not None:
        st.bytes_orig += flow.counters_orig.bytes & _U32
        st.packets_orig += flow.counters_orig.packets & _U32
    if flow.counters_reply is not None:
        st.bytes_repl += flow.counters_reply.bytes & _U32
        st.packets_repl += flow.counters_reply.packets & _U32


def _traffic(st: RuntimeStats) -> str:
    return traffic_text(st.bytes_orig + st.bytes_repl, st.packets_orig + st.packets_repl)


def _traffic_dict(st: RuntimeStats) -> dict:
    return {"bytes": st.bytes_orig + st.bytes_repl, "packets": st.packets_orig + st.packets_repl}


def _sync_state(e: Entry) -> tuple:
    """What a sync message says about an entry, apart from the timeout (see SyncCacheMode.resync)."""
    extra = e.extra
    return (e.status, e.state, e.mark, e.reply, e.tcpx, e.synproxy, tuple(extra.items()) if extra else None)


class _Base(Answers):
    """What both modes share: one local cache fed by the kernel."""

    cache: Cache
    flows_logged = 0

    def __init__(self, name: str, limit: int, runtime: RuntimeStats, exists: Callable[[list[Flow]], list[bool]],
                 log: Callable[[str, str], None], flow_log: Callable[[str], None]) -> None:
        self.cache = Cache(name, limit)
        self.runtime = runtime
        self.exists = exists  # batched kernel GETs (Ctnl.existing)
        self.log = log
        self.flow_log = flow_log
        self._resync_stamp = self.now()

    @staticmethod
    def now() -> int:
        return int(time.time())

    def begin_resync(self) -> None:
        """Before a resync dump: one fresh int object becomes the ``lastupdate`` of every entry it touches.

        ``purge(skip_resynced=True)`` recognises those entries by identity (``is``), which a
        per-second timestamp could not do: an entry updated earlier in the same second and
        destroyed since (its DESTROY event lost in the overrun) must still be asked for.
        """
        self._resync_stamp = int(time.time())

    def populate(self, flow: Flow) -> None:
        self.cache.update_force(flow, self.now())

    def purge(self, skip_resynced: bool = False) -> None:
        """Drop the entries the kernel no longer has, asked by batched GETs.

        Right after a full dump (``skip_resynced``) the entries the dump returned are alive by
        definition: only the others are asked for, normally a handful instead of the whole cache
        (C asks for every entry; at 1M entries that is ~13 s of our CPU per overrun).
        """
        stamp = self._resync_stamp
        entries = self.cache.live()
        if skip_resynced:
            entries = [e for e in entries if e.lastupdate is not stamp]
        for i in range(0, len(entries), PURGE_CHUNK):
            part = entries[i:i + PURGE_CHUNK]
            alive = self.exists([entry_flow(e) for e in part])
            for e, ok in zip(part, alive, strict=True):
                if not ok:
                    self.gone(e)

    def gone(self, e: Entry) -> None:
        self.cache.delete(e)

    def stats_json(self) -> dict:
        return {"cache": {self.cache.name: {**self.cache.stats.as_dict(), "entries": len(self.cache)}},
                "traffic": _traffic_dict(self.runtime)}

    # ------------------------------------------------------------ client requests (Answers)
    @handles(Action.CT_DUMP_INTERNAL)
    def _dump_internal(self, action: int, as_json: bool) -> Chunks:
        return dump_cache(self.cache, False, as_json)

    @handles(Action.CT_DUMP_INT_XML)
    def _dump_internal_xml(self, action: int, as_json: bool) -> Chunks:
        return dump_cache(self.cache, True)


class StatsMode(_Base):
    """C src/stats-mode.c."""

    def __init__(self, limit: int, runtime: RuntimeStats, exists, log, flow_log) -> None:
        super().__init__("stats", limit, runtime, exists, log, flow_log)

    def resync(self, flow: Flow) -> None:
        self.cache.update_force(flow, self._resync_stamp)

    def new(self, flow: Flow, origin: str | None) -> None:
        if self.cache.find(flow) is None:
            self.cache.add(flow, self.now())

    def upd(self, flow: Flow, origin: str | None) -> None:
        self.cache.update_force(flow, self.now())

    def destroy(self, flow: Flow, origin: str | None) -> bool:
        e = self.cache.find(flow)
        if e is None:
            return False
        self.cache.delete(e)
        self._log_flow(flow)
        _add_traffic(self.runtime, flow)
        return True

    def gone(self, e: Entry) -> None:
        self.cache.delete(e)
        self._log_flow(entry_flow(e))

    def _log_flow(self, flow: Flow) -> None:
        f = flow
        f.timeout = None  # C unsets ATTR_TIMEOUT before logging
        self.flow_log(render_default(f, now=self.now()))

    @handles(Action.CT_FLUSH_CACHE, Action.CT_FLUSH_INT_CACHE)
    def _flush(self, action: int, as_json: bool) -> Chunks:
        self.log("notice", "flushing caches")
        self.cache.flush()
        return ()

    @handles(Action.STATS)
    def _stats(self, action: int, as_json: bool) -> Chunks:
        c = self.cache
        if as_json:
            return [to_json("ct", self.stats_json())]
        return [cache_stats_text(c.name, c.stats), _traffic(self.runtime)]

    @handles(Action.STATS_CACHE)
    def _stats_cache(self, action: int, as_json: bool) -> Chunks:
        c = self.cache
        if as_json:
            return [to_json("cache", {"cache": {c.name: {**c.stats.as_dict(), "entries": len(c)}}})]
        return [cache_stats_extended_text(c.name, c.stats, len(c))]


class SyncEngine(Protocol):
    """The sync engineer's plug-in (channels, FTFW/NOTRACK/ALARM, external cache, commit).

    Called from the single event loop; must not block.  ``origin`` is None for kernel
    events caused by others, or the name given to :meth:`Ctnl.register_origin` (e.g.
    "commit", "inject", "flush") so replicated changes are not echoed back.
    """

    external: Cache | None

    def on_local_new(self, entry: Entry, flow: Flow, origin: str | None) -> None: ...
    def on_local_update(self, entry: Entry, flow: Flow, origin: str | None) -> None: ...
    def on_local_destroy(self, entry: Entry, flow: Flow, origin: str | None) -> None: ...
    def on_resync_done(self) -> None: ...
    def local(self, action: int, as_json: bool) -> Chunks | None: ...
    def stats_text(self) -> str: ...  # blocks after "traffic processed:" in -s (channels, message tracking)
    def stats_json(self) -> dict: ...
    def close(self) -> None: ...


class NullSync(Answers):
    """No replication yet: an empty external cache, sync-only requests logged and ignored."""

    NAMES = {
        Action.CT_COMMIT: "commit (-c)", Action.EXP_COMMIT: "commit (-c)", Action.ALL_COMMIT: "commit (-c)",
        Action.SEND_BULK: "bulk send (-B)", Action.REQUEST_DUMP: "resync request (-n)",
        Action.RESET_TIMERS: "timer reset (-t)",
    }

    def __init__(self, limit: int, log: Callable[[str, str], None]) -> None:
        self.external = Cache("external", limit)
        self.log = log

    def on_local_new(self, entry, flow, origin) -> None:
        pass

    on_local_update = on_local_destroy = on_local_new

    def on_resync_done(self) -> None:
        pass

    @handles(Action.CT_DUMP_EXTERNAL)
    def _dump_external(self, action: int, as_json: bool) -> Chunks:
        return dump_cache(self.external, False, as_json)

    @handles(Action.CT_DUMP_EXT_XML)
    def _dump_external_xml(self, action: int, as_json: bool) -> Chunks:
        return dump_cache(self.external, True)

    @handles(Action.CT_FLUSH_EXT_CACHE)
    def _flush_external(self, action: int, as_json: bool) -> Chunks:
        self.log("notice", "flushing external cache")
        self.external.flush()
        return ()

    def unhandled(self, action: int, as_json: bool) -> Chunks | None:
        name = self.NAMES.get(action)
        if name is not None:
            self.log("notice", f"{name} ignored: no synchronization engine is running")
            return ()
        return None

    def stats_text(self) -> str:
        return ""

    def stats_json(self) -> dict:
        return {}

    def close(self) -> None:
        pass


#: C internal_cache.c: an event caused by a direct inject (DisableExternalCache) is skipped: the
#: peer's entry is not this node's, so it neither enters the internal cache nor, when the kernel
#: later times it out on this backup, goes back to the peer as a DEL that would delete the live flow.
INJECT = "inject"


class SyncCacheMode(_Base):
    """Internal cache of sync mode (C src/internal_cache.c) with the engine hooks."""

    def __init__(self, limit: int, runtime: RuntimeStats, exists, log, flow_log,
                 engine: SyncEngine | None = None, expect: bool = False,
                 exp_exists: Callable[[list[Expect]], list[bool]] | None = None) -> None:
        super().__init__("internal", limit, runtime, exists, log, flow_log)
        self.engine: SyncEngine = engine or NullSync(limit, log)
        # expectations (C: internal->exp, always allocated; only fed and shown with ExpectationSync)
        self.expect = expect
        self.exp_cache = ExpCache("internal", limit)
        self.exp_exists = exp_exists
        ext_exp = getattr(self.engine, "external_exp", None)
        if ext_exp is None and self.engine.external is not None:
            ext_exp = ExpCache("external", limit)  # the engine keeps no expectations: an empty one, as C shows
        self.exp_external: Cache | None = ext_exp
        self._hooks = {name: getattr(self.engine, f"on_exp_{name}", None) for name in ("new", "update", "destroy")}

    def populate(self, flow: Flow) -> None:
        self.cache.update_force(flow, self.now())

    def populate_values(self, key: bytes, fill: Callable, vals: tuple) -> None:
        """populate() for a dumped entry of a compiled layout (daemon/event_fill.py): no Flow.  Why: the
        primary hook's -R dumps the whole table while the VIPs are already moving (0.4 s at 15,000
        entries through Flow objects, C 0.2 s)."""
        self.cache.fill_force(key, fill, vals, int(time.time()))

    def resync(self, flow: Flow) -> None:
        """resync_cb: one flow of the overrun-resync or polling dump.

        Unlike C, an entry the dump shows unchanged (timeout aside) is not sent again: the peer
        got its last state already, and only what the lost events would have carried goes out.
        C re-sends the whole table after every overrun (and every PollSecs), which at 100k+
        entries costs more than the events that were lost and often overruns again.
        """
        key = flow_key(flow)
        old = self.cache.entries.get(key) if key is not None else None
        before = _sync_state(old) if old is not None and not old.dead else None
        e, created = self.cache.update_force(flow, self._resync_stamp, key, old)
        if e is None:
            return
        if created:
            self.engine.on_local_new(e, flow, None)
        elif _sync_state(e) != before:
            self.engine.on_local_update(e, flow, None)

    def resync_values(self, key: bytes, fill: Callable, vals: tuple) -> None:
        """resync() for a dumped entry of a compiled layout (daemon/event_fill.py): no Flow."""
        e = self.cache.entries.get(key)
        before = _sync_state(e) if e is not None and not e.dead else None
        e, created = self.cache.fill_force(key, fill, vals, self._resync_stamp, e)
        if e is None:
            return
        if created:
            self.engine.on_local_new(e, None, None)
        elif _sync_state(e) != before:
            self.engine.on_local_update(e, None, None)

    def new(self, flow: Flow, origin: str | None) -> None:
        if origin == INJECT:
            return
        e, _ = self.cache.update_force(flow, self.now())
        if e is not None:
            self.engine.on_local_new(e, flow, origin)

    def upd(self, flow: Flow, origin: str | None) -> None:
        if origin == INJECT:
            return
        e, _ = self.cache.update_force(flow, self.now())
        if e is not None:
            self.engine.on_local_update(e, flow, origin)

    def event(self, new: bool, key: bytes, fill: Callable, vals: tuple, origin: str | None) -> None:
        """new()/upd() for a kernel event of a compiled layout (daemon/event_fill.py): no Flow.

        The same cache_update_force and engine hook, with ``fill`` doing what Entry.merge does."""
        if origin == INJECT:
            return
        # Cache.fill_force inlined: this runs per kernel event, and the call cost ~100 ns of ~700 (measured).
        c = self.cache
        now = int(time.time())
        e = c.entries.get(key)
        if e is not None and not e.dead:
            fill(vals, e)
            e.lastupdate = now
            c.stats.upd_ok += 1
        else:
            if e is not None:
                c.delete(e)
            e = c.new_entry(key, now)
            if e is None:
                return
            fill(vals, e)
        (self.engine.on_local_new if new else self.engine.on_local_update)(e, None, origin)

    def destroy(self, flow: Flow, origin: str | None) -> bool:
        if origin == INJECT:
            return False
        e = self.cache.find(flow)
        if e is None:
            return False
        self.cache.mark_dead(e)
        self.engine.on_local_destroy(e, flow, origin)
        self.cache.delete(e)
        _add_traffic(self.runtime, flow)
        return True

    def gone(self, e: Entry) -> None:
        self.cache.mark_dead(e)
        self.engine.on_local_destroy(e, entry_flow(e), None)
        self.cache.delete(e)

    # ------------------------------------------------------------ expectations (C internal_cache.c exp.*)
    def _exp_hook(self, name: str, e: ExpEntry, exp: Expect, origin: str | None) -> None:
        hook = self._hooks[name]
        if hook is not None:
            hook(e, exp, origin)

    def master_known(self, exp: Expect) -> bool:
        """ct_filter_master() inverted: the master is sane and in the internal cache."""
        if not master_sane(exp):
            return False
        e = self.cache.entries.get(master_key(exp))  # type: ignore[arg-type]
        return e is not None

    def exp_populate(self, exp: Expect) -> None:
        if self.master_known(exp):
            self.exp_cache.update_force(exp, self.now())  # type: ignore[arg-type]

    def exp_resync(self, exp: Expect) -> None:
        if not self.master_known(exp):
            return
        e, created = self.exp_cache.update_force(exp, self.now())  # type: ignore[arg-type]
        if e is not None:
            self._exp_hook("new" if created else "update", e, exp, None)

    def exp_new(self, exp: Expect, origin: str | None) -> None:
        if origin == "inject" or not self.master_known(exp):
            return
        c = self.exp_cache
        old = c.find(exp)  # type: ignore[arg-type]
        if old is not None:
            c.delete(old)
        e = c.add(exp, self.now())  # type: ignore[arg-type]
        if e is not None:
            self._exp_hook("new", e, exp, origin)

    def exp_upd(self, exp: Expect, origin: str | None) -> None:
        if origin == "inject" or not self.master_known(exp):
            return
        e, _ = self.exp_cache.update_force(exp, self.now())  # type: ignore[arg-type]
        if e is not None:
            self._exp_hook("update", e, exp, origin)

    def exp_destroy(self, exp: Expect, origin: str | None) -> bool:
        if origin == "inject":
            return False
        c = self.exp_cache
        e = c.find(exp)  # type: ignore[arg-type]
        if e is None:
            return False
        if not e.dead:
            c.mark_dead(e)
            self._exp_hook("destroy", e, exp, origin)  # type: ignore[arg-type]
        c.delete(e)
        return True

    def exp_purge(self) -> None:
        """internal_cache_exp_purge: drop (and announce) what the kernel no longer has."""
        if self.exp_exists is None:
            return
        entries = self.exp_cache.live()
        for i in range(0, len(entries), PURGE_CHUNK):
            part = entries[i:i + PURGE_CHUNK]
            exps = [entry_exp(e) for e in part]  # type: ignore[arg-type]
            for e, exp, ok in zip(part, exps, self.exp_exists(exps), strict=True):
                if not ok:
                    self.exp_cache.mark_dead(e)
                    self._exp_hook("destroy", e, exp, None)  # type: ignore[arg-type]
                    self.exp_cache.delete(e)

    # ------------------------------------------------------------ client requests (Answers)
    # local_handler_sync's EXP_* cases (C checks CTD_EXPECT except for the XML dumps)
    @handles(Action.EXP_DUMP_INTERNAL)
    def _exp_dump_internal(self, action: int, as_json: bool) -> Chunks:
        return dump_exp_cache(self.exp_cache, False, as_json) if self.expect else ()

    @handles(Action.EXP_DUMP_INT_XML)
    def _exp_dump_internal_xml(self, action: int, as_json: bool) -> Chunks:
        return dump_exp_cache(self.exp_cache, True)

    @handles(Action.EXP_DUMP_EXTERNAL, Action.EXP_DUMP_EXT_XML)
    def _exp_dump_external(self, action: int, as_json: bool) -> Chunks:
        ext = self.exp_external
        xml = action == Action.EXP_DUMP_EXT_XML
        if ext is None or not (self.expect or xml):
            return ()
        return dump_exp_cache(ext, xml, as_json)

    @handles(Action.EXP_STATS)
    def _exp_stats(self, action: int, as_json: bool) -> Chunks:
        if not self.expect:
            return ()
        c, ext = self.exp_cache, self.exp_external
        if as_json:
            caches = {"internal": {**c.stats.as_dict(), "entries": len(c)}}
            if ext is not None:
                caches["external"] = {**ext.stats.as_dict(), "entries": len(ext)}
            return [to_json("expect", {"cache": caches, "traffic": _traffic_dict(self.runtime),
                                       **self.engine.stats_json()})]
        return self._stats_text(c, ext)

    def _stats_text(self, internal: Cache, ext: Cache | None, head: str | None = None) -> list[str]:
        """-s: the internal cache's block (or ``head``), the external cache's, traffic, the engine's blocks."""
        out = [head if head is not None else cache_stats_text("internal", internal.stats)]
        if ext is not None:
            out.append(cache_stats_text("external", ext.stats))
        out.append(_traffic(self.runtime))
        out.append(self.engine.stats_text())
        return out

    @handles(Action.CT_FLUSH_CACHE, Action.ALL_FLUSH_CACHE, Action.CT_FLUSH_INT_CACHE)
    def _flush(self, action: int, as_json: bool) -> Chunks:
        self._flush_external(action)
        self.cache.flush()
        if action == Action.ALL_FLUSH_CACHE and self.expect:
            self.exp_cache.flush()
            if self.exp_external is not None:
                self.exp_external.flush()
        return ()

    def _flush_external(self, action: int) -> None:
        ext = self.engine.external
        if action != Action.CT_FLUSH_INT_CACHE and ext is not None:
            self.log("notice", "flushing caches")
            ext.flush()
        else:
            self.log("notice", "flushing internal cache")

    @handles(Action.STATS)
    def _stats(self, action: int, as_json: bool) -> Chunks:
        ext = self.engine.external
        if as_json:
            data = self.stats_json()
            if ext is not None:
                data["cache"]["external"] = {**ext.stats.as_dict(), "entries": len(ext)}
            data.update(self.engine.stats_json())
            return [to_json("ct", data)]
        return self._stats_text(self.cache, ext)

    @handles(Action.STATS_CACHE)
    def _stats_cache(self, action: int, as_json: bool) -> Chunks:
        ext = self.engine.external
        caches = [self.cache] + ([ext] if ext is not None else [])
        if as_json:
            return [to_json("cache", {"cache": {x.name: {**x.stats.as_dict(), "entries": len(x)} for x in caches}})]
        return [cache_stats_extended_text(x.name, x.stats, len(x)) for x in caches]

    def unhandled(self, action: int, as_json: bool) -> Chunks | None:
        return self.engine.local(action, as_json)
