"""Scanner quirks of C 1.4.7's flex lexer that the Python lexer reproduces."""

import pytest

from conntrack_tools.daemon.config.lexer import Kind, c_atoi, tokenize


def kinds(text: str) -> list[Kind]:
    return [t.kind for t in tokenize(text)[:-1]]


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("on", Kind.ON),
        ("YES", Kind.ON),
        ("||", Kind.ON),
        ("Off", Kind.OFF),
        ("no", Kind.OFF),
        ("3780", Kind.NUMBER),
        ("-5", Kind.SIGNED),
        ("+5", Kind.SIGNED),
        ("10.0.0.1", Kind.IP),
        ("10.0.0.0/24", Kind.IP),
        ("::1", Kind.IP),
        ("fe80::1/64", Kind.IP),
        ("dead", Kind.IP),
        ("cafe", Kind.IP),
        ("eth0", Kind.STRING),
        ("IPv6-ICMP", Kind.STRING),
        ("/var/run/x.ctl", Kind.PATH),
        ("alarm", Kind.ALARM),
        ("FTFW", Kind.FTFW),
        ("NoTrack", Kind.NOTRACK),
        ("persistenT", Kind.ALARM),
        ("persistent", Kind.STRING),
        ("NACK", Kind.FTFW),
        ("Types", Kind.STRING),
        ("Type", Kind.KEYWORD),
        ("CLOSED", Kind.KEYWORD),
        (";", Kind.CHAR),
    ],
)
def test_single_token(text: str, kind: Kind) -> None:
    assert kinds(text) == [kind]


def test_aliases_map_to_canonical_keyword() -> None:
    tok = tokenize("SocketBufferSizeMaxGrown")[0]
    assert tok.kind is Kind.KEYWORD and tok.value == "NetlinkBufferSizeMaxGrowth"


def test_deprecated_mode_alias_carries_note() -> None:
    assert "alarm" in (tokenize("persistenT")[0].note or "")


def test_comment_needs_trailing_newline() -> None:
    assert kinds("# c\n") == []
    assert kinds("# c")[0] is Kind.CHAR


def test_path_keeps_tabs_and_hash() -> None:
    tok = tokenize("/a/b\t#x y\n")[0]
    assert tok.text == "/a/b\t#x"


def test_lines_count_lf_only() -> None:
    toks = tokenize("a\r\nb\rc\n  d")
    assert [(t.text, t.line) for t in toks[:-1]] == [("a", 1), ("b", 2), ("c", 2), ("d", 3)]
    assert toks[-1].line == 3 and toks[3].column == 3


@pytest.mark.parametrize(
    ("text", "value"),
    [("7", 7), ("2147483648", -2147483648), ("99999999999", 1215752191), ("99999999999999999999999", -1)],
)
def test_c_atoi(text: str, value: int) -> None:
    assert c_atoi(text) == value


def test_c_atoi_huge_literals_saturate_like_strtol() -> None:
    assert c_atoi("0" * 5000 + "7") == 7
    assert c_atoi("9" * 5000) == -1


def test_ip6_longest_match() -> None:
    assert [t.text for t in tokenize("fe80::1/64 a::b::c")[:2]] == ["fe80::1/64", "a::b:"]
