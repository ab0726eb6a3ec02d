"""Two namespaces A and B joined by one veth, for the sync burst test and bench/sync_run.py.

Built by rtnetlink (pyroute2): namespaces, the veth, addresses, lo up, a route for the multicast
groups.  Loss on B's input is an nft rule ahead of conntrack (this VM's kernel has no sch_netem),
with a counter of what it dropped.  Only what is created here is removed, by name.
"""

from __future__ import annotations

import re
import subprocess

from pyroute2 import IPRoute, NetNS, netns

from tests.netns.daemon_proc import ns_run

__all__ = ["VethPair", "stat_num"]


class VethPair:
    def __init__(self, prefix: str, tag: str, subnet: str, port: int, loss_table: str) -> None:
        self.ns = {"A": f"{prefix}A{tag}", "B": f"{prefix}B{tag}"}
        self.veth = {"A": f"{prefix}{tag}a", "B": f"{prefix}{tag}b"}
        self.addr = {"A": f"{subnet}.1", "B": f"{subnet}.2"}
        self.port = port  # the sync port (UDP, or the multicast group's): what the loss rule matches
        self.loss_table = loss_table

    def create(self) -> None:
        for side in "AB":
            netns.create(self.ns[side])
        with IPRoute() as ipr:
            ipr.link("add", ifname=self.veth["A"], kind="veth",
                     peer={"ifname": self.veth["B"], "net_ns_fd": self.ns["B"]})
            ipr.link("set", index=ipr.link_lookup(ifname=self.veth["A"])[0], net_ns_fd=self.ns["A"])
        for side in "AB":
            with NetNS(self.ns[side]) as ipr:
                ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
                dev = ipr.link_lookup(ifname=self.veth[side])[0]
                ipr.addr("add", index=dev, address=self.addr[side], prefixlen=24)
                ipr.link("set", index=dev, state="up")
                ipr.route("add", dst="224.0.0.0/4", oif=dev)

    def remove(self) -> None:
        for side in "AB":
            if self.ns[side] in netns.listnetns():
                netns.remove(self.ns[side])

    def run(self, side: str, *cmd: str, timeout: float = 120, **kw) -> subprocess.CompletedProcess:
        return ns_run(self.ns[side], *cmd, timeout=timeout, **kw)

    def set_loss(self, pct: int) -> None:
        """Drop ``pct`` % of the sync datagrams arriving at B, at random (0: no rule)."""
        self.run("B", "nft", "delete", "table", "inet", self.loss_table)
        if not pct:
            return
        rules = (f"table inet {self.loss_table} {{\n chain input {{\n  type filter hook input priority -300;\n"
                 f"  udp dport {self.port} numgen random mod 100 < {pct} counter drop\n }}\n}}\n")
        r = self.run("B", "nft", "-f", "-", input=rules)
        if r.returncode:
            raise RuntimeError(f"nft loss rule in B: {r.stderr}")

    def injected_drops(self) -> int:
        """Datagrams the loss rule dropped so far."""
        out = self.run("B", "nft", "list", "table", "inet", self.loss_table).stdout
        m = re.search(r"counter packets (\d+)", out)
        return int(m[1]) if m else 0

    def udp_snmp(self, side: str) -> dict[str, int]:
        """The Udp: line of /proc/net/snmp in ``side`` (InErrors, RcvbufErrors, SndbufErrors ...)."""
        out = self.run(side, "cat", "/proc/net/snmp").stdout
        lines = [x.split() for x in out.splitlines() if x.startswith("Udp:")]
        return dict(zip(lines[0][1:], map(int, lines[1][1:]), strict=True)) if len(lines) >= 2 else {}


def stat_num(text: str | None, label: str) -> int:
    """The number after ``label:`` in a ``-s`` view, -1 when absent."""
    m = re.search(rf"{re.escape(label)}:\s+(\d+)", text or "")
    return int(m[1]) if m else -1
