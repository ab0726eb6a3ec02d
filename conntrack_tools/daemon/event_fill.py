"""Kernel event values -> internal cache entry, compiled per message layout (the sender's hot path).

A burst of kernel events is a handful of layouts (IPv4 TCP, IPv4 UDP, ...). ``netlink/shapes.py``
unpacks one message of a known layout in a single ``struct`` call; for the daemon's internal cache
the values then went through a :class:`~conntrack_tools.flow.Flow` (seven objects per event), the
filter, ``flow_key`` and ``Entry.merge``: about 14 µs of the sender's ~20 µs per event. Here each
layout gets three generated functions over the unpacked values instead:

* ``accept(v)``: the user-space filter's verdict (None when the filter accepts everything);
* ``key(v)``: the cache key, byte for byte :func:`~.cache.flow_key` (None: let the reference path
  decide, e.g. a protocol number that does not match the layout's kind of L4 tuple);
* ``fill(v, e)``: what ``Entry.merge`` copies from such a flow into the entry ``e``.

The reference path (decode to a Flow, ``sane``, ``CompiledFilter.accepts``, ``flow_key``,
``Entry.merge``) stays the definition: :class:`EventFill` is called on the first message of its
layout and kept only if it gives the same verdict, key and entry (``compiled.checked``), and property
tests compare both on random values. Layouts that carry what the entry keeps in ``extra`` (SCTP,
secmark, ...) or that the sanity check would refuse are not compiled: the reference path serves them.
"""

from __future__ import annotations

from collections.abc import Callable

from ..compiled import define
from ..flow import AF_INET, AF_INET6, ICMP_PROTOS, ICMP_REPLY_TYPE, Flow
from .cache import _KEY, _SYNPROXY_ZERO, _Z_FLOW, _Z_TUPLE, Entry, _intern, flow_key, tcpx_of
from .filter import CompiledFilter, sane

__all__ = ["EventFill", "event_fill_factory", "reference_snapshot"]

# slots a layout may carry that the compiled fill knows (the rest: counters and use are not cached)
_KNOWN = {"status", "timeout", "mark", "id", "use", "zone"}
_TCP = ("wscale_orig", "wscale_reply", "flags_orig", "mask_orig", "flags_reply", "mask_reply")
_ENTRY_SLOTS = tuple(s for s in Entry.__slots__ if s not in ("lifetime", "lastupdate", "dead"))


def _snapshot(verdict: bool, key: bytes | None, e: Entry | None) -> tuple:
    return verdict, key, None if e is None else tuple(getattr(e, s) for s in _ENTRY_SLOTS)


def reference_snapshot(filt: CompiledFilter, flow: Flow) -> tuple:
    """(kept by sanity and filter, cache key, the fresh entry's slots) by the reference path."""
    if not (sane(flow) and filt.accepts(flow)):
        return _snapshot(False, None, None)
    key = flow_key(flow)
    if key is None:
        return _snapshot(True, None, None)
    e = Entry(key, 0)
    e.merge(flow)
    return _snapshot(True, key, e)


class EventFill:
    """The three generated functions of one layout; calling it gives the snapshot the check compares."""

    __slots__ = ("accept", "key", "fill")

    def __init__(self, accept: Callable | None, key: Callable, fill: Callable) -> None:
        self.accept, self.key, self.fill = accept, key, fill

    def __call__(self, v: tuple) -> tuple:
        if self.accept is not None and not self.accept(v):
            return _snapshot(False, None, None)
        key = self.key(v)
        if key is None:
            return _snapshot(True, None, None)
        e = Entry(key, 0)
        self.fill(v, e)
        return _snapshot(True, key, e)


def _tuple_fields(slots: dict[str, int], name: str, fam: int, flow_zone: str | None) -> tuple[bool, list[str]]:
    """(ICMP kind, the expressions of pack_tuple's struct fields) for the tuple ``name``."""
    def val(leaf: str, default: str = "0") -> str:
        i = slots.get(f"{name}.{leaf}")
        return default if i is None else f"v[{i}]"

    icmp = f"{name}.icmp_type" in slots or f"{name}.icmp_id" in slots or f"{name}.icmp_code" in slots
    tzone = slots.get(f"{name}.zone")
    zflags = (_Z_TUPLE if tzone is not None else 0) | (_Z_FLOW if flow_zone is not None else 0)
    head = [str(fam), val("proto"), str(zflags), val("src"), val("dst")]
    l4 = ([val("icmp_type"), val("icmp_code"), val("icmp_id"), "0"] if icmp
          else [val("sport"), val("dport"), "0"])
    return icmp, head + l4 + [val("zone"), flow_zone or "0"]


def _reversed(slots: dict[str, int], orig: list[str], icmp: bool) -> list[str]:
    """Tuple.reversed() on the field expressions: addresses and ports swap, an ICMP type becomes its reply."""
    rev = list(orig)
    rev[3], rev[4] = orig[4], orig[3]
    if icmp:
        if "orig.icmp_type" in slots:
            rev[5] = f"REPLY_TYPE.get(({orig[1]}, {orig[5]}), {orig[5]})"
    else:
        rev[5], rev[6] = orig[6], orig[5]
    rev[-1] = "0"  # a reply tuple carries no flow zone
    rev[2] = str(int(orig[2]) & _Z_TUPLE)
    return rev


def _key_lines(slots: dict[str, int], fam: int) -> list[str] | None:
    """Source of ``key(v)``, or None when the layout lacks what the key needs."""
    if "orig.src" not in slots or "orig.dst" not in slots or "orig.proto" not in slots:
        return None
    flow_zone = f"v[{slots['zone']}]" if "zone" in slots else None
    icmp, fields = _tuple_fields(slots, "orig", fam, flow_zone)
    ricmp, _ = _tuple_fields(slots, "reply", fam, None)
    guards = [f"v[{slots['orig.proto']}] {'not in' if icmp else 'in'} ICMP"]
    if "reply.proto" in slots:  # fill() packs the reply tuple with the struct of its layout's kind
        guards.append(f"v[{slots['reply.proto']}] {'not in' if ricmp else 'in'} ICMP")
    return ["def key(v):", f"    if {' or '.join(guards)}:", "        return None",
            f"    return {'KEY_ICMP' if icmp else 'KEY_L4'}({', '.join(fields)})"]


def _fill_lines(slots: dict[str, int], fam: int) -> list[str] | None:
    """Source of ``fill(v, e)``: Entry.merge for a flow of this layout."""
    lines = ["def fill(v, e):"]
    ricmp, rfields = _tuple_fields(slots, "reply", fam, None)
    oicmp, ofields = _tuple_fields(slots, "orig", fam, None)
    rev = _reversed(slots, ofields, oicmp)
    diff = [(a, b) for a, b in zip(rfields, rev, strict=True) if a != b]
    packer = "KEY_ICMP" if ricmp else "KEY_L4"
    if ricmp != oicmp or any(a.isdigit() and b.isdigit() for a, b in diff):
        lines.append(f"    e.reply = {packer}({', '.join(rfields)})")  # never the mirror
    elif not diff:
        lines.append("    e.reply = None")
    else:
        same = " and ".join(f"{a} == {b}" for a, b in diff)
        lines.append(f"    e.reply = None if {same} else {packer}({', '.join(rfields)})")
    for name in ("status", "mark", "timeout"):
        if name in slots:
            lines.append(f"    e.{name} = INTERN(v[{slots[name]}])")
    if "id" in slots:
        lines.append(f"    e.id = v[{slots['id']}]")
    if "tcp.state" in slots:
        lines.append(f"    e.state = v[{slots['tcp.state']}]")
    if "synproxy.0" in slots:
        sp = ", ".join(f"v[{slots[f'synproxy.{i}']}]" for i in range(3))
        lines.append(f"    sp = ({sp})")
        lines.append("    e.synproxy = SYNPROXY_ZERO if sp == SYNPROXY_ZERO else sp")
    if "tcp.wscale_orig" in slots or "tcp.flags_orig" in slots:
        vals = []
        for leaf in _TCP:
            base = leaf.replace("mask", "flags")
            i = slots.get(f"tcp.{base}")
            vals.append("None" if i is None else f"v[{i + (leaf != base)}]")
        lines.append(f"    e.tcpx = TCPX(({', '.join(vals)},))")
    return lines


def _accept_line(slots: dict[str, int], fam: int) -> str:
    state = f"v[{slots['tcp.state']}]" if "tcp.state" in slots else "None"
    reply_src = f"v[{slots['reply.src']}]"
    return (f"def accept(v):\n    return ACCEPTS(v[{slots['orig.proto']}], {fam}, v[{slots['orig.src']}], "
            f"{reply_src}, {state})\n")


def event_fill_factory(filt: CompiledFilter) -> Callable[[dict[str, int], int], EventFill | None]:
    """ShapeDecoder's ``event_factory``: (a layout's slots, its family) -> EventFill or None."""

    def factory(slots: dict[str, int], family: int) -> EventFill | None:
        fam = -slots.get("orig.family", 0)
        if fam not in (AF_INET, AF_INET6) or slots.get("reply.family") != -fam or "reply.src" not in slots \
                or "reply.proto" not in slots:
            return None  # sanity needs both sources; other families: the reference path
        leaves = {s.split(".")[0] if "." in s else s for s in slots}
        if any(s not in _KNOWN and s not in ("orig", "reply", "tcp", "synproxy", "counters_orig",
                                            "counters_reply") for s in leaves):
            return None  # secmark, SCTP, ...: kept in Entry.extra, left to Entry.merge
        key_src, fill_src = _key_lines(slots, fam), _fill_lines(slots, fam)
        if key_src is None or fill_src is None:
            return None
        ns = {"ICMP": ICMP_PROTOS, "REPLY_TYPE": ICMP_REPLY_TYPE, "KEY_L4": _KEY[fam, False].pack,
              "KEY_ICMP": _KEY[fam, True].pack, "INTERN": _intern, "TCPX": tcpx_of,
              "SYNPROXY_ZERO": _SYNPROXY_ZERO, "ACCEPTS": filt.accepts_values}
        accept = None if filt.accepts_everything else define(_accept_line(slots, fam), "accept", dict(ns))
        return EventFill(accept, define("\n".join(key_src) + "\n", "key", dict(ns)),
                         define("\n".join(fill_src) + "\n", "fill", dict(ns)))

    return factory
