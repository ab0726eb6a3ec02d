"""Tokenizer for conntrackd.conf that reproduces the C 1.4.7 flex scanner.

The C scanner (src/read_config_lex.l) is a flex scanner: at every position the
*longest* match of any rule wins and ties go to the rule listed first.  That has
visible consequences a naive tokenizer would miss, all reproduced here:

* keywords are exact and case-sensitive, but ``Types`` is a plain string;
* a bare hex word such as ``dead`` or ``cafe`` is an IPv6 literal, so
  ``Interface dead`` is a syntax error in C;
* booleans are case-insensitive and the character classes contain a stray
  ``|`` (``[o|O][n|N]``), so ``||`` is "on";
* ``persistenT`` is the ALARM alias but ``persistent`` is a string (typo in C);
* ``#`` only starts a comment when a newline follows (flex ``$``), so a comment
  on the last line without a trailing newline is a syntax error;
* paths run until a space, ``"`` or newline (tabs and ``#`` are part of them);
* ``\\r`` is whitespace but only ``\\n`` counts as a new line;
* anything else (``;``, quotes, ``@``, non-ASCII) is a one-character token that
  the grammar rejects.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

__all__ = ["KEYWORDS", "Kind", "Token", "c_atoi", "tokenize"]


class Kind(enum.Enum):
    """Token classes, one per token the C grammar distinguishes."""

    KEYWORD = "keyword"
    ON = "on"
    OFF = "off"
    NUMBER = "number"
    SIGNED = "signed number"
    IP = "IP address"
    PATH = "path"
    ALARM = "ALARM"
    FTFW = "FTFW"
    NOTRACK = "NOTRACK"
    STRING = "name"
    CHAR = "character"
    EOF = "end of file"


#: Every keyword of the 1.4.7 scanner, mapped to its canonical spelling
#: (aliases map to the name the grammar knows them by).
KEYWORDS: dict[str, str] = {
    k: k
    for k in (
        "UNIX IPv4_address IPv6_address IPv4_Destination_Address IPv6_Destination_Address "
        "IPv4_interface IPv6_interface Interface Multicast UDP TCP HashSize RefreshTime "
        "CacheTimeout CommitTimeout HashLimit Path Backlog Group Port LogFile Syslog LockFile "
        "General Sync Stats NetlinkBufferSize NetlinkBufferSizeMaxGrowth Mode ResendQueueSize "
        "Checksum ACKWindowSize for SYN_SENT SYN_RECV ESTABLISHED FIN_WAIT CLOSE_WAIT LAST_ACK "
        "TIME_WAIT CLOSE CLOSED LISTEN SndSocketBuffer RcvSocketBuffer Filter Protocol Address "
        "State Accept Ignore PurgeTimeout From Userspace Kernelspace EventIterationLimit Default "
        "PollSecs NetlinkOverrunResync Nice Scheduler Type Priority NetlinkEventsReliable "
        "DisableInternalCache DisableExternalCache Options TCPWindowTracking ExpectationSync "
        "ErrorQueueLength Helper QueueNum QueueLen Policy ExpectMax ExpectTimeout Systemd "
        "StartupResync Setup"
    ).split()
}
KEYWORDS.update(
    {
        "SocketBufferSize": "NetlinkBufferSize",
        "SocketBufferSizeMaxGrown": "NetlinkBufferSizeMaxGrowth",
        "SocketBufferSizeMaxGrowth": "NetlinkBufferSizeMaxGrowth",
    }
)


@dataclass(frozen=True, slots=True)
class Token:
    """One scanned token; ``text`` is the exact source text."""

    kind: Kind
    text: str
    line: int
    column: int
    offset: int
    value: object = None  # int for numbers, canonical keyword for KEYWORD
    note: str | None = None  # deprecation warning attached by the scanner

    def describe(self) -> str:
        if self.kind is Kind.EOF:
            return "end of file"
        shown = self.text if len(self.text) <= 40 else self.text[:37] + "..."
        return repr(shown) if self.text.isprintable() else ascii(shown)


def c_atoi(text: str) -> int:
    """Value glibc ``atoi`` gives: strtol clamped to a 64-bit long, truncated to int."""
    sign = -1 if text[:1] == "-" else 1
    digits = text.lstrip("+-").lstrip("0") or "0"
    n = sign * (int(digits) if len(digits) <= 20 else 2**64)  # huge: strtol saturates anyway
    n = max(-(2**63), min(2**63 - 1, n))
    n &= 0xFFFFFFFF
    return n - 2**32 if n >= 2**31 else n


# Rules after the keywords, in flex order.  Fixed-length / greedy-safe rules are
# plain regexes (Python's greedy match is the longest match for them).
_ON = re.compile(r"[o|O][n|N]|[y|Y][e|E][s|S]")
_OFF = re.compile(r"[o|O][f|F][f|F]|[n|N][o|O]")
_INT = re.compile(r"[0-9]+")
_SIGNED = re.compile(r"[-+][0-9]+")
_IP4 = re.compile(r"[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+(?:/[0-9]+)?")
_PATH = re.compile(r'/[^"\n ]*')
_ALARM = re.compile(r"[A|a][L|l][A|a][R|r][M|m]")
_PERSISTENT = re.compile(r"[P|p][E|e][R|r][S|s][I|i][S|s][T|t][E|e][N|n][T|T]")
_FTFW = re.compile(r"[F|f][T|t][F|f][W|w]")
_NACK = re.compile(r"[N|n][A|a][C|c][K|k]")
_NOTRACK = re.compile(r"[N|n][O|o][T|t][R|r][A|a][C|c][K|k]")
_STRING = re.compile(r"[a-zA-Z][a-zA-Z0-9.\-_]*")
_COMMENT = re.compile(r"#[^\n]*(?=\n)")
_WS = re.compile(r"[ \t]+")
# IPv6 core (without CIDR); alternation needs an explicit longest-match search.
_H = r"[0-9a-fA-F]{1,4}"
_IP6_FORM1 = re.compile(rf"(?:{_H}:?){{0,7}}::(?:{_H}:?){{0,7}}")
_IP6_FORM2 = re.compile(rf"(?:{_H}:){{0,7}}{_H}")
_IP6_RUN = re.compile(r"[0-9a-fA-F:]{1,72}")
_CIDR6 = re.compile(r"/[0-9]+")

_NOTE_PERSISTENT = "Now `persistent' mode is called `alarm'. Please, update your conntrackd.conf file."
_NOTE_NACK = "Now `nack' mode is called `ftfw'. Please, update your conntrackd.conf file."


def _len(rx: re.Pattern[str], text: str, pos: int) -> int:
    m = rx.match(text, pos)
    return m.end() - pos if m else 0


_HEX_CHARS = frozenset("0123456789abcdefABCDEF")


def _form1_end(text: str, pos: int, end: int) -> int:
    """End of the longest prefix of ``text[pos:end]`` matching ``_IP6_FORM1``, or ``pos``.

    ``(h:?){0,7}::(h:?){0,7}`` run as an NFA (state: phase, parts used, hex digits in the
    current part), in linear time.  The regex itself backtracks exponentially on a failing
    run such as ``abcdabcd::abcdabcd::...`` (4.8 s for 2 KiB, found while profiling the config
    fuzz target; tests/data/fuzz-crashers/config/slow-ip6-form1-backtracking.txt).
    """
    # X states (0, n, h): n parts so far (<= 7), h hex digits in the open part (0: none/closed)
    states = {(0, 0, 0)}
    best = pos
    for i in range(pos, end):
        c = text[i]
        nxt = set()
        if c in _HEX_CHARS:
            for phase, n, h in states:
                if phase < 0:
                    continue
                if 1 <= h <= 3:
                    nxt.add((phase, n, h + 1))
                if n < 7:
                    nxt.add((phase, n + 1, 1))
        else:  # ":"
            for st in states:
                if st == (-1, 0, 0):
                    nxt.add((1, 0, 0))  # "::" complete: Y starts
                    continue
                phase, n, h = st
                if h >= 1:
                    nxt.add((phase, n, 0))  # the optional colon of a part
                if phase == 0:
                    nxt.add((-1, 0, 0))  # first colon of "::" (X may end anywhere)
        if not nxt:
            break
        states = nxt
        if any(phase == 1 for phase, _n, _h in states):
            best = i + 1
    return best


def _ip6_len(text: str, pos: int) -> int:
    """Longest match of the flex ``ip6`` rule (core plus optional CIDR)."""
    run = _IP6_RUN.match(text, pos)
    if not run:
        return 0
    # A shorter core ends inside the hex/colon run, so only the longest core can take a CIDR.
    form2 = _IP6_FORM2.match(text, pos)  # greedy is the longest match for this unambiguous form
    core_end = form2.end() if form2 else pos
    if text.find("::", pos, run.end()) >= 0:
        core_end = max(core_end, _form1_end(text, pos, run.end()))
    if core_end == pos:
        return 0
    return core_end - pos + _len(_CIDR6, text, core_end)


# Keywords are word characters only, so the longest keyword that is a prefix of the text is the
# first alternative (longest first) that matches: one regex call instead of a loop over lengths.
_KEYWORD = re.compile("|".join(sorted(map(re.escape, KEYWORDS), key=len, reverse=True)))


def _keyword_len(text: str, pos: int) -> int:
    m = _KEYWORD.match(text, pos)
    return m.end() - pos if m else 0


# (kind, matcher) in flex rule order; index = priority on equal length.
_RULES: tuple[tuple[Kind | str, object], ...] = (
    (Kind.KEYWORD, _keyword_len),
    (Kind.ON, _ON),
    (Kind.OFF, _OFF),
    (Kind.NUMBER, _INT),
    (Kind.SIGNED, _SIGNED),
    (Kind.IP, _IP4),
    (Kind.IP, _ip6_len),
    (Kind.PATH, _PATH),
    (Kind.ALARM, _ALARM),
    ("persistent", _PERSISTENT),
    (Kind.FTFW, _FTFW),
    ("nack", _NACK),
    (Kind.NOTRACK, _NOTRACK),
    (Kind.STRING, _STRING),
    ("skip", _COMMENT),
    ("skip", _WS),
)

# The characters each rule can start with (the first character class of its regex; keywords:
# their first letters).  At a given position only the rules that can start with the character
# there are tried, in flex order; the others would match nothing.  This makes the scanner ~5x
# faster (it tried all 16 rules at every position) and changes no token: see
# tests/unit/test_fuzz_lexer.py (the table against the exhaustive scan).
_HEX = "0123456789abcdefABCDEF"
_DIGITS = "0123456789"
_LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_FIRST_CHARS: tuple[str, ...] = (
    "".join(sorted({k[0] for k in KEYWORDS})),  # KEYWORD
    "oO|yY",  # ON
    "oO|nN",  # OFF
    _DIGITS,  # NUMBER
    "-+",  # SIGNED
    _DIGITS,  # IP (IPv4)
    _HEX + ":",  # IP (IPv6)
    "/",  # PATH
    "A|a",  # ALARM
    "P|p",  # persistent
    "F|f",  # FTFW
    "N|n",  # nack
    "N|n",  # NOTRACK
    _LETTERS,  # STRING
    "#",  # comment
    " \t",  # whitespace
)


def _length_fn(matcher: object):
    if callable(matcher) and not isinstance(matcher, re.Pattern):
        return matcher
    rx = matcher
    assert isinstance(rx, re.Pattern)

    def length(text: str, pos: int) -> int:
        m = rx.match(text, pos)
        return m.end() - pos if m else 0

    return length


_BY_FIRST_CHAR: dict[str, tuple[tuple[Kind | str, object], ...]] = {}
for _ch in {c for chars in _FIRST_CHARS for c in chars}:
    _BY_FIRST_CHAR[_ch] = tuple((kind, _length_fn(matcher)) for (kind, matcher), chars
                                in zip(_RULES, _FIRST_CHARS, strict=True) if _ch in chars)


def tokenize(text: str) -> list[Token]:
    """Scan the whole text; always ends with one EOF token.  Never raises."""
    tokens: list[Token] = []
    pos, line, line_start, n = 0, 1, 0, len(text)
    while pos < n:
        ch = text[pos]
        if ch == "\n":
            pos += 1
            line += 1
            line_start = pos
            continue
        if ch == "\r":
            pos += 1
            continue
        best_len, best_kind = 0, None
        for kind, length_of in _BY_FIRST_CHAR.get(ch, ()):
            length = length_of(text, pos)
            if length > best_len:
                best_len, best_kind = length, kind
        if best_kind is None:  # flex "." rule: any single character except newline
            best_len, best_kind = 1, Kind.CHAR
        lexeme = text[pos : pos + best_len]
        col = pos - line_start + 1
        if best_kind != "skip":
            note = None
            value: object = None
            if best_kind == "persistent":
                best_kind, note = Kind.ALARM, _NOTE_PERSISTENT
            elif best_kind == "nack":
                best_kind, note = Kind.FTFW, _NOTE_NACK
            if best_kind in (Kind.NUMBER, Kind.SIGNED):
                value = c_atoi(lexeme)
            elif best_kind is Kind.KEYWORD:
                value = KEYWORDS[lexeme]
            assert isinstance(best_kind, Kind)
            tokens.append(Token(best_kind, lexeme, line, col, pos, value, note))
        pos += best_len
    tokens.append(Token(Kind.EOF, "", line, pos - line_start + 1, pos))
    return tokens
