"""Generated per-shape renderers of the default line (the `conntrack -L` hot path).

`netlink.shapes.ShapeDecoder` unpacks every message of one layout with one
struct call. For such a layout this module writes a single f-string that turns
the unpacked values straight into the line `text.render_default` would print,
so a 100k-entry dump builds no Flow objects at all. Only the common fields are
covered (tuples, timeout, state, status flags, counters, mark, secmark, zone,
use, id); any other layout, or any output option beyond default/extended/id,
returns None and the caller uses the reference renderer. The decoder checks
each generated renderer against the reference on the first message of its
shape before using it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from ..compiled import define
from ._tables import K_GRE, K_PORTS, L3_PREFIX, L4_KIND, L4_PREFIX, SCTP_STATE_TEXT, TCP_STATE_TEXT
from .options import OutputOptions

_KIND = L4_KIND


def _other_l4(proto: int, a: int, b: int) -> str:
    kind = _KIND[proto]
    if kind == K_GRE:
        return f"srckey=0x{a:x} dstkey=0x{b:x} "
    return ""


class _AddrText(dict):
    """packed address -> text, memoised: a table repeats the same few addresses many times."""

    def __init__(self, convert: Callable[[bytes], str]) -> None:
        super().__init__()
        self.convert = convert

    def __missing__(self, packed: bytes) -> str:
        text = self.convert(packed)
        if len(self) < 65536:  # bounded: a table of many distinct addresses must not grow memory
            self[packed] = text
        return text


def _ntop6(packed: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6, packed)


def _tuple_code(slots: dict[str, int], name: str, proto_idx: int) -> str | None:
    fam = slots.get(f"{name}.family")
    src, dst = slots.get(f"{name}.src"), slots.get(f"{name}.dst")
    if fam is None or src is None or dst is None:
        return None
    conv = "_ntoa" if fam == -socket.AF_INET else "_ntop6"
    code = f"src={{{conv}(v[{src}])}} dst={{{conv}(v[{dst}])}} "
    sp, dp = slots.get(f"{name}.sport"), slots.get(f"{name}.dport")
    it, ic, ii = (slots.get(f"{name}.icmp_type"), slots.get(f"{name}.icmp_code"), slots.get(f"{name}.icmp_id"))
    if sp is not None and dp is not None:
        code += (f"{{f'sport={{v[{sp}]}} dport={{v[{dp}]}} ' if _KIND[v[{proto_idx}]] == {K_PORTS} "
                 f"else _other_l4(v[{proto_idx}], v[{sp}], v[{dp}])}}")
    elif it is not None and ic is not None and ii is not None:
        code += f"type={{v[{it}]}} code={{v[{ic}]}} id={{v[{ii}]}} "
    elif sp is not None or dp is not None or it is not None or ic is not None or ii is not None:
        return None
    zone = slots.get(f"{name}.zone")
    if zone is not None:
        code += f"zone-{name}={{v[{zone}]}} ".replace("zone-orig", "zone-orig").replace("zone-reply", "zone-reply")
    return code


def make_line_factory(opts: OutputOptions) -> Callable[[dict[str, int], int], Callable | None] | None:
    """A factory for ShapeDecoder, or None when these output options need the reference renderer."""
    if opts.xml or opts.save or opts.json or opts.ktimestamp or opts.labels:
        return None
    extended, show_id = opts.extended, opts.id
    ntoa = _AddrText(socket.inet_ntoa).__getitem__
    ntop6 = _AddrText(_ntop6).__getitem__

    def factory(slots: dict[str, int], family: int) -> Callable | None:
        proto = slots.get("orig.proto")
        if proto is None or "reply.proto" not in slots:
            return None
        code = ""
        if extended:
            fam = -slots.get("orig.family", -family)
            code += L3_PREFIX[fam & 0xFF].replace("{", "{{")
        code += f"{{_L4[v[{proto}]]}}"
        if "timeout" in slots:
            code += f"{{v[{slots['timeout']}]}} "
        if "tcp.state" in slots:
            code += f"{{_TS[v[{slots['tcp.state']}]]}} "
        if "sctp.state" in slots:
            code += f"{{_SS[v[{slots['sctp.state']}]]}} "
        orig = _tuple_code(slots, "orig", proto)
        reply = _tuple_code(slots, "reply", slots["reply.proto"])
        if orig is None or reply is None:
            return None
        code += orig
        if "counters_orig.packets" in slots and "counters_orig.bytes" in slots:
            code += f"packets={{v[{slots['counters_orig.packets']}]}} bytes={{v[{slots['counters_orig.bytes']}]}} "
        elif any(k.startswith("counters_orig") for k in slots):
            return None
        st = slots.get("status")
        if st is not None:
            code += f"{{'' if v[{st}] & 2 else '[UNREPLIED] '}}"
        code += reply
        if "counters_reply.packets" in slots and "counters_reply.bytes" in slots:
            code += f"packets={{v[{slots['counters_reply.packets']}]}} bytes={{v[{slots['counters_reply.bytes']}]}} "
        elif any(k.startswith("counters_reply") for k in slots):
            return None
        if st is not None:
            code += (f"{{'[HW_OFFLOAD] ' if v[{st}] & 0x8000 else '[OFFLOAD] ' if v[{st}] & 0x4000 "
                     f"else '[ASSURED] ' if v[{st}] & 4 else ''}}")
        for key in ("mark", "secmark", "zone", "use"):
            if key in slots:
                code += f"{key}={{v[{slots[key]}]}} "
        if show_id and "id" in slots:
            code += f"id={{v[{slots['id']}]}} "
        src = f"def line(v):\n    return f\"{code}\"[:-1]\n"
        return define(src, "line", {"_ntoa": ntoa, "_ntop6": ntop6, "_KIND": _KIND, "_other_l4": _other_l4,
                                    "_L4": L4_PREFIX, "_TS": TCP_STATE_TEXT, "_SS": SCTP_STATE_TEXT})

    return factory
