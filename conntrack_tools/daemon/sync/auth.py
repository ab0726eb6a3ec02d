"""Authenticated sync (beyond C): an HMAC-SHA256 envelope around each datagram, sans-I/O.

Opt-in with ``AuthKey`` in the ``Sync`` block.  C conntrackd 1.4.7 has no authentication
(catalog 3.1): any host that can reach the sync port can inject states.  With a key, every
datagram a channel sends (every TCP batch) is wrapped in **one** version-2 message:

```
 0  u8  version<<4 | type   2<<4 | 10 (CTL)   -- a C peer validates len, then counts
 1  u8  flags               0                     "Wrong protocol version" and skips it
 2  be16 len                whole envelope, tag included (multiple of 4)
 4  be32 seq                per-incarnation datagram counter (replay window)
 8  u8  key_id              the sending key's id (keyring.py; 0 for a single key)
 9  u8  tag_len             16
10  be16 reserved           0
12  be32 boot_id            random, new for every daemon start (the sender's incarnation)
16  be32 time               sender's clock (Unix seconds) when sealed
20  ...  inner              the unchanged v1 messages of the datagram
len-16  tag                 HMAC-SHA256(key, bytes[0:len-16]) truncated to 128 bits
```

The envelope is framed like any v1 message (``len`` covers all of it, flags 0 so C's
8-byte minimum applies), so it also travels the TCP channel's byte stream unchanged,
and a v1 receiver (C, or ours without a key) never desynchronises: it drops it whole.

Receiving with a key: a datagram that is not exactly one well-formed envelope is
``unauthenticated`` (v1 from a C peer or a key-less node) or ``malformed``; a ``key_id`` that is
not in our keyring is ``unknown_key`` (rotation steps out of order); a wrong tag
(forged, corrupted, other key) is ``bad_mac``; a valid tag whose ``time`` is more than
``MAX_SKEW`` (120 s) away from our clock is ``stale``; a valid tag whose seq was already
seen, or is older than the 1024-datagram window of its ``boot_id``, is ``replayed``.  The
tag is checked before any state changes, so forged datagrams cannot move a window.

Replay windows are keyed by ``boot_id`` (authenticated), not by source address, so a
datagram replayed from another host is still recognised.  A window idle for
``2 * MAX_SKEW`` is forgotten: anything it could still reject is stale by then.  So
replay protection is complete within the key holders' trust, at one requirement:
**the nodes' clocks must agree within 120 s** (NTP); otherwise every datagram is
counted as ``stale`` (visible in ``-s network``).
"""

from __future__ import annotations

import hmac
import os
import struct
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

from .keyring import MIN_KEY_LEN, KeyRing, exposed, parse_auth_value, read_key_file, single

__all__ = [
    "AUTH_VERSION",
    "ENVELOPE_OVERHEAD",
    "MIN_KEY_LEN",
    "AuthError",
    "AuthFailure",
    "KeyRing",
    "Opener",
    "Sealer",
    "load_key",
    "load_ring",
]

AUTH_VERSION = 2
_ENV = struct.Struct("!BBHIBBHII")  # 20 bytes
ENV_HDR_LEN = _ENV.size
TAG_LEN = 16
ENVELOPE_OVERHEAD = ENV_HDR_LEN + TAG_LEN
_VT = (AUTH_VERSION << 4) | 10  # CTL type nibble: never "ack shaped" because flags are 0
REPLAY_WINDOW = 1024
MAX_SKEW = 120
_WMASK = (1 << REPLAY_WINDOW) - 1
_U32 = 0xFFFFFFFF


class AuthError:
    """Counter names (``-s network`` / JSON ``auth``)."""

    UNAUTHENTICATED = "unauthenticated"
    BAD_MAC = "bad_mac"
    REPLAYED = "replayed"
    STALE = "stale"
    MALFORMED = "malformed"
    UNKNOWN_KEY = "unknown_key"


class AuthFailure(Exception):
    def __init__(self, kind: str, reason: str = "") -> None:
        super().__init__(reason or kind)
        self.kind = kind


def _mac(key: bytes, data: bytes | memoryview) -> bytes:
    return hmac.digest(key, data, "sha256")[:TAG_LEN]


def load_ring(value: str) -> KeyRing:
    """``AuthKey`` value -> KeyRing: inline hex (key id 0) or an absolute path to a key file
    (keyring.py: a keyring, or the single-key hex/raw form as id 0).  ValueError/OSError."""
    if value.startswith("/"):
        return read_key_file(value)
    return parse_auth_value(value)


def load_key(value: str) -> bytes:
    """The sending key of ``load_ring(value)`` (the single-key API of the first release)."""
    return load_ring(value).send_key


def key_file_exposed(path: str) -> bool | None:
    """True when ``path`` is group- or world-readable (or not owned by root); None if unknown."""
    try:
        return exposed(os.stat(path))
    except OSError:
        return None


def _ring(key: bytes | KeyRing) -> KeyRing:
    return key if isinstance(key, KeyRing) else single(key)


class Sealer:
    """Wraps outgoing datagrams.  One per engine (the seq is shared by every channel)."""

    def __init__(self, key: bytes | KeyRing, boot_id: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.set_ring(_ring(key))
        self.boot_id = boot_id if boot_id is not None else _new_boot_id()
        self.clock = clock
        self.seq = 0
        self.sealed = 0

    def set_ring(self, ring: KeyRing) -> None:
        """Send with the ring's sending key from the next datagram on (seq and boot_id go on)."""
        self.key = ring.send_key
        self.key_id = ring.send_id

    def seal(self, inner: bytes) -> bytes:
        if self.seq >= _U32:
            self.boot_id = _new_boot_id()  # 4G datagrams: a new incarnation rather than a wrap
            self.seq = 0
        self.seq += 1
        total = ENVELOPE_OVERHEAD + len(inner)
        if total > 0xFFFF:
            raise ValueError(f"datagram of {len(inner)} bytes too large to seal")
        now = int(self.clock()) & _U32
        head = _ENV.pack(_VT, 0, total, self.seq, self.key_id, TAG_LEN, 0, self.boot_id, now) + inner
        self.sealed += 1
        return head + _mac(self.key, head)


def _new_boot_id() -> int:
    return int.from_bytes(os.urandom(4), "big") or 1


@dataclass(slots=True)
class _Window:
    top: int
    bits: int  # bit d set = seq (top - d) seen
    used: float


class Opener:
    """Verifies incoming envelopes; keeps the per-incarnation replay windows and the counters."""

    def __init__(self, key: bytes | KeyRing, clock: Callable[[], float] = time.time,
                 max_skew: int = MAX_SKEW) -> None:
        self.keys: dict[int, bytes] = {}
        #: per key id: [accepted, bad_mac] (ids of the current ring only)
        self.by_key: dict[int, list[int]] = {}
        self.set_ring(_ring(key))
        self.clock = clock
        self.max_skew = max_skew
        self.windows: dict[int, _Window] = {}
        self._next_prune = 0.0
        self.stats = {"accepted": 0, AuthError.UNAUTHENTICATED: 0, AuthError.BAD_MAC: 0,
                      AuthError.REPLAYED: 0, AuthError.STALE: 0, AuthError.MALFORMED: 0,
                      AuthError.UNKNOWN_KEY: 0}

    def set_ring(self, ring: KeyRing) -> None:
        """Accept exactly the ring's keys from now on; replay windows are kept (boot_ids, not keys)."""
        self.keys = dict(ring.keys)
        self.by_key = {k: self.by_key.get(k, [0, 0]) for k in ring.keys}

    def open(self, buf: bytes, peer: Hashable = None) -> bytes:
        """The inner v1 bytes of an authentic, fresh envelope; else count and raise AuthFailure.

        ``peer`` (the source address) is not used for the decision: identities are in the
        authenticated envelope."""
        try:
            inner = self._open(buf)
        except AuthFailure as exc:
            self.stats[exc.kind] += 1
            raise
        self.stats["accepted"] += 1
        return inner

    def _open(self, buf: bytes) -> bytes:
        n = len(buf)
        if n < 1 or buf[0] >> 4 != AUTH_VERSION:
            raise AuthFailure(AuthError.UNAUTHENTICATED, "not an authenticated datagram")
        if n < ENVELOPE_OVERHEAD:
            raise AuthFailure(AuthError.MALFORMED, "envelope truncated")
        vt, flags, length, seq, key_id, tag_len, _res, boot_id, ts = _ENV.unpack_from(buf)
        if vt != _VT or flags or length != n or tag_len != TAG_LEN:
            raise AuthFailure(AuthError.MALFORMED, "bad envelope header")
        key = self.keys.get(key_id)
        if key is None:
            raise AuthFailure(AuthError.UNKNOWN_KEY, f"key id {key_id} not in our keyring")
        body = memoryview(buf)[: n - TAG_LEN]
        if not hmac.compare_digest(_mac(key, body), bytes(buf[n - TAG_LEN :])):
            self.by_key[key_id][1] += 1
            raise AuthFailure(AuthError.BAD_MAC, "tag mismatch")
        now = self.clock()
        skew = ((ts - int(now)) + (1 << 31)) % (1 << 32) - (1 << 31)  # signed 32-bit difference
        if abs(skew) > self.max_skew:
            raise AuthFailure(AuthError.STALE, f"timestamp {skew:+d} s away from our clock")
        self._check_replay(boot_id, seq, now)
        self.by_key[key_id][0] += 1
        return bytes(buf[ENV_HDR_LEN : n - TAG_LEN])

    def _check_replay(self, boot_id: int, seq: int, now: float) -> None:
        if now >= self._next_prune:
            self._next_prune = now + self.max_skew
            idle = 2 * self.max_skew
            for b in [b for b, w in self.windows.items() if now - w.used > idle]:
                del self.windows[b]
        w = self.windows.get(boot_id)
        if w is None:
            self.windows[boot_id] = _Window(seq, 1, now)
            return
        if seq > w.top:
            shift = seq - w.top
            w.bits = ((w.bits << shift) | 1) & _WMASK if shift < REPLAY_WINDOW else 1
            w.top = seq
            w.used = now
            return
        d = w.top - seq
        if d >= REPLAY_WINDOW or (w.bits >> d) & 1:
            raise AuthFailure(AuthError.REPLAYED, "seq already seen or outside the window")
        w.bits |= 1 << d
        w.used = now
