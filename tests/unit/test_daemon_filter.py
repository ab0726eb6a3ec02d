"""Filter block semantics (C src/filter.c ct_filter_check) as pure functions."""

from __future__ import annotations

import socket

import pytest

from conntrack_tools.daemon.config import parse_config
from conntrack_tools.daemon.filter import compile_filter, sane
from conntrack_tools.flow import AF_INET, AF_INET6, Flow, TcpInfo, Tuple


def flow(src: str, dst: str, proto: int = 6, state: int | None = 3, reply_src: str | None = None) -> Flow:
    fam = AF_INET6 if ":" in src else AF_INET
    a = socket.inet_pton(fam, src)
    b = socket.inet_pton(fam, dst)
    orig = Tuple(fam, a, b, proto, 1, 2)
    reply = orig.reversed()
    if reply_src:
        reply.src = socket.inet_pton(fam, reply_src)
    return Flow(fam, orig, reply, tcp=TcpInfo(state=state) if proto == 6 and state is not None else None)


def compiled(body: str):
    cfg = parse_config(f"General {{\n Filter {{\n{body}\n }}\n}}\nStats {{\n}}\n", "t.conf")
    return compile_filter(cfg.general.filter)


def test_no_filter_accepts_everything() -> None:
    assert compile_filter(None).accepts(flow("1.1.1.1", "2.2.2.2", 17))


def test_protocol_accept_and_ignore() -> None:
    acc = compiled("Protocol Accept {\n TCP\n }")
    ign = compiled("Protocol Ignore {\n UDP ICMP\n }")
    assert acc.accepts(flow("1.1.1.1", "2.2.2.2", 6)) and not acc.accepts(flow("1.1.1.1", "2.2.2.2", 17))
    assert ign.accepts(flow("1.1.1.1", "2.2.2.2", 6)) and not ign.accepts(flow("1.1.1.1", "2.2.2.2", 1))


@pytest.mark.parametrize(
    ("src", "dst", "reply_src", "ignored"),
    [
        ("127.0.0.1", "127.0.0.1", None, True),
        ("10.0.0.5", "8.8.8.8", None, False),
        ("8.8.8.8", "192.168.1.7", None, True),  # dst is the reply source: matches 192.168.0.0/16
        ("8.8.8.8", "1.1.1.1", "192.168.3.3", True),  # NAT: the reply source counts, not the orig dst
        ("::1", "::1", None, True),
        ("2001:db8::1", "2001:db8::2", None, False),
    ],
)
def test_address_ignore_checks_both_endpoints(src, dst, reply_src, ignored) -> None:
    f = compiled("Address Ignore {\n IPv4_address 127.0.0.1\n IPv4_address 192.168.0.0/16\n IPv6_address ::1\n }")
    assert f.accepts(flow(src, dst, reply_src=reply_src)) is not ignored


def test_address_accept_drops_other_family() -> None:
    f = compiled("Address Accept {\n IPv4_address 10.0.0.0/8\n }")
    assert f.accepts(flow("10.1.1.1", "8.8.8.8"))
    assert not f.accepts(flow("11.1.1.1", "8.8.8.8"))
    assert not f.accepts(flow("2001:db8::1", "2001:db8::2"))


def test_state_filter_only_for_tcp() -> None:
    f = compiled("State Accept {\n ESTABLISHED CLOSED TIME_WAIT CLOSE_WAIT for TCP\n }")
    assert f.accepts(flow("1.1.1.1", "2.2.2.2", state=3))
    assert not f.accepts(flow("1.1.1.1", "2.2.2.2", state=1))  # SYN_SENT
    assert f.accepts(flow("1.1.1.1", "2.2.2.2", state=8))  # CLOSED == CLOSE
    assert f.accepts(flow("1.1.1.1", "2.2.2.2", proto=17))
    assert f.accepts(flow("1.1.1.1", "2.2.2.2", state=None))
    ign = compiled("State Ignore {\n SYN_SENT for TCP\n }")
    assert not ign.accepts(flow("1.1.1.1", "2.2.2.2", state=1)) and ign.accepts(flow("1.1.1.1", "2.2.2.2"))


def test_rules_combine_with_and() -> None:
    f = compiled("Protocol Accept {\n TCP UDP\n }\n Address Ignore {\n IPv4_address 127.0.0.1\n }")
    assert f.accepts(flow("1.1.1.1", "2.2.2.2", 17))
    assert not f.accepts(flow("127.0.0.1", "2.2.2.2", 17))
    assert not f.accepts(flow("1.1.1.1", "2.2.2.2", 1))


def test_from_kernelspace_flag() -> None:
    cfg = parse_config("General {\n Filter From Kernelspace {\n Protocol Accept {\n TCP\n }\n }\n}\n", "t")
    assert compile_filter(cfg.general.filter).from_kernelspace


def test_sanity_needs_both_source_addresses() -> None:
    f = flow("1.1.1.1", "2.2.2.2")
    assert sane(f)
    f.reply = None
    assert not sane(f)
    assert not sane(Flow())
