"""Fill the current network namespace's conntrack table quickly (batched ctnetlink creates).

Usage: python bench/populate.py N [udp|tcp|mix] [--rate FLOWS_PER_S | --preencode] [--stats]

``--rate`` paces the creates (small batches every few ms, so the kernel sees a steady stream
of about that many NEW events per second) instead of creating as fast as this loop can encode
them (~70k/s); ``--preencode`` builds every message first and then sends them back to back, so
the creates go as fast as the kernel takes them; ``--stats`` prints a JSON line
``{"sending": true}`` when the first create is sent and ``{"created": .., "errors": .., "seconds": ..}``
(seconds of sending) at the end.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time

from conntrack_tools.flow import AF_INET, IPS_ASSURED, IPS_CONFIRMED, IPS_SEEN_REPLY, Flow, TcpInfo, Tuple
from conntrack_tools.netlink.attrs import NLM_F_CREATE, NLM_F_EXCL, CtMsg, ct_type
from conntrack_tools.netlink.codec import encode_flow, nlmsg
from conntrack_tools.netlink.socket import CtnlSocket

TICK = 0.005  # --rate: one batch every 5 ms


def flows(n: int, kind: str):
    for i in range(n):
        src = (10 << 24 | 1 << 16 | (i >> 16) << 8 | 1).to_bytes(4, "big")
        dst = (10 << 24 | 2 << 16 | 0 << 8 | 1).to_bytes(4, "big")
        sport, dport = 1024 + i % 60000, 80 + i // 60000
        proto = 17 if kind == "udp" or (kind == "mix" and i % 2) else 6
        f = Flow(AF_INET, Tuple(AF_INET, src, dst, proto, sport, dport), Tuple(AF_INET, dst, src, proto, dport, sport),
                 status=IPS_CONFIRMED | IPS_SEEN_REPLY | IPS_ASSURED, timeout=3600)
        if proto == 6:
            f.tcp = TcpInfo(state=3)
        yield f


def populate(n: int, kind: str = "mix", rate: float = 0.0, preencode: bool = False,
             on_start=None) -> dict[int, int]:
    """Create n flows; ``rate`` > 0 paces them at about that many per second; ``preencode``
    builds all messages before the first send.  ``on_start()`` is called just before sending."""
    with CtnlSocket(rcvbuf=8 << 20) as sock:
        msgs = ((i + 1, nlmsg(ct_type(CtMsg.NEW), NLM_F_CREATE | NLM_F_EXCL, i + 1, AF_INET, encode_flow(f)))
                for i, f in enumerate(flows(n, kind)))
        if preencode:
            msgs = iter(list(msgs))
        if on_start is not None:
            on_start()
        if rate <= 0:
            return sock.batch(msgs)
        errors: dict[int, int] = {}
        step = max(1, round(rate * TICK))
        t0 = time.monotonic()
        sent = 0
        while sent < n:
            part = list(itertools.islice(msgs, step))
            errors.update(sock.batch(part))
            sent += len(part)
            delay = t0 + sent / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        return errors


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("n", type=int)
    ap.add_argument("kind", nargs="?", default="mix", choices=("udp", "tcp", "mix"))
    ap.add_argument("--rate", type=float, default=0.0, help="flows per second (default: as fast as possible)")
    ap.add_argument("--preencode", action="store_true", help="encode every message before the first send")
    ap.add_argument("--stats", action="store_true", help="print JSON lines: sending started; count and wall time")
    a = ap.parse_args()
    t0 = time.monotonic()

    def started() -> None:
        global t0
        t0 = time.monotonic()
        if a.stats:
            print(json.dumps({"sending": True}), flush=True)

    errs = populate(a.n, a.kind, a.rate, a.preencode, started)
    if a.stats:
        print(json.dumps({"created": a.n - len(errs), "errors": len(errs), "seconds": round(time.monotonic() - t0, 3)}),
              flush=True)
    if errs:
        print(f"{len(errs)} errors, e.g. {next(iter(errs.items()))}", file=sys.stderr)
        sys.exit(1)
