"""connlabel.conf (libnetfilter_conntrack src/conntrack/labels.c): label names -> bits."""

from __future__ import annotations

import os

from .libc import c_strtox

CONNLABEL_CONF = "/etc/xtables/connlabel.conf"

_POSIX_SPACE = " \f\r\t\v"


def fgets_chunks(data: bytes, size: int) -> list[bytes]:
    """Split like repeated fgets(buf, size): at most size-1 bytes, up to and including '\\n'."""
    out = []
    pos = 0
    n = len(data)
    while pos < n:
        nl = data.find(b"\n", pos, pos + size - 1)
        end = nl + 1 if nl >= 0 else min(n, pos + size - 1)
        out.append(data[pos:end])
        pos = end
    return out


def read_labelmap(path: str = CONNLABEL_CONF) -> tuple[dict[str, int] | None, str]:
    """Load a connlabel.conf: ({name: bit}, "") or (None, perror text) like nfct_labelmap_new."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        return None, os.strerror(exc.errno or 0)
    names: dict[str, int] = {}
    seen: set[int] = set()
    for raw in fgets_chunks(data, 1024):
        line = raw.split(b"\0", 1)[0].decode("latin-1")
        if line[:1] == "#":
            continue
        bit, end = c_strtox(line, 0, False)
        if (bit == 0 and end == 0) or bit >= 1024 or bit in seen:
            continue
        label = line[end:].lstrip(_POSIX_SPACE).split("\n", 1)[0]
        label = label[:1] + label[1:].rstrip(_POSIX_SPACE)
        if not label:
            continue
        sane = all(ch.isascii() and (ch.isalnum() or ch in " -") for ch in label)
        if sane and label not in names:
            names[label] = bit
            seen.add(bit)
    if not names:
        return None, "Success"
    return names, ""
