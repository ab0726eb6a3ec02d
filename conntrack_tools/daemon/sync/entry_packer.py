"""Cache entry -> sync message body, straight from the packed entry (the sender's hot path).

Why: the reference path (``entry_flow`` -> ``flow_to_sync`` -> ``SyncFlow.to_attrs`` ->
``encode_attrs``) builds a Flow, two Tuples, two ``IPv4Address`` objects, a frozen dataclass and
one bytes object per attribute: ~12 µs per message, the sender's biggest cost (docs/sync.md,
"Performance", S1).  Almost every entry a firewall syncs is plain: no NAT (``reply is None``),
nothing rare (``extra is None``).  For those, ``Entry.key`` already holds the family, protocol,
addresses and ports in network order, which is what NTA_IPV4/6 and NTA_PORT carry, so one
precompiled ``struct.Struct`` per layout packs the whole body in one call.

A layout is (family, protocol class, state?, timeout?, mark?, synproxy?, zone?); its attribute headers
are constants baked into the generated packer.  Everything else (NAT, helper, labels, master,
SCTP/DCCP protoinfo, window tracking, odd families) goes through the reference path, which
stays the definition: each packer is checked against it on its first entry (``compiled.checked``, as
every generated layout is) and ``tests/unit/test_sync_entry_packer.py`` checks both agree byte for byte.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from ...compiled import checked, define
from ...flow import AF_INET, AF_INET6, ICMP_PROTOS
from ..cache import Entry, entry_flow
from .convert import flow_to_sync
from .wire import WireError, WireErrorKind, encode_attrs
from .wire_attrs import CT_ATTRS, NTA_PORT_PROTOS, CtAttr

__all__ = ["EntryRenderer", "render_reference"]

_PORTS, _ICMP, _BARE = "ports", "icmp", "bare"
_PROTO_CLASS = {**dict.fromkeys(NTA_PORT_PROTOS, _PORTS), **dict.fromkeys(ICMP_PROTOS, _ICMP)}
_Z_FLOW = 2  # cache.py's zone-present flag for the flow's CTA_ZONE
_UNSEEN = object()  # a layout not compiled yet (None: compiled, failed its first-use check)

# attribute -> (struct code of the payload, padding after it); lengths follow from the codes
_LAYOUT_ROWS = {
    CtAttr.STATUS: ("I", 0),
    CtAttr.L4PROTO: ("B", 3),
    CtAttr.PORT: ("4s", 0),  # sport, dport raw from the key
    CtAttr.TCP_STATE: ("B", 3),
    CtAttr.ICMP_TYPE: ("B", 3),
    CtAttr.ICMP_CODE: ("B", 3),
    CtAttr.ICMP_ID: ("H", 2),  # value byte-swapped below: C's double htons() on x86 (le16)
    CtAttr.TIMEOUT: ("I", 0),
    CtAttr.MARK: ("I", 0),
    CtAttr.SYNPROXY: ("3I", 0),  # its, isn, tsoff
    CtAttr.ZONE: ("H", 2),
}


def render_reference(e: Entry, timeout: int | None, send_timeout: bool, window_tracking: bool) -> bytes | None:
    """The definition: what ``flow_to_sync`` + ``encode_attrs`` send for a cached entry."""
    flow = entry_flow(e)
    if timeout is not None:
        flow.timeout = timeout
    sf = flow_to_sync(flow, timeout=send_timeout, window_tracking=window_tracking)
    if sf is None:
        return None
    return encode_attrs(sf.to_attrs(), CT_ATTRS)


def _compile(fam: int, pclass: str, state: bool, timeout: bool, mark: bool, synproxy: bool,
             zone: bool) -> Callable[..., bytes]:
    """Generate ``pack(key, status, state, timeout, mark, synproxy) -> body`` for one layout."""
    alen = 4 if fam == AF_INET else 16
    ip_attr = CtAttr.IPV4 if fam == AF_INET else CtAttr.IPV6
    fmt = ["!", f"I{2 * alen}s"]
    args = [str((4 + 2 * alen) << 16 | ip_attr), f"key[3:{3 + 2 * alen}]"]
    l4 = 3 + 2 * alen  # offset of the L4 part in the key

    def add(attr: CtAttr, expr: str) -> None:
        code, pad = _LAYOUT_ROWS[attr]
        size = struct.calcsize("!" + code)
        fmt.append(f"I{code}{pad}x" if pad else f"I{code}")
        args.extend((str((4 + size) << 16 | attr), expr))

    add(CtAttr.STATUS, "status or 0")
    add(CtAttr.L4PROTO, "key[1]")
    if pclass == _PORTS:
        add(CtAttr.PORT, f"key[{l4}:{l4 + 4}]")
    if state:
        add(CtAttr.TCP_STATE, "state")
    if pclass == _ICMP:
        add(CtAttr.ICMP_TYPE, f"key[{l4}]")
        add(CtAttr.ICMP_CODE, f"key[{l4 + 1}]")
        add(CtAttr.ICMP_ID, f"key[{l4 + 2}] | key[{l4 + 3}] << 8")
    if timeout:
        add(CtAttr.TIMEOUT, "timeout")
    if mark:
        add(CtAttr.MARK, "mark")
    if synproxy:
        add(CtAttr.SYNPROXY, "sp[1], sp[0], sp[2]")  # Flow.synproxy is (isn, its, tsoff)
    if zone:
        add(CtAttr.ZONE, f"key[{l4 + 8}] << 8 | key[{l4 + 9}]")
    src = f"def pack(key, status, state, timeout, mark, sp):\n    return _S.pack({', '.join(args)})\n"
    return define(src, "pack", {"_S": struct.Struct("".join(fmt))})


class EntryRenderer:
    """Renders entries for one daemon (its send-timeout and window-tracking settings are fixed)."""

    def __init__(self, send_timeout: bool, window_tracking: bool) -> None:
        self.send_timeout = send_timeout
        self.window_tracking = window_tracking
        self._packers: dict[tuple, Callable[..., bytes] | None] = {}
        self.fast = 0  # messages by the compiled path / by the reference path (tests and bench read them)
        self.slow = 0

    def body(self, e: Entry, timeout: int | None) -> bytes | None:
        """Attributes of ``e`` as a sync message body; None for entries C would not send either.

        Raises ``WireError`` when a value does not fit its attribute (reference path only).
        """
        key = e.key
        fam = key[0]
        if e.reply is None and e.extra is None and not self.window_tracking and fam in (AF_INET, AF_INET6):
            pclass = _PROTO_CLASS.get(key[1], _BARE)
            state = e.state
            if state is None or key[1] == 6:
                if not self.send_timeout:
                    timeout = None
                sp = e.synproxy
                layout = (fam, pclass, state is not None, timeout is not None, e.mark is not None, sp is not None,
                          bool(key[2] & _Z_FLOW))
                pack = self._packers.get(layout, _UNSEEN)
                if pack is _UNSEEN:  # first use: kept only if it packs what the reference path sends
                    pack = self._packers[layout] = checked(
                        lambda: _compile(*layout), (key, e.status, state, timeout, e.mark, sp),
                        lambda: render_reference(e, timeout, self.send_timeout, self.window_tracking))
                if pack is not None:
                    try:
                        body = pack(key, e.status, state, timeout, e.mark, sp)
                    except struct.error as exc:
                        raise WireError(f"cannot encode entry: {exc}", WireErrorKind.ENCODE) from None
                    self.fast += 1
                    return body
        self.slow += 1
        return render_reference(e, timeout, self.send_timeout, self.window_tracking)
