"""The pair health pre-check's decision: plugins/filter/pair_health.py, without Ansible (a table of pairs)."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from .helpers import ROOT

_spec = importlib.util.spec_from_file_location("pair_health", ROOT / "plugins" / "filter" / "pair_health.py")
assert _spec and _spec.loader
ph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ph)

VIPS = ["10.231.1.100", "10.231.2.254"]
ACKED = {
    "rsqueue": 0,
    "overflow": 0,
    "evicted_pending": 0,
    "targeted_resent": 0,
    "unacked": 0,
    "txqueue": 0,
    "oldest_unacked_seconds": 0.0,
    "tx_backlog_seconds": 0.0,
}


def node(name: str, master: bool = False, **kw: Any) -> dict[str, Any]:
    """One node's reading as precheck.yml's "summarise this node" sets it (our daemon, FTFW, direct injection)."""
    base = {
        "node": name,
        "vips": list(VIPS) if master else [],
        "vips_all": master,
        "keepalived": True,
        "conntrackd": "python",
        "internal": 617,
        "external": None,
        "kernel": 479 if not master else 640,
        "peer_silence": 0.4,
        "drain_value": -253 if kw.get("drained") else 0,
        "drained": False,
        "resend": dict(ACKED),
    }
    return {**base, **kw}


def c_node(name: str, master: bool = False, **kw: Any) -> dict[str, Any]:
    """A node running netfilter's C conntrackd: it answers its -s but no statistics."""
    return node(
        name,
        master,
        **{"conntrackd": "c", "internal": None, "external": None, "peer_silence": None, "resend": None, **kw},
    )


def pair(*nodes: dict[str, Any] | tuple[str, None]) -> dict[str, Any]:
    return {n[0]: None for n in nodes if isinstance(n, tuple)} | {n["node"]: n for n in nodes if isinstance(n, dict)}


def unacked(seconds: float, n: int = 40, queued: int = 0, backlog: float = 0.0) -> dict[str, Any]:
    return {
        **ACKED,
        "rsqueue": n,
        "unacked": n,
        "txqueue": queued,
        "oldest_unacked_seconds": seconds,
        "tx_backlog_seconds": backlog,
    }


HEALTHY = [
    ("master and backup in sync", pair(node("fw1", True), node("fw2")), {}),
    # CI 2026-12-04: the backup's kernel 479 against the master's internal cache 617 (13.8 %) right after a drain,
    # every message acknowledged: with direct injection the counts are no lag
    ("13.8 % fewer entries, everything acknowledged", pair(node("fw1", True), node("fw2", kernel=479)), {}),
    (
        "acknowledgements in flight (within a second)",
        pair(node("fw1", True, resend=unacked(1.25, 300)), node("fw2")),
        {},
    ),
    ("external cache within 5 %", pair(node("fw1", True, internal=1000), node("fw2", external=960)), {}),
    (
        "a small table: the 1,000-entry floor",
        pair(node("fw1", True, internal=40, resend=None), node("fw2", kernel=0)),
        {},
    ),
    ("the backup drained, allowed", pair(node("fw1", True), node("fw2", drained=True)), {"allow_drained": True}),
    (
        "the master drained away, the peer master, allowed",
        pair(node("fw1", drained=True), node("fw2", True)),
        {"allow_drained": True},
    ),
    ("a C backup (no statistics)", pair(node("fw1", True), c_node("fw2")), {}),
    ("a C master: no lag can be measured", pair(c_node("fw1", True), node("fw2", kernel=0)), {}),
    (
        "the lag not judged (resync's first check)",
        pair(node("fw1", True, resend=unacked(60)), node("fw2")),
        {"lag": False},
    ),
    (
        "values as Ansible may hand them (strings)",
        pair(
            node("fw1", True, keepalived="True", vips_all="True", internal="617", peer_silence="0.4"),
            node("fw2", keepalived="True", internal="", kernel="479", peer_silence="1.5", drained="False"),
        ),
        {},
    ),
]

UNHEALTHY = [
    ("no master", pair(node("fw1"), node("fw2")), {}, ["no master: no node of pair_lab holds a VIP"]),
    ("both masters", pair(node("fw1", True), node("fw2", True)), {}, ["both masters: fw1 and fw2 hold VIPs"]),
    (
        "VIPs split",
        pair(node("fw1", True, vips=[VIPS[0]], vips_all=False), node("fw2", vips=[VIPS[1]])),
        {},
        [
            "VIPs split: fw1 holds only 10.231.1.100",
            "VIPs split: fw2 holds only 10.231.2.254",
            "both masters: fw1 and fw2 hold VIPs",
        ],
    ),
    (
        "keepalived down",
        pair(node("fw1", True), node("fw2", keepalived=False)),
        {},
        ["keepalived is not running on fw2"],
    ),
    (
        "conntrackd down",
        pair(node("fw1", True), node("fw2", conntrackd="down", internal=None, peer_silence=None, resend=None)),
        {},
        ["sync down: conntrackd does not answer on fw2"],
    ),
    (
        "a C daemon down",
        pair(node("fw1", True), c_node("fw2", conntrackd="down")),
        {},
        ["sync down: conntrackd does not answer on fw2"],
    ),
    (
        "peer never heard",
        pair(node("fw1", True, peer_silence=-1), node("fw2")),
        {},
        ["sync down: conntrackd on fw1 has never heard from its peer"],
    ),
    (
        "peer silent > 10 s",
        pair(node("fw1", True), node("fw2", peer_silence=11.234)),
        {},
        ["sync down: conntrackd on fw2 has heard nothing from its peer for 11.234 s (limit 10 s)"],
    ),
    ("a node did not answer", pair(node("fw1", True), ("fw2", None)), {}, ["fw2 did not answer the pre-check"]),
    (
        "both drained",
        pair(node("fw1", True, drained=True), node("fw2", drained=True)),
        {"allow_drained": True},
        ["both nodes are drained (maintenance playbook): undrain one first"],
    ),
    (
        "a drained node, not allowed",
        pair(node("fw1", True), node("fw2", drained=True)),
        {},
        [
            "fw2 is drained (maintenance playbook): undrain it first"
            " (-e maintenance_action=undrain -e maintenance_node=fw2)"
        ],
    ),
    (
        "drained but still master",
        pair(node("fw1", True, drained=True), node("fw2")),
        {"allow_drained": True},
        ["fw1 is drained but still holds the VIPs"],
    ),
    (
        "backup not acknowledging",
        pair(node("fw1", True, resend=unacked(7.5, 1200, 3)), node("fw2")),
        {},
        [
            "backup lagging: fw2 has not acknowledged the master fw1's sync messages for 7.5 s "
            "(1200 unacknowledged, 3 queued; limit 5 s)"
        ],
    ),
    (
        "the master's TX queue stuck",
        pair(node("fw1", True, resend=unacked(0.0, 0, 20000, 6.0)), node("fw2")),
        {},
        [
            "backup lagging: fw2 has not acknowledged the master fw1's sync messages for 6 s "
            "(0 unacknowledged, 20000 queued; limit 5 s)"
        ],
    ),
    (
        "external cache behind",
        pair(node("fw1", True), node("fw2", external=479)),
        {},
        ["backup lagging: fw2 holds 479 entries, the master fw1's internal cache 617 (13.8 % behind, limit 5.0 %)"],
    ),
    (
        "direct injection, no acknowledgement ages (NOTRACK, an older daemon): the kernel counted",
        pair(node("fw1", True, resend=None), node("fw2", kernel=479)),
        {},
        ["backup lagging: fw2 holds 479 entries, the master fw1's internal cache 617 (13.8 % behind, limit 5.0 %)"],
    ),
    (
        "a C backup behind our FTFW master's acknowledgements",
        pair(node("fw1", True, resend=unacked(30)), c_node("fw2")),
        {},
        [
            "backup lagging: fw2 has not acknowledged the master fw1's sync messages for 30 s "
            "(40 unacknowledged, 0 queued; limit 5 s)"
        ],
    ),
    (
        "everything at once",
        pair(node("fw1", keepalived=False, peer_silence=-1), ("fw2", None)),
        {},
        [
            "keepalived is not running on fw1",
            "sync down: conntrackd on fw1 has never heard from its peer",
            "fw2 did not answer the pre-check",
            "no master: no node of pair_lab holds a VIP",
        ],
    ),
]


@pytest.mark.parametrize(("case", "readings", "kw"), HEALTHY, ids=[c[0] for c in HEALTHY])
def test_a_healthy_pair_is_accepted(case: str, readings: dict, kw: dict) -> None:
    assert ph.pair_problems(readings, "pair_lab", **kw) == []


@pytest.mark.parametrize(("case", "readings", "kw", "why"), UNHEALTHY, ids=[c[0] for c in UNHEALTHY])
def test_an_unhealthy_pair_is_refused_with_its_reasons(case: str, readings: dict, kw: dict, why: list) -> None:
    got = ph.pair_problems(readings, "pair_lab", **kw)
    assert got == why


def test_the_master_is_the_one_node_holding_vips() -> None:
    assert ph.pair_master(pair(node("fw1"), node("fw2", True))) == "fw2"
    assert ph.pair_master(pair(node("fw1"), node("fw2"))) == ""
    assert ph.pair_master(pair(node("fw1", True), node("fw2", True))) == ""
    assert ph.pair_master(pair(node("fw1", True), ("fw2", None))) == "fw1"


def test_thresholds_are_the_callers() -> None:
    slow = pair(node("fw1", True, resend=unacked(7.5)), node("fw2"))
    assert ph.pair_problems(slow, "p", max_unacked_seconds=10) == []
    assert ph.pair_problems(slow, "p", max_unacked_seconds="10") == []  # an extra var from the command line
    silent = pair(node("fw1", True), node("fw2", peer_silence=11))
    assert ph.pair_problems(silent, "p", max_silence=20) == []
    behind = pair(node("fw1", True), node("fw2", external=479))
    assert ph.pair_problems(behind, "p", max_lag=0.2) == []
    assert ph.pair_problems(behind, "p", max_lag=1.0) == []


def test_sync_lag_after_a_drain_counts_the_peers_kernel() -> None:
    """drain.yml's final check: the drained node's messages acknowledged by the new master; counts with an external
    cache (the new master committed it into its kernel) or without acknowledgement ages."""
    drained, peer = node("fw1", internal=617), node("fw2", True, kernel=479)
    assert ph.sync_lag(drained, peer, held="kernel") == ""
    assert "has not acknowledged" in ph.sync_lag({**drained, "resend": unacked(9)}, peer, held="kernel")
    committed = {**peer, "external": 0}
    assert ph.sync_lag(drained, committed, held="kernel") == (
        "backup lagging: fw2 holds 479 entries, the master fw1's internal cache 617 (13.8 % behind, limit 5.0 %)"
    )
    assert ph.sync_lag(drained, {**committed, "kernel": 640}, held="kernel") == ""
    assert ph.sync_lag(None, peer) == "" and ph.sync_lag(drained, None) == ""
    # only what the drained node sent before the drain must be acknowledged: 9 s old, the drain began 12 s ago
    assert ph.sync_lag({**drained, "resend": unacked(9)}, peer, held="kernel", since=12.5) == ""
    assert "for 14 s (40 unacknowledged, 0 queued; limit 12.5 s)" in ph.sync_lag(
        {**drained, "resend": unacked(14)}, peer, held="kernel", since=12.5
    )


def test_the_filters_ansible_sees() -> None:
    assert set(ph.FilterModule().filters()) == {"pair_problems", "pair_master", "sync_lag"}
    with pytest.raises(Exception, match="mapping"):
        ph.pair_problems("fw1")


def test_readings_as_a_list_of_those_that_answered() -> None:
    """What precheck_judge.yml passes: the readings of the nodes that answered, and every node of the pair."""
    answered = [node("fw1", True)]
    assert ph.pair_problems(answered, "pair_lab", nodes=["fw2", "fw1"]) == ["fw2 did not answer the pre-check"]
    assert ph.pair_master(answered) == "fw1"
    assert ph.pair_problems([node("fw2"), node("fw1", True)], "pair_lab", nodes=["fw1", "fw2"]) == []
    with pytest.raises(Exception, match="name its node"):
        ph.pair_problems([{"vips": []}])
