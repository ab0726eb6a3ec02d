"""Memory-lean flow cache keyed by the original tuple + zone (C src/cache.c, cache-ct.c).

One :class:`Entry` per flow, with ``__slots__`` and only what ``-i`` prints and what the sync
layer sends: the original tuple lives *packed in the dict key* (bytes), the reply tuple is
stored only when it is not the mirror of the original (NAT), rare attributes go to an
``extra`` dict that is ``None`` for almost every entry; the TCP window scales and flags every
kernel TCP flow carries are packed into one int (``tcpx``).  Repeated small values (status bits,
marks, TCP protoinfo, timestamps of a batch) are interned so entries share them.  Measured by
bench/cache_memory.py (kernel-shaped flows through the ShapeDecoder): ≈ 0.3-0.45 KB per entry
of RSS at 100k and 1M entries; C needs ≈ 0.53 KB.

Counters follow C's ``struct cache_stats`` one by one, because ``-s`` and ``-s cache`` print
them: ``objects`` (allocated), ``active`` (alive, not marked dead), add/upd/del ok and failed
with their ENOMEM/ENOSPC/ENOENT sub-counters.  Like C's ``cache_update`` (``NFCT_CP_META``),
an update overwrites the attributes the event carries and keeps the others.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from dataclasses import replace as _replace
from operator import attrgetter

from ..flow import (
    AF_INET,
    AF_INET6,
    GRE_PROTO,
    ICMP_PROTOS,
    PORT_PROTOS,
    DccpInfo,
    Expect,
    Flow,
    SctpInfo,
    TcpInfo,
    Tuple,
)

__all__ = ["Cache", "CacheStats", "Entry", "ExpCache", "ExpEntry", "entry_exp", "entry_flow", "exp_key", "flow_key",
           "master_key", "pack_tuple", "tcpx_of", "unpack_tuple"]

_HDR = struct.Struct("!BBB")  # family, proto, zone-present flags
_L4 = struct.Struct("!HHH")
_ICMP = struct.Struct("!BBHH")
_ZONES = struct.Struct("!HH")
_Z_TUPLE, _Z_FLOW = 1, 2
_ZERO = {AF_INET: b"\0" * 4, AF_INET6: b"\0" * 16}

# attributes kept in Entry.extra when present (rare): Flow field names
EXTRA_FIELDS = ("secmark", "secctx", "helper", "labels", "ts_stop", "sctp", "dccp", "master",
                "nat_src", "nat_dst", "seqadj_orig", "seqadj_reply")
# Current kernels put CTA_SYNPROXY (all zeros) on every event and dump entry, and C syncs it: a slot
# holding one shared tuple instead of an ``extra`` dict per entry (~230 B each)
_SYNPROXY_ZERO = (0, 0, 0)
_get_extra = attrgetter(*EXTRA_FIELDS)
_NO_EXTRA = (None,) * len(EXTRA_FIELDS)

_interned: dict[int, int] = {}


def _intern(v: int | None) -> int | None:
    """Share equal ints between entries (status words, marks); bounded to stay small."""
    if v is None or -5 <= v <= 256:
        return v
    got = _interned.get(v)
    if got is None:
        if len(_interned) < 4096:
            _interned[v] = v
        return v
    return got


# the whole key of an IPv4/IPv6 tuple in one pack: _HDR + src + dst + L4 (ports or ICMP) + _ZONES
_KEY = {(AF_INET, False): struct.Struct("!BBB4s4sHHHHH"), (AF_INET, True): struct.Struct("!BBB4s4sBBHHHH"),
        (AF_INET6, False): struct.Struct("!BBB16s16sHHHHH"), (AF_INET6, True): struct.Struct("!BBB16s16sBBHHHH")}
_ALEN = {AF_INET: 4, AF_INET6: 16}


def pack_tuple(t: Tuple, flow_zone: int | None = None) -> bytes:
    """Compact, hashable form of a tuple (+ the flow's CTA_ZONE): the cache key."""
    fam = t.family
    proto = t.proto or 0
    zflags = (_Z_TUPLE if t.zone is not None else 0) | (_Z_FLOW if flow_zone is not None else 0)
    src, dst = t.src, t.dst
    alen = _ALEN.get(fam)
    if alen is not None and src is not None and dst is not None and len(src) == alen == len(dst):
        if proto in ICMP_PROTOS:
            return _KEY[fam, True].pack(fam, proto, zflags, src, dst, t.icmp_type or 0, t.icmp_code or 0,
                                        t.icmp_id or 0, 0, t.zone or 0, flow_zone or 0)
        return _KEY[fam, False].pack(fam, proto, zflags, src, dst, t.sport or 0, t.dport or 0, 0, t.zone or 0,
                                     flow_zone or 0)
    zero = _ZERO.get(fam, b"")
    if proto in ICMP_PROTOS:
        l4 = _ICMP.pack(t.icmp_type or 0, t.icmp_code or 0, t.icmp_id or 0, 0)
    else:
        l4 = _L4.pack(t.sport or 0, t.dport or 0, 0)
    return (_HDR.pack(fam, proto, zflags) + (t.src or zero) + (t.dst or zero) + l4
            + _ZONES.pack(t.zone or 0, flow_zone or 0))


def unpack_tuple(b: bytes) -> tuple[Tuple, int | None]:
    """Inverse of :func:`pack_tuple`: (tuple, flow zone)."""
    fam, proto, zflags = _HDR.unpack_from(b)
    alen = 4 if fam == AF_INET else 16 if fam == AF_INET6 else 0
    off = 3
    t = Tuple(fam, b[off:off + alen] if alen else None, b[off + alen:off + 2 * alen] if alen else None, proto)
    off += 2 * alen
    if proto in ICMP_PROTOS:
        t.icmp_type, t.icmp_code, t.icmp_id, _ = _ICMP.unpack_from(b, off)
    elif proto in PORT_PROTOS or proto == GRE_PROTO:
        t.sport, t.dport, _ = _L4.unpack_from(b, off)
    tz, fz = _ZONES.unpack_from(b, off + 6)
    if zflags & _Z_TUPLE:
        t.zone = tz
    return t, (fz if zflags & _Z_FLOW else None)


def _is_mirror(r: Tuple, o: Tuple | None) -> bool:
    """Whether the reply tuple is the original one reversed (no NAT): most flows, so no packing.

    Field comparisons decide the common cases; anything else (ICMP, None against 0) is left to
    the packed comparison, which is the definition.
    """
    if o is None:
        return False
    if (r.src == o.dst and r.dst == o.src and r.proto == o.proto and r.sport == o.dport and r.dport == o.sport
            and r.family == o.family and r.zone == o.zone and r.icmp_type is None and o.icmp_type is None
            and r.icmp_code == o.icmp_code and r.icmp_id == o.icmp_id):
        return True
    return pack_tuple(r) == pack_tuple(o.reversed())


def flow_key(flow: Flow) -> bytes | None:
    """Cache key of a flow (orig tuple + zone), None without an original tuple."""
    if flow.orig is None:
        return None
    return pack_tuple(flow.orig, flow.zone)


def exp_key(exp: Expect) -> bytes | None:
    """Cache key of an expectation: master + expected + mask tuples + zone (C compares them with nfexp_cmp)."""
    if exp.master is None or exp.tuple is None:
        return None
    mask = pack_tuple(exp.mask) if exp.mask is not None else b""
    return pack_tuple(exp.master, exp.zone) + pack_tuple(exp.tuple) + mask


def master_key(exp: Expect) -> bytes | None:
    """Key of the expectation's master in the conntrack cache (orig tuple + the expectation's zone)."""
    return None if exp.master is None else pack_tuple(exp.master, exp.zone)


class Entry:
    """A cached flow.  ``lifetime`` = when it entered the cache (``[active since]``)."""

    __slots__ = ("key", "reply", "status", "state", "tcpx", "mark", "id", "ts_start", "synproxy", "timeout",
                 "extra", "lifetime", "lastupdate", "dead")

    def __init__(self, key: bytes, now: int) -> None:
        self.key = key
        self.reply: bytes | None = None
        self.status: int | None = None
        self.state: int | None = None
        self.tcpx: int | None = None  # TCP window scales + flags/masks packed (see _pack_tcp)
        self.mark: int | None = None
        self.id: int | None = None
        self.ts_start: int | None = None
        self.synproxy: tuple[int, int, int] | None = None  # isn, its, tsoff (Flow.synproxy)
        self.timeout: int | None = None  # as of the last event or dump: what sync messages carry (C too)
        self.extra: dict | None = None
        self.lifetime = now
        self.lastupdate = now
        self.dead = False

    def merge(self, flow: Flow) -> None:
        """Copy the attributes the flow carries (C: nfct_copy NFCT_CP_META)."""
        r = flow.reply
        if r is not None:
            self.reply = None if _is_mirror(r, flow.orig) else pack_tuple(r)
        if flow.status is not None:
            self.status = _intern(flow.status)
        st = flow.proto_state()
        if st is not None:
            self.state = st
        if flow.mark is not None:
            self.mark = _intern(flow.mark)
        if flow.timeout is not None:
            self.timeout = _intern(flow.timeout)
        if flow.id is not None:
            self.id = flow.id
        if flow.ts_start is not None:
            self.ts_start = flow.ts_start
        sp = flow.synproxy
        if sp is not None:
            self.synproxy = _SYNPROXY_ZERO if sp == _SYNPROXY_ZERO else tuple(sp)
        tcp = flow.tcp
        if tcp is not None and (tcp.wscale_orig is not None or tcp.flags_orig is not None):
            self.tcpx = _pack_tcp(tcp)  # every kernel TCP dump/event has them; the state is in .state
        rare = _get_extra(flow)
        if rare != _NO_EXTRA:  # one C-level comparison for the common flow that has none of them
            for name, v in zip(EXTRA_FIELDS, rare, strict=True):
                if v is not None:
                    if self.extra is None:
                        self.extra = {}
                    self.extra[name] = v


_TCP_PACKED = ("wscale_orig", "wscale_reply", "flags_orig", "mask_orig", "flags_reply", "mask_reply")


_get_tcp = attrgetter(*_TCP_PACKED)
_tcpx_memo: dict[tuple, int] = {}


def _pack_tcp(t: TcpInfo) -> int:
    """The six u8 TCP protoinfo leaves in one int (9 bits each, value + 1, 0 = absent).

    Kept in a slot instead of a TcpInfo in ``extra`` (a dict + an object per TCP entry, ~300 B);
    equal values give the same (interned) int, so most TCP entries share one.
    """
    return tcpx_of(_get_tcp(t))


def tcpx_of(vals: tuple) -> int:
    """:func:`_pack_tcp` of the six values in ``_TCP_PACKED`` order (the event fast path has no TcpInfo).

    Kernel flows carry a handful of distinct combinations: they are memoised (bounded) instead of
    packed per event."""
    n = _tcpx_memo.get(vals)
    if n is None:
        n = 0
        for v in vals:
            n = n << 9 | (0 if v is None else (v & 0xFF) + 1)
        n = _intern(n)
        if len(_tcpx_memo) < 4096:
            _tcpx_memo[vals] = n
    return n


def _unpack_tcp(state: int | None, n: int) -> TcpInfo:
    vals = []
    for _ in _TCP_PACKED:
        vals.append((n & 0x1FF) - 1 if n & 0x1FF else None)
        n >>= 9
    return TcpInfo(state, *reversed(vals))


def entry_flow(e: Entry) -> Flow:
    """Rebuild the Flow to print or send (no timeout/counters/use: the cache strips them)."""
    orig, zone = unpack_tuple(e.key)
    if e.reply is not None:
        reply, _ = unpack_tuple(e.reply)
    else:
        reply = orig.reversed()
        reply.zone = orig.zone
    f = Flow(orig.family, orig, reply, status=e.status, mark=e.mark, zone=zone, id=e.id, ts_start=e.ts_start,
             synproxy=e.synproxy)
    ex = e.extra
    if ex:
        for name, v in ex.items():
            setattr(f, name, v)
    if e.tcpx is not None and orig.proto == 6 and f.tcp is None:
        f.tcp = _unpack_tcp(e.state, e.tcpx)
    if e.state is not None:
        proto = orig.proto
        if proto == 6 and f.tcp is None:
            f.tcp = TcpInfo(state=e.state)
        elif proto == 132 and f.sctp is None:
            f.sctp = SctpInfo(state=e.state)
        elif proto == 33 and f.dccp is None:
            f.dccp = DccpInfo(state=e.state)
    return f


class ExpEntry:
    """A cached expectation.  Expectations are few (one per helper-tracked session): kept whole.

    An update replaces the stored object, like C's cache_exp_copy (a memcpy of the nf_expect).
    """

    __slots__ = ("key", "exp", "lifetime", "lastupdate", "dead")

    def __init__(self, key: bytes, now: int) -> None:
        self.key = key
        self.exp: Expect | None = None
        self.lifetime = now
        self.lastupdate = now
        self.dead = False

    def merge(self, exp: Expect) -> None:
        self.exp = exp


def entry_exp(e: ExpEntry) -> Expect:
    """The expectation to print or send, without the cached timeout (C unsets it before dumping)."""
    assert e.exp is not None
    return _replace(e.exp, timeout=None)


@dataclass(slots=True)
class CacheStats:
    objects: int = 0
    active: int = 0
    add_ok: int = 0
    add_fail: int = 0
    add_fail_enomem: int = 0
    add_fail_enospc: int = 0
    upd_ok: int = 0
    upd_fail: int = 0
    upd_fail_enoent: int = 0
    del_ok: int = 0
    del_fail: int = 0
    del_fail_enoent: int = 0
    flush: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Cache:
    """A named cache ("internal", "external", "stats") bounded by HashLimit."""

    key_of = staticmethod(flow_key)
    entry_type: type = Entry

    def __init__(self, name: str, limit: int = 262144) -> None:
        self.name = name
        self.limit = limit
        self.entries: dict[bytes, Entry] = {}
        self.stats = CacheStats()

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries.values())

    def find(self, flow: Flow) -> Entry | None:
        key = self.key_of(flow)
        return None if key is None else self.entries.get(key)

    def add(self, flow: Flow, now: int, key: bytes | None = None) -> Entry | None:
        """cache_object_new + cache_add; None (add_fail, ENOSPC) when the cache is full."""
        if key is None:
            key = self.key_of(flow)
            if key is None:
                return None
        e = self.new_entry(key, now)
        if e is not None:
            e.merge(flow)
        return e

    def new_entry(self, key: bytes, now: int) -> Entry | None:
        """An empty entry added under ``key`` (the caller fills it); None (add_fail, ENOSPC) when full."""
        if len(self.entries) >= self.limit:
            self.stats.add_fail += 1
            self.stats.add_fail_enospc += 1
            return None
        e = self.entry_type(key, now)
        self.entries[key] = e
        s = self.stats
        s.objects += 1
        s.active += 1
        s.add_ok += 1
        return e

    def update(self, e: Entry, flow: Flow, now: int) -> None:
        e.merge(flow)
        e.lastupdate = now
        self.stats.upd_ok += 1

    def update_force(self, flow: Flow, now: int, key: bytes | None = None,
                     e: Entry | None = None) -> tuple[Entry | None, bool]:
        """C's cache_update_force: update a live entry, else (re)create it. Returns (entry, created).

        A caller that has already looked the flow up passes its ``key`` and entry ``e`` (None: absent).
        """
        if key is None:
            key = self.key_of(flow)
            if key is None:
                return None, True
            e = self.entries.get(key)
        if e is not None:
            if not e.dead:
                e.merge(flow)
                e.lastupdate = now
                self.stats.upd_ok += 1
                return e, False
            self.delete(e)
        return self.add(flow, now, key), True

    def fill_force(self, key: bytes, fill: Callable, vals: tuple, now: int,
                   e: Entry | None = None) -> tuple[Entry | None, bool]:
        """update_force() for an entry of a compiled layout (daemon/event_fill.py): ``fill`` does what
        Entry.merge does, from decoded values instead of a Flow.  ``e``: the caller's lookup of ``key``."""
        if e is None:
            e = self.entries.get(key)
        if e is not None:
            if not e.dead:
                fill(vals, e)
                e.lastupdate = now
                self.stats.upd_ok += 1
                return e, False
            self.delete(e)
        e = self.new_entry(key, now)
        if e is not None:
            fill(vals, e)
        return e, True

    def mark_dead(self, e: Entry) -> None:
        """cache_object_set_status(C_OBJ_DEAD): counted as deleted, kept until released."""
        if not e.dead:
            e.dead = True
            self.stats.del_ok += 1
            self.stats.active -= 1

    def delete(self, e: Entry) -> None:
        """cache_del + cache_object_free."""
        if self.entries.pop(e.key, None) is None:
            return
        if not e.dead:
            self.stats.del_ok += 1
            self.stats.active -= 1
        self.stats.objects -= 1

    def flush(self) -> None:
        for e in list(self.entries.values()):
            self.delete(e)
        self.stats.flush += 1

    def live(self) -> list[Entry]:
        """Snapshot of the entries a dump shows (dead ones are hidden, as C does in FTFW)."""
        return [e for e in self.entries.values() if not e.dead]


class ExpCache(Cache):
    """The expectation cache of a sync daemon (C: cache_create(..., CACHE_T_EXP)); same counters as :class:`Cache`."""

    key_of = staticmethod(exp_key)
    entry_type = ExpEntry
