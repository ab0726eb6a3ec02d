"""Memory per entry of the daemon's internal cache, against C conntrackd 1.4.7 (~0.5 KB/entry).

Not a CI test.  Each size runs in a fresh child process that feeds the cache exactly as the
initial dump does (``SyncCacheMode.populate``): kernel-shaped ctnetlink messages (status,
timeout, mark, use, id, TCP protoinfo with window scale and flags, the all-zero CTA_SYNPROXY, as a
real dump carries)
are built in chunks, decoded by the daemon's ShapeDecoder and added, so only the cache stays.
Two measures per size, in separate children:

* ``tracemalloc``: Python bytes still allocated by the cache (its dict, entries, keys, extras);
* ``RSS``: growth of the child's resident set (VmRSS) from before the first entry to after the
  last, i.e. what ``ps`` would show, allocator overhead included -- the figure comparable to C's.

C's figures (c-tools-behaviour/README.md §4): conntrackd RSS 4,200 KB idle, 55,800 KB with 100k
entries in the internal cache, 519,900 KB with 1M: (RSS - idle) / N = 528 B/entry at both sizes.

Usage: python bench/cache_memory.py [--sizes 100000,1000000] [--kind mix|tcp|udp]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

C_RSS_KB = {"idle": 4200, 100_000: 55_800, 1_000_000: 519_900}  # internal cache node (n1), README §4
CHUNK = 10_000


def c_bytes_per_entry(n: int) -> float | None:
    if n not in C_RSS_KB:
        return None
    return (C_RSS_KB[n] - C_RSS_KB["idle"]) * 1024 / n


def rss_bytes() -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def messages(first: int, count: int, kind: str) -> bytes:
    """``count`` kernel-like CT_NEW dump messages (flows first .. first+count-1)."""
    from conntrack_tools.flow import AF_INET, IPS_ASSURED, IPS_CONFIRMED, IPS_SEEN_REPLY, Flow, TcpInfo, Tuple
    from conntrack_tools.netlink.attrs import CtMsg, ct_type
    from conntrack_tools.netlink.codec import encode_flow, nlmsg

    out = []
    for i in range(first, first + count):
        src = (10 << 24 | 1 << 16 | (i >> 16) << 8 | 1).to_bytes(4, "big")
        dst = (10 << 24 | 2 << 16 | (i & 0xFF) << 8 | 1).to_bytes(4, "big")
        sport, dport = 1024 + i % 60000, 80 + (i >> 8) % 1000
        proto = 17 if kind == "udp" or (kind == "mix" and i % 2) else 6
        f = Flow(AF_INET, Tuple(AF_INET, src, dst, proto, sport, dport), Tuple(AF_INET, dst, src, proto, dport, sport),
                 status=IPS_CONFIRMED | IPS_SEEN_REPLY | IPS_ASSURED, timeout=3600 - i % 3600, mark=0, use=1,
                 id=(2_654_435_761 * i) & 0xFFFFFFFF, synproxy=(0, 0, 0))  # current kernels: on every flow
        if proto == 6:
            f.tcp = TcpInfo(state=3, wscale_orig=7, wscale_reply=7, flags_orig=0x23, mask_orig=0,
                            flags_reply=0x23, mask_reply=0)
        out.append(nlmsg(ct_type(CtMsg.NEW), 0x2, 0, AF_INET, encode_flow(f)))  # NLM_F_MULTI, as in a dump
    return b"".join(out)


def child(n: int, kind: str, method: str) -> dict:
    import tracemalloc

    from conntrack_tools.daemon.mode import SyncCacheMode
    from conntrack_tools.daemon.stats import RuntimeStats
    from conntrack_tools.netlink.codec import iter_messages
    from conntrack_tools.netlink.shapes import ShapeDecoder

    decode = ShapeDecoder().decode
    mode = SyncCacheMode(n, RuntimeStats(), lambda flows: [True] * len(flows), lambda *_: None, lambda _l: None)
    # warm up everything that is not the cache (imports, decoder shapes, interned ints, buffers)
    warm = messages(n + 1, CHUNK, kind)
    for _t, _f, _s, _p, start, end in iter_messages(warm, len(warm)):
        decode(warm, start, end)
    del warm
    gc.collect()
    if method == "tracemalloc":
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
    else:
        before = rss_bytes()
    t0 = time.perf_counter()
    for first in range(0, n, CHUNK):
        buf = messages(first, min(CHUNK, n - first), kind)
        for _t, _f, _s, _p, start, end in iter_messages(buf, len(buf)):
            mode.populate(decode(buf, start, end))
        del buf
    elapsed = time.perf_counter() - t0
    gc.collect()
    if method == "tracemalloc":
        used = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
    else:
        used = rss_bytes() - before
    assert len(mode.cache) == n, (len(mode.cache), n)
    return {"n": n, "method": method, "bytes": used, "per_entry": used / n, "seconds": elapsed,
            "rss_total": rss_bytes()}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--kind", default="mix", choices=("mix", "tcp", "udp"))
    ap.add_argument("--child", nargs=3, metavar=("N", "KIND", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(int(args.child[0]), args.child[1], args.child[2])))
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    for n in sizes:
        res = {}
        for method in ("rss", "tracemalloc"):
            out = subprocess.run([sys.executable, __file__, "--child", str(n), args.kind, method], check=True,
                                 capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"})
            res[method] = json.loads(out.stdout)
        rows.append((n, res))
    print(f"internal cache memory per entry ({args.kind} TCP/UDP flows, Python {sys.version.split()[0]})")
    print(f"{'entries':>10} | {'RSS delta B/entry':>17} | {'tracemalloc B/entry':>19} | {'C RSS B/entry':>13} | "
          f"{'ours/C (RSS)':>12} | {'fill s':>6} | {'RSS total MB':>12}")
    print("-" * 107)
    for n, res in rows:
        c = c_bytes_per_entry(n)
        rss = res["rss"]["per_entry"]
        print(f"{n:>10,} | {rss:>17.0f} | {res['tracemalloc']['per_entry']:>19.0f} | "
              f"{(f'{c:.0f}' if c else 'n/a'):>13} | {(f'{rss / c:.2f}' if c else 'n/a'):>12} | "
              f"{res['rss']['seconds']:>6.1f} | {res['rss']['rss_total'] / 2**20:>12.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
