"""The config lexer's speed-ups (found by profiling the config fuzz target) change no token.

* rules are tried only when they can start with the character at hand (``_BY_FIRST_CHAR``)
  instead of all 16 at every position: compared with the exhaustive scan (every rule of
  ``_RULES`` at every position, flex order, longest match) on seeds, the test configs and
  random token soup;
* the IPv6 ``ip6_form1`` longest match is a linear NFA (``_form1_end``) instead of trying
  the backtracking regex at every end of the hex/colon run: compared with the regex on
  short runs, and timed on the run that took the regex 4.8 s.
"""

from __future__ import annotations

import itertools
import random
import re
from pathlib import Path

from conntrack_tools.daemon.config import lexer
from conntrack_tools.daemon.config.lexer import KEYWORDS, Kind, Token, c_atoi, tokenize
from tests.unit.steps import count_steps, hang_guard

REPO = Path(__file__).resolve().parents[2]


def exhaustive_tokenize(text: str) -> list[Token]:
    """The scanner before the first-character table: every rule at every position."""
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
        for kind, matcher in lexer._RULES:
            if isinstance(matcher, re.Pattern):
                m = matcher.match(text, pos)
                length = m.end() - pos if m else 0
            else:
                length = matcher(text, pos)
            if length > best_len:
                best_len, best_kind = length, kind
        if best_kind is None:
            best_len, best_kind = 1, Kind.CHAR
        lexeme = text[pos:pos + best_len]
        if best_kind != "skip":
            note, value = None, None
            if best_kind == "persistent":
                best_kind, note = Kind.ALARM, lexer._NOTE_PERSISTENT
            elif best_kind == "nack":
                best_kind, note = Kind.FTFW, lexer._NOTE_NACK
            if best_kind in (Kind.NUMBER, Kind.SIGNED):
                value = c_atoi(lexeme)
            elif best_kind is Kind.KEYWORD:
                value = KEYWORDS[lexeme]
            tokens.append(Token(best_kind, lexeme, line, pos - line_start + 1, pos, value, note))
        pos += best_len
    tokens.append(Token(Kind.EOF, "", line, pos - line_start + 1, pos))
    return tokens


def _texts() -> list[str]:
    out = [p.read_bytes().decode("utf-8", "surrogateescape")
           for p in sorted((REPO / "tests" / "data").rglob("*.conf"))]
    out += [p.read_bytes().decode("utf-8", "surrogateescape")
            for p in sorted((REPO / "tests" / "data" / "fuzz-crashers" / "config").glob("*"))]
    rng = random.Random(7)
    alphabet = "aAoOnNyY|pPfFtTwWlLrRmMkKcCeEsSiI0123456789:./-+#_ \t\r\n\"{};@é"
    out += ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40))) for _ in range(6000)]
    pieces = ["a", "1", "f", ":", "::", "abcd", "12345", "/64", " ", "/", "g", "1.2.3.4", "-5", "ON", "nack"]
    out += ["".join(rng.choice(pieces) for _ in range(rng.randint(0, 14))) for _ in range(6000)]
    kws = list(KEYWORDS)
    out += [" ".join(rng.choice(kws)[:rng.randint(1, 20)] + rng.choice(["", "x", "_1", "::", ".", "{"])
                     for _ in range(5)) for _ in range(2000)]
    return out


def test_first_char_table_matches_exhaustive_scan() -> None:
    texts = _texts()
    assert len(texts) > 14000
    for t in texts:
        assert tokenize(t) == exhaustive_tokenize(t), repr(t)


def test_every_rule_start_is_in_the_table() -> None:
    """A rule matching at a character must be listed for that character (checked per ASCII char)."""
    tails = ["", "a", "1", ":", "::1", "abcd", "/24", "on", "N", "ARM", ".2.3.4", "bc-d", "\n"]
    for code in range(1, 128):
        ch = chr(code)
        for (kind, matcher), chars in zip(lexer._RULES, lexer._FIRST_CHARS, strict=True):
            for tail in tails:
                text = ch + tail
                if isinstance(matcher, re.Pattern):
                    hit = matcher.match(text, 0) is not None and matcher.match(text, 0).end() > 0
                else:
                    hit = matcher(text, 0) > 0
                assert not hit or ch in chars, (kind, text)


def _form1_regex_end(t: str) -> int:
    for e in range(len(t), 0, -1):
        if lexer._IP6_FORM1.fullmatch(t, 0, e):
            return e
    return 0


def test_form1_nfa_matches_the_regex() -> None:
    n = 0
    for length in range(1, 10):
        for tup in itertools.product("a:", repeat=length):
            t = "".join(tup)
            assert lexer._form1_end(t, 0, len(t)) == _form1_regex_end(t), t
            n += 1
    rng = random.Random(11)
    for _ in range(4000):  # the regex reference backtracks: keep the runs short
        t = "".join(rng.choice(["a", "1", "f", ":", "::", "abcd", "12345"]) for _ in range(rng.randint(1, 8)))[:24]
        assert lexer._form1_end(t, 0, len(t)) == _form1_regex_end(t), t
        n += 1
    assert n > 4000


def test_form1_backtracking_input_is_linear() -> None:
    """The regex search took 4.8 s on 2 KiB of this: the scan must stay linear in the input (lines executed)."""
    half, full = (("abcdabcd::" * 205)[:n] for n in (1024, 2048))
    with hang_guard(20):  # the old regex backtracked inside `re`, where no line is counted
        _, n_half = count_steps(tokenize, half)
        toks, n_full = count_steps(tokenize, full)
    assert n_full < 2.2 * n_half, (n_half, n_full)
    assert n_full < 200 * len(full), n_full
    assert toks[-1].kind is Kind.EOF
