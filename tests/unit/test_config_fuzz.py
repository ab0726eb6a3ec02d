"""Property tests: no input, however broken, escapes as anything but ConfigError."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conntrack_tools.daemon.config import ConfigError, check_config, parse_config
from conntrack_tools.daemon.config.lexer import KEYWORDS

ATOMS = [
    *KEYWORDS,
    "{",
    "}",
    "on",
    "off",
    "yes",
    "No",
    "||",
    "3780",
    "0",
    "-5",
    "+7",
    "99999999999",
    "10.0.0.1",
    "10.0.0.0/24",
    "999.1.1.1",
    "010.0.0.1/40",
    "::1",
    "fe80::/200",
    "dead",
    "/tmp/x",
    "/",
    "FTFW",
    "nack",
    "persistenT",
    "alarm",
    "NOTRACK",
    "eth0",
    "ftp",
    "inet",
    "inet6",
    "tcp",
    "udp",
    "rpc",
    "local0",
    "daemon",
    "RR",
    "fifo",
    "#c\n",
    "\n",
    "\r",
    "\t",
    ";",
    '"',
    "t3/x.log",
    "\x00",
    "é",
]

SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _run(text: str) -> None:
    try:
        config = parse_config(text, "fuzz.conf")
    except ConfigError as exc:
        assert exc.file == "fuzz.conf" and exc.line >= 0 and exc.column >= 0 and exc.message
        return
    for finding in check_config(config):
        assert finding.severity in ("error", "warning")


@SETTINGS
@given(st.text(max_size=400))
def test_arbitrary_text(text: str) -> None:
    _run(text)


@SETTINGS
@given(st.lists(st.sampled_from(ATOMS), max_size=80), st.sampled_from([" ", "\n", "\t"]))
def test_token_soup(atoms: list[str], sep: str) -> None:
    _run(sep.join(atoms))


@SETTINGS
@given(st.lists(st.sampled_from(ATOMS), max_size=40))
def test_token_soup_inside_sections(atoms: list[str]) -> None:
    body = " ".join(atoms)
    for section in ("General", "Sync", "Stats", "Helper"):
        _run(f"{section} {{ {body} }}\n")
    _run(f"Sync {{ UDP {{ {body} }} Mode FTFW {{ {body} }} }}\nHelper {{ Type ftp inet tcp {{ {body} }} }}\n")


def test_deep_nesting_is_a_config_error() -> None:
    text = "Helper { " + "Type ftp inet tcp { " * 5000 + "} " * 5001
    try:
        parse_config(text)
    except ConfigError:
        pass
