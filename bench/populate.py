"""Fill the current network namespace's conntrack table quickly (batched ctnetlink creates).

Usage: python bench/populate.py N [udp|tcp|mix]
"""

from __future__ import annotations

import sys

from conntrack_tools.flow import AF_INET, IPS_ASSURED, IPS_CONFIRMED, IPS_SEEN_REPLY, Flow, TcpInfo, Tuple
from conntrack_tools.netlink.attrs import NLM_F_CREATE, NLM_F_EXCL, CtMsg, ct_type
from conntrack_tools.netlink.codec import encode_flow, nlmsg
from conntrack_tools.netlink.socket import CtnlSocket


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


def populate(n: int, kind: str = "mix") -> dict[int, int]:
    with CtnlSocket(rcvbuf=8 << 20) as sock:
        msgs = ((i + 1, nlmsg(ct_type(CtMsg.NEW), NLM_F_CREATE | NLM_F_EXCL, i + 1, AF_INET, encode_flow(f)))
                for i, f in enumerate(flows(n, kind)))
        return sock.batch(msgs)


if __name__ == "__main__":
    errs = populate(int(sys.argv[1]), sys.argv[2] if len(sys.argv) > 2 else "mix")
    if errs:
        print(f"{len(errs)} errors, e.g. {next(iter(errs.items()))}", file=sys.stderr)
        sys.exit(1)
