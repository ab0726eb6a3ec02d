"""Sender and receiver stages of the sync path, microbenchmarked in-process (not a CI test).

    .venv/bin/python bench/sync_stages.py [--n 10000] [--runs 5]

No root, no sockets: N synthetic flows (a mix of IPv4/IPv6 TCP and UDP, some ICMP, kernel-like
status, timeout, mark and the all-zero SYNPROXY every kernel event carries) are rendered by the
sender code (``wire.encode_flow_message``) and fed to each receive stage.  When the reference
captures exist (/work/shared or ``CT_SHARED``), the C sender's conntrack messages are timed as well.

The sender rows time N kernel-shaped NEW events (IPv4 TCP/UDP with the protoinfo, mark, id and
all-zero SYNPROXY a kernel event carries) through the daemon's own stages: decode, cache update +
enqueue (the reference path: decode + SyncCacheMode.new; the fast path: daemon/event_fill.py, which
replaces both), rendering by the reference path and by ``entry_packer.EntryRenderer``, and FTFW xmit.

Each receiver stage prints the best of ``--runs`` runs in µs per message:

* ``decode_attrs``, ``SyncFlow.from_attrs``, ``build_entry``: the reference path (docs/sync.md R1-R4);
* ``reference total``: the three above in a row (what ``_apply`` did before the transcoder);
* ``transcoder``: ``transcode.Transcoder`` (sync message -> external key + netlink body);
* ``handle_datagram``: the whole receive path of one message (FTFW, datagrams of ~1.4 kB as the
  sender batches them, apply into the external cache);
* ``handle_datagram, apply stubbed``: framing + FTFW sequence/ACK-window bookkeeping only (R5);
* the "(old)" rows run the same engine with both fast paths off (mode.recv for every header,
  the reference path for every payload), for a before/after comparison under the same load.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from conntrack_tools.daemon.sync.engine import SyncDaemonEngine  # noqa: E402
from conntrack_tools.daemon.sync.external import ExternalCache, build_entry  # noqa: E402
from conntrack_tools.daemon.sync.modes import Ftfw  # noqa: E402
from conntrack_tools.daemon.sync.seq import SeqCounter  # noqa: E402
from conntrack_tools.daemon.sync.wire import (  # noqa: E402
    CT_ATTRS,
    Batcher,
    FlowTuple,
    MsgType,
    SyncFlow,
    Synproxy,
    decode_attrs,
    decode_datagram,
    encode_flow_message,
)

try:
    from conntrack_tools.daemon.sync.transcode import Transcoder  # noqa: E402
except ImportError:  # before the transcoder existed
    Transcoder = None  # type: ignore[assignment,misc]

from tests.conftest import REFERENCE  # noqa: E402 - the one place that resolves CT_SHARED

CAPTURES = REFERENCE / "wire-captures"


def synthetic_flows(n: int, seed: int = 1) -> list[SyncFlow]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        kind = i % 10
        v6 = kind == 9
        src = IPv6Address(0x20010DB8 << 96 | i) if v6 else IPv4Address(0x0A000000 | i)
        dst = IPv6Address(0x20010DB8 << 96 | 0xFFFF) if v6 else IPv4Address(0x0A630001)
        common = {"status": 0x18E, "timeout": rnd.randrange(100, 432000), "mark": 0,
                  "synproxy": Synproxy(0, 0, 0)}
        if kind == 8:  # ICMP echo
            out.append(SyncFlow(FlowTuple(src, dst, 1), icmp_type=8, icmp_code=0, icmp_id=i & 0xFFFF, **common))
        elif kind % 2:
            out.append(SyncFlow(FlowTuple(src, dst, 17, 1024 + i % 60000, 53), **common))
        else:
            out.append(SyncFlow(FlowTuple(src, dst, 6, 1024 + i % 60000, 443), tcp_state=3, **common))
    return out


def messages(flows: list[SyncFlow], seq0: int = 1000) -> list[bytes]:
    return [encode_flow_message(MsgType.CT_NEW if i % 3 else MsgType.CT_UPD, sf, seq0 + i)
            for i, sf in enumerate(flows)]


def c_messages() -> list[bytes]:
    """The C sender's conntrack messages from the captures (each re-stamped with its own seq)."""
    if not CAPTURES.is_dir():
        return []
    sys.path.insert(0, str(REPO))
    from tests.unit.pcap import read_udp

    out = []
    for path in sorted(CAPTURES.glob("*.pcap")):
        for p in read_udp(path):
            if p.dport != 3780:
                continue
            off = 0
            for m in decode_datagram(p.payload):
                if m.is_ct:  # the C sender's bytes, flags cleared
                    out.append(p.payload[off:off + 1] + b"\0" + p.payload[off + 2:off + m.header.len])
                off += m.header.len
    return out


def best(fn, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


class _Chans:
    current = 0

    def set_current(self, idx: int) -> None:
        pass


class _SlowFtfw(Ftfw):
    """handle_datagram's R5 fast path off: every header is decoded and goes through mode.recv."""

    def recv_fast(self, addr, seq, now):
        return False


class _RefExternal(ExternalCache):
    def apply(self, mtype, buf, start, end):  # no transcoder: the reference path for every payload
        return False


def make_engine(old: bool = False) -> SyncDaemonEngine:
    """An engine without sockets: FTFW, an external cache, no auth (only what the RX path reads).

    ``old``: both fast paths off, i.e. the receive path as it was before docs/sync.md R1-R5."""
    eng = SyncDaemonEngine.__new__(SyncDaemonEngine)
    eng.errors = dict.fromkeys(("malformed", "bad_version", "bad_header", "bad_payload", "bad_type", "truncated",
                                "bad_size", "snd_malformed"), 0)
    eng.opener = None
    eng.mode = (_SlowFtfw if old else Ftfw)(SeqCounter(lambda: 1), 300, 131072)
    eng.channels = _Chans()
    eng.external = (_RefExternal if old else ExternalCache)(1 << 30)
    eng.injector = None
    eng.window_tracking = False
    eng.log = lambda *a: None
    return eng


def datagrams(msgs: list[bytes], budget: int = 1500 - 28) -> list[bytes]:
    b = Batcher(budget)
    out = []
    for m in msgs:
        out.extend(b.add(m))
    last = b.flush()
    if last is not None:
        out.append(last)
    return out


def stage_rows(msgs: list[bytes], runs: int) -> list[tuple[str, float]]:
    n = len(msgs)
    us = 1e6 / n
    spans = [(m, 8, len(m)) for m in msgs]
    attrs = [decode_attrs(m, s, e, CT_ATTRS) for m, s, e in spans]
    sfs = [SyncFlow.from_attrs(a) for a in attrs]
    rows = []

    def dec():
        for m, s, e in spans:
            decode_attrs(m, s, e, CT_ATTRS)

    def frm():
        for a in attrs:
            SyncFlow.from_attrs(a)

    def bld():
        for sf in sfs:
            build_entry(sf, 0.0, False)

    def ref():
        for m, s, e in spans:
            build_entry(SyncFlow.from_attrs(decode_attrs(m, s, e, CT_ATTRS)), 0.0, False)

    rows += [("decode_attrs (R2)", best(dec, runs) * us), ("SyncFlow.from_attrs (R3)", best(frm, runs) * us),
             ("build_entry (R1+R4)", best(bld, runs) * us), ("reference total", best(ref, runs) * us)]
    if Transcoder is not None:
        tc = Transcoder(False)
        for m, s, e in spans:  # warm: compile the layouts
            tc.transcode(m, s, e)
        tr = tc.transcode

        def tcode():
            for m, s, e in spans:
                tr(m, s, e)

        rows.append(("transcoder (R1-R4)", best(tcode, runs) * us))
    return rows


def engine_rows(msgs: list[bytes], runs: int, one_per_datagram: bool = False) -> list[tuple[str, float]]:
    n = len(msgs)
    us = 1e6 / n
    msgs = [m[:4] + (1000 + i).to_bytes(4, "big") + m[8:] for i, m in enumerate(msgs)]  # consecutive seqs
    dgrams = msgs if one_per_datagram else datagrams(msgs)
    peer = ("10.0.0.1", 3780)

    def full(stub: bool, old: bool):
        def run():
            eng = make_engine(old)
            if stub:
                eng._apply = lambda *a: None  # type: ignore[method-assign]
            hd = eng.handle_datagram
            t0 = time.perf_counter()
            for d in dgrams:
                hd(0, d, peer)
            return time.perf_counter() - t0, eng
        return run

    rows = []
    cases = (("handle_datagram, fast paths off (old)", False, True), ("handle_datagram (all)", False, False),
             ("handle_datagram, apply stubbed, R5 off (old)", True, True),
             ("handle_datagram, apply stubbed (R5)", True, False))
    if not hasattr(ExternalCache, "apply"):  # before the fast paths existed
        cases = cases[1:2] + cases[3:]
    for label, stub, old in cases:
        times = []
        for _ in range(runs):
            dt, eng = full(stub, old)()
            times.append(dt)
        assert sum(eng.errors.values()) == 0, eng.errors
        rows.append((label, min(times) * us))
    return rows


def kernel_events(n: int) -> list[tuple[memoryview, int, int]]:
    """N kernel-shaped NEW events (what the sender's event socket reads), as (buffer, start, end)."""
    from conntrack_tools.flow import AF_INET, IPS_ASSURED, IPS_CONFIRMED, IPS_SEEN_REPLY, Flow, TcpInfo, Tuple
    from conntrack_tools.netlink.attrs import NLM_F_CREATE, NLM_F_EXCL, CtMsg, ct_type
    from conntrack_tools.netlink.codec import encode_flow, nlmsg

    out = []
    for i in range(n):
        src, dst = (10 << 24 | 1 << 16 | i >> 8 & 0xFF << 8 | i & 0xFF).to_bytes(4, "big"), bytes([10, 2, 0, 1])
        proto = 17 if i % 2 else 6
        f = Flow(AF_INET, Tuple(AF_INET, src, dst, proto, 1024 + i % 60000, 80),
                 Tuple(AF_INET, dst, src, proto, 80, 1024 + i % 60000),
                 status=IPS_CONFIRMED | IPS_SEEN_REPLY | IPS_ASSURED, timeout=3600, mark=0, id=i, synproxy=(0, 0, 0))
        if proto == 6:
            f.tcp = TcpInfo(3, 7, 7, 0x23, 0, 0x23, 0)
        msg = nlmsg(ct_type(CtMsg.NEW), NLM_F_CREATE | NLM_F_EXCL, 0, AF_INET, encode_flow(f))
        out.append((memoryview(msg), 16, len(msg)))
    return out


def sender_rows(n: int, runs: int) -> list[tuple[str, float]]:
    """The sender's per-event stages (docs/sync.md S1-S5): decode, cache update + enqueue, render, xmit."""
    from conntrack_tools.daemon.mode import SyncCacheMode
    from conntrack_tools.daemon.stats import RuntimeStats
    from conntrack_tools.daemon.sync.entry_packer import EntryRenderer, render_reference
    from conntrack_tools.netlink.shapes import ShapeDecoder

    events = kernel_events(n)
    us = 1e6 / n
    decode = ShapeDecoder().decode
    flows = [decode(v, s, e) for v, s, e in events]

    class Engine:  # what SyncCacheMode calls: the engine's enqueue
        external = None

        def __init__(self) -> None:
            self.mode = Ftfw(SeqCounter(lambda: 1))

        def on_local_new(self, e, flow, origin) -> None:
            self.mode.enqueue(e.key, (e, MsgType.CT_NEW))

        on_local_update = on_local_new

    def fresh() -> SyncCacheMode:
        return SyncCacheMode(1 << 22, RuntimeStats(), lambda f: [True] * len(f), lambda *a: None, lambda line: None,
                             engine=Engine())

    def new_all() -> SyncCacheMode:
        m = fresh()
        for f in flows:
            m.new(f, None)
        return m

    from functools import partial

    from conntrack_tools.daemon.event_fill import event_fill_factory, reference_snapshot
    from conntrack_tools.daemon.filter import ACCEPT_ALL

    shapes = ShapeDecoder(event_factory=event_fill_factory(ACCEPT_ALL),
                          event_reference=partial(reference_snapshot, ACCEPT_ALL))
    for v, s, e in events:
        shapes.decode(v, s, e)  # compiles each layout (and its event fill) on first sight
    find = shapes.find

    def fast_all() -> SyncCacheMode:
        """What Ctnl.read_events does per NEW event of a compiled layout (no Flow)."""
        m = fresh()
        event = m.event
        for v, s, e in events:
            _shape, vals = find(v, s, e)
            ev = _shape.event
            event(True, ev.key(vals), ev.fill, vals, None)
        return m

    m = new_all()
    entries = [e for e, _ in m.engine.mode.tx.values()]
    r = EntryRenderer(True, False)

    def xmit() -> None:
        mode = Ftfw(SeqCounter(lambda: 1))
        for e in entries:
            mode.enqueue(e.key, (e, MsgType.CT_NEW))
        mode.xmit(lambda item: (item[1], r.body(item[0], item[0].timeout)))

    return [
        ("event decode (ShapeDecoder -> Flow)", best(lambda: [decode(v, s, e) for v, s, e in events], runs) * us),
        ("cache update + enqueue (SyncCacheMode.new, new entries)", best(new_all, runs) * us),
        ("event fast path: layout + key + fill + enqueue (SyncCacheMode.event)", best(fast_all, runs) * us),
        ("cache update + enqueue (SyncCacheMode.upd, known entries)",
         best(lambda: [m.upd(f, None) for f in flows], runs) * us),
        ("render, reference path (entry_flow -> flow_to_sync -> encode_attrs)",
         best(lambda: [render_reference(e, e.timeout, True, False) for e in entries], runs) * us),
        ("render, compiled (EntryRenderer)", best(lambda: [r.body(e, e.timeout) for e in entries], runs) * us),
        ("FTFW enqueue + xmit with compiled render (seq, resend queue)", best(xmit, runs) * us),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    flows = synthetic_flows(args.n)
    msgs = messages(flows)
    rows = [(f"[sender, {args.n} kernel events] {k}", v) for k, v in sender_rows(args.n, args.runs)]
    rows += [(f"[ours, {args.n} synthetic] {k}", v) for k, v in stage_rows(msgs, args.runs)]
    rows += [(f"[ours, {args.n} synthetic] {k}", v) for k, v in engine_rows(msgs, args.runs)]
    cm = c_messages()
    if cm:
        reps = max(1, args.n // len(cm))
        rows += [(f"[C pcap, {len(cm)} msgs x{reps}] {k}", v) for k, v in stage_rows(cm * reps, args.runs)]
        rows += [(f"[C pcap, {len(cm)} msgs x{reps}] {k}, 1 msg/datagram", v)
                 for k, v in engine_rows(cm * reps, args.runs, one_per_datagram=True)]
    width = max(len(k) for k, _ in rows)
    print(f"{'stage':<{width}}  µs/message (best of {args.runs})")
    print("-" * (width + 24))
    for k, v in rows:
        print(f"{k:<{width}}  {v:8.2f}")


if __name__ == "__main__":
    main()
