"""FTFW under the faults of tests/netns/test_reliability_sync_faults.py, replayed as message sequences.

Two pure ``Ftfw`` machines joined by a lossy "link" we control message by message; no sockets.
Each test reproduces one failure the netns fault harness found (2026-11-26) and pins the fix.
"""

from __future__ import annotations

import random
import struct

import pytest

from conntrack_tools.daemon.sync.modes import Ftfw, MsgResult
from conntrack_tools.daemon.sync.seq import SeqCounter
from conntrack_tools.daemon.sync.wire import MsgType, decode_message


def counter(start: int) -> SeqCounter:
    return SeqCounter(lambda: start)


def obj(k: int) -> tuple[int, bytes]:
    return MsgType.CT_NEW, struct.pack("!HHII", 12, 0, k, 0x08080808)


def render(o):
    return o


class Link:
    """A -> B and B -> A; ``drop(msg) -> bool`` decides per message (per direction)."""

    def __init__(self, a: Ftfw, b: Ftfw) -> None:
        self.a, self.b = a, b
        self.got: set[int] = set()  # object ids B applied
        self.sent_by_a: list = []  # headers A emitted (for assertions)

    def a_to_b(self, drop=lambda h: False) -> None:
        for m in self.a.xmit(render):
            h = decode_message(m).header
            self.sent_by_a.append(h)
            if not drop(h) and self.b.recv("A", h) == MsgResult.DATA:
                self.got.add(struct.unpack_from("!I", m, 12)[0])

    def b_to_a(self, drop=lambda h: False) -> None:
        for m in self.b.xmit(render):
            h = decode_message(m).header
            if not drop(h):
                self.a.recv("B", h)

    def idle_second(self, drop_ab=lambda h: False, drop_ba=lambda h: False) -> None:
        """Both alive alarms fire (ACK of what is pending, else ALIVE), then both TX runs."""
        self.a.tick()
        self.b.tick()
        self.a_to_b(drop_ab)
        self.b_to_a(drop_ba)
        self.a_to_b(drop_ab)  # what B's messages triggered (re-sends after a NACK)


def everything(h) -> bool:
    return True


def handshake(link: Link) -> None:
    """A sends object 0, both alarms fire twice: HELLO/HELLO_BACK done both ways."""
    link.a.enqueue(0, obj(0))
    link.a_to_b()
    for _ in range(2):
        link.idle_second()
    assert link.a.hello_state == link.b.hello_state == Ftfw.HELLO_DONE and link.got == {0}


def data_waiting(f: Ftfw) -> list[int]:
    """Seqs of data messages still waiting for an ACK (the last ACK/NACK controls may wait)."""
    return [s for s, e in f.rsq.items() if e[0] is not None]


# ------------------------------------------------------------------------------ link cut


def test_link_cut_before_first_contact_resends_on_the_peers_first_ack():
    """linkcut10 as captured: B runs, A starts, A's table fills while the veth is down.

    A's 2000 messages (all HELLO, A never heard from B) go into the void. When the link is
    back, B's first message of A is A's ACK|HELLO|HELLO_BACK: HELLO skips the sequence check,
    so B cannot know about (or NACK) anything before it; and B's ALIVE|HELLO made A (as C)
    empty its resend queue. Before the fix: 2000 of 2000 missing for good."""
    a, b = Ftfw(counter(1795692641), window=300), Ftfw(counter(1795692641), window=300)
    link = Link(a, b)
    for k in range(2000):
        a.enqueue(k, obj(k))
    link.a_to_b(everything)  # sendto: ENETUNREACH -- but each message is in the resend queue
    assert len(a.rsq) == 2000
    b.tick()
    link.b_to_a(everything)  # B's ALIVE|HELLO while the link is down
    # link back up: B's next ALIVE|HELLO reaches A, A answers with ACK|HELLO|HELLO_BACK
    b.tick()
    link.b_to_a()
    a.tick()
    link.a_to_b()
    assert not link.got and b.peers["A"].tracker.lost == 0  # nothing B could detect
    for _ in range(3):
        link.idle_second()
    assert link.got == set(range(2000))
    assert a.targeted_resent == 2000
    assert not data_waiting(a) and not a.evicted


def test_link_cut_after_handshake_is_nacked_when_traffic_resumes():
    """The peers talked before the cut: A's ALIVE after the cut shows B the gap -> NACK."""
    a, b = Ftfw(counter(1000)), Ftfw(counter(5000))
    link = Link(a, b)
    handshake(link)
    assert not data_waiting(a)
    for k in range(500):
        a.enqueue(k, obj(k))
    link.a_to_b(everything)
    for _ in range(10):  # 10 s cut: both alarms fire into the void
        link.idle_second(everything, everything)
    assert link.got == {0}
    for _ in range(3):
        link.idle_second()
    assert link.got == set(range(500))
    assert b.peers["A"].tracker.lost > 0 and a.targeted_resent == 0  # a plain NACK did it


# ------------------------------------------------------------------------------ random loss


def test_lost_nack_then_later_ack_keeps_the_nacked_message():
    """Tail loss at 5 %: B NACKs seq 3, the NACK is lost, B's next ACK covers [4, 5].

    Before the fix A released everything up to an ACK's ``to`` (cumulative), so seq 3 was gone
    when B's NACK came back (re-sent after A NACKed the hole in B's numbering) and the flow
    stayed missing. C (and now we) release exactly [from, to]."""
    a, b = Ftfw(counter(1), window=300), Ftfw(counter(100), window=300)
    link = Link(a, b)
    handshake(link)
    first = a.seq.current
    for k in range(1, 6):
        a.enqueue(k, obj(k))
    link.a_to_b(lambda h: h.seq == first + 2)  # object 3 is lost
    assert link.got == {0, 1, 2, 4, 5}
    # B: ACK [.., 2] + NACK [3, 3]; the NACK is lost
    link.b_to_a(lambda h: h.is_nack)
    b.tick()  # B's alive alarm: ACK [4, 5]
    link.b_to_a()
    assert data_waiting(a) == [first + 2]  # [4, 5] released, 3 still waits for its NACK
    assert 3 not in a.tx
    # A saw the hole in B's numbering: its alarm NACKs it, B re-sends its NACK, A re-sends 3
    for _ in range(2):
        link.idle_second()
    assert link.got == {0, 1, 2, 3, 4, 5}
    assert not data_waiting(a) and a.targeted_resent == 0


@pytest.mark.parametrize("seed", range(40))
def test_random_loss_both_directions_converges(seed):
    """5 % loss each way, bursts of 2000, a quiet tail: every object arrives (was: a few stuck)."""
    rnd = random.Random(seed)
    a, b = Ftfw(counter(10_000), window=300), Ftfw(counter(90_000), window=300)
    link = Link(a, b)

    def lossy(h) -> bool:
        return rnd.random() < 0.05

    n = 2000
    for k in range(n):
        a.enqueue(k, obj(k))
        if k % 200 == 199:  # the daemon sends after each netlink batch
            link.a_to_b(lossy)
            link.b_to_a(lossy)
    link.a_to_b(lossy)
    for _ in range(30):
        link.idle_second(lossy, lossy)
        if len(link.got) == n and not data_waiting(a):
            break
    assert len(link.got) == n, f"{n - len(link.got)} missing"
    assert not a.evicted


def test_random_loss_small_resend_queue_and_peer_restart():
    """20 % loss, ResendQueueSize 64, and B restarts mid-burst (new machine, HELLO)."""
    rnd = random.Random(3)
    a, b = Ftfw(counter(10_000), window=50, rsq_size=64), Ftfw(counter(90_000), window=50)
    link = Link(a, b)

    def lossy(h) -> bool:
        return rnd.random() < 0.2

    for k in range(1000):
        a.enqueue(k, obj(k))
        if k % 100 == 99:
            link.a_to_b(lossy)
            link.b_to_a(lossy)
        if k == 500:
            link.b = b = Ftfw(counter(70_000), window=50)  # restarted: knows nothing
            link.got.clear()
            for j in range(500):  # what a StartupResync would fetch
                a.enqueue(j, obj(j))
    for _ in range(60):
        link.idle_second(lossy, lossy)
        if len(link.got) == 1000 and not a.tx:
            break
    assert len(link.got) == 1000, f"{1000 - len(link.got)} missing"
