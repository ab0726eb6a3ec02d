"""Fixtures for the container lab (molecule/default, scripts/lab.sh).

These tests talk to running containers through testinfra's podman backend
(`podman://ctpy-fw1`, i.e. `podman exec`), not through Ansible: that is ~5x
faster and needs no inventory plugin. They only run when CTPY_LAB=1 (set by
molecule/default/verify.yml and `scripts/lab.sh verify`); a plain `pytest`
run of the repository skips them with a reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[2]
# One or more inventory sources (os.pathsep-separated): the interop scenario layers its own on
# molecule/default/inventory.
INVENTORIES = [p for p in os.environ.get("CTPY_LAB_INVENTORY", "").split(os.pathsep) if p] or [
    str(ROOT / "molecule" / "default" / "inventory")]
T = TypeVar("T")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get("CTPY_LAB") == "1":
        return
    skip = pytest.mark.skip(reason="container lab not requested: run `scripts/lab.sh verify` or `molecule test`")
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


def wait_for(what: str, probe: Callable[[], T], timeout: float = 20.0, interval: float = 0.5) -> T:
    """Poll `probe` until it returns something truthy; fail with its last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = probe()
        except AssertionError as exc:  # a probe may assert to explain itself
            last = exc
        else:
            if last:
                return last
        if time.monotonic() >= deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def lab() -> dict[str, Any]:
    """Inventory variables of the lab, resolved by ansible-inventory."""
    exe = Path(sys.executable).with_name("ansible-inventory")
    cmd = [str(exe) if exe.exists() else (shutil.which("ansible-inventory") or "ansible-inventory")]
    for inv in INVENTORIES:
        cmd += ["-i", inv]
    cmd.append("--list")
    data = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    hostvars = data["_meta"]["hostvars"]
    fw = hostvars["fw1"]
    return {
        "hostvars": hostvars,
        "prefix": fw["lab_prefix"],
        "nodes": fw["lab_nodes"],
        "networks": fw["lab_networks"],
        "firewalls": sorted(data["pair_lab"]["hosts"]),
        "vips": {i["name"]: (i["interface"], i["virtual_ipaddress"][0]["address"].split("/")[0])
                 for i in fw["keepalived_instances"]},
        "venv": "/opt/conntrack-tools",
        "implementation": {n: hostvars[n].get("conntrackd_implementation", "python")
                           for n in data["pair_lab"]["hosts"]},
        "advert_int": float(hostvars["fw1"].get("keepalived_advert_int", 1)),  # < 1: the fast profile
        # DisableExternalCache (the role's default): synced states go to the backup's kernel table
        "inject": {n: bool(hostvars[n].get("conntrackd_disable_external_cache", True))
                   and hostvars[n].get("conntrackd_mode", "FTFW") != "ALARM" for n in data["pair_lab"]["hosts"]},
    }


@pytest.fixture(scope="session")
def hosts(lab: dict[str, Any]) -> dict[str, Any]:
    import testinfra

    return {name: testinfra.get_host(f"podman://{lab['prefix']}{name}") for name in lab["nodes"]}


@pytest.fixture(scope="session")
def firewalls(lab: dict[str, Any], hosts: dict[str, Any]) -> dict[str, Any]:
    return {name: hosts[name] for name in lab["firewalls"]}


def keepalived_states(host: Any) -> dict[str, str]:
    """VRRP instance -> MASTER/BACKUP/FAULT/INIT from keepalived's data dump (SIGUSR1)."""
    pid = host.check_output("systemctl show -p MainPID --value keepalived").strip()
    if pid in ("", "0"):
        return {}
    host.run("rm -f /tmp/keepalived.data")
    host.check_output(f"kill -USR1 {pid}")
    out = ""
    for _ in range(20):
        res = host.run("cat /tmp/keepalived.data")
        if res.rc == 0 and "VRRP Instance" in res.stdout:
            out = res.stdout
            break
        time.sleep(0.1)
    states: dict[str, str] = {}
    current = None
    for line in out.splitlines():
        line = line.strip()
        if line.startswith("VRRP Instance = "):
            current = line.split("=", 1)[1].strip()
        elif current and line.startswith("State = "):
            states[current] = line.split("=", 1)[1].strip()
            current = None
    return states


def addresses(host: Any, ifname: str) -> set[str]:
    data = json.loads(host.check_output(f"ip -j -4 addr show dev {ifname}"))
    return {a["local"] for link in data for a in link.get("addr_info", [])}
