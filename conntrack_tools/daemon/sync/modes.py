"""Sans-I/O sync modes: NOTRACK, ALARM and FTFW (catalog 3.6-3.8, C src/sync-*.c).

No sockets, no clock reads: the engine feeds received headers (``recv``), queues
local objects (``enqueue``) and control messages, runs the 1-second tick
(``tick``) and asks for the bytes of a TX run (``xmit``).  Objects are opaque to
this module; ``render(obj) -> (msgtype, body)`` is called at transmit time, so a
message always carries the object's *current* state, like C's ``build_msg``.

Differences from C, both deliberate:

* **per-peer receive state** (FTFW and the statistics of NOTRACK): sequence
  tracking, ACK window and ``ack_from`` are kept per sender address, so three or
  more nodes on one multicast group do not see each other's sequence spaces as
  gaps (C keeps one ``last_seq_recv`` for everybody, and drops "BEFORE" packets).
* the resend queue forgets an entry once *every live peer* has acknowledged it
  (with one peer this is C's behaviour: an ACK releases exactly [from, to]).
* **never stuck after a resend-queue overflow**: C forgets an evicted message, so a
  later NACK for it is answered with nothing and the peer misses that flow for
  good.  We remember the *key* of every object evicted before it was acknowledged
  (one record per object, dropped when the object is queued again or an ACK
  covers its seq); a NACK over such a seq re-queues the object with its current
  state: a targeted resync of exactly what may be lost.
* **a new or restarted peer gets what it cannot NACK**: C empties the resend queue
  on a peer's HELLO.  We keep it; the peer's first ACK tells where its sequence
  check began (``from``), and every object sent before that and not acknowledged
  by it (sent while the link was down, before it started or restarted) is
  re-queued with its current state.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

from .heal import NackDebt, ResyncPolicy
from .seq import SEQ_MASK, SeqCounter, SeqStatus, SeqTracker, before
from .wire import HEADER, NETHDR_LEN, MsgFlag, NetHeader, encode_ctl, encode_data

__all__ = ["Alarm", "Ftfw", "MsgResult", "Notrack", "Peer", "encode_data"]

_ACKISH = MsgFlag.ACK | MsgFlag.NACK | MsgFlag.RESYNC
# plain ints for the TX hot loop: `&`/`|` on an IntFlag goes through enum.Flag's Python methods
_ACKISH_INT, _NACK_INT = int(_ACKISH), int(MsgFlag.NACK)
_HELLO_INT, _HELLO_BACK_INT = int(MsgFlag.HELLO), int(MsgFlag.HELLO_BACK)
Render = Callable[[Any], "tuple[int, bytes] | None"]


class MsgResult(IntEnum):
    """C's MSG_DATA / MSG_CTL / MSG_DROP / MSG_BAD."""

    DATA = 0
    CTL = 1
    DROP = 2
    BAD = 3


@dataclass(slots=True)
class Ctl:
    """A queued control message (C: Q_ELEM_CTL)."""

    flags: int
    from_: int = 0
    to: int = 0
    seq: int = 0  # the seq it was last sent with
    sent: bool = False


@dataclass(slots=True)
class Peer:
    """What we know about one sender (keyed by its address)."""

    tracker: SeqTracker = field(default_factory=SeqTracker)
    window: int = 0
    ack_from: int = 0
    ack_from_set: bool = False
    acked: int | None = None  # highest of our seqs this peer acknowledged
    addr: Hashable = None
    fresh: bool = True  # new or restarted (HELLO): its next ACK's `from` is its first seq of ours
    last_heard: float = 0.0
    messages: int = 0
    in_hello: bool = False  # the last message from this peer carried HELLO
    debt: NackDebt = field(default_factory=NackDebt)  # FTFW: NACKed messages not yet re-sent


class _Base:
    """The TX queue shared by every mode (C: STATE_SYNC(tx_queue), one node per object)."""

    name = ""

    def __init__(self, seq: SeqCounter) -> None:
        self.seq = seq
        self.tx: OrderedDict[Hashable, Any] = OrderedDict()
        self._ctl_ids = itertools.count()
        self.peers: dict[Hashable, Peer] = {}
        self.on_resync: Callable[[], None] | None = None  # RESYNC received: bulk send
        self.tx_full = 0
        self.policy = ResyncPolicy()  # beyond C: losses -> rate-limited RESYNC requests (heal.py)
        self.pending_resync: Ctl | None = None  # our last RESYNC request until it is known to be through

    # ------------------------------------------------------------- queueing
    def enqueue(self, key: Hashable, obj: Any) -> None:
        """Queue an object; repeated changes while queued coalesce into one message."""
        if key not in self.tx:
            self.tx[key] = obj
        else:
            self.tx[key] = obj  # keep the queue position, newest state

    def enqueue_ctl(self, flags: int, from_: int = 0, to: int = 0) -> None:
        self.tx[("ctl", next(self._ctl_ids))] = Ctl(flags, from_, to)

    def request_resync(self) -> None:
        """``-n`` / StartupResync: ask the peers for a bulk send."""
        c = self.pending_resync = Ctl(MsgFlag.RESYNC)
        self.tx[("ctl", next(self._ctl_ids))] = c

    def resync_pending(self) -> bool:
        """Our last RESYNC request is not through yet (NOTRACK: not sent; FTFW: not acknowledged)."""
        c = self.pending_resync
        return c is not None and not c.sent

    def _take(self, limit: int | None) -> Iterable[tuple[Hashable, Any]]:
        """Up to ``limit`` queued items, oldest first (all of them when ``limit`` is None)."""
        tx = self.tx
        if limit is None or len(tx) <= limit:
            self.tx = OrderedDict()
            return tx.items()
        pop = tx.popitem
        return [pop(last=False) for _ in range(limit)]

    def peer(self, addr: Hashable, now: float = 0.0) -> Peer:
        p = self.peers.get(addr)
        if p is None:
            p = self.peers[addr] = Peer()
        p.last_heard = now
        return p

    def recv_fast(self, addr: Hashable, seq: int, now: float) -> bool:
        """A flagless data message: True when it was taken as the next seq of a known peer in
        sync (the caller applies it), False when it needs ``recv`` with a decoded header.

        The receive hot path (docs/sync.md R5): no NetHeader, no IntFlag, the same state and
        counters as ``recv`` would leave."""
        return False

    def _next_in_order(self, addr: Hashable, seq: int, now: float) -> Peer | None:
        """The known peer ``addr`` when ``seq`` is the one it sends next (its last_heard updated)."""
        p = self.peers.get(addr)
        if p is None:
            return None
        last = p.tracker.last
        if last is None or seq != (last + 1) & SEQ_MASK:
            return None
        p.last_heard = now
        return p

    def heal(self, now: float) -> bool:
        """Every tick: True when a resync request should go out now (``request_resync``)."""
        return self.policy.due(now)

    def socket_dropped(self, now: float, count: int) -> None:
        """The kernel dropped ``count`` datagrams on a full receive socket."""
        self.policy.loss(now, count, "socket_drop")

    def _resync_or_alive(self, h: NetHeader) -> MsgResult:
        """The control messages every mode but ALARM understands; anything else is malformed."""
        if h.is_resync:
            if self.on_resync is not None:
                self.on_resync()
            return MsgResult.CTL
        if h.is_alive:
            return MsgResult.CTL
        return MsgResult.BAD

    # ------------------------------------------------------------- stats
    @property
    def lost(self) -> int:
        return sum(p.tracker.lost for p in self.peers.values())

    @property
    def before(self) -> int:
        return sum(p.tracker.before_count for p in self.peers.values())

    def _ctl_bytes(self, c: Ctl, extra_flags: int = 0) -> bytes:
        c.seq = self.seq.next()
        c.sent = True
        flags = int(c.flags) | extra_flags
        if flags & _ACKISH_INT:
            return encode_ctl(flags, c.seq, c.from_, c.to)
        return encode_ctl(flags, c.seq)


class Notrack(_Base):
    """C src/sync-notrack.c: send once, ALIVE every idle second, RESYNC on request."""

    name = "notrack"

    def recv(self, addr: Hashable, h: NetHeader, now: float = 0.0) -> MsgResult:
        p = self.peer(addr, now)
        status, exp = p.tracker.track(h.seq)
        res = self._digest(h)
        if res != MsgResult.BAD:
            if status == SeqStatus.AFTER:  # beyond C: nothing re-sends it, ask for a resync
                self.policy.loss(now, (h.seq - exp) & SEQ_MASK, "gap")
            p.tracker.update(h.seq)
        return res

    def recv_fast(self, addr: Hashable, seq: int, now: float) -> bool:
        p = self._next_in_order(addr, seq, now)
        if p is None:
            return False
        p.tracker.last = seq
        return True

    def _digest(self, h: NetHeader) -> MsgResult:
        if h.is_data:
            return MsgResult.DATA
        return self._resync_or_alive(h)

    def tick(self) -> None:
        """The alive alarm: it only fires after a whole idle second (re-armed by each xmit)."""
        self.enqueue_ctl(MsgFlag.ALIVE)

    def xmit(self, render: Render, limit: int | None = None) -> list[bytes]:
        out: list[bytes] = []
        for _key, item in self._take(limit):
            if isinstance(item, Ctl):
                out.append(self._ctl_bytes(item))
            else:
                m = render(item)
                if m is not None:
                    out.append(encode_data(m[0], m[1], self.seq.next()))
        return out


class Alarm(Notrack):
    """C src/sync-alarm.c: no control messages at all; refresh timers live in the engine."""

    name = "alarm"

    def recv(self, addr: Hashable, h: NetHeader, now: float = 0.0) -> MsgResult:
        if h.flags:
            return MsgResult.CTL  # silently ignored, as C
        self.peer(addr, now).tracker.track(h.seq)  # statistics only, never updated (C)
        return MsgResult.DATA

    def recv_fast(self, addr: Hashable, seq: int, now: float) -> bool:
        p = self.peers.get(addr)
        if p is None or p.tracker.last is not None:
            return False
        p.last_heard = now  # statistics only: the tracker is never updated (C)
        return True

    def tick(self) -> None:
        pass

    def request_resync(self) -> None:
        pass

    def heal(self, now: float) -> bool:
        return False  # C ignores RESYNC in ALARM: the refresh (every entry within RefreshTime) heals

    def socket_dropped(self, now: float, count: int) -> None:
        self.policy.socket_drop += count  # counted only


class Ftfw(_Base):
    """C src/sync-ftfw.c with per-peer receive state (see the module docstring)."""

    name = "ftfw"
    HELLO_INIT, HELLO_SAY, HELLO_DONE = 0, 1, 2

    NACK_TIMEOUT = 3.0  # a NACK not answered this long after the last one: resync (heal.py)
    DROP_QUIET = 1.0  # kernel socket drops: a resync once none came for this long (the burst is over)

    def __init__(self, seq: SeqCounter, window: int = 300, rsq_size: int = 131072,
                 peer_timeout: float = 5.0) -> None:
        super().__init__(seq)
        self.window_size = max(1, window)
        self.rsq_size = rsq_size
        # seq -> [key or None for control, object or Ctl, acked_by], in transmission order
        self.rsq: OrderedDict[int, list] = OrderedDict()
        self.rs_index: dict[Hashable, int] = {}  # object key -> its seq in rsq
        self.hello_state = self.HELLO_INIT
        self.say_hello_back = False
        self.peer_timeout = peer_timeout
        self.rsq_overflow = 0
        # evicted before acknowledged: seq -> [key, object, acked_by], in seq order; key -> seq
        self.evicted: OrderedDict[int, list] = OrderedDict()
        self.evicted_index: dict[Hashable, int] = {}
        self.targeted_resent = 0
        self._drops_unhealed = 0  # datagrams the kernel dropped on our socket since the last request
        self._last_drop = 0.0
        # beyond C, for the statistics: (next seq to send, when) per engine tick, from the one that covers
        # the oldest unacknowledged message on (unacked_age); when the TX queue last became non-empty
        self._marks: deque[tuple[int, float]] = deque()
        self._tx_since: float | None = None

    def peer(self, addr: Hashable, now: float = 0.0) -> Peer:
        p = self.peers.get(addr)
        if p is None:
            p = self.peers[addr] = Peer(window=self.window_size, addr=addr)
        p.last_heard = now
        return p

    # ------------------------------------------------------------- TX
    def enqueue(self, key: Hashable, obj: Any) -> None:
        """ftfw_enqueue: an object waiting for its ACK goes back to the TX queue."""
        old = self.rs_index.pop(key, None)
        if old is not None:
            self.rsq.pop(old, None)
        old = self.evicted_index.pop(key, None)
        if old is not None:
            self.evicted.pop(old, None)
        self.tx[key] = obj

    def _hello_flags(self) -> int:
        flags = 0
        if self.hello_state == self.HELLO_INIT:
            self.hello_state = self.HELLO_SAY
        if self.hello_state == self.HELLO_SAY:
            flags = _HELLO_INT
        if self.say_hello_back:
            flags |= _HELLO_BACK_INT
            self.say_hello_back = False
        return flags

    def _rsq_add(self, seq: int, key: Hashable | None, item: Any) -> None:
        if len(self.rsq) >= self.rsq_size:
            old_seq, ent = self.rsq.popitem(last=False)  # rs_queue_purge_full
            if ent[0] is not None:
                self.rs_index.pop(ent[0], None)
                self.evicted[old_seq] = ent
                self.evicted_index[ent[0]] = old_seq
            elif ent[1].flags & _NACK_INT or ent[1] is self.pending_resync:
                # beyond C: an unacknowledged NACK (or our resync request) is asked again (if it
                # was lost, nothing else would ever make the peer re-send that range / its cache)
                self.tx[("ctl", next(self._ctl_ids))] = ent[1]
            self.rsq_overflow += 1
        self.rsq[seq] = [key, item, None]
        if key is not None:
            self.rs_index[key] = seq

    def xmit(self, render: Render, limit: int | None = None) -> list[bytes]:
        """The TX run: every queued item framed with the next seq and kept in the resend queue.

        The HELLO flags are computed for the first message only: the handshake state changes only
        when a message is received, so every later message of the run carries the same flags."""
        out: list[bytes] = []
        append = out.append
        next_seq = self.seq.next
        pack = HEADER.pack
        rsq, rs_index, size = self.rsq, self.rs_index, self.rsq_size
        flags = -1
        for key, item in self._take(limit):
            if item.__class__ is Ctl:
                append(self._ctl_bytes(item, self._hello_flags()))
                flags = -1  # (a Ctl is rare: recompute for the next message)
                if item.flags & _ACKISH_INT:
                    self._rsq_add(item.seq, None, item)
                continue
            m = render(item)
            if m is None:
                continue
            if flags < 0:
                first = self._hello_flags()
                flags = _HELLO_INT if self.hello_state == self.HELLO_SAY else 0
            else:
                first = flags
            seq = next_seq()
            body = m[1]
            append(pack(0x10 | m[0], first, NETHDR_LEN + len(body), seq) + body)
            if len(rsq) < size:  # _rsq_add without the overflow case
                rsq[seq] = [key, item, None]
                rs_index[key] = seq
            else:
                self._rsq_add(seq, key, item)
        return out

    def tick(self, now: float = 0.0) -> None:
        """do_alive_alarm: ACK what was received and not yet acknowledged, else ALIVE."""
        acked = False
        for p in self.peers.values():
            if p.ack_from_set and p.tracker.last is not None:
                self.enqueue_ctl(MsgFlag.ACK, p.ack_from, p.tracker.last)
                p.ack_from_set = False
                acked = True
        if not acked:
            self.enqueue_ctl(MsgFlag.ALIVE)

    # ------------------------------------------------------------- RX
    def recv(self, addr: Hashable, h: NetHeader, now: float = 0.0) -> MsgResult:
        p = self.peer(addr, now)
        p.messages += 1
        hello = False
        if h.flags & MsgFlag.HELLO:
            self.say_hello_back = True
            hello = True
        if h.flags & MsgFlag.HELLO_BACK and self.hello_state == self.HELLO_SAY:
            self.hello_state = self.HELLO_DONE
        W = self.window_size
        # Beyond C: only the first HELLO of a (re)started peer resets the sequence check; the
        # following HELLO-flagged messages (until our HELLO_BACK arrives) are gap-checked, or
        # a loss in a restarted peer's first burst would never be NACKed.
        cont = (hello and p.in_hello and p.tracker.last is not None
                and not before(h.seq, (p.tracker.last + 1) & 0xFFFFFFFF))
        p.in_hello = hello
        if hello and not cont:
            if p.ack_from_set and before(h.seq, p.ack_from):
                p.window = W - 1
                p.ack_from = h.seq
            p.fresh = True
            res = self._in_sync(p, h)
        else:
            if hello:
                p.fresh = True
            status, exp = p.tracker.track(h.seq)
            if status == SeqStatus.AFTER:
                res = self._digest(p, h)
                if res != MsgResult.BAD:
                    if p.ack_from_set:
                        self.enqueue_ctl(MsgFlag.ACK, p.ack_from, (exp - 1) & 0xFFFFFFFF)
                        p.ack_from_set = False
                    self.enqueue_ctl(MsgFlag.NACK, exp, (h.seq - 1) & 0xFFFFFFFF)
                    p.debt.nacked(now, (h.seq - exp) & SEQ_MASK)
                    p.window = W - 1
                    p.ack_from = h.seq
                    p.ack_from_set = True
            elif status == SeqStatus.BEFORE:
                res = MsgResult.DROP
            else:
                res = self._in_sync(p, h)
        if res in (MsgResult.DATA, MsgResult.CTL):
            p.tracker.update(h.seq)
        return res

    def _in_sync(self, p: Peer, h: NetHeader) -> MsgResult:
        res = self._digest(p, h)
        if res == MsgResult.BAD:
            return res
        if res == MsgResult.DATA and p.debt.owed:
            p.debt.owed -= 1
        if not p.ack_from_set:
            p.ack_from_set = True
            p.ack_from = h.seq
        p.window -= 1
        if p.window <= 0:
            self.window_ack(p, h.seq)
        return res

    def recv_fast(self, addr: Hashable, seq: int, now: float) -> bool:
        """``recv`` -> ``_in_sync`` for an in-order flagless data message of a known peer."""
        p = self._next_in_order(addr, seq, now)
        if p is None:
            return False
        p.messages += 1
        p.in_hello = False
        if not p.ack_from_set:
            p.ack_from_set = True
            p.ack_from = seq
        if p.debt.owed:
            p.debt.owed -= 1
        p.window -= 1
        if p.window <= 0:
            self.window_ack(p, seq)
        p.tracker.last = seq
        return True

    def heal(self, now: float) -> bool:
        """NACKs left unanswered (the sender does not hold those messages any more) and kernel socket
        drops, once a quiet DROP_QUIET followed them, become losses for the resync policy.

        Why drops too: they show up as gaps and get NACKed, but the NACK debt errs towards
        "answered" (new traffic pays it), so a burst that overflowed our socket could leave flows
        missing for good when the sender no longer held them (seen: C sender, 200k at full speed,
        99.6 % stalled). Waiting for the quiet second lets the burst and its NACK answers pass first."""
        for p in self.peers.values():
            owed = p.debt.overdue(now, self.NACK_TIMEOUT)
            if owed:
                self.policy.loss(now, owed, "unanswered_nack")
        if self._drops_unhealed and now - self._last_drop >= self.DROP_QUIET:
            self.policy.loss(now, self._drops_unhealed, "socket_drop")
            self._drops_unhealed = 0
        return self.policy.due(now)

    def socket_dropped(self, now: float, count: int) -> None:
        self._drops_unhealed += count
        self._last_drop = now

    def resync_pending(self) -> bool:
        return self.pending_resync is not None  # cleared when every live peer acknowledged it

    def window_ack(self, p: Peer, seq: int) -> None:
        """The ACK window of ``p`` is full at ``seq``: acknowledge [ack_from, seq], start a new window."""
        self.enqueue_ctl(MsgFlag.ACK, p.ack_from, seq)
        p.window = self.window_size
        p.ack_from_set = False

    def _digest(self, p: Peer, h: NetHeader) -> MsgResult:
        if h.is_data:
            return MsgResult.DATA
        if h.is_ack:
            if before(h.to, h.from_):  # type: ignore[attr-defined]
                return MsgResult.BAD
            self._acked(p, h.from_, h.to)  # type: ignore[attr-defined]
            return MsgResult.CTL
        if h.is_nack:
            if before(h.to, h.from_):  # type: ignore[attr-defined]
                return MsgResult.BAD
            self._resend(h.from_, h.to)  # type: ignore[attr-defined]
            return MsgResult.CTL
        return self._resync_or_alive(h)

    # ------------------------------------------------------------- resend queue
    # An entry of ``rsq``/``evicted`` is ``[key or None, object or Ctl, acked_by]``: ``acked_by``
    # is None or the set of peer addresses that ACKed it while other live peers had not yet.

    def _live(self, now: float | None) -> set[Hashable]:
        if now is None:
            return set(self.peers)
        live = {a for a, p in self.peers.items() if now - p.last_heard <= self.peer_timeout}
        return live or set(self.peers)

    @staticmethod
    def _span(d: OrderedDict, from_: int, to: int) -> list[int]:
        """The seqs of ``d`` (seq-ordered) within [from_, to], without scanning a big queue."""
        n = ((to - from_) & 0xFFFFFFFF) + 1
        if n <= len(d):
            return [s for s in ((from_ + i) & 0xFFFFFFFF for i in range(n)) if s in d]
        return [s for s in d if not before(s, from_) and not before(to, s)]

    @staticmethod
    def _head_before(d: OrderedDict, seq: int) -> list[int]:
        return list(itertools.takewhile(lambda s: before(s, seq), d))

    def _drop(self, d: OrderedDict, seq: int) -> list:
        ent = d.pop(seq)
        if ent[0] is not None:
            (self.rs_index if d is self.rsq else self.evicted_index).pop(ent[0], None)
        return ent

    def _mark(self, d: OrderedDict, seq: int, addr: Hashable, live: set[Hashable]) -> None:
        """``addr`` acknowledged ``seq``: forget the entry once every live peer did."""
        ent = d[seq]
        if live != {addr}:
            got = ent[2] if ent[2] is not None else set()
            got.add(addr)
            if not live <= got:
                ent[2] = got
                return
        self._drop(d, seq)
        if ent[1] is self.pending_resync:
            self.pending_resync = None

    def _acked(self, p: Peer, from_: int, to: int) -> None:
        """rs_queue_empty: release what the ACK covers -- only [from, to], as C.

        (Until 2026-11 we released everything up to ``to``: an entry whose NACK was lost
        and re-sent later was already gone -> tail loss under random loss.)"""
        if p.fresh:
            self._fresh_peer_acks(p, from_)
        if p.acked is None or before(p.acked, to):
            p.acked = to
        live = self._live(p.last_heard)
        for d in (self.rsq, self.evicted):
            if d:
                for seq in self._span(d, from_, to):
                    self._mark(d, seq, p.addr, live)

    def _fresh_peer_acks(self, p: Peer, from_: int) -> None:
        """The first ACK of a new or restarted peer: ``from`` is where its sequence check began.

        It cannot NACK what we sent before that (sent while the link was down, before it
        started, before its restart): re-queue those objects (targeted re-send, current
        state); our old ACK/NACKs mean nothing to it. C instead empties the resend queue on
        the HELLO and those flows are lost to the peer for good."""
        p.fresh = False
        live = self._live(p.last_heard)
        for d in (self.rsq, self.evicted):
            for seq in self._head_before(d, from_):
                ent = d[seq]
                if ent[2] is not None and p.addr in ent[2]:
                    continue
                if ent[0] is None:
                    if ent[1].flags & MsgFlag.RESYNC:
                        self._drop(d, seq)
                        self.tx[("ctl", next(self._ctl_ids))] = ent[1]
                    else:
                        self._mark(d, seq, p.addr, live)
                    continue
                self._drop(d, seq)
                self.tx.setdefault(ent[0], ent[1])
                self.targeted_resent += 1

    def _resend(self, from_: int, to: int) -> None:
        """rs_queue_to_tx: NACK'ed messages go back to the TX queue (they get new seqs)."""
        for seq in self._span(self.rsq, from_, to) if self.rsq else ():
            key, item, _ = self._drop(self.rsq, seq)
            if key is not None:
                self.tx[key] = item
            else:
                self.tx[("ctl", next(self._ctl_ids))] = item
        if self.evicted:  # beyond C: targeted resync of objects the resend queue lost
            for seq in self._span(self.evicted, from_, to):
                key, item, _ = self._drop(self.evicted, seq)
                self.tx.setdefault(key, item)
                self.targeted_resent += 1

    def expire_peers(self, now: float) -> None:
        """Forget peers silent for a long time; release what only silent peers still owe."""
        dead = [a for a, p in self.peers.items() if now - p.last_heard > 60 * self.peer_timeout]
        for a in dead:
            del self.peers[a]
        if len(self.peers) < 2 and not dead:
            return
        live = self._live(now)
        for d in (self.rsq, self.evicted):
            for seq in [s for s, e in d.items() if e[2] is not None]:
                if live <= d[seq][2]:
                    self._drop(d, seq)

    # ------------------------------------------------------------- acknowledgement age (beyond C)
    MARKS_MAX = 14400  # an hour of the engine's 250-ms ticks; beyond it the age is a lower bound
    SCAN_MAX = 1024  # control messages looked past at the head of the resend queue

    def _oldest_unacked(self) -> int | None:
        """The seq of the oldest *data* message sent and not acknowledged: a state the peer may lack (``evicted``
        ones are older than ``rsq``'s).  Control messages (our ACK/NACKs) are left out: a peer that sends data
        without a pause acknowledges them only every ACK window, and they carry no state.  Past ``SCAN_MAX``
        control messages at the head, the last one looked at stands in (an older seq: never a shorter age)."""
        if self.evicted:
            return next(iter(self.evicted))
        if not self.rs_index:
            return None
        seq = None
        for seq, ent in itertools.islice(self.rsq.items(), self.SCAN_MAX):
            if ent[0] is not None:
                return seq
        return seq

    def mark(self, now: float) -> None:
        """Every engine tick: every seq before the counter's next one was sent by ``now``; and whether the
        TX queue holds something.  Keeps only the marks that date what is still unacknowledged."""
        marks = self._marks
        oldest = self._oldest_unacked()
        if oldest is None:
            marks.clear()  # nothing to date; the next mark dates what is sent from now on
        else:
            while marks and not before(oldest, marks[0][0]):  # sent after that mark: it dates nothing left
                marks.popleft()
            nxt = self.seq.current
            if nxt is not None and (not marks or marks[-1][0] != nxt):  # nothing sent since: the older one stays
                marks.append((nxt, now))
                if len(marks) > self.MARKS_MAX:
                    marks.popleft()
        if self.tx:
            if self._tx_since is None:
                self._tx_since = now
        else:
            self._tx_since = None

    def unacked(self) -> int:
        """Data messages sent and not acknowledged yet (the objects of ``rsq`` and ``evicted``)."""
        return len(self.rs_index) + len(self.evicted)

    def unacked_age(self, now: float) -> float:
        """Seconds the oldest unacknowledged data message has waited for its ACK, at least (to a tick): 0 when
        every data message sent was acknowledged by every live peer."""
        oldest = self._oldest_unacked()
        if oldest is None:
            return 0.0
        for nxt, t in self._marks:
            if before(oldest, nxt):
                return max(0.0, now - t)
        return 0.0  # sent after the last mark: younger than a tick

    def backlog_age(self, now: float) -> float:
        """Seconds the TX queue has been non-empty at every tick (0: it was empty at the last one)."""
        return 0.0 if self._tx_since is None else max(0.0, now - self._tx_since)

    def rsqueue_text(self) -> str:
        """``-s rsqueue`` (ftfw_local_queue)."""
        out = [f"resent queue (len={len(self.rsq)})\n"]
        for seq, (key, item, _) in self.rsq.items():
            if key is None:
                out.append(f"control -> seq:{seq} flags:{int(item.flags)}\n")
            else:
                out.append(f"object -> seq:{seq}\n")
        return "".join(out)

