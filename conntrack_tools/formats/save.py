"""``-o save``: a conntrack command line per entry (conntrack 1.4.7 ``ct_save_snprintf``).

Facts reproduced from the C tool:

* ``-A`` for dumps and NEW events, ``-U`` for UPDATE, ``-D`` for DESTROY and ``-D``;
  no verb at all for an unknown message type;
* ``-u`` lists only EXPECTED, SEEN_REPLY, ASSURED, FIXED_TIMEOUT (bit order), and
  ``UNSET`` when none of them is set;
* ``-g``/``-n`` replace ``-r``/``-q`` when libnetfilter_conntrack's IS_DNAT/IS_SNAT
  says so (status lacks the *_NAT_DONE bit -> no; else the addresses differ);
* the SCTP vtags are printed byte-swapped (ntohl applied to a host-order value);
* mark, labels and helper are not printed (they are lost on save/restore);
* SCTP states 8/9 (HEARTBEAT_*) are missing from the tool's table and glibc prints
  ``(null)``.
"""

from __future__ import annotations

from conntrack_tools.flow import (
    AF_INET,
    AF_INET6,
    GRE_PROTO,
    ICMP_PROTOS,
    IPS_DST_NAT_DONE,
    IPS_SRC_NAT_DONE,
    Flow,
)
from conntrack_tools.formats._tables import ZERO4, ZERO16, addr_text

_VERB: dict[str | None, str] = {"new": "-A ", "update": "-U ", "destroy": "-D ", None: ""}

# conntrack_status_map: bit -> name, only these four.
_STATUS_NAMES = ((0, "EXPECTED"), (1, "SEEN_REPLY"), (2, "ASSURED"), (10, "FIXED_TIMEOUT"))

_TCP_STATES = (
    "NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK",
    "TIME_WAIT", "CLOSE", "SYN_SENT2",
)
_SCTP_STATES = (
    "NONE", "CLOSED", "COOKIE_WAIT", "COOKIE_ECHOED", "ESTABLISHED", "SHUTDOWN_SENT",
    "SHUTDOWN_RECD", "SHUTDOWN_ACK_SENT",
)
_DCCP_STATES = (
    "NONE", "REQUEST", "RESPOND", "PARTOPEN", "OPEN", "CLOSEREQ", "CLOSING", "TIMEWAIT",
    "IGNORE", "INVALID",
)
_DCCP_ROLES = ("client", "server")

_PORT_NAMES = {
    6: "tcp", 17: "udp", 136: "udplite", 132: "sctp", 33: "dccp",
}


def _mapped(table: tuple[str, ...], value: int) -> str:
    # C indexes a fixed array; a hole or out-of-range index prints "(null)" with glibc.
    return table[value] if 0 <= value < len(table) else "(null)"


def _bswap32(value: int) -> int:
    return int.from_bytes((value & 0xFFFFFFFF).to_bytes(4, "big"), "little")


def status_text(status: int) -> str:
    names = [name for bit, name in _STATUS_NAMES if status & (1 << bit)]
    return ",".join(names) if names else "UNSET"


def _is_nat(flow: Flow, done_bit: int, snat: bool) -> bool:
    """libnetfilter_conntrack getobjopt_is_snat / getobjopt_is_dnat."""
    if flow.status is not None and not flow.status & done_bit:
        return False
    orig, reply = flow.orig, flow.reply
    if orig is None or orig.family not in (AF_INET, AF_INET6):
        return False
    zero = ZERO4 if orig.family == AF_INET else ZERO16
    rep = reply if reply is not None else None
    if snat:
        a = (rep.dst if rep is not None else None) or zero
        b = orig.src or zero
    else:
        a = (rep.src if rep is not None else None) or zero
        b = orig.dst or zero
    return a != b


def render_save(flow: Flow, event: str | None = "new") -> str:
    """One ``-o save`` line without the newline (``event`` None = NFCT_T_UNKNOWN)."""
    parts: list[str] = [_VERB.get(event, "")]
    add = parts.append
    if flow.timeout is not None:
        add(f"-t {flow.timeout & 0xFFFFFFFF} ")
    if flow.status is not None:
        add(f"-u {status_text(flow.status)} ")
    if flow.secmark is not None:
        add(f"-c {flow.secmark} ")
    if flow.zone is not None:
        add(f"-w {flow.zone & 0xFFFF} ")
    orig, reply = flow.orig, flow.reply
    if orig is not None and orig.zone is not None:
        add(f"--orig-zone {orig.zone & 0xFFFF} ")
    if reply is not None and reply.zone is not None:
        add(f"--reply-zone {reply.zone & 0xFFFF} ")

    l3 = orig.family if orig is not None and orig.family else (reply.family if reply is not None else 0)
    if l3 not in (AF_INET, AF_INET6):
        # C prints "WARNING: unsupported l3proto N, skipping." on stderr and then the
        # partial buffer; the caller prints the warning (see save_l3_warning()).
        return "".join(parts)

    if orig is not None:
        if orig.src is not None:
            add(f"-s {addr_text(l3, orig.src)} ")
        if orig.dst is not None:
            add(f"-d {addr_text(l3, orig.dst)} ")
    if reply is not None:
        dnat = _is_nat(flow, IPS_DST_NAT_DONE, snat=False)
        snat = _is_nat(flow, IPS_SRC_NAT_DONE, snat=True)
        if reply.src is not None:
            add(f"{'-g' if dnat else '-r'} {addr_text(l3, reply.src)} ")
        if reply.dst is not None:
            add(f"{'-n' if snat else '-q'} {addr_text(l3, reply.dst)} ")

    proto = (orig.proto if orig is not None else None) or 0
    proto &= 0xFF
    if proto in _PORT_NAMES:
        add(f"-p {_PORT_NAMES[proto]} ")
        _ports(parts, flow, "--sport", "--dport", "--reply-port-src", "--reply-port-dst")
        if proto == 6:
            if flow.tcp is not None and flow.tcp.state is not None:
                add(f"--state {_mapped(_TCP_STATES, flow.tcp.state)} ")
        elif proto == 132:
            sctp = flow.sctp
            if sctp is not None:
                if sctp.state is not None:
                    add(f"--state {_mapped(_SCTP_STATES, sctp.state)} ")
                if sctp.vtag_orig is not None:
                    add(f"--orig-vtag {_bswap32(sctp.vtag_orig)} ")
                if sctp.vtag_reply is not None:
                    add(f"--reply-vtag {_bswap32(sctp.vtag_reply)} ")
        elif proto == 33:
            dccp = flow.dccp
            if dccp is not None:
                if dccp.state is not None:
                    add(f"--state {_mapped(_DCCP_STATES, dccp.state)} ")
                if dccp.role is not None:
                    add(f"--role {_mapped(_DCCP_ROLES, dccp.role)} ")
    elif proto == GRE_PROTO:
        add("-p gre ")
        _ports(parts, flow, "--srckey", "--dstkey", "--reply-key-src", "--reply-key-dst")
    elif proto in ICMP_PROTOS:
        pfx = "--icmp" if proto == 1 else "--icmpv6"
        add("-p icmp " if proto == 1 else "-p icmpv6 ")
        if orig.icmp_type is not None:
            add(f"{pfx}-type {orig.icmp_type & 0xFF} ")
        if orig.icmp_code is not None:
            add(f"{pfx}-code {orig.icmp_code & 0xFF} ")
        if orig.icmp_id is not None:
            add(f"{pfx}-id {orig.icmp_id & 0xFFFF} ")
    else:
        add(f"-p {proto} ")
    return "".join(parts).rstrip(" ")


def _ports(parts: list[str], flow: Flow, o_src: str, o_dst: str, r_src: str, r_dst: str) -> None:
    orig, reply = flow.orig, flow.reply
    if orig is not None:
        if orig.sport is not None:
            parts.append(f"{o_src} {orig.sport & 0xFFFF} ")
        if orig.dport is not None:
            parts.append(f"{o_dst} {orig.dport & 0xFFFF} ")
    if reply is not None:
        if reply.sport is not None:
            parts.append(f"{r_src} {reply.sport & 0xFFFF} ")
        if reply.dport is not None:
            parts.append(f"{r_dst} {reply.dport & 0xFFFF} ")


def save_l3_warning(flow: Flow) -> str | None:
    """The stderr line C prints when a save line cannot be built, or None."""
    orig, reply = flow.orig, flow.reply
    l3 = orig.family if orig is not None and orig.family else (reply.family if reply is not None else 0)
    if l3 in (AF_INET, AF_INET6):
        return None
    return f"WARNING: unsupported l3proto {l3}, skipping."
