"""Expectations in the daemon (C internal_cache.c exp.*, sync-mode.c EXP_*): cache, filters, requests."""

from __future__ import annotations

import re
import socket

import pytest

from conntrack_tools.daemon.cache import ExpCache, entry_exp, exp_key, master_key
from conntrack_tools.daemon.control import Action
from conntrack_tools.daemon.ctnl import EV_DESTROY, EV_NEW, EV_UPDATE, encode_exp_lookup, exp_event_kind
from conntrack_tools.daemon.filter import exp_helper_accepts, master_sane
from conntrack_tools.daemon.mode import NullSync, SyncCacheMode
from conntrack_tools.daemon.stats import RuntimeStats, cache_stats_text
from conntrack_tools.flow import AF_INET, Expect, Flow, TcpInfo, Tuple
from conntrack_tools.formats.expect import render_expect_default, render_expect_xml
from conntrack_tools.netlink.attrs import NLM_F_CREATE, NLM_F_EXCL, ExpMsg, exp_type
from conntrack_tools.netlink.codec import NLMSG_HDR, decode_expect

LO = socket.inet_aton("127.0.0.1")
ONES = b"\xff" * 4


def master(sport: int = 40021) -> Tuple:
    return Tuple(AF_INET, LO, LO, 6, sport, 21)


def ftp_exp(sport: int = 40021, dport: int = 40000, helper: str | None = "ftp", timeout: int | None = 299) -> Expect:
    return Expect(AF_INET, master=master(sport), tuple=Tuple(AF_INET, LO, LO, 6, 0, dport),
                  mask=Tuple(AF_INET, ONES, ONES, 6, 0, 0xFFFF), timeout=timeout, helper=helper, klass=0, id=7)


def master_flow(sport: int = 40021) -> Flow:
    o = master(sport)
    return Flow(AF_INET, o, o.reversed(), status=0xE, timeout=100, tcp=TcpInfo(state=3), helper="ftp")


class Hooks(NullSync):
    def __init__(self) -> None:
        super().__init__(100, lambda *_: None)
        self.calls: list[tuple[str, int | None, str | None]] = []

    def on_exp_new(self, e, exp, origin) -> None:
        self.calls.append(("new", exp.master.sport, origin))

    def on_exp_update(self, e, exp, origin) -> None:
        self.calls.append(("update", exp.master.sport, origin))

    def on_exp_destroy(self, e, exp, origin) -> None:
        self.calls.append(("destroy", exp.master.sport, origin))


def make_mode(expect: bool = True, engine=None, alive=None) -> SyncCacheMode:
    logs: list[tuple[str, str]] = []
    m = SyncCacheMode(100, RuntimeStats(), lambda flows: [True] * len(flows), lambda lv, msg: logs.append((lv, msg)),
                      lambda _l: None, engine, expect=expect,
                      exp_exists=alive or (lambda exps: [True] * len(exps)))
    m.logs = logs  # type: ignore[attr-defined]
    return m


def text(chunks) -> str:
    return "".join(chunks)


# ------------------------------------------------------------------------------------------ pure parts

def test_exp_key_and_master_key() -> None:
    a, b = ftp_exp(), ftp_exp(timeout=10)
    assert exp_key(a) == exp_key(b)  # the timeout is not part of the identity (nfexp_cmp)
    assert exp_key(ftp_exp(40022)) != exp_key(a)
    assert exp_key(ftp_exp(dport=40001)) != exp_key(a)
    assert exp_key(Expect(AF_INET, tuple=a.tuple)) is None
    assert master_key(a) == master_key(Expect(AF_INET, master=master()))
    zoned = ftp_exp()
    zoned.zone = 5
    assert exp_key(zoned) != exp_key(a) and master_key(zoned) != master_key(a)


def test_exp_cache_counters_and_replace() -> None:
    c = ExpCache("internal", limit=2)
    e, created = c.update_force(ftp_exp(), 100)
    assert created and e is not None and c.stats.add_ok == 1
    e2, created = c.update_force(ftp_exp(timeout=5, helper="ftp"), 101)
    assert e2 is e and not created and c.stats.upd_ok == 1 and e.exp.timeout == 5  # type: ignore[union-attr]
    assert entry_exp(e).timeout is None and e.exp.timeout == 5  # type: ignore[union-attr]
    c.add(ftp_exp(40022), 100)
    assert c.add(ftp_exp(40023), 100) is None and c.stats.add_fail_enospc == 1  # HashLimit
    c.mark_dead(e)
    assert [x.exp.master.sport for x in c.live()] == [40022]  # type: ignore[union-attr]
    c.delete(e)
    assert (c.stats.active, c.stats.objects, c.stats.del_ok) == (1, 1, 1)


def test_helper_filter_is_case_insensitive_prefix() -> None:
    assert exp_helper_accepts((), ftp_exp(helper=None))  # no list: everything
    assert exp_helper_accepts(("ftp",), ftp_exp())
    assert exp_helper_accepts(("FTP",), ftp_exp())
    assert exp_helper_accepts(("sip",), ftp_exp(helper="sip-5060"))
    assert not exp_helper_accepts(("sip-5060",), ftp_exp(helper="sip"))
    assert not exp_helper_accepts(("sip", "h.245"), ftp_exp())
    assert not exp_helper_accepts(("ftp",), ftp_exp(helper=None))  # old kernels: no name, dropped


def test_master_sanity() -> None:
    assert master_sane(ftp_exp())
    assert not master_sane(Expect(AF_INET))
    assert not master_sane(Expect(AF_INET, master=Tuple(AF_INET, LO, None, 6, 1, 2)))


def test_exp_event_kinds_and_lookup_message() -> None:
    new = exp_type(ExpMsg.NEW)
    assert exp_event_kind(new, NLM_F_CREATE | NLM_F_EXCL) == EV_NEW
    assert exp_event_kind(new, 0) == EV_UPDATE
    assert exp_event_kind(exp_type(ExpMsg.DELETE), 0) == EV_DESTROY
    assert exp_event_kind(exp_type(ExpMsg.GET), 0) is None
    assert exp_event_kind(0x100, 0) is None  # a conntrack message
    msg = encode_exp_lookup(ftp_exp(), 9)
    length, mtype, flags, seq, _pid = NLMSG_HDR.unpack_from(msg)
    assert (length, mtype, flags, seq) == (len(msg), exp_type(ExpMsg.GET), 1, 9)  # NLM_F_REQUEST, no ACK
    back = decode_expect(msg, NLMSG_HDR.size, len(msg))
    assert back.tuple == ftp_exp().tuple and back.master is None and back.mask is None


# ------------------------------------------------------------------------------------------ the mode

def test_expectations_need_their_master_in_the_cache() -> None:
    m = make_mode()
    m.exp_populate(ftp_exp())
    m.exp_new(ftp_exp(), None)
    assert len(m.exp_cache) == 0  # C: ct_filter_master
    m.populate(master_flow())
    m.exp_populate(ftp_exp())
    assert len(m.exp_cache) == 1 and m.exp_cache.stats.add_ok == 1


def test_events_drive_cache_and_engine_hooks() -> None:
    eng = Hooks()
    m = make_mode(engine=eng)
    m.new(master_flow(), None)
    m.exp_new(ftp_exp(), None)
    m.exp_new(ftp_exp(), "commit")  # re-added (C deletes and adds again)
    m.exp_upd(ftp_exp(timeout=3), None)
    m.exp_new(ftp_exp(), "inject")  # C skips direct injects entirely
    assert eng.calls == [("new", 40021, None), ("new", 40021, "commit"), ("update", 40021, None)]
    st = m.exp_cache.stats
    assert (st.add_ok, st.del_ok, st.upd_ok, len(m.exp_cache)) == (2, 1, 1, 1)
    assert m.exp_destroy(ftp_exp(), None) and len(m.exp_cache) == 0
    assert not m.exp_destroy(ftp_exp(), None)
    assert eng.calls[-1] == ("destroy", 40021, None)


def test_resync_and_purge() -> None:
    eng = Hooks()
    kernel = {40021}
    m = make_mode(engine=eng, alive=lambda exps: [e.master.sport in kernel for e in exps])
    for p in (40021, 40022):
        m.populate(master_flow(p))
        m.exp_resync(ftp_exp(p))
    m.exp_resync(ftp_exp(40021))
    assert eng.calls == [("new", 40021, None), ("new", 40022, None), ("update", 40021, None)]
    m.exp_purge()
    assert [e.exp.master.sport for e in m.exp_cache.live()] == [40021]  # type: ignore[union-attr]
    assert eng.calls[-1] == ("destroy", 40022, None)


def test_dump_and_stats_requests() -> None:
    m = make_mode()
    m.populate(master_flow())
    m.exp_populate(ftp_exp())
    line = text(m.local(Action.EXP_DUMP_INTERNAL, False))
    want = render_expect_default(ftp_exp(timeout=None))
    assert re.fullmatch(re.escape(want) + r" \[active since \d+s\]\n", line), line
    assert "299" not in line and line.startswith("proto=6 src=127.0.0.1 dst=127.0.0.1 sport=0 dport=40000 mask-src=")
    assert text(m.local(Action.EXP_DUMP_INT_XML, False)) == render_expect_xml(ftp_exp(timeout=None)) + "\n"
    assert '"helper":"ftp"' in text(m.local(Action.EXP_DUMP_INTERNAL, True)).replace(" ", "")
    s = text(m.local(Action.EXP_STATS, False))
    assert s.startswith(cache_stats_text("internal", m.exp_cache.stats) + cache_stats_text("external",
                                                                                           m.exp_external.stats))
    assert "traffic processed:" in s
    assert text(m.local(Action.EXP_DUMP_EXTERNAL, False)) == ""
    assert m.local(Action.STATS, False) is not None  # conntrack views untouched


def test_without_expectation_sync_c_answers_nothing_but_xml() -> None:
    m = make_mode(expect=False)
    m.populate(master_flow())
    m.exp_populate(ftp_exp())  # never called by the daemon without ExpectationSync; the cache is still C's
    assert text(m.local(Action.EXP_DUMP_INTERNAL, False)) == ""
    assert text(m.local(Action.EXP_STATS, False)) == ""
    assert text(m.local(Action.EXP_DUMP_INT_XML, False)).startswith("<flow>")  # C has no CTD_EXPECT check here


def test_flush_all_caches_includes_expectations() -> None:
    m = make_mode()
    m.populate(master_flow())
    m.exp_populate(ftp_exp())
    assert list(m.local(Action.CT_FLUSH_INT_CACHE, False)) == [] and len(m.exp_cache) == 1  # -f internal: ct only
    m.populate(master_flow())
    assert list(m.local(Action.ALL_FLUSH_CACHE, False)) == []
    assert len(m.exp_cache) == 0 and m.exp_cache.stats.flush == 1 and m.exp_external.stats.flush == 1


@pytest.mark.parametrize("engine_ext", [True, False])
def test_external_expectation_cache_follows_engine(engine_ext: bool) -> None:
    eng = NullSync(10, lambda *_: None)
    if not engine_ext:
        eng.external = None  # DisableExternalCache: nothing to show
    m = make_mode(engine=eng)
    assert (m.exp_external is not None) == engine_ext
    own = ExpCache("external", 10)
    eng.external_exp = own  # type: ignore[attr-defined]
    assert make_mode(engine=eng).exp_external is own
