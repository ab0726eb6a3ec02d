"""ctpy.conntrack_tools.conntrackd: facts, actions and honest ``changed`` (ansible-test units, faked run_command)."""

from __future__ import annotations

import json

import pytest
from ansible_collections.ctpy.conntrack_tools.plugins.modules import conntrackd as conntrackd_mod
from ansible_collections.ctpy.conntrack_tools.tests.unit.plugins.modules.utils import run_module


def _daemon(views: dict, actions: list):
    def answers(argv):
        if "-s" in argv:
            view = argv[argv.index("-s") + 1]
            if view in views:
                return 0, json.dumps({"view": view, **views[view]}) + "\n", ""
            return 1, "", "[ERROR] no JSON answer: the daemon does not support `-o json' for this request\n"
        actions.append(argv[3:])
        return 0, "", ""
    return answers


def test_conntrackd_stats_become_facts(fake_bin: str) -> None:
    views = {"cache": {"cache": {"internal": {"entries": 3}, "external": {"entries": 2}}}, "link": {"links": []}}
    res, calls = run_module(conntrackd_mod, {"binary": fake_bin}, _daemon(views, []))
    facts = res.result["ansible_facts"]["conntrackd"]
    assert facts == {"running": True, "cache": views["cache"]["cache"], "link": {"links": []}}
    assert res.result["changed"] is False
    assert all(c[:3] == [fake_bin, "-C", "/etc/conntrackd/conntrackd.conf"] and c[-2:] == ["-o", "json"]
               for c in calls)


@pytest.mark.parametrize("external,changed", [(0, False), (5, True)])
def test_conntrackd_commit_is_honest_about_changed(fake_bin: str, external: int, changed: bool) -> None:
    actions: list = []
    views = {"cache": {"cache": {"internal": {"entries": 3}, "external": {"entries": external}}}}
    res, _ = run_module(conntrackd_mod, {"binary": fake_bin, "command": "commit"}, _daemon(views, actions))
    assert res.result["changed"] is changed and res.result["entries_before"] == {"external": external}
    assert actions == ([["-c"]] if changed else [])


def test_conntrackd_actions_in_check_mode_run_nothing(fake_bin: str) -> None:
    actions: list = []
    views = {"cache": {"cache": {"internal": {"entries": 3}, "external": {"entries": 1}}}}
    for command in ("commit", "flush", "resync", "bulk_send", "request_resync"):
        res, _ = run_module(conntrackd_mod, {"binary": fake_bin, "command": command}, _daemon(views, actions),
                            check_mode=True)
        assert res.result["changed"] is True
    assert actions == []
    run_module(conntrackd_mod, {"binary": fake_bin, "command": "flush", "cache": "internal"}, _daemon(views, actions))
    run_module(conntrackd_mod, {"binary": fake_bin, "command": "request_resync"}, _daemon(views, actions))
    assert actions == [["-f", "internal"], ["-n"]]


def test_conntrackd_not_answering_and_c_client(fake_bin: str) -> None:
    res, _ = run_module(conntrackd_mod, {"binary": fake_bin},
                        lambda argv: (1, "", "[ERROR] can't connect: is conntrackd running? appropriate permissions?"))
    assert res.failed and "does not answer on its control socket" in res.result["msg"]
    res, _ = run_module(conntrackd_mod, {"binary": fake_bin}, lambda argv: (0, "", "[ERROR] Unknown option: -o\n"))
    assert res.failed and "netfilter's C conntrackd" in res.result["msg"]
    res, _ = run_module(conntrackd_mod, {"binary": fake_bin}, _daemon({}, []))  # the C daemon behind our client
    assert res.failed and "C conntrackd does not answer -o json" in res.result["msg"]
