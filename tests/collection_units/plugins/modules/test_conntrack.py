"""ctpy.conntrack_tools.conntrack: argument handling and result shaping (ansible-test units, faked run_command)."""

from __future__ import annotations

import json
from pathlib import Path

from ansible_collections.ctpy.conntrack_tools.plugins.modules import conntrack as conntrack_mod
from ansible_collections.ctpy.conntrack_tools.tests.unit.plugins.modules.utils import BANNER, ENTRY, lines, run_module


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
