"""The collection's modules for real: `ansible -m` on the kernel's table inside a throwaway network namespace and
against a running daemon, and their documentation. Argument handling and result shaping (a faked run_command) are
ansible-test units: tests/collection_units/, run on the installed artifact by tests/roles/test_collection.py."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PY_CONNTRACK, Netns, require_root

from .helpers import VENV_BIN, checkout_collections_path

pytest.importorskip("ansible")

# ansible-doc resolves the modules by FQCN through a collections path whose ctpy/conntrack_tools is this checkout.
COLLECTIONS = checkout_collections_path()


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
