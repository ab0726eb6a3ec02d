"""Batched direct injection (DisableExternalCache), sans I/O: which netlink messages to send, in
which rounds, and what each answer means.

Why: one request with its ACK round trip per received state capped injection at ~6k states/s,
so a 200k-entry resync into a returning node took ~79 s before its readiness file said ready
(docs/failover.md).  Here the states of one receive burst become one :class:`InjectBatch`: round 1
sends every state's first request in one netlink batch (``CtnlSocket.batch``: many messages per
``send()``, errors only, one ACK per chunk); the states whose request failed move to their next
step (EEXIST on a create -> update in place, ENOENT on an update -> create, ...), and all of those
go out together as round 2, and so on.  A state needs at most four rounds.

The steps are exactly the ones the per-message injector took (docs/failover.md, "An entry that
already exists is updated in place"):

* CT_NEW: create; EEXIST -> update in place keeping the helper name; that failing -> delete +
  create.  Other errors: failed.
* CT_UPD: update (no NAT, helper or master: ``convert.update_flow``); ENOENT -> create (EEXIST ->
  delete + create); any other error -> delete + create (EEXIST -> delete + create).
* CT_DEL: delete; ENOENT counts as done.

Beyond C, for hitless failover: an update the kernel refuses with EBUSY (a status bit it will
not clear, such as ASSURED or SEEN_REPLY from a peer's older state, or a helper it will not change)
is retried once without CTA_STATUS and CTA_HELP before the delete + create.  Deleting a live entry
leaves a window in which its packets find no entry and a strict ruleset drops them as invalid
(seen in the lab: an FTP data packet at ``systemctl stop keepalived``); the entry the kernel keeps
is at least as good for its packets as the peer's copy.  ``replaced`` counts the live entries that
were still deleted and re-created, ``kept_status`` the updates saved by the retry.  An update of an
expected entry (FTP data) sets IPS_EXPECTED (:func:`update_body`): without it the kernel refused
every update of such an entry and each resync deleted and re-created every FTP data connection.

Order: the kernel handles a batch's messages in order, so round 1 keeps the arrival order.  Retries
of later rounds run after the whole of round 1, so a batch never holds two states of one flow
(:meth:`InjectBatch.has`): the caller sends the pending batch first (a NEW followed by a DEL of the
same flow then ends deleted, as before).  States of different flows are independent.

A state is kept as the external cache's value (``transcode.make_value``: metadata, create body,
CTA_TIMEOUT slot): the create message is that value with a netlink header, the update and the
delete are cut from it (:func:`update_body`, ``codec.key_request_from_dump``).
"""

from __future__ import annotations

import errno
import struct

from ...flow import IPS_DST_NAT, IPS_DST_NAT_DONE, IPS_EXPECTED, IPS_SRC_NAT, IPS_SRC_NAT_DONE
from ...netlink.attrs import CTA, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, CtMsg, ct_type
from ...netlink.codec import NLMSG_HDR, NLMSG_HDRLEN, key_request_from_dump
from .transcode import HAS_TIMEOUT, META, META_LEN, TAIL_LEN

__all__ = ["DEL", "NEW", "UPD", "InjectBatch", "Op", "create_msg", "delete_msg", "update_body", "update_msg"]

NEW, UPD, DEL = 0, 1, 2  # the sync message types CT_NEW, CT_UPD, CT_DEL
KIND_STATS = (("add_ok", "add_fail"), ("upd_ok", "upd_fail"), ("del_ok", "del_fail"))

# steps of one state; each sends one or two messages, the last one's answer decides
CREATE, UPDATE_HELPER, DEL_CREATE, UPDATE, CREATE_RETRY, DEL_CREATE_RETRY, DELETE, UPDATE_KEEP_STATUS = range(8)
OK, FAIL = -1, -2
FIRST_STEP = (CREATE, UPDATE, DELETE)  # by kind


def next_step(step: int, err: int | None) -> int:
    """The step after ``step`` answered ``err`` (None = success): another step, OK or FAIL."""
    if step == DELETE:
        return OK if err is None or err == errno.ENOENT else FAIL
    if err is None:
        return OK
    if step == CREATE:
        return UPDATE_HELPER if err == errno.EEXIST else FAIL
    if step == UPDATE_HELPER:
        return UPDATE_KEEP_STATUS if err == errno.EBUSY else DEL_CREATE
    if step == UPDATE:
        if err == errno.EBUSY:
            return UPDATE_KEEP_STATUS
        return CREATE_RETRY if err == errno.ENOENT else DEL_CREATE_RETRY
    if step == UPDATE_KEEP_STATUS:
        return DEL_CREATE
    if step in (CREATE_RETRY, DEL_CREATE_RETRY):
        return DEL_CREATE if err == errno.EEXIST else FAIL
    return FAIL  # DEL_CREATE: the last resort


_NEW_T = ct_type(CtMsg.NEW)
_DELETE_T = ct_type(CtMsg.DELETE)
_CREATE_FLAGS = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL
_BE32 = struct.Struct("!I")
_NLA = struct.Struct("=HH")
_TIMEOUT_HDR = _NLA.pack(8, CTA.TIMEOUT)
_IPS_NAT_MASK = IPS_SRC_NAT | IPS_DST_NAT | IPS_SRC_NAT_DONE | IPS_DST_NAT_DONE
_STATUS_KEEP = 0xFFFFFFFF & ~_IPS_NAT_MASK & ~IPS_EXPECTED  # EXPECTED: set from the master (update_body)
# what nl_update_conntrack leaves out (convert.update_flow); CTA_HELP is kept on request
_NOT_UPDATED = frozenset((CTA.TUPLE_MASTER, CTA.NAT_SRC, CTA.NAT_DST, CTA.SEQ_ADJ_ORIG, CTA.SEQ_ADJ_REPLY,
                          CTA.SYNPROXY, CTA.TIMEOUT))
_NLA_TYPE_MASK = 0x3FFF


def _timeout_tail(value: bytes) -> bytes:
    """The CTA_TIMEOUT attribute of a state, or nothing when its message had no timeout."""
    if value[-4] & HAS_TIMEOUT:
        return _TIMEOUT_HDR + _BE32.pack(META.unpack_from(value)[2])
    return b""


def create_msg(value: bytes, seq: int) -> bytes:
    """IPCTNL_MSG_CT_NEW with CREATE|EXCL: the state's create body and its timeout."""
    if value[-4] & HAS_TIMEOUT:
        t = META.unpack_from(value)[2]
        return (NLMSG_HDR.pack(len(value), _NEW_T, _CREATE_FLAGS, seq, 0) + value[META_LEN:-4]
                + _BE32.pack(t))
    return NLMSG_HDR.pack(len(value) - TAIL_LEN, _NEW_T, _CREATE_FLAGS, seq, 0) + value[META_LEN:-TAIL_LEN]


def update_body(value: bytes, keep_helper: bool, keep_status: bool = False) -> bytes:
    """nfgenmsg + attributes of ``encode_flow(update_flow(flow))`` cut from a state's create body:
    no NAT, master, NAT sequence adjustment or synproxy, NAT status bits cleared and IPS_EXPECTED
    set when the state names a master, the helper name only with ``keep_helper``, no timeout (the
    caller appends it); ``keep_status``: no CTA_STATUS at all (the kernel's bits stay).

    IPS_EXPECTED: the create body has it cleared (the kernel sets it itself when a create names the
    master), and the kernel refuses an update that would clear it with EBUSY; an expected entry
    (FTP data) has it on this node too, whether its helper or our create made it."""
    end = len(value) - TAIL_LEN
    parts = [value[META_LEN:META_LEN + 4]]
    off = META_LEN + 4
    unpack = _NLA.unpack_from
    status_at = -1
    expected = False
    while off + 4 <= end:
        length, atype = unpack(value, off)
        if length < 4:
            break
        nxt = off + ((length + 3) & ~3)
        t = atype & _NLA_TYPE_MASK
        if t == CTA.STATUS and length == 8:
            if not keep_status:
                status_at = len(parts)
                parts.append(value[off:off + 8])
        elif t == CTA.TUPLE_MASTER:
            expected = True
        elif t not in _NOT_UPDATED and (keep_helper or t != CTA.HELP):
            parts.append(value[off:nxt])
        off = nxt
    if status_at >= 0:
        a = parts[status_at]
        status = _BE32.unpack_from(a, 4)[0] & _STATUS_KEEP
        parts[status_at] = a[:4] + _BE32.pack(status | IPS_EXPECTED if expected else status)
    return b"".join(parts)


def update_msg(value: bytes, seq: int, keep_helper: bool, keep_status: bool = False) -> bytes:
    """IPCTNL_MSG_CT_NEW without CREATE: update the entry in place (nl_update_conntrack)."""
    body = update_body(value, keep_helper, keep_status) + _timeout_tail(value)
    return NLMSG_HDR.pack(NLMSG_HDRLEN + len(body), _NEW_T, NLM_F_REQUEST, seq, 0) + body


def delete_msg(value: bytes, seq: int) -> bytes:
    """IPCTNL_MSG_CT_DELETE naming the state's original tuple (+ zone)."""
    return key_request_from_dump(value, META_LEN, len(value) - TAIL_LEN, _DELETE_T, 0, seq)


class Op:
    """One received state on its way into the kernel."""

    __slots__ = ("kind", "key", "value", "step", "seq")

    def __init__(self, kind: int, key: bytes, value: bytes) -> None:
        self.kind = kind
        self.key = key
        self.value = value
        self.step = FIRST_STEP[kind]
        self.seq = 0  # the sequence number whose answer decides the current step

    def messages(self, seq: int) -> list[bytes]:
        """The current step's requests, numbered from ``seq``; the last one decides."""
        step, v = self.step, self.value
        if step in (CREATE, CREATE_RETRY):
            return [create_msg(v, seq)]
        if step == UPDATE:
            return [update_msg(v, seq, False)]
        if step == UPDATE_HELPER:
            return [update_msg(v, seq, True)]
        if step == UPDATE_KEEP_STATUS:
            return [update_msg(v, seq, False, keep_status=True)]
        if step == DELETE:
            return [delete_msg(v, seq)]
        return [delete_msg(v, seq), create_msg(v, seq + 1)]  # DEL_CREATE, DEL_CREATE_RETRY


class InjectBatch:
    """The states of one burst, at most one per flow, driven round by round.

    ``round(seq0)`` gives the requests of every unfinished state (numbered from ``seq0``);
    ``answer(errors)`` takes the kernel's ``{seq: errno}`` for that round.  Repeat until
    ``round`` gives nothing; ``counts`` then holds the outcome per stats counter.
    """

    def __init__(self) -> None:
        self.ops: list[Op] = []
        self.keys: set[bytes] = set()
        self.rounds = 0
        self.replaced = 0  # live entries deleted and re-created (a window without an entry)
        self.kept_status = 0  # updates that went in once CTA_STATUS/CTA_HELP were left out

    def __len__(self) -> int:
        return len(self.ops)

    def has(self, key: bytes) -> bool:
        return key in self.keys

    def add(self, kind: int, key: bytes, value: bytes) -> None:
        if key in self.keys:
            raise ValueError("a batch holds one state per flow")
        self.keys.add(key)
        self.ops.append(Op(kind, key, value))

    def round(self, seq0: int) -> list[tuple[int, bytes]]:
        """(seq, message) of this round, in the states' arrival order."""
        out: list[tuple[int, bytes]] = []
        seq = seq0
        for op in self.ops:
            step = op.step
            if step < 0:
                continue
            if step == CREATE:  # the common case: one message, built without the list of messages()
                out.append((seq, create_msg(op.value, seq)))
                op.seq = seq
                seq += 1
                continue
            for m in op.messages(seq):
                out.append((seq, m))
                seq += 1
            op.seq = seq - 1
        if out:
            self.rounds += 1
        return out

    def answer(self, errors: dict[int, int]) -> None:
        for op in self.ops:
            step = op.step
            if step >= 0:
                err = errors.get(op.seq)
                if err is None and step != CREATE:
                    if step in (DEL_CREATE, DEL_CREATE_RETRY):
                        self.replaced += 1
                    elif step == UPDATE_KEEP_STATUS:
                        self.kept_status += 1
                op.step = next_step(step, err)

    def fail_all(self) -> None:
        """The socket failed: every unfinished state counts as failed."""
        for op in self.ops:
            if op.step >= 0:
                op.step = FAIL

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for op in self.ops:
            name = KIND_STATS[op.kind][0 if op.step == OK else 1]
            out[name] = out.get(name, 0) + 1
        return out
