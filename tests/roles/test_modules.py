"""The collection's modules: argument handling and result shaping with a faked run_command, then the conntrack
module through a real `ansible` run on the kernel's table inside a throwaway network namespace."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path
from unittest import mock

import pytest

from tests.conftest import PY_CONNTRACK, Netns, require_root

from .helpers import VENV_BIN, checkout_collections_path

ansible_basic = pytest.importorskip("ansible.module_utils.basic")
testing = pytest.importorskip("ansible.module_utils.testing")

# The modules import their module_utils as ansible_collections.ctpy.conntrack_tools...: point that at the checkout.
COLLECTIONS = checkout_collections_path()
sys.path.insert(0, str(COLLECTIONS))
conntrack_mod = importlib.import_module("ansible_collections.ctpy.conntrack_tools.plugins.modules.conntrack")
conntrackd_mod = importlib.import_module("ansible_collections.ctpy.conntrack_tools.plugins.modules.conntrackd")

ENTRY = {"event": None, "family": "ipv4", "proto": "tcp", "protonum": 6, "timeout": 300, "state": "ESTABLISHED",
         "orig": {"src": "10.0.0.1", "dst": "10.0.0.2", "sport": 1000, "dport": 80},
         "reply": {"src": "10.0.0.2", "dst": "10.0.0.1", "sport": 80, "dport": 1000},
         "status": ["ASSURED", "CONFIRMED"], "mark": 0, "use": 1}
BANNER = "conntrack v1.4.7 (conntrack-tools): "


class Exit(Exception):
    def __init__(self, result: dict, failed: bool):
        super().__init__(result)
        self.result, self.failed = result, failed


def run_module(module, args: dict, answers, check_mode=False, diff=False):
    """Run ``module.main()`` with ``args``; ``answers(argv)`` returns (rc, stdout, stderr). Returns (result, calls)."""
    calls: list[list[str]] = []

    def fake_run(self, argv, **kw):
        calls.append(list(argv))
        return answers(list(argv))

    def done(self, **kw):
        raise Exit(kw, False)

    def failed(self, msg, **kw):
        raise Exit({"msg": msg, **kw}, True)

    args = {**args, "_ansible_check_mode": check_mode, "_ansible_diff": diff}
    with testing.patch_module_args(args), \
            mock.patch.object(ansible_basic.AnsibleModule, "run_command", fake_run), \
            mock.patch.object(ansible_basic.AnsibleModule, "exit_json", done), \
            mock.patch.object(ansible_basic.AnsibleModule, "fail_json", failed):
        with pytest.raises(Exit) as exc:
            module.main()
    return exc.value, calls


@pytest.fixture
def fake_bin(tmp_path: Path) -> str:
    path = tmp_path / "conntrack"
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return str(path)


def lines(*entries: dict) -> str:
    return "".join(json.dumps(e) + "\n" for e in entries)


def test_list_passes_every_filter_and_returns_the_json_entries(fake_bin: str) -> None:
    res, calls = run_module(conntrack_mod, {
        "binary": fake_bin, "family": "ipv4", "protocol": "tcp", "src": "10.0.0.1", "dst": "10.0.0.2",
        "reply_src": "10.0.0.2", "reply_dst": "10.0.0.1", "sport": 1000, "dport": 80, "mark": "1/0xff", "zone": 3,
        "state": "ESTABLISHED", "status": ["ASSURED", "SEEN_REPLY"]},
        lambda argv: (0, lines(ENTRY, ENTRY), BANNER + "2 flow entries have been shown.\n"))
    assert not res.failed and res.result["changed"] is False
    assert res.result["entries"] == [ENTRY, ENTRY] and res.result["count"] == 2
    assert calls == [[fake_bin, "-L", "conntrack", "-f", "ipv4", "-p", "tcp", "-s", "10.0.0.1", "-d", "10.0.0.2",
                      "-r", "10.0.0.2", "-q", "10.0.0.1", "--sport", "1000", "--dport", "80", "-m", "1/0xff",
                      "-w", "3", "--state", "ESTABLISHED", "-u", "ASSURED,SEEN_REPLY", "-o", "json"]]


def test_port_without_protocol_is_refused_before_running_anything(fake_bin: str) -> None:
    res, calls = run_module(conntrack_mod, {"binary": fake_bin, "dport": 80}, lambda argv: (0, "", ""))
    assert res.failed and "protocol" in res.result["msg"] and calls == []


def test_count_uses_dash_c_without_filters(fake_bin: str) -> None:
    res, calls = run_module(conntrack_mod, {"binary": fake_bin, "operation": "count"}, lambda argv: (0, "17\n", ""))
    assert res.result["count"] == 17 and calls == [[fake_bin, "-C"]]


def test_delete_in_check_mode_lists_and_diffs_but_deletes_nothing(fake_bin: str) -> None:
    res, calls = run_module(conntrack_mod, {"binary": fake_bin, "operation": "delete", "protocol": "tcp"},
                            lambda argv: (0, lines(ENTRY), ""), check_mode=True, diff=True)
    assert res.result["changed"] is True and res.result["deleted"] == 0 and res.result["count"] == 1
    assert json.loads(res.result["diff"]["before"]) == ENTRY and res.result["diff"]["after"] == ""
    assert [c[1] for c in calls] == ["-L"]


def test_delete_reports_what_the_kernel_deleted(fake_bin: str) -> None:
    def answers(argv):
        if argv[1] == "-L":
            return 0, lines(ENTRY), ""
        return 0, "", BANNER + "1 flow entries have been deleted.\n"
    res, calls = run_module(conntrack_mod, {"binary": fake_bin, "operation": "delete", "protocol": "tcp",
                                            "dport": 80}, answers)
    assert res.result["changed"] is True and res.result["deleted"] == 1
    assert calls[-1] == [fake_bin, "-D", "-p", "tcp", "--dport", "80"]


def test_delete_with_nothing_matching_changes_nothing(fake_bin: str) -> None:
    res, calls = run_module(conntrack_mod, {"binary": fake_bin, "operation": "delete", "src": "192.0.2.1"},
                            lambda argv: (0, "", BANNER + "0 flow entries have been shown.\n"))
    assert res.result["changed"] is False and res.result["entries"] == [] and len(calls) == 1


def test_flush_counts_first_and_skips_an_empty_table(fake_bin: str) -> None:
    res, calls = run_module(conntrack_mod, {"binary": fake_bin, "operation": "flush"}, lambda argv: (0, "0\n", ""))
    assert res.result["changed"] is False and calls == [[fake_bin, "-C"]]
    res, calls = run_module(conntrack_mod, {"binary": fake_bin, "operation": "flush", "table": "expect"},
                            lambda argv: (0, lines(ENTRY) if argv[1] == "-L" else "", ""))
    assert res.result["changed"] is True and res.result["deleted"] == 1 and calls[-1] == [fake_bin, "-F", "expect"]


def test_c_conntrack_gets_a_message_that_says_so(fake_bin: str) -> None:
    res, _ = run_module(conntrack_mod, {"binary": fake_bin},
                        lambda argv: (2, "", BANNER + "Bad parameter `json'\nTry `conntrack -h' for more.\n"))
    assert res.failed and "netfilter's C conntrack" in res.result["msg"] and "Traceback" not in res.result["msg"]


def test_bad_filter_gives_the_tools_message(fake_bin: str) -> None:
    res, _ = run_module(conntrack_mod, {"binary": fake_bin, "src": "not-an-address"},
                        lambda argv: (2, "", BANNER + "can't parse address `not-an-address'\n"))
    assert res.failed and res.result["msg"] == "conntrack -L failed: can't parse address `not-an-address'"


def test_missing_binary_is_a_clear_failure(tmp_path: Path) -> None:
    res, _ = run_module(conntrack_mod, {"binary": str(tmp_path / "nope")}, lambda argv: (0, "", ""))
    assert res.failed and "is not an executable file" in res.result["msg"]


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


# --- the real thing: ansible -m ctpy.conntrack_tools.conntrack on a netns' conntrack table -----------------------

def _ansible(ns: Netns, module: str, args: dict, *extra: str) -> dict:
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS), "ANSIBLE_NOCOLOR": "1",
           "ANSIBLE_CALLBACK_RESULT_FORMAT": "json",
           "ANSIBLE_PYTHON_INTERPRETER": str(VENV_BIN / "python"), "ANSIBLE_LOCALHOST_WARNING": "false",
           "ANSIBLE_INVENTORY_UNPARSED_WARNING": "false"}
    run = ns.run([str(VENV_BIN / "ansible"), "localhost", "-c", "local", "-m", f"ctpy.conntrack_tools.{module}",
                  "-a", json.dumps(args), *extra], env=env, timeout=120)
    diff, sep, body = run.stdout.partition("localhost | ")  # [diff] localhost | SUCCESS => {...}
    assert sep and " => " in body, run.stdout + run.stderr
    status, _, data = body.partition(" => ")
    result = json.loads(data)
    result["printed_diff"], result["failed"] = diff, status.startswith("FAILED")
    return result


def test_conntrack_module_on_a_real_table(netns: Netns) -> None:
    require_root()
    for sport in (1000, 1001, 1002):
        r = netns.run([PY_CONNTRACK, "-I", "-p", "tcp", "-s", "10.0.0.1", "-d", "10.0.0.2", "-t", "300", "--sport",
                       str(sport), "--dport", "80", "--state", "ESTABLISHED", "-u", "ASSURED"])
        assert r.returncode == 0, r.stderr
    ours = {"binary": PY_CONNTRACK}
    listed = _ansible(netns, "conntrack", {**ours, "protocol": "tcp", "dport": 80})
    assert listed["count"] == 3 and {e["orig"]["sport"] for e in listed["entries"]} == {1000, 1001, 1002}
    dry = _ansible(netns, "conntrack", {**ours, "operation": "delete", "protocol": "tcp", "sport": 1001},
                   "--check", "--diff")
    assert dry["changed"] is True and dry["deleted"] == 0 and "sport\": 1001" in dry["printed_diff"]
    gone = _ansible(netns, "conntrack", {**ours, "operation": "delete", "protocol": "tcp", "sport": 1001})
    assert gone["changed"] is True and gone["deleted"] == 1
    again = _ansible(netns, "conntrack", {**ours, "operation": "delete", "protocol": "tcp", "sport": 1001})
    assert again["changed"] is False
    assert _ansible(netns, "conntrack", {**ours, "operation": "count"})["count"] == 2
    flushed = _ansible(netns, "conntrack", {**ours, "operation": "flush"})
    assert flushed["changed"] is True and flushed["deleted"] == 2
    assert _ansible(netns, "conntrack", {**ours, "operation": "flush"})["changed"] is False
    bad = _ansible(netns, "conntrack", {**ours, "src": "not-an-address"})
    assert bad.get("failed") and "conntrack -L failed" in bad["msg"]
    if Path("/usr/sbin/conntrack").exists():
        c = _ansible(netns, "conntrack", {"binary": "/usr/sbin/conntrack"})
        assert c.get("failed") and "netfilter's C conntrack" in c["msg"]


def test_conntrackd_module_against_a_running_daemon(netns: Netns, tmp_path: Path) -> None:
    require_root()
    from tests.netns.daemon_proc import Conntrackd, stop_process, wait_for

    for sport in (2000, 2001):
        netns.run([PY_CONNTRACK, "-I", "-p", "udp", "-s", "10.0.0.1", "-d", "10.0.0.2", "-t", "300", "--sport",
                   str(sport), "--dport", "53"], check=True)
    daemon = Conntrackd(netns.name, tmp_path / "ours", [str(VENV_BIN / "conntrackd")])
    daemon.write_conf("", "Stats {\n  LogFile off\n}\n")
    ours = {"binary": str(VENV_BIN / "conntrackd"), "config": str(daemon.conf)}
    daemon.start()
    try:
        stats = wait_for(lambda: (r := _ansible(netns, "conntrackd", ours))["ansible_facts"]["conntrackd"]["cache"]
                         .get("stats", {}).get("entries") == 2 and r, what="2 cached flows")
        facts = stats["ansible_facts"]["conntrackd"]
        assert facts["running"] is True and "runtime" in facts and stats["changed"] is False
        # Stats mode has one cache and handles `-f internal' (a bare `-f' is a sync mode's request).
        dry = _ansible(netns, "conntrackd", {**ours, "command": "flush", "cache": "internal"}, "--check")
        assert dry["changed"] is True
        assert _ansible(netns, "conntrackd", ours)["stats"]["cache"]["stats"]["entries"] == 2
        flushed = _ansible(netns, "conntrackd", {**ours, "command": "flush", "cache": "internal"})
        assert flushed["changed"] is True and flushed["cmd"][-2:] == ["-f", "internal"]
        wait_for(lambda: _ansible(netns, "conntrackd", ours)["stats"]["cache"]["stats"]["entries"] == 0,
                 what="flushed cache")
    finally:
        stop_process(daemon.proc)
    down = _ansible(netns, "conntrackd", ours)
    assert down["failed"] and "does not answer on its control socket" in down["msg"]


def test_modules_document_themselves() -> None:
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(COLLECTIONS)}
    for module in ("conntrack", "conntrackd"):
        run = subprocess.run([str(VENV_BIN / "ansible-doc"), "--json", f"ctpy.conntrack_tools.{module}"],
                             capture_output=True, text=True, env=env, timeout=120)
        assert run.returncode == 0, run.stderr
        doc = json.loads(run.stdout)[f"ctpy.conntrack_tools.{module}"]
        assert doc["doc"]["options"] and doc["examples"] and doc["return"]
