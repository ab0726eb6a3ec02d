"""External cache (peer flows), direct inject and commit (C src/external_cache.c,
src/external_inject.c, src/cache-ct.c ``cache_ct_commit``).

Each external entry is **one bytes object** (``transcode.make_value``): 16 bytes of metadata
(lastupdate, lifetime, timeout), the body of the flow's netlink create message (nfgenmsg + CTA
attributes) and a CTA_TIMEOUT attribute whose value holds the flags.  No per-entry Python object
besides the key and this value: about 150 B less per entry than an object with slots, a float and
two ints.  Commit copies a chunk of values as they are into one buffer and overwrites, per entry,
the metadata with the nlmsghdr and the flags with the timeout -- the buffer is then the batch of
create messages (``CtnlSocket.batch_raw``): no per-entry message building, no decoding.
``-e`` decodes the body again (rare, slow path is fine); :class:`ExtEntry` is a view for that.
"""

from __future__ import annotations

import errno
import gc
import struct
import time
from collections.abc import Callable, Iterator

from ...flow import Flow
from ...netlink.attrs import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, CtMsg, ct_type
from ...netlink.codec import (
    NLMSG_HDR,
    NLMSG_HDRLEN,
    decode_flow,
    encode_flow,
    key_request_from_dump,
)
from ...netlink.socket import CtnlSocket, NetlinkError
from ..cache import CacheStats, pack_tuple
from .convert import sync_key_tuple, sync_to_create_flow
from .inject import DEL, NEW, UPD, InjectBatch, Op
from .transcode import HAS_TIMEOUT, META, META_LEN, RELATED, TAIL, TAIL_LEN, Transcoder, make_value
from .wire import SyncFlow

__all__ = ["ExtEntry", "ExternalCache", "Injector", "commit"]

_CTA_TIMEOUT_HDR = struct.Struct("=HH")
_BE32 = struct.Struct("!I")
_LASTUPDATE = struct.Struct("=d")
_LIFETIME = struct.Struct("=I")  # at offset 8 of a value
_FLAGS16 = struct.Struct("=H")
_CTA_TIMEOUT = 7
_NEW = ct_type(CtMsg.NEW)
_DELETE = ct_type(CtMsg.DELETE)
_CREATE_FLAGS = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL
COMMIT_CHUNK = 1 << 16  # bytes of create messages per send (as CtnlSocket.batch)


def _timeout_attr(t: int) -> bytes:
    return _CTA_TIMEOUT_HDR.pack(8, _CTA_TIMEOUT) + _BE32.pack(t & 0xFFFFFFFF)


class ExtEntry:
    """A view of one external cache entry (``key`` and its value); built on demand (-e, tests)."""

    __slots__ = ("key", "value")

    def __init__(self, key: bytes, value: bytes) -> None:
        self.key = key
        self.value = value

    @property
    def body(self) -> bytes:
        """nfgenmsg + attributes of the create request, without CTA_TIMEOUT."""
        return self.value[META_LEN:-TAIL_LEN]

    @property
    def timeout(self) -> int | None:
        return META.unpack_from(self.value)[2] if self.value[-4] & HAS_TIMEOUT else None

    @property
    def lastupdate(self) -> float:
        return META.unpack_from(self.value)[0]

    @property
    def lifetime(self) -> int:
        return META.unpack_from(self.value)[1]

    @property
    def related(self) -> bool:
        return bool(self.value[-4] & RELATED)

    def flow(self) -> Flow:
        return decode_flow(self.value, META_LEN, len(self.value) - TAIL_LEN)

    def create_msg(self, seq: int, timeout: int) -> bytes:
        body = self.body
        tail = _timeout_attr(timeout)
        return NLMSG_HDR.pack(NLMSG_HDRLEN + len(body) + 8, _NEW, _CREATE_FLAGS, seq, 0) + body + tail


def build_entry(sf: SyncFlow, now: float, window_tracking: bool) -> ExtEntry:
    flow = sync_to_create_flow(sf, window_tracking=window_tracking)
    key = pack_tuple(flow.orig, flow.zone)
    body = bytes((flow.family, 0, 0, 0)) + encode_flow(flow)
    return ExtEntry(key, make_value(body, sf.timeout, now, _lifetime(now), sf.master is not None))


def _lifetime(now: float) -> int:
    """``int(now)`` as the u32 a value stores it."""
    return min(max(int(now), 0), 0xFFFFFFFF)


def sync_key(sf: SyncFlow) -> bytes:
    orig, _fam = sync_key_tuple(sf)
    return pack_tuple(orig, sf.zone)


def _refreshed(new: bytes, old: bytes) -> bytes:
    """cache_update_force on an existing entry: ``new`` keeps the lifetime of ``old`` (and its
    timeout when ``new`` has none)."""
    lu, _lt, tmo = META.unpack_from(new)
    lifetime = _LIFETIME.unpack_from(old, 8)[0]
    flags = new[-4]
    if flags & HAS_TIMEOUT:
        return META.pack(lu, lifetime, tmo) + new[META_LEN:]
    flags |= old[-4] & HAS_TIMEOUT
    return META.pack(lu, lifetime, META.unpack_from(old)[2]) + new[META_LEN:-TAIL_LEN] + TAIL[flags]


class ExternalCache:
    """Duck-types the parts of :class:`~..cache.Cache` the daemon core uses (name, stats, len, flush).

    ``entries`` maps the key (``cache.pack_tuple``) to the value (``transcode.make_value``), in
    last-refresh order.
    """

    def __init__(self, limit: int, window_tracking: bool = False, clock: Callable[[], float] = time.time) -> None:
        self.name = "external"
        self.transcoder = Transcoder(window_tracking)
        self.limit = limit
        self.entries: dict[bytes, bytes] = {}  # insertion order = last-refresh order
        self.stats = CacheStats()
        self.window_tracking = window_tracking
        self.clock = clock
        self.commit_ok = 0
        self.commit_fail = 0

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[ExtEntry]:
        return (ExtEntry(k, v) for k, v in self.entries.items())

    def live(self) -> list[ExtEntry]:
        return list(self)

    # ---------------------------------------------------------------- messages
    def apply(self, mtype: int, buf, start: int, end: int) -> bool:
        """The fast path of a CT_NEW/CT_UPD/CT_DEL whose attributes are ``buf[start:end]``.

        The transcoder turns the attributes straight into the key and value that
        ``build_entry`` would give; False (nothing done) when it cannot, and the caller then
        takes the reference path (``decode_attrs`` -> ``SyncFlow.from_attrs`` -> new/upd/delete),
        which also counts malformed messages.  Never raises.
        """
        tc = self.transcoder
        if tc.window_tracking != self.window_tracking:
            tc = self.transcoder = Transcoder(self.window_tracking)
        now = self.clock()
        lifetime = int(now)
        if not 0 <= lifetime <= 0xFFFFFFFF:  # a u32 in the value (a clock before 1970 or after 2106)
            lifetime = _lifetime(now)
        r = tc.entry(buf, start, end, now, lifetime)
        if r is None:
            return False
        if mtype == 2:  # CT_DEL
            self.delete_key(r[0])
        elif mtype == 0:  # CT_NEW
            self._new(r[0], r[1])
        else:
            self._upd(r[0], r[1])
        return True

    def new(self, sf: SyncFlow) -> ExtEntry | None:
        return self.new_entry(build_entry(sf, self.clock(), self.window_tracking))

    def upd(self, sf: SyncFlow) -> ExtEntry | None:
        return self.upd_entry(build_entry(sf, self.clock(), self.window_tracking))

    def delete(self, sf: SyncFlow) -> bool:
        return self.delete_key(sync_key(sf))

    def new_entry(self, e: ExtEntry) -> ExtEntry | None:
        v = self._new(e.key, e.value)
        return None if v is None else ExtEntry(e.key, v)

    def upd_entry(self, e: ExtEntry) -> ExtEntry | None:
        v = self._upd(e.key, e.value)
        return None if v is None else ExtEntry(e.key, v)

    def _new(self, key: bytes, value: bytes) -> bytes | None:
        """external_cache_ct_new: replace (counted as a deletion + creation, like C)."""
        ents = self.entries
        old = ents.pop(key, None)
        s = self.stats
        if old is not None:
            s.del_ok += 1
            s.active -= 1
            s.objects -= 1
        return self._add(key, value)

    def _add(self, key: bytes, value: bytes) -> bytes | None:
        """cache_object_new + cache_add of a key not in the cache; None (ENOSPC) when it is full."""
        ents = self.entries
        s = self.stats
        if len(ents) >= self.limit:
            s.add_fail += 1
            s.add_fail_enospc += 1
            return None
        ents[key] = value
        s.objects += 1
        s.active += 1
        s.add_ok += 1
        return value

    def _upd(self, key: bytes, value: bytes) -> bytes | None:
        """cache_update_force: update (moved to the end: refresh order) or create."""
        ents = self.entries
        old = ents.pop(key, None)
        s = self.stats
        if old is None:
            return self._add(key, value)
        value = ents[key] = _refreshed(value, old)
        s.upd_ok += 1
        return value

    def delete_key(self, key: bytes) -> bool:
        if self.entries.pop(key, None) is None:
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
        lastupdate = _LASTUPDATE.unpack_from
        while ents:
            k = next(iter(ents))
            if now - lastupdate(ents[k])[0] < cache_timeout:
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
        for e in self.live():
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


def _timeout_for(value: bytes, commit_timeout: int | None, now: float) -> int:
    """The CTA_TIMEOUT a commit gives an entry (the per-entry loop of ``_send_creates`` inlines it)."""
    if commit_timeout:
        return commit_timeout
    lastupdate, _lt, timeout = META.unpack_from(value)  # timeout 0 when the message had none
    elapsed = int(now - lastupdate)
    if elapsed < 0:
        elapsed = 60
    t = timeout - elapsed
    return t if t > 0 else 60


def commit(cache: ExternalCache, sock: CtnlSocket, commit_timeout: int | None,
           now: float | None = None) -> tuple[int, int]:
    """cache_ct_commit: masters first, then related, batched; EEXIST -> delete + create once.

    The cyclic GC is paused meanwhile: the commit allocates little, but a collection over a
    heap of 1M cache entries would cost more than the commit's own work.
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
    related_seen = False
    for related in (False, True):
        if related and not related_seen:
            break
        retry: list[bytes] = []
        part: list[bytes] = []
        size = 0
        for v in cache.entries.values():
            if v[-4] & RELATED:
                related_seen = True
                if not related:
                    continue
            elif related:
                continue
            part.append(v)
            size += len(v)
            if size >= COMMIT_CHUNK:
                o, f = _send_creates(sock, part, commit_timeout, now, retry)
                ok += o
                fail += f
                part, size = [], 0
        if part:
            o, f = _send_creates(sock, part, commit_timeout, now, retry)
            ok += o
            fail += f
        if retry:
            o, f = _delete_and_create(sock, retry, commit_timeout, now)
            ok += o
            fail += f
    cache.commit_ok += ok
    cache.commit_fail += fail
    return ok, fail


def _send_creates(sock: CtnlSocket, part: list[bytes], commit_timeout: int | None, now: float,
                  retry: list[bytes] | None) -> tuple[int, int]:
    """One batch of create messages for the values ``part``; (ok, failed).  EEXIST entries are
    appended to ``retry`` (counted in neither) unless it is None (then they failed)."""
    seq0 = sock.seq + 1
    if seq0 + len(part) > 0xFFFFFFFF:
        seq0 = 1
    buf = bytearray().join(part)
    hdr = NLMSG_HDR.pack_into
    be32 = _BE32.pack_into
    meta = META.unpack_from
    fixed = commit_timeout & 0xFFFFFFFF if commit_timeout else None
    off = 0
    seq = seq0
    for v in part:
        n = len(v)
        if fixed is not None:
            t = fixed
        else:  # _timeout_for
            lastupdate, _lt, t = meta(v)
            elapsed = int(now - lastupdate)
            if elapsed < 0:
                elapsed = 60
            t -= elapsed
            if t <= 0:
                t = 60
        hdr(buf, off, n - META_LEN + NLMSG_HDRLEN, _NEW, _CREATE_FLAGS, seq, 0)
        be32(buf, off + n - 4, t)
        off += n
        seq += 1
    last_seq = seq - 1
    _FLAGS16.pack_into(buf, off - len(part[-1]) + 6, _CREATE_FLAGS | NLM_F_ACK)  # the last one is ACKed
    sock.seq = last_seq
    try:
        errors = sock.batch_raw(buf, last_seq)
    except NetlinkError as exc:
        errors = dict.fromkeys(range(seq0, seq), exc.errno)
    if not errors:
        return len(part), 0
    fail = retried = 0
    for s, err in sorted(errors.items()):
        i = s - seq0
        if not 0 <= i < len(part):
            continue  # not an answer to this batch
        if err == errno.EEXIST and retry is not None:
            retry.append(part[i])
            retried += 1
        else:
            fail += 1
    return len(part) - fail - retried, fail


def _delete_msg(value: bytes, seq: int) -> bytes:
    """``encode_lookup(CtMsg.DELETE, flow, seq)`` of the entry's flow, cut from its create body."""
    return key_request_from_dump(value, META_LEN, len(value) - TAIL_LEN, _DELETE, 0, seq)


def _delete_and_create(sock: CtnlSocket, ents: list[bytes], commit_timeout: int | None,
                       now: float) -> tuple[int, int]:
    dels = []
    for v in ents:
        seq = sock.next_seq()
        dels.append((seq, _delete_msg(v, seq)))
    try:
        derr = sock.batch(dels)
    except NetlinkError as exc:
        derr = {s: exc.errno for s, _ in dels}
    fail = 0
    keep = []
    for (seq, _m), v in zip(dels, ents, strict=True):
        err = derr.get(seq)
        if err is None or err == errno.ENOENT:
            keep.append(v)
        else:
            fail += 1
    ok = 0
    for i in range(0, len(keep), 256):
        o, f = _send_creates(sock, keep[i:i + 256], commit_timeout, now, None)
        ok += o
        fail += f
    return ok, fail


class Injector:
    """DisableExternalCache: received states go straight to the kernel (external_inject.c), a burst at
    a time.

    ``apply`` (the transcoder's fast path) and ``new``/``upd``/``delete`` (the reference path) only
    queue a state; :meth:`flush` sends the queued ones as batched rounds (``inject.InjectBatch``).
    The engine flushes at the end of every receive burst, before an expectation is injected and
    before readiness is evaluated, so nothing waits in the queue once the loop is idle.  A state of
    a flow already queued flushes the queue first (one state per flow and batch: order kept).
    """

    MAX_PENDING = 2048  # states per batch: a bounded burst of kernel work between event-socket reads

    def __init__(self, sock: CtnlSocket, window_tracking: bool = False,
                 log: Callable[[str, str], None] | None = None) -> None:
        self.sock = sock
        self.window_tracking = window_tracking
        self.transcoder = Transcoder(window_tracking)
        self.log = log
        self.stats = {"add_ok": 0, "add_fail": 0, "upd_ok": 0, "upd_fail": 0, "del_ok": 0, "del_fail": 0}
        self.batch = InjectBatch()
        self.batches = 0  # beyond C: batches and netlink rounds sent (-s -o json)
        self.rounds = 0
        self.replaced = 0  # beyond C: live entries deleted + re-created, updates saved by the status-less retry
        self.kept_status = 0

    def __len__(self) -> int:
        return len(self.batch)

    def _queue(self, kind: int, key: bytes, value: bytes) -> None:
        b = self.batch
        if b.has(key):
            self.flush()
            b = self.batch
        b.add(kind, key, value)
        if len(b) >= self.MAX_PENDING:
            self.flush()

    def apply(self, mtype: int, buf, start: int, end: int) -> bool:
        """Queue a CT_NEW/CT_UPD/CT_DEL through the transcoder; False when its layout is not
        compiled (the caller then takes the reference path).  Never raises.  (``_queue`` inlined:
        this runs once per received state.)"""
        r = self.transcoder.entry(buf, start, end, 0.0, 0)
        if r is None:
            return False
        key = r[0]
        b = self.batch
        if key in b.keys:
            self.flush()
            b = self.batch
        b.keys.add(key)
        ops = b.ops
        ops.append(Op(mtype, key, r[1]))
        if len(ops) >= self.MAX_PENDING:
            self.flush()
        return True

    def _entry(self, sf: SyncFlow) -> ExtEntry:
        return build_entry(sf, 0.0, self.window_tracking)

    def new(self, sf: SyncFlow) -> None:
        e = self._entry(sf)
        self._queue(NEW, e.key, e.value)

    def upd(self, sf: SyncFlow) -> None:
        e = self._entry(sf)
        self._queue(UPD, e.key, e.value)

    def delete(self, sf: SyncFlow) -> None:
        e = self._entry(sf)
        self._queue(DEL, e.key, e.value)

    def flush(self) -> None:
        """Send the queued states: round after round of one netlink batch each."""
        b = self.batch
        if not b.ops:
            return
        self.batch = InjectBatch()
        sock = self.sock
        while True:
            seq0 = sock.seq + 1
            if seq0 + 2 * len(b.ops) > 0xFFFFFFFF:
                seq0 = 1
            msgs = b.round(seq0)
            if not msgs:
                break
            sock.seq = msgs[-1][0]
            try:
                errors = sock.batch(msgs)
            except NetlinkError as exc:
                errors = {s: exc.errno for s, _m in msgs}
            except OSError as exc:
                b.fail_all()
                if self.log is not None:
                    self.log("ERROR", f"cannot inject {len(b.ops)} states: {exc.strerror or exc}")
                break
            b.answer(errors)
        self.batches += 1
        self.rounds += b.rounds
        self.replaced += b.replaced
        self.kept_status += b.kept_status
        st = self.stats
        for name, n in b.counts().items():
            st[name] += n
