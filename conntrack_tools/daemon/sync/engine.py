"""The sync engine plugged into the daemon core (C src/sync-mode.c): channels + mode + caches.

Built by :func:`build_engine` from ``Daemon._init`` once the netlink handles exist.  All
I/O happens here; the protocol decisions are in :mod:`.modes` (pure) and the kernel side
of received flows in :mod:`.external`.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from ...netlink.socket import CtnlSocket
from ..bypass import InternalBypass
from ..cache import Entry, ExpCache, ExpEntry
from ..config.model import SyncMode
from ..control import Action, Answers, handles
from ..readiness import ReadinessTracker
from ..stats import DurationHistogram, to_json
from ..transition import TransitionLog
from .auth import AuthFailure, Opener, Sealer, key_file_exposed, load_ring
from .channels import MultiChannel, SyncChannel, TcpChannel, channel_block, link_block, open_channel
from .convert import flow_to_sync
from .entry_packer import EntryRenderer
from .expect import ExpInjector, commit_expectations, expect_to_sync, external_exp_apply, sync_to_expect
from .external import ExternalCache, Injector, commit
from .heal import BulkPacer
from .keyring import KeyFileWatcher
from .modes import Alarm, Ftfw, MsgResult, Notrack, encode_data
from .seq import SeqCounter
from .wire import (
    CT_ATTRS,
    EXP_ATTRS,
    HEADER,
    MsgType,
    SyncExpect,
    WireError,
    WireErrorKind,
    decode_attrs,
    encode_attrs,
    frame,
    is_ack_shaped,
    read_header,
)
from .wire import SyncFlow as _SyncFlow

__all__ = ["SyncDaemonEngine", "build_engine"]

TXQ_MAX = 2147483647
# messages rendered per TX run: a long queue must not keep the event socket from being drained
# (an overrun costs a full resync); 2,000 messages are ~120 datagrams, a few ms
TX_RUN_MAX = 2000
KEY_FILE_POLL = 1.0  # seconds between stats of the AuthKey file (rotation without a restart)
_CT_DEL = int(MsgType.CT_DEL)
ERROR_NAMES = ("malformed", "bad_version", "bad_header", "bad_payload", "bad_type", "truncated", "bad_size",
               "snd_malformed")


class SyncDaemonEngine(Answers):
    """Implements ``mode.SyncEngine``."""

    def __init__(self, daemon: Any) -> None:
        self.d = daemon
        self.cfg = daemon.cfg.sync
        self.log = daemon.log
        self.loop = daemon.loop
        sc = self.cfg
        self.mode_name = sc.mode
        self.seq = SeqCounter(time.time)
        if sc.mode == SyncMode.FTFW:
            self.mode: Notrack | Ftfw = Ftfw(self.seq, sc.ack_window_size, sc.resend_queue_size)
        elif sc.mode == SyncMode.ALARM:
            self.mode = Alarm(self.seq)
        else:
            self.mode = Notrack(self.seq)
        self.mode.on_resync = self._on_resync_request
        self.errors = dict.fromkeys(ERROR_NAMES, 0)
        self.commit_seconds = DurationHistogram()
        self.role: str | None = None  # "primary" / "backup" once a notify step told (_note_role)
        self.role_since = 0.0
        self.role_changes = 0
        self.transitions = TransitionLog(time.time())  # beyond C: the last transition (daemon/transition.py)
        self.send_timeout = sc.effective_commit_timeout is None
        self.window_tracking = sc.tcp_window_tracking
        self.renderer = EntryRenderer(self.send_timeout, self.window_tracking)
        self.nl = CtnlSocket(rcvbuf=8 << 20)
        ctnl = daemon.ctnl
        self.injector: Injector | None = None
        self.external: ExternalCache | None = None
        if sc.disable_external_cache:
            self.injector = Injector(self.nl, self.window_tracking, self.log)
            ctnl.register_origin(self.nl.portid, "inject")
        else:
            self.external = ExternalCache(daemon.g.hashlimit, self.window_tracking)
            ctnl.register_origin(self.nl.portid, "commit")
        # expectations: sent only with ExpectationSync (ctnl.expect), always accepted from peers (as C)
        self.expect_sync = bool(ctnl.expect)
        self.external_exp: ExpCache | None = None
        self.exp_injector: ExpInjector | None = None
        if sc.disable_external_cache:
            self.exp_injector = ExpInjector(self.nl, self.log)
        else:
            self.external_exp = ExpCache("external", daemon.g.hashlimit)
        self.sealer: Sealer | None = None
        self.opener: Opener | None = None
        self.key_watcher: KeyFileWatcher | None = None
        if sc.auth_key:
            try:
                ring = load_ring(sc.auth_key)
            except (OSError, ValueError) as exc:
                self.log("ERROR", f"can't load AuthKey: {getattr(exc, 'strerror', None) or exc}")
                raise OSError(str(exc)) from None
            if sc.auth_key.startswith("/"):
                if key_file_exposed(sc.auth_key):
                    self.log("warning", f"AuthKey file {sc.auth_key} is readable by others than root")
                self.key_watcher = KeyFileWatcher(sc.auth_key, ring)
                self.loop.every(KEY_FILE_POLL, self._poll_key_file)
            self.sealer, self.opener = Sealer(ring), Opener(ring)
            self.log("notice", "authenticated sync on (HMAC-SHA256-128, protocol version 2), " + ring.describe())
        chans: list[SyncChannel] = []
        try:
            for c in sc.channels:
                chans.append(open_channel(c))
        except OSError as exc:
            for ch in chans:
                ch.close()
            self.log("ERROR", f"can't open channel socket: {exc.strerror or exc}")
            raise
        if self.sealer is not None:
            for ch in chans:
                ch.set_sealer(self.sealer)
        self.channels = MultiChannel(chans, sc.default_channel, self.log)
        for idx, ch in enumerate(chans):
            for s in ch.recv_socks:
                self.loop.add_reader(s.fileno(), lambda i=idx, s=s: self._on_readable(i, s))
            if isinstance(ch, TcpChannel):
                self.loop.add_reader(ch.listener.fileno(), lambda i=idx: self._on_accept(i))
                ch.connect()
        self._tx_scheduled = False
        self._dumping = False  # inside a -R dump that reads the sync input (receiving_during_dump)
        self._bulk_deferred = False
        self._stream_readers: dict[int, Callable[[], None]] = {}  # channel index -> its TCP connection's reader
        self.pacer = BulkPacer()  # the pace of RESYNC answers (heal.py)
        self._direct_pending = False  # send_flow() queued messages on the channels: flush them
        self._last_xmit = time.monotonic()
        self._reset_timer = None
        self._refresh_pos = 0
        self._refresh_list: list[Entry] = []
        self.last_data: float | None = None  # when a peer's data message was last applied
        self.readiness = getattr(daemon, "readiness", None)  # beyond C: keepalived track_file (daemon/readiness.py)
        self.tracker: ReadinessTracker | None = None
        self._seq_seen: dict = {}  # readiness: last sequence number per peer (_received)
        self._seq_total = 0
        if self.readiness is not None:
            alarm = sc.mode == SyncMode.ALARM
            self.tracker = ReadinessTracker(refresh_time=float(sc.refresh_time) if alarm else None)
        self.loop.add_timer(0, self._startup)
        self._tick_timer = self.loop.add_timer(0.25, self._tick)
        self.closed = False

    # ============================================================ helpers
    @property
    def internal(self):
        return self.d.mode.cache

    def _startup(self) -> None:
        # with a readiness file the daemon always asks: completeness is "the peer's answer is in"
        if (self.cfg.startup_resync or self.tracker is not None) and self.mode_name != SyncMode.ALARM:
            self.mode.request_resync()
            if self.tracker is not None:
                self.tracker.resync_requested(time.time(), self._received(self.mode.peers))
                self.transitions.started = time.time()
        self._schedule_tx()

    def _check_ready(self, now: float) -> None:
        if self.injector is not None:
            self.injector.flush()  # "ready" only once the received states are in the kernel
        mode = self.mode
        peers = mode.peers.values()
        heard = max((p.last_heard for p in peers), default=None)
        req = getattr(mode, "pending_resync", None)
        if self.tracker.update(now, heard, self.last_data, mode.resync_pending(),  # type: ignore[union-attr]
                               any(p.debt.owed for p in peers), self._received(mode.peers),
                               req is not None and req.sent):
            self.readiness.ready()
            self.transitions.ready(now)
        elif self.tracker.overdue(now):
            self.log("notice", f"state not complete {self.tracker.slow_after:g} s after the resync request: waiting on "
                               + "; ".join(self.tracker.waiting_on))

    def _received(self, peers: dict) -> int:
        """Messages received from the peers so far, from their sequence numbers (readiness's rate)."""
        seen = self._seq_seen
        for addr, p in peers.items():
            last = p.tracker.last
            if last is None:
                continue
            prev = seen.get(addr)
            step = 0 if prev is None else (last - prev) & 0xFFFFFFFF
            self._seq_total += step if step < 0x80000000 else 0  # a peer that restarted counts from now
            seen[addr] = last
        return self._seq_total

    def _schedule_tx(self, delay: float = 0.0) -> None:
        if not self._tx_scheduled:
            self._tx_scheduled = True
            self.loop.add_timer(delay, self._run_tx)

    def _render(self, obj: tuple[Entry | ExpEntry, int]) -> tuple[int, bytes] | None:
        """A queued (entry, message type) as it is now: C builds each message from the cached object when
        it leaves the queue, with the timeout of the last kernel event (CT_DEL and bulk sends included)."""
        e, mtype = obj
        if e.__class__ is ExpEntry:
            return self._render_exp(e, mtype)  # type: ignore[arg-type]
        try:
            body = self.renderer.body(e, e.timeout)  # type: ignore[union-attr]
        except WireError:
            self.errors["snd_malformed"] += 1
            return None
        if body is None:
            return None
        return (_CT_DEL if e.dead else mtype), body

    def _render_exp(self, e: ExpEntry, mtype: int) -> tuple[int, bytes] | None:
        """exp2msg for a cached expectation (few of them: the reference encoder is fine)."""
        se = expect_to_sync(e.exp, timeout=self.send_timeout) if e.exp is not None else None
        body = self._body(se, EXP_ATTRS)
        if body is None:
            return None
        return (MsgType.EXP_DEL if e.dead else mtype), body

    def _run_tx(self) -> None:
        self._tx_scheduled = False
        if self.closed:
            return
        mode = self.mode
        msgs = mode.xmit(self._render, TX_RUN_MAX)
        if mode.tx:  # more queued (a resync, -B): the loop reads kernel events before the next run
            self._schedule_tx(self.pacer.delay(time.monotonic(), len(msgs)))
        if not msgs and not self._direct_pending:
            return
        ch = self.channels
        ch.queue_all(msgs)
        ch.flush()
        self._direct_pending = False
        self._last_xmit = time.monotonic()

    def send_flow(self, flow, mtype: int) -> None:
        """DisableInternalCache: a local event is sent as it is, without a cache or a TX queue.

        C (internal_bypass.c) appends it to the channel buffer and flushes at the next 1-s TX
        run; ours flushes at the end of this loop pass.
        """
        body = self._body(flow_to_sync(flow, timeout=self.send_timeout, window_tracking=self.window_tracking),
                          CT_ATTRS)
        if body is not None:
            self._send_direct(mtype, body)

    def send_expect(self, exp, mtype: int) -> None:
        """DisableInternalCache with ExpectationSync: an expectation event goes out as it is."""
        body = self._body(expect_to_sync(exp, timeout=self.send_timeout), EXP_ATTRS)
        if body is not None:
            self._send_direct(mtype, body)

    def _body(self, obj: _SyncFlow | SyncExpect | None, table) -> bytes | None:
        """The attributes of a SyncFlow/SyncExpect by the reference encoder; None when there is
        nothing to send or a value does not fit its attribute (counted, as C's send errors)."""
        if obj is None:
            return None
        try:
            return encode_attrs(obj.to_attrs(), table)
        except WireError:
            self.errors["snd_malformed"] += 1
            return None

    def _send_direct(self, mtype: int, body: bytes) -> None:
        self.channels.queue(encode_data(mtype, body, self.seq.next()))
        self._direct_pending = True
        self._schedule_tx()

    def _tick(self) -> None:
        """Every 250 ms: the 1-s alive/ack alarm (re-armed by each TX run), ALARM refresh, links."""
        if self.closed:
            return
        now = time.monotonic()
        if self.tracker is not None and not self.tracker.ready:
            self._check_ready(time.time())
        if self.mode.heal(time.time()):
            p = self.mode.policy
            self.log("notice", f"requesting resync: messages lost (sequence gaps {p.gap}, socket drops "
                               f"{p.socket_drop}, unanswered NACKs {p.unanswered_nack}; request {p.requests}, "
                               f"next no sooner than {p.current_holdoff:g} s)")
            self.mode.request_resync()
            self._readiness_restart()
            self._run_tx()
        if now - self._last_xmit >= 1.0:
            if isinstance(self.mode, Ftfw):
                self.mode.tick(time.time())
                self.mode.expire_peers(time.time())
            else:
                self.mode.tick()
            self._last_xmit = now
            self._run_tx()
        if self.mode_name == SyncMode.ALARM:
            self._alarm_refresh(now)
            if self.external is not None:
                self.external.expire(time.time(), self.cfg.cache_timeout)
        self.channels.check_links()
        for ch in self.channels.channels:
            if isinstance(ch, TcpChannel):
                ch.check_client()
        if isinstance(self.mode, Ftfw):
            self.mode.mark(time.monotonic())  # dates what the peer has not acknowledged yet (stats_json)
        self._tick_timer = self.loop.add_timer(0.25, self._tick)

    def _alarm_refresh(self, now: float) -> None:
        """ALARM: every internal entry is re-sent on average every RefreshTime/2 seconds."""
        if not hasattr(self, "_refresh_next"):
            self._refresh_next = now + 1.0
        if now < self._refresh_next:
            return
        self._refresh_next = now + 1.0
        if self._refresh_pos >= len(self._refresh_list):
            self._refresh_list = self.internal.live()
            self._refresh_pos = 0
        n = len(self._refresh_list)
        if not n:
            return
        per_sec = max(1, -(-2 * n // max(1, self.cfg.refresh_time)))
        for e in self._refresh_list[self._refresh_pos:self._refresh_pos + per_sec]:
            if not e.dead:
                self.mode.enqueue(e.key, (e, MsgType.CT_UPD))
        self._refresh_pos += per_sec
        self._schedule_tx()

    # ============================================================ kernel events
    def on_local_new(self, entry: Entry, flow, origin: str | None) -> None:
        if origin is None:
            self.mode.enqueue(entry.key, (entry, MsgType.CT_NEW))
            self._schedule_tx()

    def on_local_update(self, entry: Entry, flow, origin: str | None) -> None:
        if origin is None:
            self.mode.enqueue(entry.key, (entry, MsgType.CT_UPD))
            self._schedule_tx()

    def on_local_destroy(self, entry: Entry, flow, origin: str | None) -> None:
        if origin is None:
            self.mode.enqueue(entry.key, (entry, MsgType.CT_DEL))
            self._schedule_tx()

    def on_exp_new(self, e: ExpEntry, exp, origin: str | None) -> None:
        self._exp_enqueue(e, MsgType.EXP_NEW, origin)

    def on_exp_update(self, e: ExpEntry, exp, origin: str | None) -> None:
        self._exp_enqueue(e, MsgType.EXP_UPD, origin)

    def on_exp_destroy(self, e: ExpEntry, exp, origin: str | None) -> None:
        self._exp_enqueue(e, MsgType.EXP_DEL, origin)

    def _exp_enqueue(self, e: ExpEntry, mtype: int, origin: str | None) -> None:
        if origin is None:
            self.mode.enqueue(("exp", e.key), (e, mtype))
            self._schedule_tx()

    def on_resync_done(self) -> None:
        self._schedule_tx()

    def bulk(self) -> None:
        """resync_send: every internal object goes to the TX queue (without a cache: a kernel dump, as CT_NEW)."""
        if isinstance(self.d.mode, InternalBypass):
            self.d.ctnl.dump(lambda flow: self.send_flow(flow, MsgType.CT_NEW))
            return
        for e in self.internal.live():
            self.mode.enqueue(e.key, (e, MsgType.CT_NEW if e.lastupdate == e.lifetime else MsgType.CT_UPD))
        if self.expect_sync:
            for x in self.d.mode.exp_cache.live():
                self.mode.enqueue(("exp", x.key), (x, MsgType.EXP_NEW))
        self._schedule_tx()

    def _on_resync_request(self) -> None:
        self.log("notice", "resync requested by other node")
        self.pacer.on_request(time.monotonic())
        if self._dumping:
            self._bulk_deferred = True  # the internal cache is half filled: answer once the dump is over
            return
        self.bulk()

    @contextmanager
    def receiving_during_dump(self) -> Iterator[None]:
        """Around a -R dump that calls poll_rx(): a peer's resync request read meanwhile is answered after it."""
        self._dumping, self._bulk_deferred = True, False
        try:
            yield
        finally:
            self._dumping = False
            if self._bulk_deferred:
                self._bulk_deferred = False
                self.bulk()

    def poll_rx(self) -> None:
        """Read what the channels hold now: every datagram socket, and one receive of each TCP connection."""
        for idx, ch in enumerate(self.channels.channels):
            for s in ch.recv_socks:
                self._on_readable(idx, s)
        for reader in list(self._stream_readers.values()):
            reader()

    # ============================================================ network input
    def _on_readable(self, idx: int, sock: socket.socket) -> None:
        ch = self.channels.channels[idx]
        for data, peer in ch.recv(sock):
            self.handle_datagram(idx, data, peer, flush=False)
        if self.injector is not None:
            self.injector.flush()  # the burst's states in batched netlink rounds
        dropped = ch.kernel_drops(sock)
        if dropped:
            self.mode.socket_dropped(time.time(), dropped)
            grown = ch.grow_rcvbuf(sock)
            if grown is not None:
                self.log("notice", f"sync receive buffer full ({dropped} datagrams dropped by the kernel): "
                                   f"grown to {grown} bytes")
        self._schedule_tx()

    def _on_accept(self, idx: int) -> None:
        ch = self.channels.channels[idx]
        assert isinstance(ch, TcpChannel)
        try:
            conn, addr = ch.listener.accept()
        except OSError:
            return
        if ch.server is not None:
            self.loop.remove(ch.server.fileno())
            ch.server.close()
        conn.setblocking(False)
        ch.server = conn
        dec = ch.decoder_cls()
        peer = addr[0]

        def readable() -> None:
            try:
                data = conn.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:
                self.loop.remove(conn.fileno())
                conn.close()
                if ch.server is conn:
                    ch.server = None
                    self._stream_readers.pop(idx, None)
                return
            ch.stats.bytes_recv += len(data)
            ch.stats.pkts_recv += 1
            self._stream(idx, dec, data, peer)
            self._schedule_tx()

        self._stream_readers[idx] = readable
        self.loop.add_reader(conn.fileno(), readable)

    def _stream(self, idx: int, dec, data: bytes, peer) -> None:
        # reuse the datagram path on whole messages: StreamDecoder keeps partial tails
        buf = dec._pending + data
        dec._pending = b""
        off = 0
        while off < len(buf):
            remain = len(buf) - off
            if remain < 8:
                dec._pending = buf[off:]
                return
            vt, flags, mlen, _s = HEADER.unpack_from(buf, off)
            need = 16 if is_ack_shaped(vt & 15, flags) else 8
            if mlen == 0 or mlen < need:
                self.errors["malformed"] += 1
                self.errors["bad_size"] += 1
                return
            if mlen > remain:
                dec._pending = buf[off:]
                return
            self.handle_datagram(idx, buf[off:off + mlen], peer, flush=False)
            off += mlen
        if self.injector is not None:
            self.injector.flush()

    def handle_datagram(self, idx: int, buf: bytes, peer, flush: bool = True) -> None:
        """channel_handler_routine + do_channel_handler_step for one datagram.

        With direct injection the datagram's states are queued; ``flush`` sends them at the end
        (the socket readers pass False and flush once per burst)."""
        err = self.errors
        if self.opener is not None:
            try:
                buf = self.opener.open(buf, peer)
            except AuthFailure:
                return
        off, end = 0, len(buf)
        mode = self.mode
        now = time.time()
        # Fast path (docs/sync.md R5): a data message (version 1, type 0-5) without flags that the
        # mode takes as the next seq of a peer in sync; everything else (control, HELLO, gaps, new
        # peers, framing errors) gets a decoded header and mode.recv.
        fast = mode.recv_fast
        unpack = HEADER.unpack_from
        apply = self._apply
        chans = self.channels
        applied = False  # last_data once per datagram (the readiness clock), not per message
        try:
            while off < end:
                if end - off >= 8:
                    vt, flags, mlen, seq = unpack(buf, off)
                    if flags == 0 and 0x10 <= vt <= 0x15 and 8 <= mlen <= end - off and fast(peer, seq, now):
                        chans.set_current(idx)
                        apply(vt & 0x0F, buf, off, mlen)
                        applied = True
                        off += mlen
                        continue
                try:
                    mlen = frame(buf, off)
                except WireError as exc:
                    err["malformed"] += 1
                    err["truncated" if exc.kind is WireErrorKind.TRUNCATED else "bad_size"] += 1
                    return
                if buf[off] >> 4 != 1:
                    err["malformed"] += 1
                    err["bad_version"] += 1
                    off += mlen
                    continue
                h = read_header(buf, off, mlen)
                res = mode.recv(peer, h, now)
                if res == MsgResult.BAD:
                    err["malformed"] += 1
                    err["bad_header"] += 1
                elif res in (MsgResult.DATA, MsgResult.CTL):
                    chans.set_current(idx)
                    if res == MsgResult.DATA:
                        apply(h.type, buf, off, mlen)
                        applied = True
                off += mlen
        finally:
            if applied:
                self.last_data = now
            if flush and self.injector is not None:
                self.injector.flush()

    def _apply(self, mtype: int, buf: bytes, off: int, mlen: int) -> None:
        err = self.errors
        if mtype > MsgType.EXP_DEL:
            err["malformed"] += 1
            err["bad_type"] += 1
            return
        if mtype >= MsgType.EXP_NEW:
            self._apply_exp(mtype, buf, off, mlen)
            return
        ext = self.external
        if ext is not None:
            if ext.apply(mtype, buf, off + 8, off + mlen):
                return  # transcoded: no SyncFlow (external.py, transcode.py); else the reference path
        elif self.injector is not None and self.injector.apply(mtype, buf, off + 8, off + mlen):
            return  # transcoded and queued (flushed at the end of the burst)
        try:
            attrs = decode_attrs(buf, off + 8, off + mlen, CT_ATTRS)
            sf = _SyncFlow.from_attrs(attrs)
        except WireError:
            err["malformed"] += 1
            err["bad_payload"] += 1
            return
        target = self.external if self.external is not None else self.injector
        try:
            if mtype == MsgType.CT_NEW:
                target.new(sf)
            elif mtype == MsgType.CT_UPD:
                target.upd(sf)
            else:
                target.delete(sf)
        except (ValueError, OSError) as exc:
            self.log("ERROR", f"cannot apply sync message: {exc}")

    def _apply_exp(self, mtype: int, buf: bytes, off: int, mlen: int) -> None:
        """EXP_NEW/UPD/DEL from a peer: msg2exp, then the external expectation cache or the kernel."""
        try:
            exp = sync_to_expect(SyncExpect.from_attrs(decode_attrs(buf, off + 8, off + mlen, EXP_ATTRS)))
        except (WireError, ValueError):
            self.errors["malformed"] += 1
            self.errors["bad_payload"] += 1
            return
        if self.external_exp is not None:
            external_exp_apply(self.external_exp, mtype == MsgType.EXP_NEW, mtype == MsgType.EXP_DEL, exp,
                               int(time.time()))
        elif self.exp_injector is not None:
            if self.injector is not None:
                self.injector.flush()  # the expectation's master first
            self.exp_injector.apply(mtype == MsgType.EXP_DEL, exp)

    # ============================================================ client requests
    @handles(Action.CT_DUMP_EXTERNAL, Action.CT_DUMP_EXT_XML)
    def _dump_external(self, action: int, as_json: bool) -> Iterable[str]:
        ext = self.external
        return () if ext is None else ext.dump_lines(action == Action.CT_DUMP_EXT_XML, as_json)

    def _note_role(self, role: str) -> None:
        """Beyond C: the node's VRRP role as keepalived's notify hook reveals it. Both our
        conntrackd-notify and upstream's primary-backup.sh commit the external cache on becoming
        primary and schedule the purge (-t) on becoming backup or faulty, so the daemon learns
        its role from the requests, with no extra protocol (a manual -c or -t counts too)."""
        if role != self.role:
            self.transitions.role(time.time(), self.role, role)
            self.role, self.role_since = role, time.time()
            self.role_changes += 1

    @handles(Action.CT_COMMIT, Action.ALL_COMMIT, Action.EXP_COMMIT)
    def _commit_request(self, action: int, as_json: bool) -> Iterable[str]:
        if action in (Action.CT_COMMIT, Action.ALL_COMMIT):
            self._note_role("primary")
        if action == Action.CT_COMMIT:
            return self._commit("committing conntrack cache", ct=True, exp=False)
        if action == Action.ALL_COMMIT:
            return self._commit("committing all external caches", ct=True, exp=self.expect_sync)
        if not self.expect_sync:  # EXP_COMMIT
            return ()
        return self._commit("committing expectation cache", ct=False, exp=True)

    @handles(Action.CT_FLUSH_EXT_CACHE)
    def _flush_external(self, action: int, as_json: bool) -> Iterable[str]:
        self.log("notice", "flushing external cache")
        if self.external is not None:
            self.external.flush()
        return ()

    @handles(Action.SEND_BULK)
    def _send_bulk(self, action: int, as_json: bool) -> Iterable[str]:
        self.bulk()
        return ()

    @handles(Action.REQUEST_DUMP)
    def _request_dump(self, action: int, as_json: bool) -> Iterable[str]:
        if self.injector is not None:  # with direct injection and a config C could run, no -t on backup
            self._note_role("backup")
        self.mode.request_resync()
        self._readiness_restart()
        self._schedule_tx()
        return ()

    def _readiness_restart(self) -> None:
        """Asking again (losses, -n): the state is complete only after that bulk.  A node that was
        ready goes back to not ready unless it is the primary (a manual -n there must not move the
        VIPs): keepalived's backup hook sends -n when keepalived restarts and the daemon did not, and
        that node would preempt while still absorbing the bulk, with the live changes queued behind
        it reaching its kernel too late (the interop lab: fresh FTP data connections dropped as
        invalid at the failback, docs/failover.md)."""
        if self.tracker is None:
            return
        now = time.time()
        if self.tracker.restart(now, rearm=self.role != "primary", received=self._received(self.mode.peers)):
            self.readiness.not_ready()
            self.log("notice", f"waiting for the resync asked for: readiness file `{self.readiness.path}' "
                               f"set to {self.readiness.weight}")
            self.transitions.waiting(now)

    @handles(Action.RESET_TIMERS)
    def _reset_timers(self, action: int, as_json: bool) -> Iterable[str]:
        self._note_role("backup")
        if self._reset_timer is None:
            pt = self.cfg.purge_timeout
            # beyond C: with direct injection the kernel table is the synced state; only the cache goes
            what = "internal cache" if self.injector is not None else "conntrack table"
            self.log("notice", f"flushing {what} in {pt} secs")
            self._reset_timer = self.loop.add_timer(pt, self._reset_fire)
        return ()

    @handles(Action.STATS_NETWORK)
    def _stats_network(self, action: int, as_json: bool) -> Iterable[str]:
        return [to_json("network", self.stats_json())] if as_json else [self.network_text()]

    @handles(Action.STATS_LINK)
    def _stats_link(self, action: int, as_json: bool) -> Iterable[str]:
        if as_json:
            return [to_json("link", {"links": self._links_json()})]
        chs = self.channels
        return [link_block(ch, i == chs.current) for i, ch in enumerate(chs.channels)]

    @handles(Action.STATS_RSQUEUE)
    def _stats_rsqueue(self, action: int, as_json: bool) -> Iterable[str]:
        if not isinstance(self.mode, Ftfw):
            return ()
        return [to_json("rsqueue", {"len": len(self.mode.rsq)})] if as_json else [self.mode.rsqueue_text()]

    @handles(Action.STATS_QUEUE)
    def _stats_queue(self, action: int, as_json: bool) -> Iterable[str]:
        return [to_json("queue", self._queues_json())] if as_json else [self.queue_text()]

    @handles(Action.EXP_DUMP_EXTERNAL, Action.EXP_DUMP_EXT_XML, Action.EXP_DUMP_INTERNAL, Action.EXP_DUMP_INT_XML)
    def _nothing(self, action: int, as_json: bool) -> Iterable[str]:
        """Expectation dumps the mode did not answer before reaching the engine: handled, no output."""
        return ()

    def _reset_fire(self) -> None:
        """do_reset_cache_alarm: flush the kernel table (selective) and the internal cache."""
        self._reset_timer = None
        if self.injector is not None:  # beyond C (see _reset_timers): the kernel table stays
            self.log("notice", "flushing internal cache (scheduled)")
            self.internal.flush()
            return
        self.d.runtime.nl_kernel_table_flush += 1
        self.log("notice", "flushing kernel conntrack table (scheduled)")
        try:
            self.d.ctnl.flush_selective()
        except OSError as exc:
            self.log("ERROR", f"flushing kernel conntrack table failed: {exc.strerror}")
        self.internal.flush()

    def _commit(self, what: str, ct: bool, exp: bool) -> Iterable[str]:
        """local_commit: conntracks, then expectations (their masters must be in the kernel first)."""
        if self._reset_timer is not None:
            self._reset_timer.cancel()
            self._reset_timer = None
        if self.external is None:
            return ()
        self.log("notice", what)
        timeout = self.cfg.effective_commit_timeout
        if ct:
            t0 = time.monotonic()
            ok, fail = commit(self.external, self.nl, timeout)
            dt = time.monotonic() - t0
            self._commit_done(ok, fail, dt, "entries")
            self.last_commit = (ok, fail, dt)
            self.transitions.commit(ok, fail, dt)
            self.commit_seconds.observe(dt)
        if exp and self.external_exp is not None:
            t0 = time.monotonic()
            ok, fail = commit_expectations(self.external_exp, self.nl, timeout, self.log)
            self._commit_done(ok, fail, time.monotonic() - t0, "expectations")
        return ()

    def _commit_done(self, ok: int, fail: int, dt: float, what: str) -> None:
        self.log("notice", f"Committed {ok} new {what}")
        if fail:
            self.log("notice", f"{fail} {what} can't be committed")
        self.log("notice", f"commit has taken {int(dt)}.{int((dt % 1) * 1e6):06d} seconds")

    # ============================================================ stats
    def _msg_tracking(self) -> str:
        return ("message tracking:\n"
                f"{self.errors['malformed']:20} Malformed msgs {self.mode.lost:20} Lost msgs\n\n")

    def stats_text(self) -> str:
        out = []
        if self.injector is not None:
            s = self.injector.stats
            out.append("external inject:\n"
                       f"connections created:\t\t{s['add_ok']:12d}\tfailed:\t{s['add_fail']:12d}\n"
                       f"connections updated:\t\t{s['upd_ok']:12d}\tfailed:\t{s['upd_fail']:12d}\n"
                       f"connections destroyed:\t\t{s['del_ok']:12d}\tfailed:\t{s['del_fail']:12d}\n\n")
        out.append(channel_block(self.channels.cur))
        out.append(self._msg_tracking())
        return "".join(out)

    def network_text(self) -> str:
        e = self.errors
        return ("network statistics:\n\trecv:\n"
                f"\t\tMalformed messages:\t{e['malformed']:20d}\n"
                f"\t\tWrong protocol version:\t{e['bad_version']:20d}\n"
                f"\t\tMalformed header:\t{e['bad_header']:20d}\n"
                f"\t\tMalformed payload:\t{e['bad_payload']:20d}\n"
                f"\t\tBad message type:\t{e['bad_type']:20d}\n"
                f"\t\tTruncated message:\t{e['truncated']:20d}\n"
                f"\t\tBad message size:\t{e['bad_size']:20d}\n"
                "\tsend:\n"
                f"\t\tMalformed messages:\t{e['snd_malformed']:20d}\n\n"
                + self._auth_text() +
                "sequence tracking statistics:\n\trecv:\n"
                f"\t\tPackets lost:\t\t{self.mode.lost:20d}\n"
                f"\t\tPackets before:\t\t{self.mode.before:20d}\n\n"
                + channel_block(self.channels.cur))

    def _poll_key_file(self) -> None:
        """Beyond C: a changed AuthKey file takes effect without a restart (key rotation, keyring.py).
        A stat per second; a read only when the stat changed.  A bad file keeps the keys we have."""
        w = self.key_watcher
        if self.closed or w is None or self.sealer is None or self.opener is None:
            return
        ring, error = w.poll()
        if error is not None:
            self.log("ERROR", f"AuthKey file refused, keeping the current keys ({w.ring.describe()}): {error}")
        elif ring is not None:
            self.opener.set_ring(ring)
            self.sealer.set_ring(ring)
            self.log("notice", f"AuthKey file {w.path} reloaded: {ring.describe()}")
            if key_file_exposed(w.path):
                self.log("warning", f"AuthKey file {w.path} is readable by others than root")

    def _auth_text(self) -> str:
        """Beyond C, only with AuthKey: the envelope counters."""
        if self.opener is None or self.sealer is None:
            return ""
        a = self.opener.stats
        return ("authentication (HMAC-SHA256-128):\n\trecv:\n"
                f"\t\tAccepted:\t\t{a['accepted']:20d}\n"
                f"\t\tUnauthenticated:\t{a['unauthenticated']:20d}\n"
                f"\t\tBad MAC:\t\t{a['bad_mac']:20d}\n"
                f"\t\tReplayed:\t\t{a['replayed']:20d}\n"
                f"\t\tStale (clock skew):\t{a['stale']:20d}\n"
                f"\t\tMalformed envelope:\t{a['malformed']:20d}\n"
                f"\t\tUnknown key id:\t\t{a['unknown_key']:20d}\n"
                "\tsend:\n"
                f"\t\tSealed:\t\t\t{self.sealer.sealed:20d}\n"
                f"\t\tKey id:\t\t\t{self.sealer.key_id:20d}\n\n")

    def _auth_json(self) -> dict:
        if self.opener is None or self.sealer is None:
            return {"enabled": False}
        o, w = self.opener, self.key_watcher
        keys = {"send_key_id": self.sealer.key_id, "key_ids": list(o.keys),
                "by_key": {str(k): {"accepted": v[0], "bad_mac": v[1]} for k, v in o.by_key.items()}}
        if w is not None:
            keys["key_file"] = {"path": w.path, "reloads": w.reloads, "refused": w.refused,
                                "last_error": w.last_error}
        return {"enabled": True, "mac": "hmac-sha256-128", "sent": self.sealer.sealed, **o.stats, **keys}

    def _queues(self) -> list[tuple[str, int, int, int]]:
        rsq = len(self.mode.rsq) if isinstance(self.mode, Ftfw) else 0
        errq = sum(len(ch.errorq) for ch in self.channels.channels if isinstance(ch, TcpChannel))
        over = self.mode.rsq_overflow if isinstance(self.mode, Ftfw) else 0
        out = [("txqueue", len(self.mode.tx), TXQ_MAX, 0), ("errorq", errq, self.cfg.error_queue_length, 0)]
        if isinstance(self.mode, Ftfw):
            out.append(("rsqueue", rsq, self.cfg.resend_queue_size, over))
        return out

    def queue_text(self) -> str:
        qs = self._queues()
        out = [f"allocated queue nodes:\t\t{sum(q[1] for q in qs):12d}\n\n"]
        for name, cur, mx, err in qs:
            out.append(f"queue {name}:\ncurrent elements:\t\t{cur:12d}\nmaximum elements:\t\t{mx:12d}\n"
                       f"not enough space errors:\t{err:12d}\n\n")
        return "".join(out)

    def _queues_json(self) -> dict:
        return {"queues": {n: {"current": c, "max": m, "enospc": e} for n, c, m, e in self._queues()}}

    def _links_json(self) -> list[dict]:
        chs = self.channels
        return [{"transport": ch.kind, "device": ch.ifname, "status": ch.status(),
                 "role": "ACTIVE" if i == chs.current else "BACKUP", **vars_of(ch.stats)}
                for i, ch in enumerate(chs.channels)]

    def stats_json(self) -> dict:
        d: dict = {"sync_mode": str(self.mode_name), "network": dict(self.errors),
                   "sequence": {"lost": self.mode.lost, "before": self.mode.before},
                   "links": self._links_json(), "auth": self._auth_json(),
                   "heal": {**self.mode.policy.counters(), "answers_paced": self.pacer.requests,
                            "answer_rate": self.pacer.current or 0},
                   "role": {"primary": int(self.role == "primary"), "backup": int(self.role == "backup"),
                            "since": self.role_since, "changes": self.role_changes},
                   "transition": {**self.transitions.as_json(),
                                  "waiting_on": list(self.tracker.waiting_on) if self.tracker is not None else []}}
        if self.injector is not None:
            inj = self.injector
            d["external_inject"] = {**inj.stats, "batches": inj.batches, "rounds": inj.rounds,
                                    "replaced": inj.replaced, "kept_status": inj.kept_status}
        now = time.time()
        d["peers"] = {str(a): {"last_seq": p.tracker.last, "last_heard_seconds_ago": round(now - p.last_heard, 3),
                               **({"acked": p.acked} if isinstance(self.mode, Ftfw) else {})}
                      for a, p in self.mode.peers.items()}
        if isinstance(self.mode, Ftfw):
            m = self.mode
            mono = time.monotonic()
            d["resend"] = {"rsqueue": len(m.rsq), "overflow": m.rsq_overflow, "evicted_pending": len(m.evicted),
                           "targeted_resent": m.targeted_resent,
                           # what the peer has not acknowledged yet: data messages sent (unacked), how long the
                           # oldest has waited, and how long the TX queue has stayed non-empty (queued, not sent)
                           "unacked": m.unacked(), "txqueue": len(m.tx),
                           "oldest_unacked_seconds": round(m.unacked_age(mono), 3),
                           "tx_backlog_seconds": round(m.backlog_age(mono), 3)}
        return d

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.injector is not None:
            self.injector.flush()
        for ch in self.channels.channels:
            for s in ch.recv_socks:
                self.loop.remove(s.fileno())
            if isinstance(ch, TcpChannel):
                for s in (ch.listener, ch.server):
                    if s is not None:
                        self.loop.remove(s.fileno())
        self.channels.close()
        self.nl.close()



def vars_of(st) -> dict:
    return {k: getattr(st, k) for k in st.__slots__}


def build_engine(daemon: Any) -> SyncDaemonEngine:
    return SyncDaemonEngine(daemon)

