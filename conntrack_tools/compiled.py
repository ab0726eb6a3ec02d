"""Compiled layouts: generated code for the hot paths, built, cached and checked in one place.

A dump, an event stream or a sync peer carries only a handful of message *layouts* (the same
attributes, in the same order, with the same lengths). Five hot paths compile per layout:

* ``netlink/shapes.py``: kernel message -> values (one ``struct`` call) -> Flow, and the
  delete-by-id request straight from the dumped bytes;
* ``formats/fastline.py`` and ``cli/shapefilter.py``: those values -> the text line / the filter's verdict;
* ``daemon/event_fill.py``: those values -> the daemon filter's verdict, cache key and entry fill;
* ``daemon/sync/entry_packer.py``: cache entry -> sync message body;
* ``daemon/sync/transcode.py``: sync message -> external cache key + netlink create body.

They share what lives here:

* :func:`define` is the package's only ``exec``. Its sources are generated from fixed tables, struct
  codes and integers recorded from a message's layout: no text from a message, a config or a peer
  is ever interpolated, and every namespace is explicit (never a module's globals).
* :class:`StructFormat` accumulates one big-endian struct format with explicit padding while a
  message is walked, and records the attribute headers (the layout's signature).
* :class:`Layouts` caches compiled layouts in buckets of a cheap key (the message length, ...);
  a layout is used for a message only if the message's headers equal the recorded ones, so a
  different layout of the same length is never mis-read. The cache is bounded, and remembers the
  layouts that do not compile.
* :func:`checked` is the first-use check: a generated function is kept only if it gives what the
  reference path gives on the message it was compiled from. The reference path stays the
  definition; property tests check both agree on random input.

The hot loops (``ShapeDecoder.lines``, ``Transcoder.entry``) read ``Layouts.buckets`` inline:
a method call per message would cost as much as the decoding.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Hashable
from operator import itemgetter
from typing import Any

__all__ = ["SIZES", "Layout", "Layouts", "StructFormat", "Uncompilable", "checked", "define"]


class Uncompilable(Exception):
    """This message's layout is not covered by the compiled path (the reference path handles it)."""


def define(src: str, name: str, namespace: dict[str, Any]) -> Callable:
    """The function ``name`` defined by the generated source ``src``, with only ``namespace`` as globals."""
    exec(src, namespace)  # noqa: S102 - see the module docstring: fixed tables and integers only
    return namespace[name]


def checked(make: Callable[[], Callable | None], args: tuple, want: Callable[[], Any]) -> Callable | None:
    """``make()``'s function if it returns what the reference path gives (``want()``) on ``args``, else None.

    A generated function that cannot be built, or raises, is not used (nor when the reference raises)."""
    try:
        fn = make()
        return fn if fn is not None and fn(*args) == want() else None
    except Exception:  # noqa: BLE001 - a generated function that fails is simply not used
        return None


SIZES = {  # bytes per struct code the layouts use
    "4s": 4, "16s": 16, "2s": 2, "B": 1, "c": 1, "H": 2, "I": 4, "Q": 8, "BB": 2}


class StructFormat:
    """A big-endian struct format built field by field at increasing offsets (explicit padding).

    ``header()`` records a 4-byte attribute header (its index in the unpacked values and its
    bytes): together they are the layout's signature, compared before a layout is used."""

    __slots__ = ("fmt", "pos", "nvals", "header_idx", "header_vals")

    def __init__(self) -> None:
        self.fmt: list[str] = []
        self.pos = 0  # byte offset inside the unpacked region
        self.nvals = 0
        self.header_idx: list[int] = []
        self.header_vals: list = []

    def skip_to(self, off: int) -> None:
        if off < self.pos:
            raise Uncompilable
        if off > self.pos:
            self.fmt.append(f"{off - self.pos}x")
            self.pos = off

    def field(self, off: int, code: str) -> int:
        """Unpack ``code`` at ``off``; returns the index of its (first) value."""
        self.skip_to(off)
        self.fmt.append(code)
        self.pos += SIZES[code]
        idx = self.nvals
        self.nvals += 2 if code == "BB" else 1
        return idx

    def header(self, off: int, raw: bytes) -> int:
        idx = self.field(off, "4s")
        self.header_idx.append(idx)
        self.header_vals.append(raw)
        return idx

    def signature(self, idx: int, value: Any) -> None:
        """Also compare the value at ``idx`` (e.g. the L4 protocol byte) before using the layout."""
        self.header_idx.append(idx)
        self.header_vals.append(value)

    def struct(self, size: int) -> struct.Struct:
        """The struct over ``size`` bytes (trailing bytes skipped)."""
        self.skip_to(size)
        st = struct.Struct(">" + "".join(self.fmt))
        if st.size != size:
            raise Uncompilable
        return st

    def getter(self) -> Callable[[tuple], tuple]:
        idx = self.header_idx
        if not idx:
            raise Uncompilable
        return itemgetter(*idx) if len(idx) > 1 else (lambda v, i=idx[0]: (v[i],))


class Layout:
    """One compiled layout: ``struct`` unpacks it, ``getter(values) == headers`` recognises it."""

    __slots__ = ("struct", "getter", "headers", "build")

    def __init__(self, fmt: StructFormat, size: int, build: Callable) -> None:
        self.struct = fmt.struct(size)
        self.getter = fmt.getter()
        self.headers = tuple(fmt.header_vals)
        self.build = build


class Layouts:
    """Compiled layouts in buckets (``buckets[key]``: a list), bounded, plus the keys that do not compile.

    ``max_layouts`` bounds the whole cache (a peer or a table of ever new layouts must not grow
    memory: the reference path serves them), ``per_bucket`` the layouts sharing one key,
    ``max_generic`` the remembered failures."""

    __slots__ = ("buckets", "generic", "count", "max_layouts", "per_bucket", "max_generic")

    def __init__(self, max_layouts: int, per_bucket: int, max_generic: int) -> None:
        self.buckets: dict[Hashable, list] = {}
        self.generic: set = set()
        self.count = 0
        self.max_layouts, self.per_bucket, self.max_generic = max_layouts, per_bucket, max_generic

    def find(self, buf, start: int, key: Hashable) -> tuple[Any, tuple | None]:
        """(layout, unpacked values) of the cached layout this message has, or (None, None)."""
        for lay in self.buckets.get(key, ()):
            vals = lay.struct.unpack_from(buf, start)
            if lay.getter(vals) == lay.headers:
                return lay, vals
        return None, None

    def full(self) -> bool:
        return self.count >= self.max_layouts or len(self.generic) >= self.max_generic

    def add(self, key: Hashable, layout: Any) -> bool:
        """Cache ``layout`` under ``key``; False when its bucket is full (the layout is then used once)."""
        bucket = self.buckets.setdefault(key, [])
        if len(bucket) >= self.per_bucket:
            return False
        bucket.append(layout)
        self.count += 1
        return True

    def give_up(self, sig: Hashable) -> None:
        """Remember that the layout ``sig`` does not compile (or failed its check)."""
        self.generic.add(sig)

    def copy(self) -> Layouts:
        new = Layouts(self.max_layouts, self.per_bucket, self.max_generic)
        new.buckets = {k: list(v) for k, v in self.buckets.items()}
        new.generic, new.count = set(self.generic), self.count
        return new
