"""External cache (peer flows), direct inject and commit (C src/external_cache.c,
src/external_inject.c, src/cache-ct.c ``cache_ct_commit``).

Each external entry keeps its flow **as the body of its netlink create message**
(nfgenmsg + CTA attributes, no timeout): commit is then a header, the body and a
CTA_TIMEOUT per entry, sent in batches through ``CtnlSocket.batch`` -- no decoding,
no per-entry round trip.  ``-e`` decodes the body again (rare, slow path is fine).
"""

from __future__ import annotations

import errno
import gc
import struct
import time
from collections.abc import Callable, Iterator

from ...flow import Flow
from ...netlink.attrs import NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, CtMsg, ct_type
from ...netlink.codec import NLMSG_HDR, NLMSG_HDRLEN, decode_flow, encode_flow
from ...netlink.socket import CtnlSocket, NetlinkError
from ..cache import CacheStats, pack_tuple
from ..ctnl import encode_lookup
from .convert import sync_key_tuple, sync_to_create_flow, update_flow
from .transcode import Transcoder
from .wire import SyncFlow

__all__ = ["ExtEntry", "ExternalCache", "Injector", "commit"]

_CTA_TIMEOUT_HDR = struct.Struct("=HH")
_BE32 = struct.Struct("!I")
_CTA_TIMEOUT = 7
_NEW = ct_type(CtMsg.NEW)
_CREATE_FLAGS = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL


def _timeout_attr(t: int) -> bytes:
    return _CTA_TIMEOUT_HDR.pack(8, _CTA_TIMEOUT) + _BE32.pack(t & 0xFFFFFFFF)


class ExtEntry:
    __slots__ = ("key", "body", "timeout", "lastupdate", "lifetime", "related", "deadline")

    def __init__(self, key: bytes, body: bytes, timeout: int | None, now: float, related: bool) -> None:
        self.key = key
        self.body = body  # nfgenmsg + attributes of the create request, without CTA_TIMEOUT
        self.timeout = timeout
        self.lastupdate = now
        self.lifetime = int(now)
        self.related = related
        self.deadline = 0.0

    def flow(self) -> Flow:
        return decode_flow(self.body, 0, len(self.body))

    def create_msg(self, seq: int, timeout: int) -> bytes:
        body = self.body
        tail = _timeout_attr(timeout)
        return NLMSG_HDR.pack(NLMSG_HDRLEN + len(body) + 8, _NEW, _CREATE_FLAGS, seq, 0) + body + tail


def build_entry(sf: SyncFlow, now: float, window_tracking: bool) -> ExtEntry:
    flow = sync_to_create_flow(sf, window_tracking=window_tracking)
    key = pack_tuple(flow.orig, flow.zone)
    body = bytes((flow.family, 0, 0, 0)) + encode_flow(flow)
    return ExtEntry(key, body, sf.timeout, now, sf.master is not None)


def sync_key(sf: SyncFlow) -> bytes:
    orig, _fam = sync_key_tuple(sf)
    return pack_tuple(orig, sf.zone)


class ExternalCache:
    """Duck-types the parts of :class:`~..cache.Cache` the daemon core uses (name, stats, len, flush)."""

    def __init__(self, limit: int, window_tracking: bool = False, clock: Callable[[], float] = time.time) -> None:
        self.name = "external"
        self.transcoder = Transcoder(window_tracking)
        self.limit = limit
        self.entries: dict[bytes, ExtEntry] = {}  # insertion order = last-refresh order
        self.stats = CacheStats()
        self.window_tracking = window_tracking
        self.clock = clock
        self.commit_ok = 0
        self.commit_fail = 0

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[ExtEntry]:
        return iter(self.entries.values())

    def live(self) -> list[ExtEntry]:
        return list(self.entries.values())

    # ---------------------------------------------------------------- messages
    def apply(self, mtype: int, buf, start: int, end: int) -> bool:
        """The fast path of a CT_NEW/CT_UPD/CT_DEL whose attributes are ``buf[start:end]``.

        The transcoder turns the attributes straight into the key and create body that
        ``build_entry`` would give; False (nothing done) when it cannot, and the caller then
        takes the reference path (``decode_attrs`` -> ``SyncFlow.from_attrs`` -> new/upd/delete),
        which also counts malformed messages.  Never raises.
        """
        tc = self.transcoder
        if tc.window_tracking != self.window_tracking:
            tc = self.transcoder = Transcoder(self.window_tracking)
        r = tc.transcode(buf, start, end)
        if r is None:
            return False
        if mtype == 2:  # CT_DEL
            self.delete_key(r[0])
        else:
            e = ExtEntry(r[0], r[1], r[2], self.clock(), False)
            if mtype == 0:  # CT_NEW
                self.new_entry(e)
            else:
                self.upd_entry(e)
        return True

    def new(self, sf: SyncFlow) -> ExtEntry | None:
        return self.new_entry(build_entry(sf, self.clock(), self.window_tracking))

    def upd(self, sf: SyncFlow) -> ExtEntry | None:
        return self.upd_entry(build_entry(sf, self.clock(), self.window_tracking))

    def delete(self, sf: SyncFlow) -> bool:
        return self.delete_key(sync_key(sf))

    def new_entry(self, e: ExtEntry) -> ExtEntry | None:
        """external_cache_ct_new: replace (counted as a deletion + creation, like C)."""
        old = self.entries.pop(e.key, None)
        s = self.stats
        if old is not None:
            s.del_ok += 1
            s.active -= 1
            s.objects -= 1
        if len(self.entries) >= self.limit:
            s.add_fail += 1
            s.add_fail_enospc += 1
            return None
        self.entries[e.key] = e
        s.objects += 1
        s.active += 1
        s.add_ok += 1
        return e

    def upd_entry(self, e: ExtEntry) -> ExtEntry | None:
        """cache_update_force: update (moved to the end: refresh order) or create."""
        old = self.entries.pop(e.key, None)
        if old is None:
            if len(self.entries) >= self.limit:
                self.stats.add_fail += 1
                self.stats.add_fail_enospc += 1
                return None
            self.entries[e.key] = e
            self.stats.objects += 1
            self.stats.active += 1
            self.stats.add_ok += 1
            return e
        e.lifetime = old.lifetime
        if e.timeout is None:
            e.timeout = old.timeout
        self.entries[e.key] = e
        self.stats.upd_ok += 1
        return e

    def delete_key(self, key: bytes) -> bool:
        e = self.entries.pop(key, None)
        if e is None:
            self.stats.del_fail += 1
            self.stats.del_fail_enoent += 1
            return False
        self.stats.del_ok += 1
        self.stats.active -= 1
        self.stats.objects -= 1
        return True

    def flush(self) -> None:
        n = len(self.entries)
        self.entries.clear()
        s = self.stats
        s.del_ok += n
        s.active -= n
        s.objects -= n
        s.flush += 1

    def expire(self, now: float, cache_timeout: float) -> int:
        """ALARM mode: drop entries not refreshed for CacheTimeout seconds (oldest first)."""
        n = 0
        ents = self.entries
        while ents:
            k = next(iter(ents))
            if now - ents[k].lastupdate < cache_timeout:
                break
            del ents[k]
            n += 1
        if n:
            s = self.stats
            s.del_ok += n
            s.active -= n
            s.objects -= n
        return n

    # ---------------------------------------------------------------- -e
    def dump_lines(self, xml: bool, as_json: bool) -> Iterator[str]:
        from ...formats.json import render_flow_json
        from ...formats.text import render_default
        from ...formats.xml import render_flow_xml

        now = int(time.time())
        lines: list[str] = []
        for e in list(self.entries.values()):
            f = e.flow()
            f.reply = None  # C's external objects have no reply tuple
            if f.tcp is not None:
                f.tcp.flags_orig = f.tcp.mask_orig = f.tcp.flags_reply = f.tcp.mask_reply = None
            f.nat_src = f.nat_dst = None
            if as_json:
                lines.append(render_flow_json(f) + "\n")
            elif xml:
                lines.append(render_flow_xml(f, now=now) + "\n")
            else:
                lines.append(f"{render_default(f, now=now)} [active since {now - e.lifetime}s]\n")
            if len(lines) >= 256:
                yield "".join(lines)
                lines = []
        if lines:
            yield "".join(lines)


def _timeout_for(e: ExtEntry, commit_timeout: int | None, now: float) -> int:
    if commit_timeout:
        return commit_timeout
    elapsed = int(now - e.lastupdate)
    if elapsed < 0:
        elapsed = 60
    t = (e.timeout or 0) - elapsed
    return t if t > 0 else 60


def commit(cache: ExternalCache, sock: CtnlSocket, commit_timeout: int | None,
           now: float | None = None) -> tuple[int, int]:
    """cache_ct_commit: masters first, then related, batched; EEXIST -> delete + create once.

    The cyclic GC is paused meanwhile: building 100k+ messages in a heap of cache entries
    would otherwise trigger repeated full collections that find nothing to free.
    """
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        return _commit(cache, sock, commit_timeout, now)
    finally:
        if gc_was_enabled:
            gc.enable()


def _commit(cache: ExternalCache, sock: CtnlSocket, commit_timeout: int | None,
            now: float | None) -> tuple[int, int]:
    now = time.time() if now is None else now
    ok = fail = 0
    for related in (False, True):
        ents = [e for e in cache.entries.values() if e.related == related]
        if not ents:
            continue
        seq0 = sock.next_seq()
        msgs = []
        for i, e in enumerate(ents):
            seq = (seq0 + i) & 0xFFFFFFFF
            msgs.append((seq, e.create_msg(seq, _timeout_for(e, commit_timeout, now))))
        sock.seq = (seq0 + len(ents)) & 0xFFFFFFFF
        try:
            errors = sock.batch(msgs)
        except NetlinkError as exc:
            errors = {s: exc.errno for s, _ in msgs}
        retry = []
        for (seq, _m), e in zip(msgs, ents, strict=True):
            err = errors.get(seq)
            if err is None:
                ok += 1
            elif err == errno.EEXIST:
                retry.append(e)
            else:
                fail += 1
        if retry:
            ok2, fail2 = _delete_and_create(sock, retry, commit_timeout, now)
            ok += ok2
            fail += fail2
    cache.commit_ok += ok
    cache.commit_fail += fail
    return ok, fail


def _delete_and_create(sock: CtnlSocket, ents: list[ExtEntry], commit_timeout: int | None,
                       now: float) -> tuple[int, int]:
    dels = []
    for e in ents:
        f = e.flow()
        seq = sock.next_seq()
        dels.append((seq, encode_lookup(CtMsg.DELETE, f, seq)))
    try:
        derr = sock.batch(dels)
    except NetlinkError as exc:
        derr = {s: exc.errno for s, _ in dels}
    creates = []
    fail = 0
    keep = []
    for (seq, _m), e in zip(dels, ents, strict=True):
        err = derr.get(seq)
        if err is None or err == errno.ENOENT:
            s2 = sock.next_seq()
            creates.append((s2, e.create_msg(s2, _timeout_for(e, commit_timeout, now))))
            keep.append(e)
        else:
            fail += 1
    try:
        cerr = sock.batch(creates)
    except NetlinkError as exc:
        cerr = {s: exc.errno for s, _ in creates}
    ok = sum(1 for s, _ in creates if s not in cerr)
    return ok, fail + len(creates) - ok


class Injector:
    """DisableExternalCache: received states go straight to the kernel (external_inject.c)."""

    def __init__(self, sock: CtnlSocket, window_tracking: bool = False) -> None:
        self.sock = sock
        self.window_tracking = window_tracking
        self.stats = {"add_ok": 0, "add_fail": 0, "upd_ok": 0, "upd_fail": 0, "del_ok": 0, "del_fail": 0}

    def _one(self, msg_type: int, flags: int, flow: Flow) -> int | None:
        seq = self.sock.next_seq()
        body = bytes((flow.family, 0, 0, 0)) + encode_flow(flow)
        msg = NLMSG_HDR.pack(NLMSG_HDRLEN + len(body), msg_type, NLM_F_REQUEST | flags, seq, 0) + body
        try:
            errs = self.sock.batch([(seq, msg)])
        except NetlinkError as exc:
            return exc.errno
        return errs.get(seq)

    def _create(self, flow: Flow) -> bool:
        err = self._one(_NEW, NLM_F_CREATE | NLM_F_EXCL, flow)
        if err == errno.EEXIST:
            self._delete(flow)
            err = self._one(_NEW, NLM_F_CREATE | NLM_F_EXCL, flow)
        return err is None

    def _delete(self, flow: Flow) -> int | None:
        seq = self.sock.next_seq()
        try:
            errs = self.sock.batch([(seq, encode_lookup(CtMsg.DELETE, flow, seq))])
        except NetlinkError as exc:
            return exc.errno
        return errs.get(seq)

    def new(self, sf: SyncFlow) -> None:
        f = sync_to_create_flow(sf, window_tracking=self.window_tracking)
        f.timeout = sf.timeout
        ok = self._create(f)
        self.stats["add_ok" if ok else "add_fail"] += 1

    def upd(self, sf: SyncFlow) -> None:
        f = sync_to_create_flow(sf, window_tracking=self.window_tracking)
        f.timeout = sf.timeout
        u = update_flow(f)
        u.timeout = sf.timeout
        err = self._one(_NEW, 0, u)
        if err is None:
            self.stats["upd_ok"] += 1
            return
        if err != errno.ENOENT:
            self._delete(f)
        ok = self._create(f)
        self.stats["upd_ok" if ok else "upd_fail"] += 1

    def delete(self, sf: SyncFlow) -> None:
        f = sync_to_create_flow(sf, window_tracking=self.window_tracking)
        err = self._delete(f)
        self.stats["del_ok" if err in (None, errno.ENOENT) else "del_fail"] += 1

