"""``-o json``: our extension, one JSON object per line (JSON Lines) for -L/-G/-D/-U and -E.

Schema (stable; a key is omitted when the kernel did not send the attribute, so absent
and zero stay distinct, as in the text formats)::

    {
      "event":     "new" | "update" | "destroy" | null,   # always present; null for dumps
      "family":    "ipv4" | "ipv6" | "unknown",           # always present
      "proto":     "tcp" | "udp" | ... | "unknown",       # always present (L4 name)
      "protonum":  6,                                      # always present
      "timeout":   431999,                                 # seconds
      "state":     "ESTABLISHED",                          # TCP/SCTP/DCCP state name (its own table)
      "orig":  {"src": "10.0.0.1", "dst": "10.0.0.2",      # text addresses, IPv6 compressed
                "sport": 1234, "dport": 80,                # tcp/udp/udplite/sctp/dccp
                "type": 8, "code": 0, "id": 7,             # icmp/icmpv6 instead of ports
                "srckey": 1, "dstkey": 2,                  # gre instead of ports
                "zone": 3,                                 # --orig-zone
                "packets": 1, "bytes": 60},                # with nf_conntrack_acct
      "reply": { same keys as "orig" },
      "status":    ["SEEN_REPLY", "ASSURED", "CONFIRMED"], # IPS_* names in bit order; "BIT<n>" if unnamed
      "mark": 0, "secmark": 0, "secctx": "...", "zone": 5, "use": 1, "id": 123456,
      "helper":    "ftp",
      "labels":    ["blue", "7"],                          # map name, or the bit number as a string
      "timestamp": {"start": 1795684601286788481, "stop": ...},   # ns since the epoch
      "sctp": {"vtag_orig": 8738, "vtag_reply": 4369},     # host order, no byte-swap quirk
      "dccp": {"role": "client"},
      "userspace": {"portid": 19804, "progname": "conntrack"}     # events caused by a process
    }

    Expectations (``-L expect -o json``)::

    {"event": ..., "family": ..., "proto": ..., "protonum": ..., "timeout": N,
     "tuple": {...}, "mask": {...}, "master": {...},   # same tuple keys as above
     "zone": N, "flags": ["PERMANENT", "INACTIVE", "USERSPACE"], "class": N,
     "helper": "ftp", "id": N}

Output is compact (``separators=(",", ":")``), keys in the order above, ASCII only.
"""

from __future__ import annotations

import json as _json
from collections.abc import Mapping
from typing import Any

from conntrack_tools.flow import (
    DCCP_ROLES,
    DCCP_STATES,
    EXPECT_INACTIVE,
    EXPECT_PERMANENT,
    EXPECT_USERSPACE,
    GRE_PROTO,
    ICMP_PROTOS,
    PORT_PROTOS,
    SCTP_STATES,
    TCP_STATES,
    Counters,
    Expect,
    Flow,
    Tuple,
    label_bits,
)
from conntrack_tools.formats._tables import addr_text, l3_name, l4_name

STATUS_NAMES = (
    "EXPECTED", "SEEN_REPLY", "ASSURED", "CONFIRMED", "SRC_NAT", "DST_NAT", "SEQ_ADJUST",
    "SRC_NAT_DONE", "DST_NAT_DONE", "DYING", "FIXED_TIMEOUT", "TEMPLATE", "UNTRACKED",
    "HELPER", "OFFLOAD", "HW_OFFLOAD",
)

_dumps = _json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode


def _name(table: tuple[str, ...], value: int) -> str:
    return table[value] if 0 <= value < len(table) else "NONE"


def status_names(status: int) -> list[str]:
    out = []
    bit = 0
    while status >> bit:
        if status >> bit & 1:
            out.append(STATUS_NAMES[bit] if bit < len(STATUS_NAMES) else f"BIT{bit}")
        bit += 1
    return out


def tuple_dict(t: Tuple, counters: Counters | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {}
    if t.src is not None:
        d["src"] = addr_text(t.family, t.src)
    if t.dst is not None:
        d["dst"] = addr_text(t.family, t.dst)
    p = t.proto
    if p in PORT_PROTOS:
        if t.sport is not None:
            d["sport"] = t.sport
        if t.dport is not None:
            d["dport"] = t.dport
    elif p in ICMP_PROTOS:
        if t.icmp_type is not None:
            d["type"] = t.icmp_type
        if t.icmp_code is not None:
            d["code"] = t.icmp_code
        if t.icmp_id is not None:
            d["id"] = t.icmp_id
    elif p == GRE_PROTO:
        if t.sport is not None:
            d["srckey"] = t.sport
        if t.dport is not None:
            d["dstkey"] = t.dport
    if t.zone is not None:
        d["zone"] = t.zone
    if counters is not None:
        d["packets"] = counters.packets
        d["bytes"] = counters.bytes
    return d


def _label_list(labels: bytes, label_map: Mapping[int, str] | None) -> list[str]:
    names = label_map or {}
    return [names.get(bit) or str(bit) for bit in label_bits(labels)]


def flow_dict(
    flow: Flow,
    event: str | None = None,
    *,
    label_map: Mapping[int, str] | None = None,
    portid: int = 0,
    progname: str | None = None,
) -> dict[str, Any]:
    """The JSON object for one flow, as a dict (see the module docstring)."""
    orig = flow.orig
    fam = orig.family if orig is not None and orig.family else flow.family
    proto = (orig.proto if orig is not None else None) or 0
    d: dict[str, Any] = {
        "event": event,
        "family": l3_name(fam & 0xFF),
        "proto": l4_name(proto & 0xFF),
        "protonum": proto,
    }
    if flow.timeout is not None:
        d["timeout"] = flow.timeout
    if flow.tcp is not None and flow.tcp.state is not None:
        d["state"] = _name(TCP_STATES, flow.tcp.state)
    elif flow.sctp is not None and flow.sctp.state is not None:
        d["state"] = _name(SCTP_STATES, flow.sctp.state)
    elif flow.dccp is not None and flow.dccp.state is not None:
        d["state"] = _name(DCCP_STATES, flow.dccp.state)
    if orig is not None:
        d["orig"] = tuple_dict(orig, flow.counters_orig)
    if flow.reply is not None:
        d["reply"] = tuple_dict(flow.reply, flow.counters_reply)
    if flow.status is not None:
        d["status"] = status_names(flow.status)
    for key in ("mark", "secmark", "secctx", "zone", "use", "id", "helper"):
        value = getattr(flow, key)
        if value is not None:
            d[key] = value
    if flow.labels is not None:
        d["labels"] = _label_list(flow.labels, label_map)
    if flow.ts_start is not None or flow.ts_stop is not None:
        ts = {}
        if flow.ts_start is not None:
            ts["start"] = flow.ts_start
        if flow.ts_stop is not None:
            ts["stop"] = flow.ts_stop
        d["timestamp"] = ts
    sctp = flow.sctp
    if sctp is not None and (sctp.vtag_orig is not None or sctp.vtag_reply is not None):
        d["sctp"] = {
            k: v for k, v in (("vtag_orig", sctp.vtag_orig), ("vtag_reply", sctp.vtag_reply)) if v is not None
        }
    if flow.dccp is not None and flow.dccp.role is not None:
        d["dccp"] = {"role": _name(DCCP_ROLES, flow.dccp.role)}
    if portid:
        us: dict[str, Any] = {"portid": portid}
        if progname:
            us["progname"] = progname
        d["userspace"] = us
    return d


def render_flow_json(
    flow: Flow,
    event: str | None = None,
    *,
    label_map: Mapping[int, str] | None = None,
    portid: int = 0,
    progname: str | None = None,
) -> str:
    """One JSON line (no newline)."""
    return _dumps(flow_dict(flow, event, label_map=label_map, portid=portid, progname=progname))


def expect_dict(exp: Expect, event: str | None = None) -> dict[str, Any]:
    t = exp.tuple if exp.tuple is not None else Tuple(family=exp.family)
    proto = t.proto or 0
    d: dict[str, Any] = {
        "event": event,
        "family": l3_name((t.family or exp.family) & 0xFF),
        "proto": l4_name(proto & 0xFF),
        "protonum": proto,
    }
    if exp.timeout is not None:
        d["timeout"] = exp.timeout
    d["tuple"] = tuple_dict(t)
    if exp.mask is not None:
        m = exp.mask
        if m.proto is None:
            m = Tuple(m.family or t.family, m.src, m.dst, t.proto, m.sport, m.dport,
                      m.icmp_type, m.icmp_code, m.icmp_id, m.zone)
        d["mask"] = tuple_dict(m)
    if exp.master is not None:
        d["master"] = tuple_dict(exp.master)
    if exp.zone is not None:
        d["zone"] = exp.zone
    if exp.flags is not None:
        flags = exp.flags
        d["flags"] = [
            n for bit, n in ((EXPECT_PERMANENT, "PERMANENT"), (EXPECT_INACTIVE, "INACTIVE"),
                             (EXPECT_USERSPACE, "USERSPACE")) if flags & bit
        ]
    if exp.klass is not None:
        d["class"] = exp.klass
    if exp.helper is not None:
        d["helper"] = exp.helper
    if exp.id is not None:
        d["id"] = exp.id
    return d


def render_expect_json(exp: Expect, event: str | None = None) -> str:
    return _dumps(expect_dict(exp, event))
