"""monitoring/: the Prometheus alert rules are valid (`promtool check rules`) and do what their
unit tests say (`promtool test rules`).  That every metric they use is one the daemon exports is
checked against a running daemon in tests/netns/test_daemon_expect_netns.py."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

MON = Path(__file__).resolve().parents[2] / "monitoring"
RULES = MON / "conntrackd-alerts.yml"


def promtool() -> str:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool not installed (apt-get install prometheus; scripts/install-deps.sh does)")
    return tool


def test_rules_are_valid() -> None:
    r = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def test_rules_unit_tests_pass() -> None:
    r = subprocess.run([promtool(), "test", "rules", "conntrackd-alerts.test.yml"], capture_output=True, text=True,
                       timeout=120, cwd=MON)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def test_every_alert_has_a_unit_test() -> None:
    alerts = set(re.findall(r"^\s*- alert: (\w+)", RULES.read_text(), re.M))
    tested = set(re.findall(r"alertname: (\w+)", (MON / "conntrackd-alerts.test.yml").read_text()))
    assert alerts and alerts == tested, alerts ^ tested


def rule_metric_names() -> set[str]:
    """The conntrackd metric names the rules use (counters as exported, with _total)."""
    return set(re.findall(r"\b(conntrackd_[a-z_]*[a-z])\b(?![_*])", RULES.read_text()))
