"""``-o xml`` for flows, byte-exact with libnetfilter_conntrack 1.0.9 snprintf_xml.c.

Quirks reproduced on purpose (scripts parse this output):

* the reply ``<counters>`` block is printed when the *original* counters are present;
* SCTP and DCCP states are printed with the TCP state names (``<state>FIN_WAIT</state>``
  for an ESTABLISHED SCTP entry), because C indexes the TCP table with the shared byte;
* ``<deltatime>`` is ``(stop - start) / 1e9`` (unsigned) when both timestamps are
  present, otherwise ``now - start/1e9``; it does not depend on ``-o ktimestamp``;
* ``<helper>`` sits after the independent ``<meta>``, and ``<secctx>`` alone does not
  open that ``<meta>``.

Text is not escaped, like C (helper names and secctx never contain markup in practice).
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from conntrack_tools.flow import GRE_PROTO, IPS_ASSURED, IPS_SEEN_REPLY, PORT_PROTOS, Flow, Tuple, label_bits
from conntrack_tools.formats._tables import TCP_STATE_TEXT, U64, addr_text, l3_name, l4_name

XML_DECL = '<?xml version="1.0" encoding="utf-8"?>'
CONNTRACK_HEADER = XML_DECL + "\n<conntrack>"
CONNTRACK_FOOTER = "</conntrack>"

_FLOW_OPEN: dict[str | None, str] = {
    None: "<flow>",
    "new": '<flow type="new">',
    "update": '<flow type="update">',
    "destroy": '<flow type="destroy">',
}

def l4_xml(t: Tuple) -> str:
    """The inside of ``<layer4>`` (__snprintf_proto_xml called for src then dst)."""
    p = (t.proto or 0) & 0xFF
    if p in PORT_PROTOS:
        return f"<sport>{(t.sport or 0) & 0xFFFF}</sport><dport>{(t.dport or 0) & 0xFFFF}</dport>"
    if p == GRE_PROTO:
        return f"<srckey>0x{(t.sport or 0) & 0xFFFF:x}</srckey><dstkey>0x{(t.dport or 0) & 0xFFFF:x}</dstkey>"
    return ""


def _addr(family: int, packed: bytes | None) -> str:
    return addr_text(family, packed)


def _tuple_meta(flow: Flow, t: Tuple | None, direction: str, counters_on: bool, reply: bool) -> str:
    if t is None:
        # No tuple at all (e.g. conntrackd's external cache): C prints the zeroed struct.
        t = Tuple()
    fam = t.family & 0xFF
    proto = (t.proto or 0) & 0xFF
    out = (
        f'<meta direction="{direction}"><layer3 protonum="{fam}" protoname="{l3_name(fam)}">'
        f"<src>{_addr(fam, t.src)}</src><dst>{_addr(fam, t.dst)}</dst></layer3>"
        f'<layer4 protonum="{proto}" protoname="{l4_name(proto)}">{l4_xml(t)}</layer4>'
    )
    if t.zone is not None:
        out += f"<zone>{t.zone}</zone>"
    if counters_on:
        c = flow.counters_reply if reply else flow.counters_orig
        packets, nbytes = (c.packets, c.bytes) if c is not None else (0, 0)
        out += f"<counters><packets>{packets}</packets><bytes>{nbytes}</bytes></counters>"
    return out + "</meta>"


def when_xml(now_s: int) -> str:
    """``<when>`` block (NFCT_OF_TIME, used by events with ``-o timestamp``), local time."""
    tm = time.localtime(now_s)
    return (
        f"<when><hour>{tm.tm_hour}</hour><min>{tm.tm_min:02d}</min><sec>{tm.tm_sec:02d}</sec>"
        f"<wday>{(tm.tm_wday + 1) % 7 + 1}</wday><day>{tm.tm_mday}</day><month>{tm.tm_mon}</month>"
        f"<year>{tm.tm_year}</year></when>"
    )


def render_flow_xml(
    flow: Flow,
    event: str | None = None,
    *,
    ktimestamp: bool = False,
    show_time: bool = False,
    label_map: Mapping[int, str] | None = None,
    now: int = 0,
    userspace: str = "",
) -> str:
    """One ``<flow>`` element on one line, without the newline.

    ``userspace`` is inserted just before ``</flow>`` (our fix of the C bug, see
    options.OutputOptions); pass '' for none.
    """
    out = _FLOW_OPEN.get(event, "<flow>")
    counters_on = flow.counters_orig is not None
    out += _tuple_meta(flow, flow.orig, "original", counters_on, False)
    out += _tuple_meta(flow, flow.reply, "reply", counters_on, True)

    out += _independent_meta(flow, ktimestamp, label_map, now)
    if show_time:
        out += when_xml(now)
    if flow.helper is not None:
        out += f"<helper>{flow.helper}</helper>"
    return out + userspace + "</flow>"


def _independent_meta(flow: Flow, ktimestamp: bool, label_map: Mapping[int, str] | None, now: int) -> str:
    """``<meta direction="independent">``: state, timeout, mark, labels, ..., timestamps (none: '')."""
    state = None
    for info in (flow.tcp, flow.sctp, flow.dccp):
        if info is not None and info.state is not None:
            state = info.state
    status = flow.status
    start, stop = flow.ts_start, flow.ts_stop
    independent = (
        state is not None
        or flow.timeout is not None
        or flow.mark is not None
        or flow.secmark is not None
        or flow.zone is not None
        or flow.use is not None
        or status is not None
        or flow.id is not None
        or flow.labels is not None
        or start is not None
        or stop is not None
    )
    out = '<meta direction="independent">' if independent else ""
    # C prints one <state> per protoinfo attribute present, all from the TCP table.
    for info in (flow.tcp, flow.sctp, flow.dccp):
        if info is not None and info.state is not None:
            out += f"<state>{TCP_STATE_TEXT[info.state & 0xFF]}</state>"
    if flow.timeout is not None:
        out += f"<timeout>{flow.timeout}</timeout>"
    if flow.mark is not None:
        out += f"<mark>{flow.mark}</mark>"
    if label_map is not None and flow.labels is not None:
        out += "<labels>" + "".join(f"<label>{n}</label>" for n in _label_names(flow.labels, label_map))
        out += "</labels>"
    if flow.secmark is not None:
        out += f"<secmark>{flow.secmark}</secmark>"
    if flow.secctx is not None:
        out += f"<secctx>{flow.secctx}</secctx>"
    if flow.zone is not None:
        out += f"<zone>{flow.zone}</zone>"
    if flow.use is not None:
        out += f"<use>{flow.use}</use>"
    if flow.id is not None:
        out += f"<id>{flow.id}</id>"
    if status is not None and status & IPS_ASSURED:
        out += "<assured/>"
    if status is not None and not status & IPS_SEEN_REPLY:
        out += "<unreplied/>"
    if ktimestamp and (start is not None or stop is not None):
        out += "<timestamp>"
        if start is not None:
            out += f"<start>{start}</start>"
        if stop is not None:
            out += f"<stop>{stop}</stop>"
        out += "</timestamp>"
    if start is not None and stop is not None:
        out += f"<deltatime>{((stop - start) & U64) // 1_000_000_000}</deltatime>"
    elif start is not None:
        out += f"<deltatime>{(now - start // 1_000_000_000) & U64}</deltatime>"
    if independent:
        out += "</meta>"
    return out


def _label_names(labels: bytes, label_map: Mapping[int, str]) -> list[str]:
    return [name for name in map(label_map.get, label_bits(labels)) if name]


def userspace_xml(portid: int, progname: str | None) -> str:
    """Our well-formed replacement for C's text suffix after ``</flow>``."""
    if progname:
        return f"<userspace><portid>{portid}</portid><progname>{progname}</progname></userspace>"
    return f"<userspace><portid>{portid}</portid></userspace>"
