"""The lab after converge: systemd, services, VRRP roles, VIPs, rules, traffic, sync caches.

Everything that depends on timing polls (wait_for) instead of sleeping.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from .conftest import addresses, keepalived_states, wait_for

FIREWALLS = ["fw1", "fw2"]
ECHO_PORT = 7777
TRAFFIC = Path(__file__).with_name("lab_traffic.py")


def _roles(firewalls: dict[str, Any]) -> dict[str, str]:
    """node -> MASTER/BACKUP when all of its instances agree, else the raw states."""
    out = {}
    for name, host in firewalls.items():
        states = set(keepalived_states(host).values())
        out[name] = states.pop() if len(states) == 1 else ",".join(sorted(states)) or "none"
    return out


@pytest.fixture(scope="module")
def master_backup(firewalls: dict[str, Any]) -> tuple[str, str]:
    roles = wait_for("one MASTER and one BACKUP",
                     lambda: (r := _roles(firewalls)) and sorted(r.values()) == ["BACKUP", "MASTER"] and r,
                     timeout=30)
    master = next(n for n, r in roles.items() if r == "MASTER")
    backup = next(n for n, r in roles.items() if r == "BACKUP")
    return master, backup


@pytest.mark.parametrize("node", FIREWALLS)
def test_systemd_is_pid1_without_failed_units(hosts: dict[str, Any], node: str) -> None:
    host = hosts[node]
    assert host.check_output("cat /proc/1/comm") == "systemd"
    failed = host.check_output("systemctl --failed --no-legend --plain | cut -d' ' -f1")
    assert failed == "", f"{node}: failed units: {failed.split()}"


@pytest.mark.parametrize("node", FIREWALLS)
def test_keepalived_runs(hosts: dict[str, Any], node: str) -> None:
    svc = hosts[node].service("keepalived")
    assert svc.is_running and svc.is_enabled


@pytest.mark.parametrize("node", FIREWALLS)
def test_conntrackd_runs_the_chosen_binary(hosts: dict[str, Any], lab: dict[str, Any], node: str) -> None:
    """Ours (the venv's console script) unless the inventory asks for the C daemon on this node."""
    host = hosts[node]
    svc = host.service("conntrackd")
    assert svc.is_running and svc.is_enabled, host.run("journalctl -u conntrackd -n 20 --no-pager").stdout
    pid = host.check_output("systemctl show -p MainPID --value conntrackd")
    cmdline = host.check_output(f"tr '\\0' ' ' </proc/{pid}/cmdline")
    if lab["implementation"][node] == "c":
        assert cmdline.startswith("/usr/sbin/conntrackd "), cmdline
    else:
        assert f"{lab['venv']}/bin/conntrackd" in cmdline, cmdline


@pytest.mark.parametrize("node", FIREWALLS)
def test_forwarding_and_strict_tcp_tracking(hosts: dict[str, Any], node: str) -> None:
    host = hosts[node]
    assert host.check_output("cat /proc/sys/net/ipv4/ip_forward") == "1"
    assert host.check_output("cat /proc/sys/net/netfilter/nf_conntrack_tcp_loose") == "0"
    tables = host.check_output("nft list tables")
    assert "table inet ha_firewall" in tables and "table inet ctpy_lab" in tables


@pytest.mark.parametrize("node", FIREWALLS)
def test_one_window_tracking_policy(hosts: dict[str, Any], node: str) -> None:
    """The kernel's be_liberal (the entries the node made itself; set by create.yml, /proc/sys is read-only in
    here) matches the TCPWindowTracking the role rendered (the entries conntrackd injects). A strict local entry
    drops the old master's transition stragglers as invalid (docs/failover.md)."""
    host = hosts[node]
    liberal = host.check_output("cat /proc/sys/net/netfilter/nf_conntrack_tcp_be_liberal")
    conf = host.check_output("grep -i TCPWindowTracking /etc/conntrackd/conntrackd.conf").split()
    assert [conf[-1].lower(), liberal] in (["off", "1"], ["on", "0"]), (conf, liberal)


def test_one_master_one_backup(master_backup: tuple[str, str]) -> None:
    master, backup = master_backup
    assert {master, backup} == set(FIREWALLS)


def test_vips_are_on_the_master_only(firewalls: dict[str, Any], lab: dict[str, Any],
                                     master_backup: tuple[str, str]) -> None:
    master, backup = master_backup
    for name, (ifname, vip) in lab["vips"].items():
        wait_for(f"{name} VIP {vip} on {master}/{ifname}",
                 lambda vip=vip, ifname=ifname: vip in addresses(firewalls[master], ifname))
        assert vip not in addresses(firewalls[backup], ifname), f"{vip} also on the backup {backup}"


@pytest.fixture(scope="module")
def echo_server(hosts: dict[str, Any], lab: dict[str, Any]):  # type: ignore[no-untyped-def]
    """TCP+UDP echo on the server; removed (by its pid) afterwards."""
    server = f"{lab['prefix']}server"
    for node in ("client", "server"):
        subprocess.run(["podman", "cp", str(TRAFFIC), f"{lab['prefix']}{node}:/usr/local/bin/lab_traffic.py"],
                       check=True)
    subprocess.run(["podman", "exec", "-d", server, "sh", "-c",
                    f"echo $$ >/run/ctpy-echo.pid; exec python3 /usr/local/bin/lab_traffic.py serve {ECHO_PORT}"],
                   check=True)
    wait_for("the echo server", lambda: f":{ECHO_PORT} " in hosts["server"].check_output("ss -Hltn"))
    yield lab["nodes"]["server"]["addresses"]["inside"]
    hosts["server"].run("kill $(cat /run/ctpy-echo.pid)")


def test_client_reaches_the_server_through_the_pair(hosts: dict[str, Any], echo_server: str,
                                                    master_backup: tuple[str, str]) -> None:
    client = hosts["client"]
    ping = client.run(f"ping -c 3 -i 0.2 -W 1 {echo_server}")
    assert ping.rc == 0, ping.stdout + ping.stderr
    res = client.run(f"python3 /usr/local/bin/lab_traffic.py hold {echo_server} {ECHO_PORT} 3 1")
    assert res.rc == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["kept"] == 3, summary


def _cache(host: Any, flag: str) -> str:
    return host.check_output(f"conntrackd {flag}")


def test_flows_show_up_in_master_internal_cache_and_backup_state(
        hosts: dict[str, Any], lab: dict[str, Any], echo_server: str, master_backup: tuple[str, str]) -> None:
    """The backup holds the master's flows: in its kernel table with direct injection (the roles'
    default), else in its external cache."""
    master, backup = master_backup
    client_ip = lab["nodes"]["client"]["addresses"]["outside"]
    needle = f"src={client_ip} dst={echo_server}"
    inject = lab["inject"][backup]

    def backup_count() -> int:
        if inject:  # established ones: closed connections of earlier runs linger in TIME_WAIT
            out = hosts[backup].check_output("conntrack -L 2>/dev/null || true")
            return sum(1 for line in out.splitlines() if needle in line and "ESTABLISHED" in line)
        return _cache(hosts[backup], "-e").count(needle)

    before = backup_count() if inject else 0
    proc = subprocess.Popen(
        ["podman", "exec", f"{lab['prefix']}client", "python3", "/usr/local/bin/lab_traffic.py", "hold",
         echo_server, str(ECHO_PORT), "5", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(f"the client's flows in {master}'s internal cache (conntrackd -i)",
                 lambda: _cache(hosts[master], "-i").count(needle) >= 5,
                 timeout=15)
        t0 = time.monotonic()
        where = "kernel table (conntrack -L)" if inject else "external cache (conntrackd -e)"
        wait_for(f"the client's flows in {backup}'s {where}", lambda: backup_count() >= before + 5, timeout=15)
        print(f"flows visible on the backup {time.monotonic() - t0:.2f} s after the master's")
    finally:
        out, err = proc.communicate(timeout=60)
    summary = json.loads(out)
    assert summary["kept"] == 5, summary
