"""ctnetlink I/O of the daemon (C src/ctnl.c, src/netlink.c) on top of netlink/socket.py.

Owns the event socket (groups NEW|UPDATE|DESTROY), the dump/resync socket and a request
socket for GET/DELETE batches.  Decoded flows go to the mode's :class:`~.mode.InternalHandler`
after the user-space filter.  Overrun (ENOBUFS): double the receive buffer up to
NetlinkBufferSizeMaxGrowth (one warning when capped), count it, and schedule a resync from
a dump after NetlinkOverrunResync seconds.

With ``Options { ExpectationSync on | { helper ... } }`` the event socket also joins the three
expectation groups (C: subsys NONE, groups CT + EXP), expectation events go to a second handler
after the helper-name filter, and :meth:`Ctnl.dump_expect`, :meth:`Ctnl.existing_expects` and
:meth:`Ctnl.flush_expect` do the EXP_GET dump, the purge check and ``-F expect``.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Iterable
from functools import partial

from ..flow import Expect, Flow
from ..netlink.attrs import (
    NETLINK_BROADCAST_ERROR,
    NETLINK_NO_ENOBUFS,
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    NLMSG_ERROR,
    NLMSG_NOOP,
    NLMSG_OVERRUN,
    SOL_NETLINK,
    CtMsg,
    ExpMsg,
    ct_type,
    exp_type,
)
from ..netlink.codec import DecodeError, decode_expect, encode_expect, encode_lookup, iter_messages, nlmsg
from ..netlink.shapes import ShapeDecoder
from ..netlink.socket import CtnlSocket, NetlinkError, attach_filter, pid_filter
from .config.model import Config
from .event_fill import event_fill_factory, reference_snapshot
from .filter import CompiledFilter, exp_helper_accepts, sane

__all__ = ["Ctnl", "EV_DESTROY", "EV_NEW", "EV_UPDATE", "encode_exp_lookup", "event_kind", "exp_event_kind"]

GROUPS_CT = 0b111  # NFNLGRP_CONNTRACK_NEW | _UPDATE | _DESTROY
GROUPS_EXP = 0b111000  # NFNLGRP_CONNTRACK_EXP_NEW | _UPDATE | _DESTROY
LOOKUP_CHUNK = 1 << 14  # flows (or expectations) per batch of kernel GETs in Ctnl.existing*
EV_NEW, EV_UPDATE, EV_DESTROY = "new", "update", "destroy"
_NEW = ct_type(CtMsg.NEW)
_DELETE = ct_type(CtMsg.DELETE)
_EXP_NEW = exp_type(ExpMsg.NEW)
_EXP_DELETE = exp_type(ExpMsg.DELETE)
AF_UNSPEC = 0


def event_kind(mtype: int, flags: int) -> str | None:
    """libnetfilter_conntrack's message -> event type mapping."""
    if mtype == _NEW:
        return EV_NEW if flags & (NLM_F_CREATE | NLM_F_EXCL) else EV_UPDATE
    if mtype == _DELETE:
        return EV_DESTROY
    return None


def exp_event_kind(mtype: int, flags: int) -> str | None:
    """The same mapping for expectation messages (EXP_NEW with CREATE|EXCL = new, else update)."""
    if mtype == _EXP_NEW:
        return EV_NEW if flags & (NLM_F_CREATE | NLM_F_EXCL) else EV_UPDATE
    if mtype == _EXP_DELETE:
        return EV_DESTROY
    return None


def encode_exp_lookup(exp: Expect, seq: int) -> bytes:
    """An EXP_GET naming an expectation by its expected tuple (+ zone), as the kernel looks it up."""
    key = Expect(exp.family, tuple=exp.tuple, zone=exp.zone)
    return nlmsg(exp_type(ExpMsg.GET), 0, seq, exp.family, encode_expect(key))


class Ctnl:
    _drops_seen = 0  # the event socket's drop counter when last looked at (see drops())
    drained = False  # the last read_events() emptied the event socket

    def __init__(self, cfg: Config, filt: CompiledFilter, log: Callable[[str, str], None], stats) -> None:
        self.cfg = cfg
        self.g = cfg.general
        self.filter = filt
        self.log = log
        self.stats = stats
        self.shapes = ShapeDecoder(event_factory=event_fill_factory(filt),
                                   event_reference=partial(reference_snapshot, filt))
        self.decode = self.shapes.decode
        self.events: CtnlSocket | None = None
        self.dumper = CtnlSocket(rcvbuf=4 << 20)
        self.requests = CtnlSocket(rcvbuf=4 << 20)
        self.buffer_size = 0
        self.max_growth = self.g.netlink_buffer_size_max_growth or 0
        self._warned_max = False
        self.origins: dict[int, str] = {self.requests.portid: "flush"}
        sc = cfg.sync
        self.expect = bool(sc is not None and sc.expectation_sync and cfg.mode != "stats")
        self.exp_helpers: tuple[str, ...] = sc.expectation_helpers if sc is not None else ()

    # ------------------------------------------------------------------ setup
    def open_events(self) -> CtnlSocket:
        """nl_init_event_handler(): subscribe, reliable delivery, buffer size (C's messages)."""
        s = CtnlSocket(groups=GROUPS_CT | (GROUPS_EXP if self.expect else 0))
        if self.g.netlink_events_reliable:
            s.sock.setsockopt(SOL_NETLINK, NETLINK_BROADCAST_ERROR, 1)
            s.sock.setsockopt(SOL_NETLINK, NETLINK_NO_ENOBUFS, 1)
            self.log("notice", "reliable ctnetlink event delivery is ENABLED.")
        if self.g.filter is not None:
            self.log("notice", "using user-space event filtering")
        s.sock.setblocking(False)
        inject = [pid for pid, name in self.origins.items() if name == "inject"]
        if inject:
            # beyond C: the events of our direct injection are skipped anyway (C's origin rule); dropped in
            # the kernel they take no room in the buffer, so a fast resync into a backup cannot overrun it
            # (an overrun's resync dump would put the injected flows into the internal cache)
            try:
                attach_filter(s.sock, pid_filter(inject))
            except OSError as exc:
                self.log("warning", f"can't filter the event socket: {exc.strerror or exc}")
        size = self.g.netlink_buffer_size or 0
        if size and size <= self.max_growth:
            self.buffer_size = s.set_rcvbuf(size // 2)  # the kernel doubles it, as C expects
        else:
            self.log("notice", "NetlinkBufferSize is either not set or is greater than "
                     "NetlinkBufferSizeMaxGrowth. Using current system buffer size")
            self.buffer_size = s.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self.log("notice", f"netlink event socket buffer size has been set to {self.buffer_size} bytes")
        self.events = s
        self._drops_seen = self.drops()
        return s

    def drops(self) -> int:
        """Events the kernel dropped on our event socket so far.

        Why: the kernel reports ENOBUFS only once per congestion episode (until the socket queue
        is empty again); events it drops meanwhile, e.g. while we are busy with the resync dump the
        first ENOBUFS asked for, are lost without a further error.  C conntrackd misses those
        flows for good.  The drop counter sees them all.
        """
        return 0 if self.events is None else self.events.drops()

    def _new_drops(self) -> bool:
        """Events dropped since the last look, reported or not: True when a resync is due."""
        d = self.drops()
        if d == self._drops_seen:
            return False
        self._drops_seen = d
        return True

    def register_origin(self, portid: int, name: str) -> None:
        """Mark events caused by one of our sockets (commit/inject) so sync does not echo them."""
        self.origins[portid] = name

    def close(self) -> None:
        for s in (self.events, self.dumper, self.requests):
            if s is not None:
                s.close()

    # ------------------------------------------------------------------ events
    def read_events(self, handler: Callable[[str, Flow, str | None], None], limit: int,
                    exp_handler: Callable[[str, Expect, str | None], None] | None = None,
                    fast: Callable[[bool, bytes, Callable, tuple, str | None], None] | None = None) -> bool:
        """Drain the event socket (at most ``limit`` events per call, as EventIterationLimit).

        Expectation events go to ``exp_handler`` (only subscribed with ExpectationSync). With
        ``fast`` (the sync mode's ``event``), NEW and UPDATE events of a compiled layout skip the
        Flow: filter, key and entry fill are generated per layout (daemon/event_fill.py).
        Returns True when an overrun asks for a resync from a dump.
        """
        s = self.events
        assert s is not None
        st = self.stats
        origins = self.origins
        find = self.shapes.find if fast is not None else None
        done = 0
        self.drained = False
        while done < limit:
            try:
                n = s.recv()
            except BlockingIOError:
                self.drained = True
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self._drops_seen = self.drops()
                    return self.overrun()
                if exc.errno not in (errno.ENOENT, errno.EAGAIN):
                    st.nl_catch_event_failed += 1
                break
            view = s.view
            try:
                for mtype, flags, _seq, pid, start, end in iter_messages(view, n):
                    done += 1
                    if mtype == _NEW and find is not None:
                        shape, vals = find(view, start, end)
                        ev = shape.event if shape is not None else None
                        if ev is not None:
                            if ev.accept is not None and not ev.accept(vals):
                                st.nl_events_received += 1
                                st.nl_events_filtered += 1
                                continue
                            key = ev.key(vals)
                            if key is not None:
                                st.nl_events_received += 1
                                fast(bool(flags & (NLM_F_CREATE | NLM_F_EXCL)), key, ev.fill, vals, origins.get(pid))
                                continue
                    self._event(mtype, flags, pid, view, start, end, handler, exp_handler)
            except DecodeError:
                st.nl_catch_event_failed += 1
        if self._new_drops():  # dropped without an ENOBUFS to tell: resync, as for an overrun
            st.nl_silent_drops += 1
            return self.g.netlink_overrun_resync > 0
        return False

    def _event(self, mtype: int, flags: int, pid: int, view, start: int, end: int,
               handler: Callable[[str, Flow, str | None], None],
               exp_handler: Callable[[str, Expect, str | None], None] | None) -> None:
        """One event by the reference path: decode, sanity, filter, then the handler."""
        st = self.stats
        st.nl_events_received += 1
        kind = event_kind(mtype, flags)
        if kind is None:
            ekind = exp_event_kind(mtype, flags) if exp_handler is not None else None
            if ekind is not None:
                exp = decode_expect(view, start, end)
                if not exp_helper_accepts(self.exp_helpers, exp):
                    st.nl_events_filtered += 1
                    return
                exp_handler(ekind, exp, self.origins.get(pid))
            elif mtype not in (NLMSG_ERROR, NLMSG_NOOP, NLMSG_OVERRUN):
                st.nl_events_unknown_type += 1
            return
        flow = self.decode(view, start, end)
        if not sane(flow) or not self.filter.accepts(flow):
            st.nl_events_filtered += 1
            return
        handler(kind, flow, self.origins.get(pid))

    def overrun(self) -> bool:
        """ENOBUFS: grow the buffer (nl_resize_socket_buffer) and count; True if a resync is due."""
        st = self.stats
        st.nl_catch_event_failed += 1
        st.nl_overrun += 1
        if not self._warned_max and self.events is not None:
            size = self.buffer_size
            if size * 2 > self.max_growth:
                self.log("warning", "netlink event socket buffer size cannot be doubled further since it "
                         "will exceed NetlinkBufferSizeMaxGrowth. We are likely to be losing events, this may "
                         "lead to unsynchronized replicas. Please, consider increasing netlink socket buffer "
                         "size via NetlinkBufferSize and NetlinkBufferSizeMaxGrowth clauses in conntrackd.conf")
                self._warned_max = True
            else:
                self.buffer_size = self.events.set_rcvbuf(size)
                self.log("notice", f"netlink event socket buffer size has been doubled to {self.buffer_size} bytes")
        return self.g.netlink_overrun_resync > 0

    # ------------------------------------------------------------------ dumps
    def dump(self, callback: Callable[[Flow], None], interleave: Callable[[], None] | None = None,
             every: int = 4096, fast: Callable[[bytes, Callable, tuple], None] | None = None) -> int:
        """Dump the kernel table; filtered flows go to ``callback``. Returns flows seen.

        With ``fast`` (the sync mode's ``resync_values``), an entry of a compiled layout goes to it
        as (key, fill, values) instead of a Flow, as in :meth:`read_events`: an overrun resync of
        200k entries cost seconds of decoding into Flows that were dropped right after.

        ``interleave`` is called every ``every`` flows (the overrun resync drains the event socket
        with it). Why: a resync dump of 1M entries takes seconds; events queued meanwhile overflowed
        the socket again, which asked for the next full resync, and so on. Reading them between dump
        messages is as safe as reading them after the dump: a dump message is generated when it is
        received, so an event read later is either newer (and applied after it) or about a flow the
        message already shows.
        """
        seq = self.dumper.next_seq()
        msg = nlmsg(ct_type(CtMsg.GET), NLM_F_DUMP, seq, AF_UNSPEC)
        n = 0
        decode = self.decode
        find = self.shapes.find if fast is not None else None
        filt = self.filter
        for view, _mtype, start, end in self.dumper.dump(msg, seq):
            n += 1
            if interleave is not None and not n % every:
                interleave()
            if find is not None:
                shape, vals = find(view, start, end)
                ev = shape.event if shape is not None else None
                if ev is not None:
                    if ev.accept is not None and not ev.accept(vals):
                        continue
                    key = ev.key(vals)
                    if key is not None:
                        fast(key, ev.fill, vals)
                        continue
            flow = decode(view, start, end)
            if sane(flow) and filt.accepts(flow):
                callback(flow)
        return n

    def dump_expect(self, callback: Callable[[Expect], None]) -> int:
        """Dump the kernel expectation table (nl_dump_expect_table, AF_UNSPEC); returns how many."""
        seq = self.dumper.next_seq()
        msg = nlmsg(exp_type(ExpMsg.GET), NLM_F_DUMP, seq, AF_UNSPEC)
        n = 0
        helpers = self.exp_helpers
        for view, _mtype, start, end in self.dumper.dump(msg, seq):
            n += 1
            exp = decode_expect(view, start, end)
            if exp_helper_accepts(helpers, exp):
                callback(exp)
        return n

    def existing_expects(self, exps: list[Expect]) -> list[bool]:
        """For each expectation, whether the kernel still has it (batched EXP_GETs; C: nl_get_expect one by one)."""
        out: list[bool] = []
        for i in range(0, len(exps), LOOKUP_CHUNK):
            seqs = []
            msgs = []
            for e in exps[i:i + LOOKUP_CHUNK]:
                seq = self.requests.next_seq()
                seqs.append(seq)
                msgs.append((seq, encode_exp_lookup(e, seq)))
            errors = self._batch(msgs, chunk=1 << 14)
            out.extend(errors.get(s) != errno.ENOENT for s in seqs)
        return out

    def flush_expect(self) -> None:
        """-F expect: EXP_DELETE without a tuple, AF_UNSPEC (nl_flush_expect_table)."""
        seq = self.requests.next_seq()
        self.requests.request(nlmsg(exp_type(ExpMsg.DELETE), NLM_F_ACK, seq, AF_UNSPEC), seq)

    def existing(self, flows: list[Flow]) -> list[bool]:
        """For each flow, whether the kernel still has it (batched GETs; C's purge does one by one).

        Requests are built and sent LOOKUP_CHUNK flows at a time, so a long list never has all its
        messages in memory at once.
        """
        out: list[bool] = []
        for i in range(0, len(flows), LOOKUP_CHUNK):
            seqs = []
            msgs = []
            for f in flows[i:i + LOOKUP_CHUNK]:
                seq = self.requests.next_seq()
                seqs.append(seq)
                msgs.append((seq, encode_lookup(CtMsg.GET, f, seq)))
            errors = self._batch(msgs, chunk=1 << 14)
            out.extend(errors.get(s) != errno.ENOENT for s in seqs)
        return out

    def delete_flows(self, flows: Iterable[Flow]) -> int:
        """Batched DELETEs; returns how many failed for another reason than ENOENT."""
        msgs = []
        for f in flows:
            seq = self.requests.next_seq()
            msgs.append((seq, encode_lookup(CtMsg.DELETE, f, seq)))
        errors = self._batch(msgs)
        return sum(1 for e in errors.values() if e != errno.ENOENT)

    def _batch(self, msgs: list[tuple[int, bytes]], chunk: int = 1 << 16) -> dict[int, int]:
        if not msgs:
            return {}
        try:
            return self.requests.batch(msgs, chunk=chunk)
        except NetlinkError as exc:
            return {s: exc.errno for s, _ in msgs}

    def flush_selective(self) -> int:
        """-F: delete every kernel entry the filter does not ignore (nl_flush_conntrack_table_selective)."""
        victims: list[Flow] = []
        self.dump(victims.append)
        self.delete_flows(victims)
        return len(victims)
