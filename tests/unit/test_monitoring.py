"""monitoring/: the Prometheus alert rules are valid (`promtool check rules`) and do what their
unit tests say (`promtool test rules`); the Grafana dashboard is checked statically (no Grafana server
is installable here): its structure, and every query parsed by promtool as a recording rule.  That
every metric they use is one the daemon exports is checked against running daemons in
tests/netns/test_daemon_expect_netns.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

MON = Path(__file__).resolve().parents[2] / "monitoring"
RULES = MON / "conntrackd-alerts.yml"
DASHBOARD = MON / "grafana-conntrackd-pair.json"


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


def dashboard_queries() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [a["expr"] for a in dash["annotations"]["list"] if "expr" in a]
    return exprs


def test_dashboard_structure() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] and dash["title"] and dash["schemaVersion"] >= 30
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), ids
    for p in dash["panels"]:
        g = p["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        assert p["targets"] and all(t["expr"] for t in p["targets"]), p["title"]
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
    names = {v["name"] for v in dash["templating"]["list"]}
    assert {"datasource", "pair"} <= names
    assert all("$pair" in e or 'pair="$pair"' in e for e in dashboard_queries()), "a query not scoped to the pair"


def test_dashboard_queries_parse(tmp_path) -> None:
    """Each query as a recording rule (Grafana's $pair replaced by a value): promtool parses the PromQL."""
    queries = [{"record": f"dashboard:query{i}", "expr": e.replace("$pair", "p1")}
               for i, e in enumerate(dashboard_queries())]
    rules = {"groups": [{"name": "dashboard", "rules": queries}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(json.dumps(rules))  # JSON is YAML
    r = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "SUCCESS" in r.stdout, r.stdout + r.stderr


def rule_metric_names() -> set[str]:
    """The conntrackd metric names the rules and the dashboard use (counters as exported, with _total)."""
    text = RULES.read_text() + "\n".join(dashboard_queries())
    return set(re.findall(r"\b(conntrackd_[a-z_]*[a-z])\b(?![_*])", text))
