"""libc look-alikes (glibc 2.36, C locale, LP64): strtol/strtoul/atoi, inet_aton/inet_pton, masks.

conntrack 1.4.7 parses numbers and addresses with these, and scripts depend on their leniency
(wrap-around, leading blanks, octal/hex prefixes, ``1.2`` as an IPv4 address).
"""

from __future__ import annotations

from .request import AF_INET, AF_INET6, AF_UNSPEC

_SPACE = " \t\n\v\f\r"
ULONG_MAX = (1 << 64) - 1
_LONG_MAX = (1 << 63) - 1
_LONG_MIN = -(1 << 63)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _digit(ch: str) -> int:
    o = ord(ch)
    if 48 <= o <= 57:
        return o - 48
    if 97 <= o <= 122:
        return o - 87
    if 65 <= o <= 90:
        return o - 55
    return 99


def c_strtox(s: str, base: int, signed: bool) -> tuple[int, int]:
    """strtol/strtoul: (value, index of first unparsed char); clamps like glibc on overflow."""
    n = len(s)
    i = 0
    while i < n and s[i] in _SPACE:
        i += 1
    neg = False
    if i < n and s[i] in "+-":
        neg = s[i] == "-"
        i += 1
    hex_prefix = False
    if (base in (0, 16)) and s[i : i + 1] == "0" and s[i + 1 : i + 2] in ("x", "X"):
        base = 16
        i += 2
        hex_prefix = True
    elif base == 0:
        base = 8 if s[i : i + 1] == "0" else 10
    start = i
    val = 0
    while i < n:
        d = _digit(s[i])
        if d >= base:
            break
        val = val * base + d
        i += 1
    if i == start:
        return 0, (start - 1 if hex_prefix else 0)
    if signed:
        val = -val if neg else val
        val = max(_LONG_MIN, min(_LONG_MAX, val))
    elif val > ULONG_MAX:
        val = ULONG_MAX
    elif neg:
        val = (-val) & ULONG_MAX
    return val, i


def c_strtoul(s: str, base: int = 0) -> int:
    return c_strtox(s, base, False)[0]


def c_atol(s: str) -> int:
    return c_strtox(s, 10, True)[0]


def c_atoi(s: str) -> int:
    """glibc atoi == (int)strtol(s, NULL, 10): the long is truncated to 32 bits."""
    v = c_atol(s) & 0xFFFFFFFF
    return v - (1 << 32) if v & 0x80000000 else v


def inet_aton(cp: str) -> bytes | None:
    """glibc inet_aton: a, a.b, a.b.c, a.b.c.d in C number bases; trailing whitespace+junk ok."""
    parts: list[int] = []
    i = 0
    n = len(cp)
    while True:
        if i >= n or not ("0" <= cp[i] <= "9"):
            return None
        val, end = c_strtox(cp[i:], 0, False)
        if val > 0xFFFFFFFF:
            return None
        i += end
        c = cp[i] if i < n else ""
        if c == ".":
            if len(parts) > 2 or val > 0xFF:
                return None
            parts.append(val)
            i += 1
        else:
            break
    if c and c not in _SPACE:
        return None
    if val > (0xFFFFFFFF, 0xFFFFFF, 0xFFFF, 0xFF)[len(parts)]:
        return None
    word = val
    for k, p in enumerate(parts):
        word |= p << (24 - 8 * k)
    return word.to_bytes(4, "big")


def inet_pton6(s: str) -> bytes | None:
    if not s.isascii():
        return None
    import _socket

    try:
        return _socket.inet_pton(_socket.AF_INET6, s)
    except (OSError, ValueError):
        return None


def parse_addr(cp: str, want_mask: bool = True) -> tuple[int, bytes | None, int]:
    """C `parse_addr`: (family, packed, mask) with mask -1 = none, -2 = invalid."""
    buf = cp[:45]  # strncpy into char[INET6_ADDRSTRLEN]
    mask = -1
    if want_mask:
        slash = buf.find("/")
        if slash >= 0:
            tail = buf[slash + 1 :]
            val, end = c_strtox(tail, 10, True)
            val &= 0xFFFFFFFF  # long -> int
            mask = val - (1 << 32) if val & 0x80000000 else val
            if mask < 0 or end != len(tail):
                mask = -2
            buf = buf[:slash]
    packed = inet_aton(buf)
    if packed is not None:
        if mask > 32:
            mask = -2
        return AF_INET, packed, mask
    packed = inet_pton6(buf)
    if packed is not None:
        if mask > 128:
            mask = -2
        return AF_INET6, packed, mask
    return AF_UNSPEC, None, mask


def build_netmask(bits: int, nbytes: int) -> bytes:
    total = nbytes * 8
    bits = min(bits, total)
    return (((1 << bits) - 1) << (total - bits)).to_bytes(nbytes, "big")


def ascii_lower(s: str) -> str:
    return s.translate(_ASCII_LOWER)
