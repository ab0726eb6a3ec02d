"""``DisableInternalCache on`` (NOTRACK only): C src/internal_bypass.c.

No internal cache: every local conntrack event is turned into its sync message at once and
handed to the channel, ``-i`` prints the kernel table, ``-f``/``-f internal`` flush the kernel
table selectively (C does, through the internal handler's flush), and a bulk send (``-B``, a
peer's RESYNC) sends a kernel dump as CT_NEW.  ``-s`` shows C's ``internal bypass:`` counters
instead of ``cache internal:``.  With ExpectationSync, expectation events are sent the same way.

Why a subclass of :class:`SyncCacheMode`: everything else (external cache, expectations' empty
caches, the ``-s`` views, metrics) is the same, and the cache it keeps simply stays empty.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from ..flow import Expect, Flow
from ..formats.expect import render_expect_default
from ..formats.text import render_default
from ..formats.xml import render_flow_xml
from .control import Action, handles
from .mode import Chunks, SyncCacheMode, _add_traffic

__all__ = ["InternalBypass", "bypass_stats_text"]

CT_NEW, CT_UPD, CT_DEL, EXP_NEW, EXP_UPD, EXP_DEL = range(6)  # sync message types (wire.MsgType)


def bypass_stats_text(new: int, upd: int, deleted: int) -> str:
    """internal_bypass_ct_stats."""
    return (f"internal bypass:\nconnections new:\t\t{new:12d}\nconnections updated:\t\t{upd:12d}\n"
            f"connections destroyed:\t\t{deleted:12d}\n\n")


class InternalBypass(SyncCacheMode):
    """The internal handler without a cache; ``engine.send_flow`` does the sending."""

    def __init__(self, *args, dump_kernel: Callable[[Callable[[Flow], None]], int],
                 flush_kernel: Callable[[], int], dump_kernel_expect: Callable[[Callable[[Expect], None]], int],
                 **kw) -> None:
        super().__init__(*args, **kw)
        self.dump_kernel = dump_kernel
        self.dump_kernel_expect = dump_kernel_expect
        self.flush_kernel = flush_kernel
        self.sent = {CT_NEW: 0, CT_UPD: 0, CT_DEL: 0}
        self.exp_sent = {EXP_NEW: 0, EXP_UPD: 0, EXP_DEL: 0}

    # ------------------------------------------------------------ kernel side: nothing to keep
    def populate(self, flow: Flow) -> None:
        pass

    def begin_resync(self) -> None:
        pass

    def resync(self, flow: Flow) -> None:
        pass

    def purge(self, skip_resynced: bool = False) -> None:
        pass

    def _send(self, flow: Flow, mtype: int, origin: str | None) -> None:
        if origin is None:  # events our own commit/inject/flush caused are not sent (C's origin rule)
            self.engine.send_flow(flow, mtype)  # type: ignore[attr-defined]
            self.sent[mtype] += 1

    def new(self, flow: Flow, origin: str | None) -> None:
        self._send(flow, CT_NEW, origin)

    def upd(self, flow: Flow, origin: str | None) -> None:
        self._send(flow, CT_UPD, origin)

    def destroy(self, flow: Flow, origin: str | None) -> bool:
        self._send(flow, CT_DEL, origin)
        _add_traffic(self.runtime, flow)
        return True

    def exp_populate(self, exp: Expect) -> None:
        pass

    def exp_resync(self, exp: Expect) -> None:
        pass

    def _send_exp(self, exp: Expect, mtype: int, origin: str | None) -> None:
        if origin is None and self.expect:
            self.engine.send_expect(exp, mtype)  # type: ignore[attr-defined]
            self.exp_sent[mtype] += 1

    def exp_new(self, exp: Expect, origin: str | None) -> None:
        self._send_exp(exp, EXP_NEW, origin)

    def exp_upd(self, exp: Expect, origin: str | None) -> None:
        self._send_exp(exp, EXP_UPD, origin)

    def exp_destroy(self, exp: Expect, origin: str | None) -> bool:
        self._send_exp(exp, EXP_DEL, origin)
        return True

    def exp_purge(self) -> None:
        pass

    # ------------------------------------------------------------ client requests
    def _kernel_lines(self, xml: bool) -> Iterator[str]:
        flows: list[Flow] = []
        self.dump_kernel(flows.append)
        now = int(time.time())
        for f in flows:
            yield (render_flow_xml(f, now=now) if xml else render_default(f, now=now)) + "\n"

    def _kernel_expect_lines(self) -> Iterator[str]:
        exps: list[Expect] = []
        self.dump_kernel_expect(exps.append)
        for x in exps:
            yield render_expect_default(x) + "\n"

    @handles(Action.EXP_DUMP_INTERNAL)
    def _exp_dump_internal(self, action: int, as_json: bool) -> Chunks:
        return self._kernel_expect_lines() if self.expect else ()

    @handles(Action.CT_DUMP_INTERNAL)
    def _dump_internal(self, action: int, as_json: bool) -> Chunks:
        return self._kernel_lines(False)

    @handles(Action.CT_DUMP_INT_XML)
    def _dump_internal_xml(self, action: int, as_json: bool) -> Chunks:
        return self._kernel_lines(True)

    @handles(Action.CT_FLUSH_CACHE, Action.ALL_FLUSH_CACHE, Action.CT_FLUSH_INT_CACHE)
    def _flush(self, action: int, as_json: bool) -> Chunks:
        self._flush_external(action)
        self.flush_kernel()  # internal_bypass_ct_flush: nl_flush_conntrack_table_selective
        return ()

    @handles(Action.STATS)
    def _stats(self, action: int, as_json: bool) -> Chunks:
        if as_json:
            return super()._stats(action, as_json)
        head = bypass_stats_text(self.sent[CT_NEW], self.sent[CT_UPD], self.sent[CT_DEL])
        return self._stats_text(self.cache, self.engine.external, head)

    def stats_json(self) -> dict:
        data = super().stats_json()
        data["cache"].pop("internal", None)
        data["internal_bypass"] = {"new": self.sent[CT_NEW], "upd": self.sent[CT_UPD], "del": self.sent[CT_DEL]}
        return data
