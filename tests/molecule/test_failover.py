"""The failover proof: checks on what molecule/default/side_effect.yml measured.

side_effect runs tests/molecule/failover.py (100 concurrent long-lived TCP connections + 10 UDP
flows; `podman kill` of the master, then `systemctl stop keepalived` on it, each followed by a
failback; then a control pass without sync) and writes CTPY_LAB_FAILOVER.  These tests read it:
skipped when there is no result for the running lab (e.g. `scripts/lab.sh verify` right after
`up`; run `scripts/lab.sh failover` first).  The optional passes' tests (drain, upgrade, refuse, migrate) are
collected only where the result's ``passes_requested`` names the pass: nothing is skipped or xfailed for a pass the
scenario never meant to run.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from .conftest import ROOT
from .failover import ECHO_PORT, FTP_PORT, NAT_PORT

RESULT = Path(os.environ.get("CTPY_LAB_FAILOVER", ROOT / "molecule" / ".state" / "failover-default.json"))
MIN_CONNECTIONS = 100
# TCP retransmits with exponential backoff: the first retransmission after the new master
# committed can come up to ~2x the silence so far later; 1 s for the echo interval and noise.
BACKOFF_FACTOR, SLACK_S = 2.0, 1.0
F = TypeVar("F", bound=Callable[..., Any])


@pytest.fixture(scope="module")
def result(lab: dict[str, Any]) -> dict[str, Any]:
    if not RESULT.exists():
        pytest.skip(f"no failover result ({RESULT.name}): run the side_effect or `scripts/lab.sh failover`")
    data = json.loads(RESULT.read_text())
    client = subprocess.run(["podman", "inspect", "--format", "{{.Id}}", f"{lab['prefix']}client"],
                            capture_output=True, text=True).stdout.strip()
    if data.get("lab") != client:
        pytest.skip(f"{RESULT.name} was measured on another lab (client container {data.get('lab', '?')[:12]})")
    return data


#: every pass that takes the master out and must keep every connection; "drain" (the maintenance playbook) runs
#: where side_effect requests it (the default scenario), and then must be there and pass like the others
HITLESS = ["kill", "stop", "drain", "upgrade", "migrate"]
OPTIONAL = {"drain", "upgrade", "migrate", "refuse"}  # migrate: `make soak` (scripts/lab.sh failover --passes migrate)


def requested_passes() -> set[str]:
    """The optional passes RESULT's run was asked for (``passes_requested``; none without a readable result: then
    the :func:`result` fixture skips every test anyway, with the reason)."""
    try:
        return set(json.loads(RESULT.read_text()).get("passes_requested", [])) & OPTIONAL
    except (OSError, ValueError):
        return set()


REQUESTED = requested_passes()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``kind``: the HITLESS passes this scenario runs — the optional ones only where RESULT requested them, so
    that no test stands for a pass that was never meant to run.  A test taking ``kind`` gets it from here alone
    (a ``@pytest.mark.parametrize("kind", ...)`` on it is a "duplicate parametrization" collection error)."""
    if "kind" in metafunc.fixturenames:
        metafunc.parametrize("kind", [k for k in HITLESS if k not in OPTIONAL or k in REQUESTED])


def for_pass(kind: str) -> Callable[[F], F]:
    """Collect the decorated test only where the scenario ran the optional pass ``kind`` (the others always)."""

    def mark(test: F) -> F:
        if kind in OPTIONAL and kind not in REQUESTED:
            test.__test__ = False  # type: ignore[attr-defined]
        return test

    return mark


def _pass(result: dict[str, Any], kind: str) -> dict[str, Any]:
    found = [p for p in result["passes"] if p["kind"] == kind]
    assert found, (f"pass {kind!r} did not run (passes: {[p['kind'] for p in result['passes']]}, "
                   f"requested: {result.get('passes_requested')})")
    p = found[0]
    assert "failed" not in p, f"pass {kind!r} failed: {p.get('failed')}"
    return p


def test_implementations_match_the_inventory(result: dict[str, Any], lab: dict[str, Any]) -> None:
    assert result["implementation"] == lab["implementation"]


def test_every_connection_survives(result: dict[str, Any], kind: str) -> None:
    p = _pass(result, kind)
    s = p["summary"]
    assert s["tcp"] >= MIN_CONNECTIONS
    assert (s["kept"], s["lost"], s["resets"], s["hangs"]) == (s["tcp"], 0, 0, 0), s["errors"]
    assert s["udp_echoed_all"], "a UDP flow never got an answer"
    for ev in p["events"]:  # `recovered` counts the source-NATed connections too
        assert ev["recovered"] == s["tcp"] + s.get("nat", 0), (
            f"{ev['event']}: only {ev['recovered']}/{s['tcp'] + s.get('nat', 0)} connections echoed again "
            f"within {ev['t_recovered'] - ev['t_takeover']:.1f} s of the takeover")


def gap_bound(ev: dict[str, Any]) -> float:
    """2 x (event -> the moment the new master forwards the flows) + 1 s.  TCP retransmits at ~0.2, 0.6,
    1.4, 3.0, 6.2 s after a loss: the first retransmission after that moment comes at most about twice
    the silence so far later (the master-down interval plus at most one retransmission step).  With
    direct injection the state is in the kernel before the event, so the moment is the VIP move;
    with an external cache it is the `Committed` log line.  Anything beyond that is a hang."""
    ready = ev["t_takeover"] if ev["commit"]["commit_t"] is None else max(ev["t_takeover"], ev["commit"]["commit_t"])
    return BACKOFF_FACTOR * (ready - ev["t_event"]) + SLACK_S


def test_no_connection_hangs_beyond_the_takeover(result: dict[str, Any], kind: str) -> None:
    for ev in _pass(result, kind)["events"]:
        bound = gap_bound(ev)
        late = [g for g in ev["tcp_gaps"] if g > bound]
        assert not late, (f"{ev['event']}: {len(late)} connections silent longer than {bound:.1f} s "
                          f"(VIPs moved after {ev['takeover_s']:.2f} s), worst {max(late):.2f} s")
        assert ev["hangs"] == 0 and ev["slow"] == 0, ev


# The lab's long-lived services: a packet of theirs dropped as invalid is a connection the pair lost track of.
SERVICE_PORTS = {ECHO_PORT, NAT_PORT, FTP_PORT}


def _flow(element: str) -> tuple[str, str, int, int]:
    """A dropped-flow set element: `saddr . daddr . sport . dport`, maybe followed by ` syn-ack`."""
    saddr, daddr, sport, dport = (x.strip() for x in element.removesuffix(" syn-ack").split(" . "))
    return saddr, daddr, int(sport), int(dport)


def test_no_packet_dropped_as_invalid(result: dict[str, Any], kind: str) -> None:
    """Hitless, on both firewalls. The node that takes over holds every flow before the first packet reaches it
    (the `nosync` control drops 140-160). The node that just lost the VIPs still forwards stragglers for a few
    milliseconds (the client and the server switch at different moments) and passes them because its own
    entries are as liberal as the injected ones (nf_conntrack_tcp_be_liberal=1; with it at 0, 1-2 of them were
    dropped as "ACK is over upper bound" about once per run). Each drop's flow is in the message.

    Not yet closed (issue #13, docs/lab.md "What remains"): a packet of an FTP data connection opened through
    the old master less than the sync latency (~2 ms) before the switch can reach the new master before its
    state does (the server's FIN 1 ms ahead of it, C's node and ours alike; the longer window, a new master of ours
    reading no sync input during its -R, was closed in session 9). Seen in about one CI run in two before
    that change, 1 connection, 1-3 packets, no transfer failed. That one case is tolerated here, and only it:
    at most one such connection per event, none of the lab's long-lived connections (echo, NAT, FTP
    control), no UDP or ICMP packet (the set lists TCP only), and test_ftp_session_survives checks that no
    transfer failed."""
    for ev in _pass(result, kind)["events"]:
        if not any(ev["invalid_by_node"].values()):
            continue
        flows = [_flow(f) for node in (ev.get("invalid_packets") or {}).values() for f in node]
        service = [f for f in flows if {f[2], f[3]} & SERVICE_PORTS]
        fresh = {frozenset(((s, sp), (d, dp))) for s, d, sp, dp in flows}  # both directions: one connection
        assert flows and not service and len(fresh) <= 1, (
            f"{ev['event']}: packets dropped as ct state invalid {ev['invalid_by_node']} (took over: {ev['to']}): "
            f"{ev.get('invalid_packets')}")


def test_no_live_entry_replaced_by_injection(result: dict[str, Any], kind: str) -> None:
    """The mechanism behind an invalid drop, counted where it happens: our injector never deletes and
    re-creates a live kernel entry (it did for every FTP data entry, 257 times in three `stop` passes,
    and a packet in that window was dropped as invalid about once in five CI runs)."""
    for ev in _pass(result, kind)["events"]:
        assert not any(ev["replaced_by_node"].values()), (
            f"{ev['event']}: live entries deleted and re-created by injection {ev['replaced_by_node']}")


@pytest.mark.parametrize("pass_kind", ["kill", "stop"])
def test_failback_waits_for_the_state(result: dict[str, Any], pass_kind: str) -> None:
    """A node of ours takes the VIPs back only after its resync is in: after a reboot (`kill`) the resync of its
    start; after `systemctl start keepalived` (`stop`: its conntrackd ran all along and was ready) the resync
    the backup hook's `-n` asked for, which makes it not ready again until that bulk is in (taking over while
    still absorbing it left the live changes queued behind it late: fresh FTP data connections dropped as
    invalid at the failback, docs/failover.md)."""
    ev = _pass(result, pass_kind)["events"][1]
    if ev["implementation_to"] != "python":
        pytest.skip("the C daemon publishes no readiness")
    c = ev["commit"]
    ready = c["ready_t"]
    assert ready is not None, f"{ev['to']} never logged `state complete: readiness file ...'"
    if pass_kind == "stop":
        assert c.get("waiting_t") is not None, f"{ev['to']}'s -n did not make it wait for the resync"
        assert c["waiting_t"] <= ready, f"{ev['to']}: ready {c['waiting_t'] - ready:.2f} s before it waited"
    assert ready <= ev["t_takeover"], (f"{ev['to']} took the VIPs {ev['t_takeover'] - ready:.2f} s before its "
                                       "state was complete")


def test_new_master_has_the_state(result: dict[str, Any], kind: str) -> None:
    p = _pass(result, kind)
    n = p["tcp_flows"]
    for ev in p["events"]:
        c = ev["commit"]
        assert c["notify"] and "commit" in c["notify"] and "FAILED" not in c["notify"], c["notify"]
        if ev["inject"]:  # direct injection: nothing to commit, the state was in the kernel before
            pre = ev.get("pre")
            if pre is not None:
                assert pre["backup_kernel"]["tcp"] >= n, f"{ev['event']}: {ev['to']} before the event: {pre}"
        else:
            assert c["committed"] >= n, f"{ev['event']}: {ev['to']} committed {c['committed']} entries, want >= {n}"
        # "N entries can't be committed" is tolerated: after a clean stop the old master still has the
        # entries (its purge runs PurgeTimeout later) and live UDP flows can re-create one between the
        # commit's delete and create; what matters is the kernel table below.
        assert ev["kernel_after"]["tcp"] >= n, f"{ev['event']}: {ev['to']}'s kernel table {ev['kernel_after']}"


FAST_PROFILE_GAP_S = 1.0  # issue #13: the sub-second profile's kill gap, max over every connection


def test_kill_gap_within_the_profile_bound(result: dict[str, Any], lab: dict[str, Any]) -> None:
    """On a hard kill of the master, no connection (routed or source-NATed) is silent longer than its profile
    allows: the fast profile (VRRPv3, adverts < 1 s) a second (master-down interval ~0.35 s + the
    retransmission that follows); the default profile the master-down interval plus at most one TCP
    retransmission step (gap_bound)."""
    ev = _pass(result, "kill")["events"][0]
    bound = FAST_PROFILE_GAP_S if lab["advert_int"] < 1 else gap_bound(ev)
    worst = max(ev["tcp_gaps"] + ev["nat_gaps"])
    assert worst <= bound, (f"{ev['event']}: a connection was silent {worst:.2f} s, profile bound {bound:.2f} s "
                            f"(adverts {lab['advert_int']:g} s; VIPs moved after {ev['takeover_s']:.2f} s)")


def test_without_sync_no_connection_survives(result: dict[str, Any]) -> None:
    """The control: the strict ruleset drops every mid-stream packet the new master has no entry for."""
    ev = _pass(result, "nosync")["events"][0]
    assert ev["pre"]["backup_kernel" if ev["inject"] else "backup_external"]["tcp"] == 0
    assert ev["inject"] or ev["commit"]["committed"] is not None
    assert ev["kernel_after"]["tcp"] == 0, ev["kernel_after"]
    assert ev["recovered"] == 0, f"{ev['recovered']} connections survived a takeover without state"
    assert (ev["invalid_dropped"] or 0) > 0, "no packet was dropped as ct state invalid"


def test_source_nated_connections_survive(result: dict[str, Any], lab: dict[str, Any], kind: str) -> None:
    """Connections the pair source-NATs to the inside VIP: kept, seen by the server from the VIP, their
    entries (with the NAT binding) in the new master's kernel, no longer silent than the routed ones."""
    p = _pass(result, kind)
    s = p["summary"]
    if not s.get("nat"):
        pytest.skip("no source-NATed connections in this run (failover.py --nat 0)")
    assert s["nat_kept"] == s["nat"], s["nat_errors"]
    assert p["nat_sources"] == [lab["hostvars"]["fw1"]["lab_vip_inside"]], p["nat_sources"]
    for ev in p["events"]:
        assert ev["kernel_after"]["nat"] >= s["nat"], f"{ev['event']}: {ev['to']}'s kernel table {ev['kernel_after']}"
        bound = gap_bound(ev)
        late = [g for g in ev["nat_gaps"] if g > bound]
        assert not late, f"{ev['event']}: {len(late)} source-NATed connections silent longer than {bound:.1f} s"


def test_ftp_session_survives(result: dict[str, Any], kind: str) -> None:
    """The FTP control connection is kept, and every data connection opened after the VIPs moved
    passed (the ruleset lets them through only as RELATED: the new master's helper saw the PASV reply)."""
    p = _pass(result, kind)
    if not p.get("ftp"):
        pytest.skip("no FTP session in this run (failover.py without --ftp)")
    assert p["ftp"]["control_error"] is None, p["ftp"]
    for ev in p["events"]:
        failed = ev["ftp_failed_after"]
        assert not failed, f"{ev['event']}: transfers failed after the VIP move: {failed}"
        assert ev["ftp_ok_after"] > 0, f"{ev['event']}: no FTP transfer after the VIP move"


def test_default_scenario_runs_the_maintenance_passes(result: dict[str, Any], lab: dict[str, Any]) -> None:
    """Where both nodes run our daemon (the default scenario), the maintenance playbook is proved under traffic."""
    if set(lab["implementation"].values()) == {"python"}:
        assert {"drain", "upgrade", "refuse"} <= set(result.get("passes_requested", [])), result.get("passes_requested")


@for_pass("drain")
def test_drain_ran_the_installed_playbooks(result: dict[str, Any]) -> None:
    """The drain pass drove ctpy.conntrack_tools.maintenance (drain, then undrain), both green."""
    _pass(result, "drain")
    runs = [r for r in result["playbooks"] if "ctpy.conntrack_tools.maintenance" in r["cmd"]]
    assert [next(a for a in r["cmd"] if a.startswith("maintenance_action=")) for r in runs] == [
        "maintenance_action=drain", "maintenance_action=undrain"], runs
    assert all(r["rc"] == 0 for r in runs), runs
    resync = [r for r in result["playbooks"] if "ctpy.conntrack_tools.resync" in r["cmd"]]
    assert [r["rc"] for r in resync] == [0], resync  # resync.yml, between drain and undrain, under the flows


@for_pass("refuse")
def test_unhealthy_pair_is_refused(result: dict[str, Any]) -> None:
    """Bad input: with conntrackd stopped on the backup, a drain stops at the pre-check, says why, changes nothing."""
    p = _pass(result, "refuse")
    assert p["check_rc"] == 0 and p["check_unchanged"], ("a --check drain changed something", p["check_recap"])
    assert p["rc"] != 0, p["tail"]
    assert p["unchanged"], "the drain file or keepalived.conf changed"
    assert p["master_after"] == p["master_before"]
    backup = p["stopped"].split()[-1]
    assert any("is not healthy, nothing changed" in m and f"sync down: conntrackd does not answer on {backup}" in m
               for m in p["messages"]), p["tail"]


@for_pass("upgrade")
def test_upgrade_installed_the_second_version(result: dict[str, Any]) -> None:
    """The rolling upgrade put the version-bumped wheel built by the pass on both nodes (the venv's marker:
    "<sha256> <version>"), replacing the collection's, one node at a time (the events above)."""
    import hashlib

    up = _pass(result, "upgrade")["upgrade"]
    digest = hashlib.sha256(Path(up["wheel"]).read_bytes()).hexdigest() if Path(up["wheel"]).exists() else None
    for node, marker in up["after"].items():
        sha, version = marker.split()
        assert version == up["version"], (node, marker)
        assert digest is None or sha == digest, (node, marker, digest)
        assert up["before"][node].split()[1] != version, (node, up["before"][node])
    runs = [r for r in result["playbooks"] if "ctpy.conntrack_tools.upgrade" in r["cmd"]]
    assert len(runs) == 1 and runs[0]["rc"] == 0, runs


@for_pass("migrate")
def test_migrate_went_to_c_and_back(result: dict[str, Any]) -> None:
    """The migrate pass moved the master to the C conntrackd (drained first) and back to ours."""
    m = _pass(result, "migrate")["migrate"]
    assert "/usr/sbin/conntrackd" in m["implementation_mid"], m
    assert "/opt/conntrack-tools/bin/conntrackd" in m["implementation_after"], m
    runs = [r for r in result["playbooks"] if "ctpy.conntrack_tools.migrate" in r["cmd"]]
    assert [r["rc"] for r in runs] == [0, 0], runs
