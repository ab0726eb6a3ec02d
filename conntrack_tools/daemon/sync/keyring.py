"""Sync keys with ids (beyond C): the ``AuthKey`` key file as a keyring, for rotation without a reject window.

Pure, sans-I/O parsing (``parse_key_file``, ``parse_auth_value``) plus a small shell
(``KeyFileWatcher``) that the engine polls once a second.  Format of a keyring file::

    # comment (anything after '#' is ignored; blank lines too)
    key 1 00112233445566778899aabbccddeeff     <- the first key line is the one we send with
    key 2 ffeeddccbbaa99887766554433221100     <- also accepted

Each ``key <id> <hex>`` line: id 0-255 (decimal, unique), hex 32-128 digits (16-64 bytes).
The receiver looks the envelope's ``key_id`` up (one MAC per datagram, never a trial of
several keys); a datagram whose id is not in the ring is ``unknown_key``.

A file is a keyring when one of its lines starts with ``key`` or ``#``; any other content is
the single-key form that predates keyrings (hex with whitespace ignored, or >= 16 raw bytes)
and keeps working as key id 0, as does ``AuthKey <hex>`` inline.

Rotation (both nodes at each step, the next step only once both loaded the file):
1. add the new key as a second line (both accept it, both still send the old one);
2. swap the lines (both send the new key, both still accept the old one);
3. drop the old line.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass

__all__ = ["KEY_FILE_MAX", "KeyFileError", "KeyFileWatcher", "KeyRing", "parse_auth_value", "parse_key_file"]

MIN_KEY_LEN = 16
MAX_KEY_LEN = 64
MAX_KEYS = 16
KEY_FILE_MAX = 16384  # bytes read from a key file: a keyring of MAX_KEYS lines with comments fits
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")
_ID = re.compile(r"[0-9]{1,3}")


class KeyFileError(ValueError):
    """A key file or AuthKey value we refuse; the message names the line."""


@dataclass(frozen=True, slots=True)
class KeyRing:
    """Keys by id (insertion order = file order) and the id we send with."""

    keys: dict[int, bytes]
    send_id: int
    keyring: bool = True  # False: a single-key form (inline hex, legacy file), id 0

    @property
    def send_key(self) -> bytes:
        return self.keys[self.send_id]

    @property
    def ids(self) -> list[int]:
        return list(self.keys)

    def describe(self) -> str:
        """For logs: ids only, never key material."""
        others = [i for i in self.keys if i != self.send_id]
        return f"sending key {self.send_id}" + (f", also accepting {', '.join(map(str, others))}" if others else "")


def single(key: bytes) -> KeyRing:
    return KeyRing({0: key}, 0, keyring=False)


def _is_keyring(text: str) -> bool:
    for line in text.splitlines():
        word = line.strip()
        if word.startswith("#") or word.split(None, 1)[:1] == ["key"]:
            return True
    return False


def parse_key_file(raw: bytes, name: str = "key file") -> KeyRing:
    """Key file bytes -> KeyRing; KeyFileError (never anything else) on bad content."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        text = None
    if text is not None and _is_keyring(text):
        return _parse_keyring(text, name)
    return _parse_legacy(raw, name)


def _parse_legacy(raw: bytes, name: str) -> KeyRing:
    """The single-key file of the first AuthKey release: hex (whitespace ignored) or raw bytes."""
    joined = b"".join(raw.split())
    try:
        key = bytes.fromhex(joined.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = raw
    if len(key) < MIN_KEY_LEN:
        raise KeyFileError(f"{name}: key shorter than {MIN_KEY_LEN} bytes")
    return single(key)


def _parse_keyring(text: str, name: str) -> KeyRing:
    keys: dict[int, bytes] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        where = f"{name}:{lineno}"
        if words[0] != "key" or len(words) != 3:
            raise KeyFileError(f"{where}: expected 'key <id> <hex>'")
        kid, hexkey = words[1], words[2]
        if not _ID.fullmatch(kid) or int(kid) > 255:
            raise KeyFileError(f"{where}: key id must be a number from 0 to 255")
        if int(kid) in keys:
            raise KeyFileError(f"{where}: key id {int(kid)} listed twice")
        if not _HEX.fullmatch(hexkey):
            raise KeyFileError(f"{where}: key must be an even number of hex digits")
        if not MIN_KEY_LEN <= len(hexkey) // 2 <= MAX_KEY_LEN:
            raise KeyFileError(f"{where}: key must be {2 * MIN_KEY_LEN} to {2 * MAX_KEY_LEN} hex digits")
        if len(keys) == MAX_KEYS:
            raise KeyFileError(f"{where}: more than {MAX_KEYS} keys")
        keys[int(kid)] = bytes.fromhex(hexkey)
    if not keys:
        raise KeyFileError(f"{name}: no 'key <id> <hex>' line")
    return KeyRing(keys, next(iter(keys)))


def parse_auth_value(value: str) -> KeyRing:
    """Inline ``AuthKey <hex>`` -> a single key with id 0."""
    try:
        key = bytes.fromhex(value)
    except ValueError:
        raise KeyFileError("AuthKey: expected hex digits or an absolute file path") from None
    if len(key) < MIN_KEY_LEN:
        raise KeyFileError(f"AuthKey: key shorter than {MIN_KEY_LEN} bytes ({2 * MIN_KEY_LEN} hex digits)")
    return single(key)


def read_key_file(path: str) -> KeyRing:
    """One small read (at most KEY_FILE_MAX bytes) and the parse.  OSError or KeyFileError."""
    with open(path, "rb") as fh:
        raw = fh.read(KEY_FILE_MAX + 1)
    if len(raw) > KEY_FILE_MAX:
        raise KeyFileError(f"{path}: larger than {KEY_FILE_MAX} bytes")
    return parse_key_file(raw, path)


def exposed(st: os.stat_result) -> bool:
    return bool(st.st_mode & (stat.S_IRGRP | stat.S_IROTH)) or st.st_uid != 0


class KeyFileWatcher:
    """Notices a changed key file (stat signature) and re-reads it; the caller keeps the old ring on error.

    ``poll()`` returns ``(ring, None)`` for a new valid ring, ``(None, message)`` for a change we
    refuse (logged once per change, not once per poll), ``(None, None)`` when nothing changed."""

    def __init__(self, path: str, ring: KeyRing) -> None:
        self.path = path
        self.ring = ring
        self.sig = self._sig()
        self.reloads = 0
        self.refused = 0
        self.last_error = ""

    def _sig(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except OSError as exc:
            return ("error", exc.errno)
        return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def poll(self) -> tuple[KeyRing | None, str | None]:
        sig = self._sig()
        if sig == self.sig:
            return None, None
        self.sig = sig
        try:
            ring = read_key_file(self.path)
        except OSError as exc:
            return self._refuse(f"{self.path}: {exc.strerror or exc}")
        except KeyFileError as exc:
            return self._refuse(str(exc))
        if self.ring.keyring and not ring.keyring:
            return self._refuse(f"{self.path}: no longer a keyring ('key <id> <hex>' lines)")
        if ring == self.ring:
            self.last_error = ""  # touched, or a refused file put back: same keys, nothing to swap
            return None, None
        self.ring = ring
        self.reloads += 1
        self.last_error = ""
        return ring, None

    def _refuse(self, message: str) -> tuple[None, str]:
        self.refused += 1
        self.last_error = message
        return None, message
