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

    ``header()`` records a 4-byte attribute header (its offset and bytes) and ``signature()`` any
    other bytes a message must have (e.g. the L4 protocol byte): together they are the layout's
    signature, checked before a layout is used. They are not unpacked: the check is one masked
    comparison of the message as a big integer (:meth:`Layout.mask`), which costs a third of
    unpacking and comparing some thirty 4-byte headers one by one."""

    __slots__ = ("fmt", "pos", "nvals", "sig")

    def __init__(self) -> None:
        self.fmt: list[str] = []
        self.pos = 0  # byte offset inside the unpacked region
        self.nvals = 0
        self.sig: list[tuple[int, bytes]] = []  # (offset, bytes) the message must hold

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

    def header(self, off: int, raw: bytes) -> None:
        """The 4-byte attribute header ``raw`` at ``off`` (skipped by the struct, part of the signature)."""
        self.skip_to(off)
        self.fmt.append("4x")
        self.pos += 4
        self.sig.append((off, raw))

    def signature(self, off: int, raw: bytes) -> None:
        """Also require the bytes ``raw`` at ``off`` (e.g. the L4 protocol byte) before using the layout."""
        self.sig.append((off, raw))

    def struct(self, size: int) -> struct.Struct:
        """The struct over ``size`` bytes (trailing bytes skipped)."""
        self.skip_to(size)
        st = struct.Struct(">" + "".join(self.fmt))
        if st.size != size:
            raise Uncompilable
        return st

    def masks(self, size: int) -> tuple[int, int]:
        """(mask, want): a message of ``size`` bytes has this layout's signature when
        ``int.from_bytes(message, "big") & mask == want``."""
        if not self.sig:
            raise Uncompilable
        mask, want = bytearray(size), bytearray(size)
        for off, raw in self.sig:
            if off < 0 or off + len(raw) > size:
                raise Uncompilable
            mask[off:off + len(raw)] = b"\xff" * len(raw)
            want[off:off + len(raw)] = raw
        return int.from_bytes(mask, "big"), int.from_bytes(want, "big")


class Layout:
    """One compiled layout over messages of ``size`` bytes: ``int.from_bytes(message) & mask == want``
    recognises it, ``struct`` unpacks its values."""

    __slots__ = ("struct", "mask", "want", "build")

    def __init__(self, fmt: StructFormat, size: int, build: Callable) -> None:
        self.struct = fmt.struct(size)
        self.mask, self.want = fmt.masks(size)
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

    def find(self, buf, start: int, end: int, key: Hashable) -> tuple[Any, tuple | None]:
        """(layout, unpacked values) of the cached layout the message ``buf[start:end]`` has, or (None, None)."""
        bucket = self.buckets.get(key)
        if bucket:
            x = int.from_bytes(buf[start:end], "big")
            for lay in bucket:
                if x & lay.mask == lay.want:
                    return lay, lay.struct.unpack_from(buf, start)
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
