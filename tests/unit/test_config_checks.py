"""check_config (--config-test): cross-field rules and injectable host facts."""

from __future__ import annotations

from conntrack_tools.daemon.config import HostFacts, check_config, parse_config

BASE = "General {\n LockFile /run/ct.lock\n UNIX { Path /run/ct.ctl }\n}\n"
UDP = (
    "Sync {{\n Mode FTFW {{ }}\n UDP {{\n  IPv4_address 10.0.0.1\n  IPv4_Destination_Address 10.0.0.2\n"
    "  Port 3780\n  Interface eth1\n{extra} }}\n}}\n"
)


def findings(text: str, host: HostFacts | None = None) -> list[tuple[str, str, int]]:
    return [(f.severity, f.code, f.line) for f in check_config(parse_config(BASE + text), host)]


def test_clean_udp_config_has_no_findings() -> None:
    assert findings(UDP.format(extra="")) == []


def test_host_facts_only_warn() -> None:
    host = HostFacts(has_interface=lambda n: n == "eth0", has_address=lambda a: False)
    got = findings(UDP.format(extra=""), host)
    assert {(s, c) for s, c, _ in got} == {("warning", "host")}
    assert sorted(line for *_, line in got) == [8, 11]


def test_unknown_host_facts_are_silent() -> None:
    assert findings(UDP.format(extra=""), HostFacts()) == []


def test_mode_rules() -> None:
    assert ("error", "mode", 6) in findings("Sync { }\nStats { }\n")
    assert ("warning", "mode", 0) in findings("")
    text = UDP.format(extra="").replace("Mode FTFW { }", "Mode NOTRACK { }\n Mode ALARM { }")
    assert any(c == "mode" and s == "warning" for s, c, _ in findings(text))


def test_channel_rules() -> None:
    dual = UDP.format(extra="").replace(" UDP {", " UDP Default {") + UDP.format(extra="").replace(
        " UDP {", " UDP Default {"
    ).replace("3780", "3781")
    assert ("warning", "channel", 16) in findings(dual)  # two Default links: the last is used
    mixed = UDP.format(extra="  IPv6_Destination_Address fe80::2\n")
    assert ("error", "family", 7) in findings(mixed)
    assert ("error", "range", 10) in findings(UDP.format(extra="").replace("3780", "70000"))


def test_general_rules() -> None:
    got = findings("General { NetlinkBufferSize 100 Scheduler { Priority 5 } }\nStats { }\n")
    assert {("warning", "netlink"), ("warning", "scheduler")} <= {(s, c) for s, c, _ in got}
    bare = check_config(parse_config("Stats { }\n"))
    assert {(f.severity, f.code) for f in bare} == {("error", "unix"), ("warning", "lockfile")}


def test_commit_timeout_with_disabled_external_cache() -> None:
    text = UDP.format(extra="").replace("Mode FTFW { }", "Mode FTFW { DisableExternalCache on CommitTimeout 9 }")
    assert ("warning", "commit", 6) in findings(text)


def test_multicast_rules() -> None:
    text = "Sync {\n Multicast {\n  IPv4_address 225.0.0.50\n  Group 3780\n  Interface eth2\n }\n}\n"
    got = findings(text)
    assert ("warning", "address", 6) in got and ("warning", "mode", 0) in got
    assert not [g for g in got if g[0] == "error"]


def test_finding_str() -> None:
    f = check_config(parse_config("Stats { }\n", "x.conf"))[0]
    assert str(f).startswith("x.conf: error: ") or str(f).startswith("x.conf: warning: ")
