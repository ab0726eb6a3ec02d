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

C's figure is measured in the same run (as root, with /usr/sbin/conntrackd): a C conntrackd (FTFW over
UDP on lo, as c-tools-behaviour/README.md §4's n1) in a scratch namespace ``ctpy-cmem-<pid>``, its VmRSS
idle, then after a restart on a table of N entries (bench/populate.py) once its internal cache holds all
N: (RSS - idle) / N.  Sizes above the kernel's nf_conntrack_max are not measured for C (n/a).  For the
record, README §4 found 4,200 KB idle, 55,800 KB at 100k and 519,900 KB at 1M (528 B/entry).

Usage: python bench/cache_memory.py [--sizes 100000,1000000] [--kind mix|tcp|udp]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

C_DAEMON = "/usr/sbin/conntrackd"
CHUNK = 10_000
C_CONF = """General {{
  HashSize 32768
  HashLimit 4194304
  Systemd off
  LockFile {d}/lock
  UNIX {{ Path {d}/ctl }}
  NetlinkBufferSize 2097152
  NetlinkBufferSizeMaxGrowth 8388608
}}
Sync {{
  Mode FTFW {{ ResendQueueSize 131072 }}
  UDP {{ IPv4_address 127.0.0.1 IPv4_Destination_Address 127.0.0.2 Port 3780 Interface lo Checksum on }}
}}
"""


def _vmrss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _c_daemon_rss(ns: str, d: Path, want: int) -> int:
    """Start C conntrackd in ``ns``, wait until its internal cache holds ``want`` entries, return its VmRSS (KB)."""
    conf = d / "conntrackd.conf"
    proc = subprocess.Popen(["ip", "netns", "exec", ns, C_DAEMON, "-C", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while True:
            r = subprocess.run(["ip", "netns", "exec", ns, C_DAEMON, "-C", str(conf), "-s", "cache"],
                               capture_output=True, text=True)
            m = re.search(r"cache:internal\s+active objects:\s+(\d+)", r.stdout)
            if m and int(m[1]) == want:
                return _vmrss_kb(proc.pid)  # `ip netns exec` execs the daemon: same pid
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"C conntrackd: cache {m[1] if m else '?'} of {want} entries ({r.stderr.strip()})")
            time.sleep(0.2)
    finally:
        proc.terminate()
        proc.wait(10)
        (d / "lock").unlink(missing_ok=True)


def c_bytes_per_entry(sizes: list[int], kind: str) -> dict[int, float | None]:
    """C conntrackd's RSS growth per internal-cache entry, measured now ({} without root or the C daemon)."""
    if os.geteuid() != 0 or not os.path.exists(C_DAEMON):
        return {}
    limit = int(Path("/proc/sys/net/netfilter/nf_conntrack_max").read_text())
    ns = f"ctpy-cmem-{os.getpid()}"
    d = Path(tempfile.mkdtemp(prefix="ctpy-cmem-"))
    (d / "conntrackd.conf").write_text(C_CONF.format(d=d))
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        idle = _c_daemon_rss(ns, d, 0)
        out: dict[int, float | None] = {}
        for n in sizes:
            if n > limit:
                out[n] = None
                continue
            subprocess.run(["ip", "netns", "exec", ns, "/usr/sbin/conntrack", "-F"], capture_output=True)
            subprocess.run(["ip", "netns", "exec", ns, sys.executable, str(HERE / "populate.py"), str(n), kind],
                           check=True, env={**os.environ, "PYTHONPATH": str(HERE.parent)})
            out[n] = (_c_daemon_rss(ns, d, n) - idle) * 1024 / n
        return out
    finally:
        subprocess.run(["ip", "netns", "delete", ns], check=False)
        shutil.rmtree(d, ignore_errors=True)


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
    c_per_entry = c_bytes_per_entry(sizes, args.kind)
    print(f"internal cache memory per entry ({args.kind} TCP/UDP flows, Python {sys.version.split()[0]})")
    print(f"{'entries':>10} | {'RSS delta B/entry':>17} | {'tracemalloc B/entry':>19} | {'C RSS B/entry':>13} | "
          f"{'ours/C (RSS)':>12} | {'fill s':>6} | {'RSS total MB':>12}")
    print("-" * 107)
    for n, res in rows:
        c = c_per_entry.get(n)
        rss = res["rss"]["per_entry"]
        print(f"{n:>10,} | {rss:>17.0f} | {res['tracemalloc']['per_entry']:>19.0f} | "
              f"{(f'{c:.0f}' if c else 'n/a'):>13} | {(f'{rss / c:.2f}' if c else 'n/a'):>12} | "
              f"{res['rss']['seconds']:>6.1f} | {res['rss']['rss_total'] / 2**20:>12.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
