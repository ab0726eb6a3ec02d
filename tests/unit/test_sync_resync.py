"""Beyond C: FTFW never gets stuck after a resend-queue overflow (targeted resync on NACK)."""

from __future__ import annotations

from conntrack_tools.daemon.sync.modes import Ftfw, MsgResult
from conntrack_tools.daemon.sync.wire import MsgFlag, decode_message
from tests.unit.test_sync_modes import body, counter, ctl, render


def seqs(f: Ftfw) -> list[int]:
    return [decode_message(m).header.seq for m in f.xmit(render)]


def test_nack_over_evicted_seqs_resends_those_objects():
    f = Ftfw(counter(1), rsq_size=3)
    for k in range(6):
        f.enqueue(k, body(k))
    assert seqs(f) == [1, 2, 3, 4, 5, 6]
    assert list(f.rsq) == [4, 5, 6] and list(f.evicted) == [1, 2, 3] and f.rsq_overflow == 3
    # the peer lost seqs 2..4: C would resend only 4 (2 and 3 are gone) -> stuck forever
    assert f.recv("p", ctl(100, MsgFlag.NACK, 2, 4)) == MsgResult.CTL
    assert list(f.tx) == [3, 1, 2] or set(f.tx) == {1, 2, 3}  # objects 1, 2 (evicted) and 3 (in rsq)
    assert f.targeted_resent == 2
    assert seqs(f) == [7, 8, 9]
    # seq 1 was not NACKed: still unacknowledged; 5 and 6 were evicted by the resent ones
    assert list(f.evicted) == [1, 5, 6]


def test_ack_releases_evicted_records_and_requeue_replaces_them():
    f = Ftfw(counter(1), rsq_size=2)
    for k in range(5):
        f.enqueue(k, body(k))
    seqs(f)
    assert list(f.evicted) == [1, 2, 3]
    f.enqueue(1, body(1))  # object 1 changed: its newer state is queued, the record goes
    assert list(f.evicted) == [1, 3] and f.evicted_index == {0: 1, 2: 3}
    f.recv("p", ctl(50, MsgFlag.ACK, 1, 4))
    assert not f.evicted and not f.evicted_index and list(f.rsq) == [5]
    f.recv("p", ctl(51, MsgFlag.NACK, 1, 4))  # nothing left to resend for acked seqs
    assert list(f.tx) == [1]


def test_burst_with_loss_converges_with_small_resend_queue():
    """Sender with ResendQueueSize 50, 2000 objects, the receiver loses 20 % of the messages."""
    import random

    rnd = random.Random(7)
    a = Ftfw(counter(1000), window=20, rsq_size=50)
    b = Ftfw(counter(5000), window=20, rsq_size=50)
    got: set[int] = set()
    objs = {k: (0, k.to_bytes(4, "big")) for k in range(2000)}
    for k in objs:
        a.enqueue(k, k)

    def rend(k):
        return objs[k]

    for _round in range(200):
        for m in a.xmit(rend):
            if rnd.random() < 0.2:
                continue
            h = decode_message(m).header
            if b.recv("A", h) == MsgResult.DATA:
                got.add(int.from_bytes(m[8:12], "big"))
        a.tick()
        b.tick()
        for m in b.xmit(render):
            a.recv("B", decode_message(m).header)
        if len(got) == len(objs) and not a.tx:
            break
    missing = set(objs) - got
    assert not missing, f"{len(missing)} missing"
    assert a.rsq_overflow > 0 and a.targeted_resent > 0
