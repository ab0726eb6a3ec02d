"""Parser: reference configs, defaults, round trips, warnings, the bad corpus."""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

import pytest

from conntrack_tools.daemon.config import (
    ConfigError,
    SyncMode,
    Transport,
    check_config,
    load_config,
    parse_config,
)
from conntrack_tools.daemon.config.model import DEFAULT_LOCKFILE, DEFAULT_LOGFILE, DEFAULT_STATS_LOGFILE
from tests.conftest import REFERENCE

REF = REFERENCE
BAD = Path(__file__).resolve().parents[1] / "data" / "configs" / "bad"


def reference_configs() -> list[Path]:
    found = [
        *(REF / "upstream-examples" / "doc").rglob("*.conf"),
        *(REF / "upstream-tests" / "conntrackd").glob("*.conf"),
        *(REF / "c-tools-behaviour" / "t3" / "configs").glob("*.conf"),
    ]
    # keepalived.conf files live next to them but are not conntrackd configs
    return sorted(p for p in found if "keepalived" not in p.name)


REFS = reference_configs()


@pytest.mark.skipif(not REFS, reason="shared reference directory not available (set CT_SHARED)")
@pytest.mark.parametrize("path", REFS, ids=lambda p: str(p.relative_to(REF)))
def test_reference_config_parses_without_errors(path: Path) -> None:
    config = load_config(path)
    assert [f for f in check_config(config) if f.severity == "error"] == []


def test_reference_corpus_is_complete() -> None:
    if not REFS:
        pytest.skip("no shared dir")
    assert len(REFS) >= 11


BAD_FILES = sorted(BAD.glob("*.conf"))


def test_bad_corpus_size() -> None:
    assert len(BAD_FILES) >= 50


@pytest.mark.parametrize("path", BAD_FILES, ids=lambda p: p.stem)
def test_bad_config_fails_at_expected_line(path: Path) -> None:
    text = path.read_text()
    line = int(re.search(r"expect-line: (\d+)", text)[1])
    fragment = re.search(r"expect-error: (.*)", text)[1]
    try:
        config = load_config(path)
    except ConfigError as exc:
        assert (exc.line, fragment in exc.message) == (line, True), str(exc)
        assert exc.file == str(path) and exc.column >= 1
        assert str(exc).startswith(f"{path}:{line}:{exc.column}: ")
        return
    errors = [f for f in check_config(config) if f.severity == "error"]
    assert any(f.line == line and fragment in f.message for f in errors), errors


MINIMAL = "General {\n UNIX { Path /run/ct.ctl }\n}\nSync {\n Mode FTFW { }\n}\n"


def test_defaults_match_c() -> None:
    c = parse_config("Sync { }\n")
    g, s = c.general, c.sync
    assert (g.hashsize, g.hashlimit, g.event_iteration_limit, g.netlink_overrun_resync) == (65536, 262144, 100, 30)
    assert g.lockfile == DEFAULT_LOCKFILE and not g.lockfile_set
    assert g.logfile is None and g.syslog_facility is None and g.unix_path is None and g.systemd
    assert g.scheduler.effective == ("RR", 99) and g.poll_secs is None and g.filter is None
    assert s is not None and s.mode is SyncMode.FTFW and s.modes == ()
    assert (s.resend_queue_size, s.ack_window_size, s.refresh_time, s.cache_timeout, s.purge_timeout) == (
        131072,
        300,
        60,
        180,
        60,
    )
    assert s.commit_timeout is None and s.error_queue_length == 128 and not s.tcp_window_tracking
    assert c.mode == "sync" and parse_config("").mode == "stats"


def test_zero_means_default_like_init_config() -> None:
    c = parse_config(
        "General { HashSize 0 NetlinkOverrunResync 0 EventIterationLimit 0 }\nSync { Mode FTFW { ACKWindowSize 0 } }\n"
    )
    assert (c.general.hashsize, c.general.netlink_overrun_resync, c.general.event_iteration_limit) == (65536, 30, 100)
    assert c.sync.ack_window_size == 300


def test_round_trip_general_values() -> None:
    c = parse_config(
        "General {\n Systemd off\n Nice -5\n HashSize 8192\n HashLimit 65535\n LogFile /tmp/ct.log\n"
        " Syslog local3\n LockFile /run/ct.lock\n UNIX { Path /run/ct.ctl Backlog 20 }\n"
        " SocketBufferSize 262142\n SocketBufferSizeMaxGrown 655355\n NetlinkOverrunResync off\n"
        " NetlinkEventsReliable on\n PollSecs 15\n EventIterationLimit 50\n Scheduler { Type fifo Priority 9 }\n"
        " Filter From Kernelspace {\n  Protocol Ignore { TCP udp IPv6-ICMP }\n"
        "  Address Accept { IPv4_address 10.1.2.3/8 IPv4_address 127.0.0.1 IPv6_address ::1 IPv6_address fe80::/10 }\n"
        "  State Accept { ESTABLISHED CLOSED for TCP TIME_WAIT for TCP }\n }\n}\nStats { LogFile on Syslog on }\n"
    )
    g = c.general
    assert not g.systemd and g.hashsize == 8192 and g.hashlimit == 65535 and g.logfile == "/tmp/ct.log"
    assert g.syslog_facility == "local3" and g.lockfile == "/run/ct.lock" and g.unix_path == "/run/ct.ctl"
    assert (g.netlink_buffer_size, g.netlink_buffer_size_max_growth) == (262142, 655355)
    assert g.netlink_overrun_resync == -1 and g.netlink_events_reliable and g.poll_secs == 15
    assert g.scheduler.effective == ("FIFO", 9)
    f = g.filter
    assert f.from_kernelspace and f.protocol.policy == "ignore" and f.protocol.protocols == (6, 17, 58)
    assert f.address.policy == "accept" and f.address.networks == tuple(
        ipaddress.ip_network(n) for n in ("10.0.0.0/8", "127.0.0.1/32", "::1/128", "fe80::/10")
    )
    assert f.state.tcp_states == ("ESTABLISHED", "CLOSE", "TIME_WAIT")
    assert c.stats.logfile == DEFAULT_STATS_LOGFILE and c.stats.syslog_facility == "daemon"
    assert {w.code for w in c.warnings} == {"deprecated"}  # Nice and Backlog


def test_round_trip_sync_values() -> None:
    c = parse_config(
        "Sync {\n Mode NOTRACK { DisableInternalCache on DisableExternalCache yes StartupResync on"
        " CommitTimeout 180 PurgeTimeout 5 }\n"
        " TCP { IPv6_address fe80::1 IPv6_Destination_Address fe80::2 Port 3781 Interface eth2"
        " SndSocketBuffer 1249280 RcvSocketBuffer 1249280 Checksum off ErrorQueueLength 64 }\n"
        " TCP Default { IPv4_address 10.0.0.1 IPv4_Destination_Address 10.0.0.2 Port 3782 Interface eth3 }\n"
        " Options { TCPWindowTracking on ExpectationSync { ftp q.931 h.245 sip ftp } }\n}\n"
    )
    s = c.sync
    assert s.mode is SyncMode.NOTRACK and s.disable_internal_cache and s.disable_external_cache and s.startup_resync
    assert s.commit_timeout == 180 and s.effective_commit_timeout is None and s.purge_timeout == 5
    a, b = s.channels
    assert a.transport is Transport.TCP and not a.default and a.ipv6_address == "fe80::1"
    assert a.ipv6_destination == "fe80::2" and a.port == 3781 and a.interface == "eth2" and not a.checksum
    assert (a.sndbuf, a.rcvbuf, a.error_queue_length, s.error_queue_length) == (1249280, 1249280, 64, 64)
    assert b.default and b.checksum and s.default_channel == 1 and (b.line, b.column) == (4, 2)
    assert s.tcp_window_tracking and s.expectation_sync and s.expectation_helpers == ("ftp", "q.931", "h.245", "sip")


def test_multicast_and_alarm() -> None:
    c = parse_config(
        "Sync { Mode persistenT { RefreshTime 15 CacheTimeout 180 }\n"
        " Multicast Default { IPv4_address 225.0.0.50 Group 3780 IPv4_interface 192.168.100.100"
        " IPv6_interface ::1 Interface eth2 Checksum on } }\n"
    )
    ch = c.sync.channels[0]
    assert c.sync.mode is SyncMode.ALARM and c.sync.refresh_time == 15
    assert (ch.ipv4_address, ch.port, ch.ipv4_interface, ch.default) == ("225.0.0.50", 3780, "192.168.100.100", True)
    assert [w.code for w in c.warnings] == ["deprecated", "deprecated"]


def test_c_warnings_drop_values() -> None:
    c = parse_config(
        "General { Syslog foo LogFile on LogFile off Filter { Protocol Accept { Foo TCP }"
        " Address Ignore { IPv4_address 1.2.3.4/33 IPv4_address 999.1.1.1 IPv4_address 1.1.1.1"
        " IPv4_address 1.1.1.1 } } }\nSync { UDP { IPv4_address 300.0.0.1 Interface x } }\n"
    )
    assert c.general.syslog_facility is None and c.general.logfile == DEFAULT_LOGFILE
    assert c.general.filter.protocol.protocols == (6,)
    assert c.general.filter.address.networks == (ipaddress.ip_network("1.1.1.1/32"),)
    assert c.sync.channels[0].ipv4_address is None
    assert len(c.warnings) == 7 and all(w.line == 1 or w.line == 2 for w in c.warnings)


def test_octal_ipv4_like_inet_aton() -> None:
    c = parse_config("Sync { UDP { IPv4_address 010.0.0.1 } }\n")
    assert c.sync.channels[0].ipv4_address == "8.0.0.1"


def test_relative_logfile_extension_warns() -> None:
    c = parse_config("General { LogFile t3/n1/conntrackd.log HashSize 5 }\n")
    assert c.general.logfile == "t3/n1/conntrackd.log" and c.general.hashsize == 5
    assert [w.code for w in c.warnings] == ["c-incompatible"]


def test_overflowing_number_wraps_like_atoi() -> None:
    c = parse_config("General { HashSize 99999999999 }\n")
    assert c.general.hashsize == 1215752191 and c.warnings[0].code == "overflow"


def test_helper_section_parsed_and_marked_unsupported() -> None:
    c = parse_config(
        "Helper {\n Setup yes\n QueueNum 9\n Type rpc inet udp { QueueNum 2 QueueLen 10240"
        " Policy rpc { ExpectMax 1 ExpectTimeout 300 } }\n Type ftp inet6 tcp { }\n}\n"
    )
    h = c.helper
    assert h.setup and not h.supported and len(h.types) == 2
    rpc, ftp = h.types
    assert (rpc.name, rpc.l3proto, rpc.l4proto, rpc.queue_len) == ("rpc", "inet", "udp", 10240)
    assert rpc.queue_num == 9  # C's symbol stack: the oldest pending value wins
    assert rpc.policies[0].expect_timeout == 300 and ftp.queue_num is None
    assert any(f.code == "unsupported" for f in check_config(c))


def test_repeated_sections_merge() -> None:
    c = parse_config(
        "General { HashSize 1 }\nGeneral { HashLimit 2 }\nSync { UDP { Port 1 } }\n"
        "Sync { UDP { Port 2 } Mode ALARM { } Mode FTFW { } }\n"
    )
    assert (c.general.hashsize, c.general.hashlimit) == (1, 2)
    assert [ch.port for ch in c.sync.channels] == [1, 2] and c.sync.mode is SyncMode.FTFW


def test_error_message_format() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config("Sync {\n  UDP {\n    Checksum maybe\n  }\n}\n", "conntrackd.conf")
    assert str(err.value) == "conntrackd.conf:3:14: expected 'on' or 'off' after Checksum, got 'maybe'"


def test_load_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="can't open config file"):
        load_config(tmp_path / "nope.conf")
