"""conntrackd command line and control-protocol codec against C 1.4.7 (src/main.c, t3/cmds)."""

from __future__ import annotations

import struct

import pytest

from conntrack_tools.daemon.control import (
    JSON_FLAG,
    USAGE,
    Action,
    decode_request,
    encode_request,
    parse_argv,
    split_json,
)


def test_action_codes_match_conntrackd_h() -> None:
    assert (Action.CT_FLUSH_MASTER, Action.CT_RESYNC_MASTER, Action.CT_DUMP_INTERNAL, Action.KILL) == (0, 1, 16, 20)
    assert (Action.STATS, Action.STATS_RUNTIME, Action.CT_FLUSH_INT_CACHE, Action.EXP_DUMP_EXT_XML) == (21, 30, 33, 48)
    assert (Action.ALL_FLUSH_MASTER, Action.ALL_RESYNC_MASTER, Action.ALL_FLUSH_CACHE, Action.ALL_COMMIT) == (
        43, 44, 45, 46)


def test_request_is_one_native_int() -> None:
    assert encode_request(21) == struct.pack("=i", 21)
    assert decode_request(encode_request(45)) == 45
    assert decode_request(b"\x01\x00") is None
    assert split_json(Action.STATS | JSON_FLAG) == (Action.STATS, True)
    assert split_json(Action.STATS) == (Action.STATS, False)


CASES = [
    (["-i"], Action.CT_DUMP_INTERNAL),
    (["-i", "ct"], Action.CT_DUMP_INTERNAL),
    (["-i", "exp"], Action.EXP_DUMP_INTERNAL),
    (["-i", "-x"], Action.CT_DUMP_INT_XML),
    (["-e", "-x"], Action.CT_DUMP_EXT_XML),
    (["-e", "expect", "-x"], Action.EXP_DUMP_EXT_XML),
    (["-c"], Action.ALL_COMMIT),
    (["-c", "ct"], Action.CT_COMMIT),
    (["-c", "e"], Action.EXP_COMMIT),
    (["-f"], Action.ALL_FLUSH_CACHE),
    (["-f", "int"], Action.CT_FLUSH_INT_CACHE),
    (["-f", "external"], Action.CT_FLUSH_EXT_CACHE),
    (["-F"], Action.ALL_FLUSH_MASTER),
    (["-F", "ct"], Action.CT_FLUSH_MASTER),
    (["-R"], Action.ALL_RESYNC_MASTER),
    (["-R", "expect"], Action.EXP_RESYNC_MASTER),
    (["-k"], Action.KILL),
    (["-n"], Action.REQUEST_DUMP),
    (["-B"], Action.SEND_BULK),
    (["-t"], Action.RESET_TIMERS),
    (["-s"], Action.STATS),
    (["-s", "net"], Action.STATS_NETWORK),
    (["-s", "c"], Action.STATS_CACHE),  # prefix: "cache" is tested before "ct"
    (["-s", "ct"], Action.STATS),
    (["-s", "runtime"], Action.STATS_RUNTIME),
    (["-s", "link"], Action.STATS_LINK),
    (["-s", "rsqueue"], Action.STATS_RSQUEUE),
    (["-s", "process"], Action.STATS_PROCESS),
    (["-s", "queue"], Action.STATS_QUEUE),
    (["-s", "expect"], Action.EXP_STATS),
    (["-C", "/x.conf", "-s", "cache"], Action.STATS_CACHE),
    (["-sfoo"], Action.STATS),  # only argv[i][1] counts
]


@pytest.mark.parametrize(("argv", "action"), CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_client_actions(argv: list[str], action: int) -> None:
    inv = parse_argv(argv)
    assert inv.exit_code is None and inv.mode == "request" and inv.action == action, inv


def test_config_path_and_default() -> None:
    assert parse_argv(["-C", "/tmp/a.conf"]).config == "/tmp/a.conf"
    assert parse_argv([]).config == "/etc/conntrackd/conntrackd.conf"
    assert parse_argv([]).mode == "console"
    assert parse_argv(["-d"]).mode == "daemon"


def test_multicast_alias_warns() -> None:
    inv = parse_argv(["-s", "multicast"])
    assert inv.action == Action.STATS_LINK
    assert inv.output == [("log", "warning", "use `link' instead of `multicast' as parameter.")]


def test_unknown_option_prints_usage_and_exits_0() -> None:  # t3/cmds/bad_option
    inv = parse_argv(["-C", "x", "-Z"], prog="conntrackd")
    assert inv.exit_code == 0
    assert inv.output == [("stdout", USAGE("conntrackd")), ("log", "ERROR", "Unknown option: -Z")]


def test_long_help_is_unknown_option_like_c() -> None:
    inv = parse_argv(["--help"])
    assert inv.exit_code == 0 and inv.output[-1] == ("log", "ERROR", "Unknown option: --help")


def test_bad_c_argument_becomes_unknown_option() -> None:  # t3/cmds/bad_c_arg
    inv = parse_argv(["-c", "foo"])
    assert inv.exit_code == 0 and inv.output[-1] == ("log", "ERROR", "Unknown option: foo")


def test_bad_s_argument() -> None:  # t3/cmds/bad_s_arg
    inv = parse_argv(["-s", "foo"])
    assert inv.exit_code == 1 and inv.output == [("log", "ERROR", "unknown parameter `foo' for option `-s'")]


def test_bad_f_argument() -> None:
    inv = parse_argv(["-f", "foo"])
    assert inv.exit_code == 1 and inv.output == [("log", "ERROR", "unknown parameter `foo' for option `-f'")]


@pytest.mark.parametrize("argv", [["-x"], ["-s", "-x"], ["-d", "-s"], ["-s", "-d"]])
def test_invalid_parameters(argv: list[str]) -> None:
    inv = parse_argv(argv, prog="conntrackd")
    assert inv.exit_code == 1
    assert inv.output == [("stdout", USAGE("conntrackd")), ("log", "ERROR", "Invalid parameters")]


def test_missing_config_filename_continues() -> None:
    inv = parse_argv(["-s", "-C"], prog="conntrackd")
    assert inv.exit_code is None and inv.action == Action.STATS
    assert inv.output[-1] == ("log", "ERROR", "Missing config filename")


def test_version_and_help() -> None:
    assert parse_argv(["-v"]).output[0][1].startswith("Connection tracking userspace daemon v1.4.7. Licensed")
    inv = parse_argv(["-h"], prog="conntrackd")
    assert inv.exit_code == 0 and inv.output == [("stdout", USAGE("conntrackd"))]


def test_beyond_c_options() -> None:
    inv = parse_argv(["--config-test", "-C", "/a.conf"])
    assert inv.mode == "config-test" and inv.config == "/a.conf" and inv.exit_code is None
    assert parse_argv(["-s", "cache", "-o", "json"]).json
    assert parse_argv(["--json", "-s"]).json
    inv = parse_argv(["--metrics-listen", "127.0.0.1:9", "--metrics-textfile", "/m.prom"])
    assert (inv.metrics_listen, inv.metrics_textfile, inv.mode) == ("127.0.0.1:9", "/m.prom", "console")
