"""A long TX queue is sent in chunks, and the loop reads file descriptors between them.

Why: with the whole queue rendered in one run, a resync or ``-B`` of 100k+ entries kept the
daemon away from its netlink event socket long enough to overrun it, which costs another
resync (docs/sync.md, "Performance", item 4).
"""

from __future__ import annotations

import os

from conntrack_tools.daemon.loop import Loop
from conntrack_tools.daemon.sync.modes import Ftfw, Notrack
from conntrack_tools.daemon.sync.seq import SeqCounter
from conntrack_tools.daemon.sync.wire import decode_datagram


def render(item):
    return 1, b""  # CT_NEW with no attributes: enough for queue mechanics


def test_xmit_takes_at_most_limit_items_oldest_first():
    for mode in (Notrack(SeqCounter(lambda: 7)), Ftfw(SeqCounter(lambda: 7))):
        for i in range(10):
            mode.enqueue(i, i)
        first = mode.xmit(render, 4)
        assert len(first) == 4 and list(mode.tx) == [4, 5, 6, 7, 8, 9]
        rest = mode.xmit(render, 100)
        assert len(rest) == 6 and not mode.tx
        seqs = [decode_datagram(m)[0].seq for m in first + rest]
        assert seqs == list(range(7, 17))  # one sequence, in queue order


def test_ftfw_chunked_xmit_keeps_every_item_in_the_resend_queue():
    mode = Ftfw(SeqCounter(lambda: 0), rsq_size=100)
    for i in range(25):
        mode.enqueue(i, i)
    while mode.tx:
        mode.xmit(render, 10)
    assert sorted(mode.rs_index) == list(range(25))


def test_a_timer_rearming_itself_at_delay_zero_does_not_starve_readers():
    loop = Loop()
    r, w = os.pipe2(os.O_NONBLOCK)
    seen: list[str] = []
    runs = 0

    def tx_chunk():
        nonlocal runs
        runs += 1
        seen.append("tx")
        if runs < 5:
            loop.add_timer(0, tx_chunk)
        else:
            loop.stop()

    def readable():
        os.read(r, 64)
        seen.append("read")

    loop.add_reader(r, readable)
    os.write(w, b"x")
    loop.add_timer(0, tx_chunk)
    try:
        loop.run()
    finally:
        loop.close()
        os.close(r)
        os.close(w)
    assert seen[:3] == ["tx", "read", "tx"]
