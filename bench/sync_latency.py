"""State latency of a sync pair with direct injection: from a flow's entry in the sender's kernel to its
entry in the receiver's kernel, C against ours (a 50-probe round runs in `make test`:
tests/netns/test_sync_latency_bench.py).

    sudo .venv/bin/python bench/sync_latency.py [--probes 1000] [--load 0,10000] [--pairs c-c,py-py,c-py,py-c]

Why: at a switchover a connection opened through the old master a moment before the switch loses packets
when its server answers through the new master before the state got there (docs/failover.md, "The race no
daemon closes").  This latency is that window; the roles' mode (FTFW over UDP, the backup with
``DisableExternalCache on``) is what runs here.

The namespaces, veth and daemons are bench/sync_run.py's.  One process holds a ctnetlink socket in A (the
probes' creates) and one in B subscribed to NEW events (pyroute2's ``pushns`` makes each in its namespace;
CLOCK_MONOTONIC is the same in both; this process runs SCHED_FIFO 99 so that its timestamps do not wait
behind the load).  Every ``--interval`` s one probe flow is created in A and the time until
B's kernel reports its NEW event is recorded; a probe not seen within ``--timeout`` counts as lost.  ``--load``
adds that many background creates per second in A (bench/populate.py --rate), the probes riding along.
Percentiles in ms per pair and load, and ours/C against the C -> C row of the same load.
"""

from __future__ import annotations

import argparse
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pyroute2 import netns as pr_netns
from sync_run import NAME, NS, PAIRS, REPO, Daemon, bench_link, flush_kernels  # type: ignore[import-not-found]

from conntrack_tools.flow import AF_INET, Flow, Tuple
from conntrack_tools.netlink.attrs import NLM_F_CREATE, NLM_F_EXCL, CtMsg, ct_type
from conntrack_tools.netlink.codec import decode_flow, encode_flow, iter_messages, nlmsg
from conntrack_tools.netlink.socket import CtnlSocket

PROBE_SRC = bytes((10, 77, 0, 1))  # outside bench/populate.py's 10.1.x.x -> 10.2.0.1
PROBE_DST = bytes((10, 78, 0, 1))


def probe(i: int) -> Flow:
    sport = 1024 + i
    return Flow(AF_INET, Tuple(AF_INET, PROBE_SRC, PROBE_DST, 17, sport, 53),
                Tuple(AF_INET, PROBE_DST, PROBE_SRC, 17, 53, sport), timeout=600)


def in_ns(name: str, make):
    pr_netns.pushns(name)
    try:
        return make()
    finally:
        pr_netns.popns()


def measure(probes: int, interval: float, timeout: float) -> tuple[list[float], int]:
    """Latencies (s) of the probes seen in B, and how many were not seen within ``timeout``."""
    ev = in_ns(NS["B"], lambda: CtnlSocket(groups=1, rcvbuf=32 << 20))  # NFNLGRP_CONNTRACK_NEW
    mk = in_ns(NS["A"], CtnlSocket)
    sent: dict[int, float] = {}
    seen: dict[int, float] = {}
    try:
        next_at = time.monotonic()
        i = 0
        deadline = None
        while True:
            now = time.monotonic()
            if i < probes and now >= next_at:
                seq = mk.next_seq()
                msg = nlmsg(ct_type(CtMsg.NEW), NLM_F_CREATE | NLM_F_EXCL, seq, AF_INET, encode_flow(probe(i)))
                sent[1024 + i] = time.monotonic()
                mk.batch([(seq, msg)])
                i += 1
                next_at += interval
                if i == probes:
                    deadline = time.monotonic() + timeout
            if deadline is not None and (len(seen) == probes or time.monotonic() >= deadline):
                break
            wait = max(0.0, min(next_at, deadline or next_at) - time.monotonic())
            if select.select([ev.sock], [], [], wait)[0]:
                n = ev.recv()
                t = time.monotonic()
                for _t, _f, _s, _pid, start, end in iter_messages(ev.view, n):
                    f = decode_flow(ev.view, start, end)
                    if f.orig is not None and f.orig.src == PROBE_SRC and f.orig.sport in sent:
                        seen.setdefault(f.orig.sport, t)
    finally:
        ev.close()
        mk.close()
    lat = [seen[k] - sent[k] for k in seen if seen[k] - sent[k] <= timeout]
    return lat, probes - len(lat)


def pct(v: list[float], q: float) -> float:
    return sorted(v)[min(len(v) - 1, int(len(v) * q))] * 1e3 if v else float("nan")


def scheduled(d: Daemon, scheduler: str) -> Daemon:
    """Our daemon with ``Scheduler { Type T  Priority P }`` from ``T:P`` (C's default is RR:99 without one;
    ours runs SCHED_OTHER unless told: docs/daemon.md)."""
    if scheduler and d.impl == "py":
        kind, prio = scheduler.split(":")
        d.conf.write_text(d.conf.read_text().replace(
            "General {\n", f"General {{\n Scheduler {{\n  Type {kind}\n  Priority {prio}\n }}\n", 1))
    return d


def background_flows(load: int, a: argparse.Namespace) -> int:
    """The background creates of one run: ``load``/s for as long as the probes take, and some margin."""
    return int(load * (a.probes * a.interval + a.timeout + 5))


def run_pair(tmp: Path, pair: str, load: int, a: argparse.Namespace, run: int) -> tuple[list[float], int]:
    flush_kernels()
    sender, receiver = PAIRS[pair]
    b = scheduled(Daemon(tmp, "B", receiver, run, "ftfw-inject"), a.scheduler).start()
    s = scheduled(Daemon(tmp, "A", sender, run, "ftfw-inject"), a.scheduler).start()
    bg = None
    try:
        time.sleep(1.0)  # the pair's hellos/alives exchanged
        if load:
            total = background_flows(load, a)
            bg = subprocess.Popen(["ip", "netns", "exec", NS["A"], sys.executable, str(REPO / "bench" / "populate.py"),
                                   str(total), "udp", "--rate", str(load)], cwd=REPO,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(1.0)
        return measure(a.probes, a.interval, a.timeout)
    finally:
        if bg is not None:
            bg.kill()
            bg.wait()
        s.stop()
        b.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--probes", type=int, default=1000)
    ap.add_argument("--interval", type=float, default=0.01, help="seconds between two probes")
    ap.add_argument("--timeout", type=float, default=2.0, help="a probe not seen in B within this is lost")
    ap.add_argument("--load", default="0,10000", help="background creates per second in A, comma-separated")
    ap.add_argument("--pairs", default="c-c,py-py,c-py,py-c")
    ap.add_argument("--scheduler", default="", metavar="TYPE:PRIO",
                    help="a Scheduler block for our daemons, e.g. RR:50 (C runs RR:99 by default)")
    a = ap.parse_args()
    # The probes' clock must not wait behind the load: this process runs SCHED_FIFO 99 (it sleeps in select()
    # between probes); C's daemons run RR 99 by default, so neither side's timestamps queue behind the other.
    os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(99))
    loads = [int(x) for x in a.load.split(",")]
    pairs = a.pairs.split(",")
    if "c-c" not in pairs:
        pairs.insert(0, "c-c")
    res: dict[tuple[str, int], tuple[list[float], int]] = {}
    need = 262144 + a.probes + background_flows(max(loads), a)  # nf_conntrack_max for the run
    with tempfile.TemporaryDirectory(prefix="ctpy-lat-") as d, bench_link(need):
        run = 0
        for load in loads:
            for pair in pairs:
                run += 1
                lat, lost = res[pair, load] = run_pair(Path(d), pair, load, a, run)
                print(f"  {pair} load {load}/s: n {len(lat)} lost {lost} p50 {pct(lat, .5):.2f} "
                      f"p90 {pct(lat, .9):.2f} p99 {pct(lat, .99):.2f} max {pct(lat, 1):.2f} ms", flush=True)
    print("\n| pair (sender → receiver) | background creates/s | probes seen | p50 ms | p90 ms | p99 ms | max ms "
          "| p50 / C→C | p90 / C→C |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for load in loads:
        base = res["c-c", load][0]
        for pair in pairs:
            lat, lost = res[pair, load]
            snd, rcv = PAIRS[pair]
            r50 = pct(lat, .5) / pct(base, .5) if lat and base else float("nan")
            r90 = pct(lat, .9) / pct(base, .9) if lat and base else float("nan")
            print(f"| {NAME[snd]} → {NAME[rcv]} | {load:,} | {len(lat)}/{len(lat) + lost} | {pct(lat, .5):.2f} "
                  f"| {pct(lat, .9):.2f} | {pct(lat, .99):.2f} | {pct(lat, 1):.2f} | {r50:.2f} | {r90:.2f} |")
    if any(not res[k][0] for k in res):
        return 1
    print(f"\nmedian of the C → C medians: {statistics.median(pct(res['c-c', x][0], .5) for x in loads):.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
