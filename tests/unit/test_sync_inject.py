"""Batched direct injection (daemon/sync/inject.py, external.Injector), sans I/O.

* the messages: the create/update/delete requests cut from a state's value are the ones the
  per-message injector encoded (``encode_flow`` of ``sync_to_create_flow`` / ``update_flow``);
* the rounds: against a fake kernel table, random streams of NEW/UPD/DEL (flows repeating, some
  flows refusing updates or creates) end in the same table and the same counters as the
  per-message injector's control flow (kept here as the reference), with far fewer sends;
* order: a NEW then a DEL of one flow in one burst ends deleted.
"""

from __future__ import annotations

import errno
import struct
from ipaddress import IPv4Address

from hypothesis import given, settings
from hypothesis import strategies as st

from conntrack_tools.daemon.sync import inject
from conntrack_tools.daemon.sync.convert import sync_to_create_flow, update_flow
from conntrack_tools.daemon.sync.external import Injector, build_entry
from conntrack_tools.daemon.sync.inject import DEL, NEW, UPD, InjectBatch, create_msg, delete_msg, update_msg
from conntrack_tools.daemon.sync.wire import FlowTuple, MsgType, SyncFlow, encode_flow_message
from conntrack_tools.netlink.attrs import NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, CtMsg, ct_type
from conntrack_tools.netlink.codec import NLMSG_HDR, NLMSG_HDRLEN, encode_flow, encode_lookup
from tests.unit.test_sync_transcode import flow_of, shapes

_NEW_T = ct_type(CtMsg.NEW)
_DEL_T = ct_type(CtMsg.DELETE)
_NLA = struct.Struct("=HH")


def _value(sf: SyncFlow) -> bytes:
    return build_entry(sf, 0.0, False).value


def _body(msg: bytes) -> bytes:
    return msg[NLMSG_HDRLEN:]


@settings(max_examples=400, deadline=None)
@given(st.data(), shapes(), st.booleans())
def test_messages_equal_the_per_message_encoding(data, shape, keep_helper):
    sf = data.draw(flow_of(shape))
    try:
        v = build_entry(sf, 0.0, False).value
    except ValueError:
        return  # NAT of the other family: the reference path refuses it too
    f = sync_to_create_flow(sf)
    fam = bytes((f.family, 0, 0, 0))
    tmo = b"" if sf.timeout is None else _NLA.pack(8, 7) + struct.pack("!I", sf.timeout)
    # create: encode_flow(f) with CTA_TIMEOUT last instead of after the status (the kernel takes any order)
    c = create_msg(v, 7)
    assert _body(c) == fam + encode_flow(f) + tmo
    assert NLMSG_HDR.unpack_from(c)[:4] == (len(c), _NEW_T, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_EXCL, 7)
    f.timeout = sf.timeout
    # update: byte for byte encode_flow(update_flow(f)) (+ helper), timeout appended
    u = update_flow(f)
    if keep_helper:
        u.helper = f.helper
    m = update_msg(v, 9, keep_helper)
    want = fam + encode_flow(u)
    assert _body(m) == want + tmo
    assert NLMSG_HDR.unpack_from(m)[:4] == (len(m), _NEW_T, 1, 9)
    # delete: encode_lookup's request
    assert delete_msg(v, 11) == encode_lookup(CtMsg.DELETE, f, 11)


class FakeKernel:
    """A conntrack table keyed by CTA_TUPLE_ORIG + CTA_ZONE; ``refuse_update`` flows answer EINVAL to an
    update, ``refuse_create`` flows ENOMEM to a create (the paths behind the retries), ``busy_status``
    flows EBUSY to an update that carries CTA_STATUS (a status bit the kernel will not clear)."""

    def __init__(self, refuse_update=(), refuse_create=(), busy_status=()) -> None:
        self.table: dict[bytes, bytes] = {}
        self.refuse_update = set(refuse_update)
        self.refuse_create = set(refuse_create)
        self.busy_status = set(busy_status)
        self.sends = 0
        self.messages = 0

    @staticmethod
    def attrs(msg: bytes) -> list[tuple[int, bytes]]:
        out, off = [], NLMSG_HDRLEN + 4
        while off + 4 <= len(msg):
            n, t = _NLA.unpack_from(msg, off)
            out.append((t & 0x3FFF, msg[off:off + n]))
            off += (n + 3) & ~3
        return out

    @classmethod
    def key(cls, msg: bytes) -> bytes:
        return b"".join(a for t, a in cls.attrs(msg) if t in (1, 18))

    def run(self, msg: bytes) -> int | None:
        self.messages += 1
        _n, mtype, flags, _seq, _pid = NLMSG_HDR.unpack_from(msg)
        k = self.key(msg)
        if mtype == _DEL_T:
            return None if self.table.pop(k, None) is not None else errno.ENOENT
        if flags & NLM_F_CREATE:
            if k in self.table:
                return errno.EEXIST
            if k in self.refuse_create:
                return errno.ENOMEM
            self.table[k] = _body(msg)
            return None
        if k not in self.table:
            return errno.ENOENT
        if k in self.refuse_update:
            return errno.EINVAL
        if k in self.busy_status and any(t == 3 for t, _a in self.attrs(msg)):
            return errno.EBUSY
        self.table[k] = b"updated:" + _body(msg)
        return None


class FakeSock:
    def __init__(self, kernel: FakeKernel) -> None:
        self.kernel = kernel
        self.seq = 0

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def batch(self, msgs):
        self.kernel.sends += 1
        errs = {}
        for seq, m in msgs:
            e = self.kernel.run(m)
            if e is not None:
                errs[seq] = e
        return errs


def reference_inject(kernel: FakeKernel, ops) -> dict[str, int]:
    """The per-message injector of before the batching (its control flow, one request at a time)."""
    st = dict.fromkeys(("add_ok", "add_fail", "upd_ok", "upd_fail", "del_ok", "del_fail"), 0)
    run = kernel.run

    def create(v):
        err = run(create_msg(v, 1))
        if err == errno.EEXIST:
            run(delete_msg(v, 1))
            err = run(create_msg(v, 1))
        return err is None

    for kind, v in ops:
        kernel.sends += 1
        if kind == NEW:
            err = run(create_msg(v, 1))
            if err == errno.EEXIST:
                err = run(update_msg(v, 1, True))
                if err == errno.EBUSY:  # beyond C: keep the kernel's status before deleting a live entry
                    err = run(update_msg(v, 1, False, keep_status=True))
                if err is not None:
                    run(delete_msg(v, 1))
                    err = run(create_msg(v, 1))
            st["add_ok" if err is None else "add_fail"] += 1
        elif kind == UPD:
            err = run(update_msg(v, 1, False))
            if err == errno.EBUSY:
                err = run(update_msg(v, 1, False, keep_status=True))
                if err is not None:
                    run(delete_msg(v, 1))
                    err = run(create_msg(v, 1))
                st["upd_ok" if err is None else "upd_fail"] += 1
                continue
            if err is None:
                st["upd_ok"] += 1
                continue
            if err != errno.ENOENT:
                run(delete_msg(v, 1))
            st["upd_ok" if create(v) else "upd_fail"] += 1
        else:
            err = run(delete_msg(v, 1))
            st["del_ok" if err in (None, errno.ENOENT) else "del_fail"] += 1
    return st


def _flow(i: int, state: int) -> SyncFlow:
    return SyncFlow(FlowTuple(IPv4Address(f"10.0.0.{i}"), IPv4Address("10.9.0.1"), 6, 1000 + i, 80), status=0x18E,
                    tcp_state=state, timeout=120 + state, mark=i, helper="ftp" if i % 3 == 0 else None)


ops_st = st.lists(st.tuples(st.sampled_from([NEW, UPD, DEL]), st.integers(0, 11), st.integers(1, 9)),
                  max_size=80)


@settings(max_examples=300, deadline=None)
@given(ops_st, st.sets(st.integers(0, 11)), st.sets(st.integers(0, 11), max_size=3), st.sets(st.integers(0, 11)),
       st.sets(st.integers(0, 11)), st.sampled_from([1, 3, 2048]))
def test_batched_rounds_end_as_the_per_message_injector(ops, preexisting, refuse_create, refuse_update, busy,
                                                        max_pending):
    values = [(k, _value(_flow(i, s))) for k, i, s in ops]
    keyed = {i: _value(_flow(i, 0)) for i in range(12)}

    def keys(ids):
        return {FakeKernel.key(create_msg(keyed[i], 0)) for i in ids}

    kernels = []
    for _ in range(2):
        kern = FakeKernel(refuse_update=keys(refuse_update), refuse_create=keys(refuse_create),
                          busy_status=keys(busy))
        for i in preexisting:
            kern.run(create_msg(_value(_flow(i, 99)), 0))
        kern.messages = 0
        kernels.append(kern)
    want = reference_inject(kernels[0], values)
    inj = Injector(FakeSock(kernels[1]))  # type: ignore[arg-type]
    inj.MAX_PENDING = max_pending
    for kind, v in values:
        inj._queue(kind, FakeKernel.key(create_msg(v, 0)), v)
    inj.flush()
    assert kernels[1].table == kernels[0].table
    assert inj.stats == want
    assert len(inj) == 0


def test_one_batch_per_burst_and_a_second_round_for_existing_entries():
    kern = FakeKernel()
    inj = Injector(FakeSock(kern))  # type: ignore[arg-type]
    flows = [_flow(i, 3) for i in range(1, 200)]
    for sf in flows:
        m = encode_flow_message(MsgType.CT_NEW, sf, 1)
        assert inj.apply(MsgType.CT_NEW, m, 8, len(m)) or inj.new(sf) is None
    inj.flush()
    assert (kern.sends, len(kern.table), inj.stats["add_ok"]) == (1, 199, 199)
    for sf in flows:  # the peer's bulk again (a failback): every create meets EEXIST -> update in place
        inj.new(sf)
    inj.flush()
    assert kern.sends == 3 and inj.batches == 2 and inj.rounds == 3
    assert inj.stats == {"add_ok": 398, "add_fail": 0, "upd_ok": 0, "upd_fail": 0, "del_ok": 0, "del_fail": 0}
    assert all(v.startswith(b"updated:") for v in kern.table.values())


def test_new_then_delete_of_one_flow_in_one_burst_ends_deleted():
    kern = FakeKernel()
    kern.run(create_msg(_value(_flow(1, 2)), 0))  # exists already: the NEW needs a second round
    inj = Injector(FakeSock(kern))  # type: ignore[arg-type]
    for kind, sf in ((NEW, _flow(1, 3)), (NEW, _flow(2, 3)), (DEL, _flow(1, 3)), (UPD, _flow(2, 4))):
        (inj.new, inj.upd, inj.delete)[kind](sf)
    inj.flush()
    assert len(kern.table) == 1 and kern.key(create_msg(_value(_flow(2, 4)), 0)) in kern.table
    assert inj.stats["add_ok"] == 2 and inj.stats["del_ok"] == 1 and inj.stats["upd_ok"] == 1


def test_batch_holds_one_state_per_flow():
    b = InjectBatch()
    b.add(NEW, b"k", _value(_flow(1, 1)))
    assert b.has(b"k")
    try:
        b.add(DEL, b"k", _value(_flow(1, 1)))
    except ValueError:
        pass
    else:
        raise AssertionError("two states of one flow in a batch")


def test_an_update_the_kernel_finds_busy_keeps_the_live_entry():
    """EBUSY (a status bit the kernel will not clear, e.g. ASSURED from a peer's older state): the update
    goes in again without CTA_STATUS instead of deleting the live entry (a window without an entry,
    where a strict ruleset drops the flow's packets as invalid)."""
    old = _value(_flow(1, 3))
    kern = FakeKernel(busy_status={FakeKernel.key(create_msg(old, 0))}, refuse_update=set())
    kern.run(create_msg(old, 0))
    inj = Injector(FakeSock(kern))  # type: ignore[arg-type]
    inj.upd(_flow(1, 4))
    inj.new(_flow(2, 3))
    inj.flush()
    assert inj.stats["upd_ok"] == 1 and inj.kept_status == 1 and inj.replaced == 0
    assert kern.messages == 4  # update (EBUSY), create of flow 2, status-less update: nothing deleted
    # a refusal the retry does not cure still ends in delete + create, counted
    kern.refuse_update.add(FakeKernel.key(create_msg(old, 0)))
    inj.new(_flow(1, 5))
    inj.flush()
    assert inj.stats["add_ok"] == 2 and inj.replaced == 1


def test_an_update_of_an_expected_entry_keeps_ips_expected():
    """The kernel refuses (EBUSY) an update that clears IPS_EXPECTED; an FTP data entry has it."""
    master = FlowTuple(IPv4Address("10.0.0.1"), IPv4Address("10.9.0.1"), 6, 40000, 21)
    sf = SyncFlow(FlowTuple(IPv4Address("10.0.0.1"), IPv4Address("10.9.0.1"), 6, 40001, 30000), status=0x18E | 1,
                  tcp_state=3, timeout=120, master=master)
    v = _value(sf)
    status = {t: a for t, a in FakeKernel.attrs(update_msg(v, 1, False))}[3]
    assert struct.unpack("!I", status[4:])[0] & 1  # IPS_EXPECTED
    create_status = {t: a for t, a in FakeKernel.attrs(create_msg(v, 1))}[3]
    assert not struct.unpack("!I", create_status[4:])[0] & 1  # the kernel sets it from the master itself
    plain = _value(_flow(1, 3))
    assert not struct.unpack("!I", dict(FakeKernel.attrs(update_msg(plain, 1, False)))[3][4:])[0] & 1
    assert 3 not in dict(FakeKernel.attrs(update_msg(plain, 1, False, keep_status=True)))


def test_steps():
    ns = inject.next_step
    assert ns(inject.UPDATE, errno.EBUSY) == inject.UPDATE_KEEP_STATUS
    assert ns(inject.UPDATE_HELPER, errno.EBUSY) == inject.UPDATE_KEEP_STATUS
    assert ns(inject.UPDATE_KEEP_STATUS, None) == inject.OK
    assert ns(inject.UPDATE_KEEP_STATUS, errno.EBUSY) == inject.DEL_CREATE
    assert ns(inject.CREATE, None) == inject.OK
    assert ns(inject.CREATE, errno.EEXIST) == inject.UPDATE_HELPER
    assert ns(inject.CREATE, errno.ENOMEM) == inject.FAIL
    assert ns(inject.UPDATE_HELPER, errno.EINVAL) == inject.DEL_CREATE
    assert ns(inject.DEL_CREATE, errno.EEXIST) == inject.FAIL
    assert ns(inject.UPDATE, errno.ENOENT) == inject.CREATE_RETRY
    assert ns(inject.UPDATE, errno.EINVAL) == inject.DEL_CREATE_RETRY
    assert ns(inject.CREATE_RETRY, errno.EEXIST) == inject.DEL_CREATE
    assert ns(inject.DELETE, errno.ENOENT) == inject.OK
    assert ns(inject.DELETE, errno.EPERM) == inject.FAIL


def test_socket_failure_counts_the_batch_as_failed():
    class Broken(FakeSock):
        def batch(self, msgs):
            raise OSError(errno.ENOBUFS, "No buffer space available")

    logged = []
    inj = Injector(Broken(FakeKernel()), log=lambda lvl, msg: logged.append(msg))  # type: ignore[arg-type]
    inj.new(_flow(1, 1))
    inj.delete(_flow(2, 1))
    inj.flush()
    assert inj.stats["add_fail"] == 1 and inj.stats["del_fail"] == 1 and logged


def test_handle_datagram_flushes_at_the_end_unless_told_not_to():
    from conntrack_tools.daemon.sync.external import ExternalCache
    from conntrack_tools.daemon.sync.modes import Notrack
    from tests.unit.test_sync_transcode import _engine

    eng = _engine(Notrack, ExternalCache, 0)
    eng.external = None
    kern = FakeKernel()
    eng.injector = Injector(FakeSock(kern))  # type: ignore[arg-type]
    eng.external_exp = None
    dgram = b"".join(encode_flow_message(MsgType.CT_NEW, _flow(i, 3), i) for i in range(1, 4))
    eng.handle_datagram(0, dgram, "10.0.0.9", flush=False)
    assert len(eng.injector) == 3 and not kern.table
    eng.handle_datagram(0, encode_flow_message(MsgType.CT_DEL, _flow(1, 3), 4), "10.0.0.9")
    assert len(eng.injector) == 0 and len(kern.table) == 2
    assert kern.sends == 2  # the three NEWs in one batch, the DEL of one of them in the next
