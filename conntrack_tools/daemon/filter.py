"""The ``General { Filter {} }`` block as pure functions (C src/filter.c).

Semantics reproduced from 1.4.7 ``ct_filter_check``:

* Protocol: ``Accept`` keeps only listed L4 protocols, ``Ignore`` drops them.
* Address: matches when the *original source* or the *reply source* (the two real
  endpoints) is inside a listed network of the flow's family; Accept keeps matches only,
  Ignore drops them.  A family with no entries never matches (so ``Accept`` of IPv4
  addresses drops every IPv6 flow, as in C).
* State: TCP only; a flow of another protocol, or without a TCP state, always passes.
* Sanity: a flow without L3 family or without orig/reply source address is dropped (C logs
  "missing IPv4 address" and ignores it), whatever the filter says.

``Filter From Kernelspace`` only moves the work into a BPF program in C; the verdict is
the same, so events are filtered here in both cases (documented deviation: no BPF).

Expectations (``Options { ExpectationSync on | { helper ... } }``) pass :func:`exp_helper_accepts`
(C ``exp_filter_find``) and :func:`master_sane` (C ``ct_filter_master_sanity_check``); the
"master is in the internal cache" half of C's ``ct_filter_master`` is the mode's business.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from ..flow import AF_INET, AF_INET6, Expect, Flow
from .config.model import Filter

__all__ = ["CompiledFilter", "TCP_STATE_NUM", "compile_filter", "exp_helper_accepts", "master_sane", "sane"]

NFCT_HELPER_NAME_MAX = 16

# libnetfilter_conntrack's enum tcp_state (LISTEN shares 9 with SYN_SENT2)
TCP_STATE_NUM: dict[str, int] = {
    "NONE": 0, "SYN_SENT": 1, "SYN_RECV": 2, "ESTABLISHED": 3, "FIN_WAIT": 4, "CLOSE_WAIT": 5,
    "LAST_ACK": 6, "TIME_WAIT": 7, "CLOSE": 8, "LISTEN": 9,
}


@dataclass(frozen=True, slots=True)
class CompiledFilter:
    """Filter ready for the hot path: sets and (network int, mask int) pairs per family."""

    protocols: frozenset[int] | None = None  # None = no Protocol rule
    protocol_accept: bool = True
    nets4: tuple[tuple[int, int], ...] | None = None  # None = no Address rule
    nets6: tuple[tuple[int, int], ...] = ()
    address_accept: bool = True
    states: frozenset[int] | None = None
    state_accept: bool = True
    from_kernelspace: bool = False

    def accepts(self, flow: Flow) -> bool:
        """True when the flow is kept (C: ct_filter_check() == 1)."""
        orig, reply, tcp = flow.orig, flow.reply, flow.tcp
        if orig is None:
            return self.accepts_values(0, flow.family, None, None, None)
        return self.accepts_values(orig.proto or 0, orig.family, orig.src,
                                   reply.src if reply is not None else orig.src,
                                   tcp.state if tcp is not None else None)

    def accepts_values(self, proto: int, family: int, src: bytes | None, reply_src: bytes | None,
                       tcp_state: int | None) -> bool:
        """The verdict from the values it depends on: the event fast path has no Flow to give.

        ``reply_src`` is the reply tuple's source (the original source when there is no reply tuple)."""
        if self.protocols is not None and ((proto in self.protocols) != self.protocol_accept):
            return False
        if self.nets4 is not None:
            nets = self.nets4 if family == AF_INET else self.nets6 if family == AF_INET6 else None
            if nets is not None:
                a = int.from_bytes(src or b"", "big")
                b = int.from_bytes(reply_src or b"", "big")
                hit = False
                for n, m in nets:  # a loop, not any(genexpr): this runs once per event
                    if (a & m) == n or (b & m) == n:
                        hit = True
                        break
                if hit != self.address_accept:
                    return False
        if self.states is not None and proto == 6 and tcp_state is not None:
            if (tcp_state in self.states) != self.state_accept:
                return False
        return True

    @property
    def accepts_everything(self) -> bool:
        return self.protocols is None and self.nets4 is None and self.states is None


ACCEPT_ALL = CompiledFilter()


def compile_filter(f: Filter | None) -> CompiledFilter:
    if f is None:
        return ACCEPT_ALL
    kw: dict = {"from_kernelspace": f.from_kernelspace}
    if f.protocol is not None:
        kw["protocols"] = frozenset(f.protocol.protocols)
        kw["protocol_accept"] = f.protocol.policy == "accept"
    if f.address is not None:
        v4, v6 = [], []
        for net in f.address.networks:
            pair = (int(net.network_address), int(net.netmask))
            (v4 if isinstance(net, ipaddress.IPv4Network) else v6).append(pair)
        kw["nets4"], kw["nets6"] = tuple(v4), tuple(v6)
        kw["address_accept"] = f.address.policy == "accept"
    if f.state is not None:
        kw["states"] = frozenset(TCP_STATE_NUM[s] for s in f.state.tcp_states)
        kw["state_accept"] = f.state.policy == "accept"
    return CompiledFilter(**kw)


def sane(flow: Flow) -> bool:
    """C's ct_filter_sanity_check: L3 family known and both source addresses present."""
    orig, reply = flow.orig, flow.reply
    if orig is None or not orig.family:
        return False
    if orig.family in (AF_INET, AF_INET6):
        return orig.src is not None and reply is not None and reply.src is not None
    return True


def exp_helper_accepts(helpers: tuple[str, ...], exp: Expect) -> bool:
    """exp_filter_find(): no list accepts all; else the helper name must start with a listed name
    (case-insensitive, so ``sip`` matches ``sip-5060``); an expectation without helper name is dropped."""
    if not helpers:
        return True
    name = exp.helper
    if name is None:
        return False
    low = name.lower()
    return any(low.startswith(h[:NFCT_HELPER_NAME_MAX].lower()) for h in helpers)


def master_sane(exp: Expect) -> bool:
    """ct_filter_master_sanity_check(): the master tuple has a family and, for IP, both addresses."""
    m = exp.master
    if m is None or not m.family:
        return False
    if m.family in (AF_INET, AF_INET6):
        return m.src is not None and m.dst is not None
    return True
