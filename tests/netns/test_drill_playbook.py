"""playbooks/drill.yml for real, without containers: namespaces are the Ansible hosts (issue #15).

Topology (names ``ctpy-dr...``; a hub namespace holds the two LAN bridges)::

    client 10.236.1.10 --[ctpy-drbc]-- fw1 .1 / fw2 .2 (VIP .254) ==sync ctpy-drsy== fw1 / fw2
                                       fw1 10.236.2.1 / fw2 .2 (VIP .254) --[ctpy-drbs]-- server 10.236.2.10:7777 (echo)

Each firewall runs our conntrackd and keepalived with the configs the roles render (templates/conntrackd.conf.j2:
FTFW over UDP, direct injection, readiness file; keepalived.conf.j2: two instances in a sync group, the readiness
and drain track_files, notify hooks through the rendered wrapper and ``conntrackd-notify``), and the ha_firewall
table with its counted ``ct state invalid drop`` forward chain (``ha_firewall_drop_invalid``) and
``nf_conntrack_tcp_loose=0``: a connection the new master holds no state for dies.

The inventory hosts n1, n2 (the pair) and client (the probe host) run their modules through a Python wrapper that
enters their namespace; the wrapper also puts a ``systemctl`` shim first in PATH that answers ``is-active
keepalived`` from the test's keepalived pid (the pre-check asks systemd, which does not run keepalived here).
Tests: the drill on a healthy pair (N/N kept, 0 resets, the VIPs back on n1, the report's invalid drops equal to the
counters' change); check mode changes nothing; an unhealthy pair (keepalived stopped on the backup) and a target
that does not echo are refused before any drain; and the control: the backup's synced state deleted, the report must
show the drops and the stalled or lost connections. Only processes started here are signalled (by pid); namespaces
are deleted by name.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from conntrack_tools import render
from tests.conftest import require_root
from tests.netns.daemon_proc import C_CONNTRACK, ns_run, sh, wait_for
from tests.netns.keepalived_pair import KEEPALIVED, notify_launcher, start_keepalived, stop, stop_keepalived
from tests.roles.helpers import ROOT, VENV_BIN, build, checkout_playbook_env, netns_python

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not os.path.exists(KEEPALIVED), reason=f"needs {KEEPALIVED}"),
    pytest.mark.skipif(not shutil.which("nft"), reason="needs nft"),
]

TAG = f"{os.getpid() % 10000}"
NS = {"hub": f"ctpy-drh{TAG}", "client": f"ctpy-drc{TAG}", "server": f"ctpy-drs{TAG}",
      "n1": f"ctpy-dr1{TAG}", "n2": f"ctpy-dr2{TAG}"}
BRIDGE = {"in": "ctpy-drbc", "out": "ctpy-drbs"}
IN, OUT, SYNC = "ctpy-drin", "ctpy-drout", "ctpy-drsy"
VIP_IN, VIP_OUT = "10.236.1.254", "10.236.2.254"
ECHO_PORT = 7777
N = 20
PLAYBOOK = VENV_BIN / "ansible-playbook"
GROUP = "pair_dr"
ADDRS = {f"n{i}": {IN: [f"10.236.1.{i}"], OUT: [f"10.236.2.{i}"], SYNC: [f"10.236.9.{i}"]} for i in (1, 2)}
INSTANCES = [
    {"name": "VI_IN", "interface": IN, "virtual_router_id": 71, "virtual_ipaddress": [{"address": f"{VIP_IN}/24"}]},
    {"name": "VI_OUT", "interface": OUT, "virtual_router_id": 72, "virtual_ipaddress": [{"address": f"{VIP_OUT}/24"}]},
]
GROUP_VARS = {
    "ha_firewall_pair_group": GROUP,
    "ha_firewall_pair_addresses": ADDRS,
    "ha_firewall_conntrack_tools_venv": str(VENV_BIN.parent),
    "keepalived_auth_pass": "ctpydr",
    "keepalived_instances": INSTANCES,
    "conntrackd_channels": [{"interface": SYNC}],
}
SYSTEMCTL = """#!/bin/sh
# test shim: `systemctl is-active keepalived` from the test's keepalived pid file, nothing else
if [ "$1" = is-active ] && [ "$2" = keepalived ]; then
    if [ -s {pidfile} ] && kill -0 "$(cat {pidfile})" 2>/dev/null; then echo active; exit 0; fi
    echo inactive; exit 3
fi
echo "systemctl shim: $*" >&2; exit 1
"""


def ns(name: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    return ns_run(NS[name], *cmd, check=check)


def veth(a: str, a_if: str, b: str, b_if: str) -> None:
    """A veth between namespaces a and b, named a_if in a and b_if in b (created under temporary ctpy-dr names)."""
    sh("ip", "link", "add", f"ctpy-dr{TAG}x", "netns", NS[a], "type", "veth", "peer", "name", f"ctpy-dr{TAG}y",
       "netns", NS[b], check=True)
    ns(a, "ip", "link", "set", f"ctpy-dr{TAG}x", "name", a_if)
    ns(b, "ip", "link", "set", f"ctpy-dr{TAG}y", "name", b_if)
    ns(a, "ip", "link", "set", a_if, "up")
    ns(b, "ip", "link", "set", b_if, "up")


def setup_network() -> None:
    for name in NS.values():
        sh("ip", "netns", "add", name, check=True)
    for name in NS:
        ns(name, "ip", "link", "set", "lo", "up")
    for br in BRIDGE.values():
        ns("hub", "ip", "link", "add", br, "type", "bridge", "mcast_snooping", "0")
        ns("hub", "ip", "link", "set", br, "up")
    port = 0

    def plug(host: str, ifname: str, side: str, addr: str) -> None:
        nonlocal port
        port += 1
        hub_if = f"ctpy-drp{port}"
        veth(host, ifname, "hub", hub_if)
        ns("hub", "ip", "link", "set", hub_if, "master", BRIDGE[side])
        ns(host, "ip", "addr", "add", f"{addr}/24", "dev", ifname)

    plug("client", "ctpy-drc", "in", "10.236.1.10")
    plug("server", "ctpy-drs", "out", "10.236.2.10")
    ns("client", "ip", "route", "add", "default", "via", VIP_IN)
    ns("server", "ip", "route", "add", "default", "via", VIP_OUT)
    for i in (1, 2):
        plug(f"n{i}", IN, "in", f"10.236.1.{i}")
        plug(f"n{i}", OUT, "out", f"10.236.2.{i}")
    veth("n1", SYNC, "n2", SYNC)
    for i in (1, 2):
        ns(f"n{i}", "ip", "addr", "add", f"10.236.9.{i}/24", "dev", SYNC)
        ns(f"n{i}", "sysctl", "-qw", "net.ipv4.ip_forward=1")
    for name in ("client", "server", "n1", "n2"):  # carrier everywhere, else keepalived starts in FAULT
        wait_for(lambda name=name: "state DOWN" not in ns(name, "ip", "-o", "link", "show").stdout
                 and "NO-CARRIER" not in ns(name, "ip", "-o", "link", "show").stdout, 5, f"{name} carrier")


class Fw:
    """One firewall: the roles' conntrackd.conf, keepalived.conf and ha_firewall table, rendered for node ``i``."""

    def __init__(self, tmp: Path, i: int) -> None:
        self.i, self.name, self.ns = i, f"n{i}", NS[f"n{i}"]
        self.dir = tmp / self.name
        self.dir.mkdir()
        self.conf, self.kconf = self.dir / "conntrackd.conf", self.dir / "keepalived.conf"
        self.nft = self.dir / "fw.nft"
        self.maintenance, self.ready = self.dir / "maintenance", self.dir / "ready"
        self.kout, self.nout = self.dir / "keepalived.out", self.dir / "notify.err"
        self.wrapper = self.dir / "conntrackd-notify.sh"
        self.host_vars = {"conntrackd_config_path": str(self.conf),
                          "ha_firewall_maintenance_file": str(self.maintenance),
                          "keepalived_priority": 150 if i == 1 else 100}
        groups = {"all": ["n1", "n2", "client"], GROUP: ["n1", "n2"], "ha_firewalls": ["n1", "n2"]}
        ctx = build(self.name, groups, {**GROUP_VARS, **self.host_vars})
        ctx.update({
            "inventory_hostname": self.name, "groups": groups,
            "conntrackd_systemd": False, "conntrackd_syslog": "off", "conntrackd_log_file": str(self.dir / "log"),
            "conntrackd_lock_file": str(self.dir / "lock"), "conntrackd_socket_path": str(self.dir / "ctl"),
            "conntrackd_readiness_file": str(self.ready), "keepalived_readiness_file": str(self.ready),
            "conntrackd_nf_conntrack_max": 65536, "conntrackd_hash_size": 8192, "conntrackd_hash_limit": 131072,
            "keepalived_notify_wrapper": str(self.wrapper), "keepalived_router_id": f"ctpy-dr-{self.name}",
            "keepalived_maintenance_file": str(self.maintenance), "keepalived_enable_script_security": False,
            "keepalived_notify_command": notify_launcher(self.dir, self.nout),
            "keepalived_notify_args": ["-C", str(self.conf), "--no-syslog", "--timeout", "10"],
            "ha_firewall_drop_invalid": True,
        })
        self.conf.write_text(render.render("conntrackd.conf.j2", ctx))
        self.kconf.write_text(render.render("keepalived.conf.j2", ctx))
        self.wrapper.write_text(render.render("conntrackd-notify.sh.j2", ctx))
        self.wrapper.chmod(0o755)
        self.nft.write_text(render.render("ha_firewall.nft.j2", ctx))
        # The role's per-netns sysctls (window tracking); nf_conntrack_max/_buckets belong to the host.
        self.sysctls = [ln.replace(" ", "") for ln in render.render("conntrack-sysctl.conf.j2", ctx).splitlines()
                        if ln.startswith("net.") and "nf_conntrack_max" not in ln and "buckets" not in ln]
        self.daemon: subprocess.Popen | None = None
        self.keepalived: subprocess.Popen | None = None

    def start(self) -> None:
        ns(self.name, "sysctl", "-qw", "net.netfilter.nf_conntrack_tcp_loose=0", *self.sysctls)
        r = ns(self.name, "nft", "-f", str(self.nft), check=False)
        assert r.returncode == 0, r.stderr + self.nft.read_text()
        with open(self.dir / "daemon.out", "a") as out:
            self.daemon = subprocess.Popen(["ip", "netns", "exec", self.ns, str(VENV_BIN / "conntrackd"), "-C",
                                            str(self.conf)], stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        wait_for(lambda: (self.dir / "ctl").exists() or self.daemon.poll() is not None, 15, f"{self.name} ctl")
        assert self.daemon.poll() is None, (self.dir / "daemon.out").read_text()
        self.keepalived = start_keepalived(["ip", "netns", "exec", self.ns], self.kconf, self.dir, self.kout)

    def vips(self) -> set[str]:
        out = ns(self.name, "ip", "-o", "addr", "show").stdout
        return {v for v in (VIP_IN, VIP_OUT) if f"inet {v}/" in out}

    def invalid_drops(self) -> int:
        out = ns(self.name, "nft", "list", "chain", "inet", "ha_firewall", "forward").stdout
        return int(re.search(r"ct state invalid counter packets (\d+)", out)[1])

    def text(self) -> str:
        out = []
        for name in ("keepalived.out", "notify.err", "log", "daemon.out"):
            p = self.dir / name
            out.append(f"--- {self.name} {name}:\n" + (p.read_text(errors="replace")[-2500:] if p.exists() else ""))
        return "\n".join(out)

    def cleanup(self) -> None:
        stop_keepalived(self.keepalived, self.dir)
        stop(self.daemon, timeout=15)


def echo_server(tmp: Path) -> subprocess.Popen:
    """The TCP echo service in the server namespace (socat's `EXEC:cat` in Python: socat is not installed here)."""
    script = tmp / "echo.py"
    script.write_text(
        "import socketserver\n"
        "class H(socketserver.StreamRequestHandler):\n"
        "    def handle(self):\n"
        "        try:\n"
        "            for line in self.rfile:\n"
        "                self.wfile.write(line)\n"
        "        except OSError:\n"  # a connection the control test lets die: reset, no traceback
        "            pass\n"
        "class S(socketserver.ThreadingMixIn, socketserver.TCPServer):\n"
        "    daemon_threads = True\n    allow_reuse_address = True\n"
        f"S(('0.0.0.0', {ECHO_PORT}), H).serve_forever()\n")
    proc = subprocess.Popen(["ip", "netns", "exec", NS["server"], sys.executable, str(script)])
    wait_for(lambda: f":{ECHO_PORT}" in ns("server", "ss", "-ltn").stdout, 10, "echo server")
    return proc


def inventory(tmp: Path, fws: dict[int, Fw]) -> Path:
    hosts = {}
    for name in ("n1", "n2", "client"):
        shim = tmp / f"bin-{name}"
        shim.mkdir()
        (shim / "systemctl").write_text(SYSTEMCTL.format(pidfile=tmp / name / "keepalived.pid"))
        (shim / "systemctl").chmod(0o755)
        hosts[name] = {"ansible_python_interpreter": netns_python(tmp / f"python-{name}", NS[name], shim)}
    for i, fw in fws.items():
        hosts[f"n{i}"].update(fw.host_vars)
    inv = {"all": {
        "vars": {"ansible_connection": "local"},
        "hosts": {"client": hosts["client"]},
        "children": {"ha_firewalls": {"vars": GROUP_VARS, "children": {GROUP: {
            "hosts": {"n1": hosts["n1"], "n2": hosts["n2"]}}}}},
    }}
    path = tmp / "inventory.yml"
    path.write_text(yaml.safe_dump(inv))
    return path


def play(inv: Path, tmp: Path, *extra: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    env = checkout_playbook_env()
    cmd = [str(PLAYBOOK), "-i", str(inv), str(ROOT / "playbooks" / "drill.yml"), "-e", f"pair={GROUP}",
           "-e", f"drill_target=10.236.2.10:{ECHO_PORT}", "-e", "drill_probe_host=client",
           "-e", f"drill_work_dir={tmp}", *extra]
    res = subprocess.run(cmd + (["--check"] if check else []), cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=600)
    (tmp / "ansible-playbook.out").write_text(res.stdout + res.stderr)
    return res


@pytest.fixture
def lab(tmp_path):
    require_root()
    if not PLAYBOOK.exists():
        pytest.skip("ansible-core is not installed in the venv")
    fws: dict[int, Fw] = {}
    echo = None
    try:
        setup_network()
        fws = {i: Fw(tmp_path, i) for i in (1, 2)}
        for fw in fws.values():
            fw.start()
        echo = echo_server(tmp_path)
        inv = inventory(tmp_path, fws)

        def show() -> str:
            return fws[1].text() + "\n" + fws[2].text()

        wait_for(lambda: fws[1].vips() == {VIP_IN, VIP_OUT} and not fws[2].vips(), 40, "n1 MASTER with both VIPs",
                 show, interval=0.2)
        wait_for(lambda: all(fw.ready.exists() and fw.ready.read_text().strip() == "0" for fw in fws.values()), 30,
                 "both conntrackd ready", show, interval=0.2)
        yield fws, inv, show
    finally:
        stop(echo)
        for fw in fws.values():
            fw.cleanup()
        for name in NS.values():
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def state(fws: dict[int, Fw]) -> dict:
    return {fw.name: {"vips": sorted(fw.vips()), "drain": fw.maintenance.read_text() if fw.maintenance.exists()
                      else None, "invalid": fw.invalid_drops()} for fw in fws.values()}


def test_drill_keeps_every_connection_and_fails_back(lab, tmp_path) -> None:
    fws, inv, show = lab
    report = tmp_path / "report.json"
    drops0 = {i: fw.invalid_drops() for i, fw in fws.items()}
    t0 = time.monotonic()
    res = play(inv, tmp_path, "-e", f"drill_report={report}", "-e", f"drill_connections={N}")
    took = time.monotonic() - t0
    assert res.returncode == 0, res.stdout[-6000:] + res.stderr[-2000:] + show()
    r = json.loads(report.read_text())
    print(f"\ndrill playbook ({took:.0f} s): " + json.dumps({k: v for k, v in r.items() if k != "gaps_s"}))
    for line in res.stdout.splitlines():
        if "drill pair_dr" in line or "connections kept" in line or "dropped as ct state invalid" in line:
            print("  " + line.strip().strip('",'))
    assert r["connections"] == N and r["kept"] == N and r["lost"] == 0 and r["resets"] == 0, r
    assert r["master"] == "n1" and r["peer"] == "n2" and r["master_at_end"] == "n1"
    assert r["takeover_s"] is not None and 0 <= r["takeover_s"] < 10, r
    assert r["failback_s"] is not None and 0 <= r["failback_s"] < 30, r
    assert r["gap_max_s"] < 10, r
    assert r["invalid_dropped"] == {"n1": fws[1].invalid_drops() - drops0[1], "n2": fws[2].invalid_drops() - drops0[2]}
    assert fws[1].vips() == {VIP_IN, VIP_OUT} and not fws[2].vips()
    assert fws[1].maintenance.read_text().strip() == "0"
    assert f"connections kept {N}/{N}" in " ".join(res.stdout.split())
    assert not list(tmp_path.glob("ctpy-drill-*")), "the run's directory was left behind"


def test_drill_check_mode_changes_nothing(lab, tmp_path) -> None:
    fws, inv, show = lab
    before = state(fws)
    mtimes = {fw.name: fw.maintenance.stat().st_mtime for fw in fws.values()}
    res = play(inv, tmp_path, check=True)
    assert res.returncode == 0, res.stdout[-6000:] + show()
    assert "drill (check mode, nothing changed): would probe" in " ".join(res.stdout.split())
    assert state(fws) == before
    assert {fw.name: fw.maintenance.stat().st_mtime for fw in fws.values()} == mtimes
    assert not list(tmp_path.glob("ctpy-drill-*"))
    assert re.search(r"changed=0", res.stdout)
    assert all(int(m) == 0 for m in re.findall(r"changed=(\d+)", res.stdout)), res.stdout[-2000:]


def test_drill_refuses_an_unhealthy_pair(lab, tmp_path) -> None:
    fws, inv, show = lab
    stop_keepalived(fws[2].keepalived, fws[2].dir)
    wait_for(lambda: not (fws[2].dir / "keepalived.pid").exists(), 10, "n2's keepalived gone", show)
    before = state(fws)
    mtimes = {fw.name: fw.maintenance.stat().st_mtime for fw in fws.values()}
    res = play(inv, tmp_path)
    out = " ".join(res.stdout.split())
    assert res.returncode != 0, res.stdout[-4000:]
    assert "precheck" in out, res.stdout[-3000:] + res.stderr[-3000:]
    assert "precheck: pair pair_dr is not healthy, nothing changed: keepalived is not running on n2" in out, \
        res.stdout[-4000:]
    assert "Start the probe" not in res.stdout and "Drain |" not in res.stdout
    assert state(fws) == before
    assert {fw.name: fw.maintenance.stat().st_mtime for fw in fws.values()} == mtimes


def test_drill_stops_before_the_drain_when_the_target_does_not_echo(lab, tmp_path) -> None:
    fws, inv, show = lab
    before = state(fws)
    mtimes = {fw.name: fw.maintenance.stat().st_mtime for fw in fws.values()}
    res = play(inv, tmp_path, "-e", f"drill_target=10.236.2.10:{ECHO_PORT + 1}")  # nothing listens there
    out = " ".join(res.stdout.split())
    assert res.returncode != 0, res.stdout[-4000:]
    assert "drill: the probe could not start, nothing drained: failed: connection" in out, res.stdout[-4000:]
    assert "Drain | Write the drain file" not in res.stdout
    assert state(fws) == before
    assert {fw.name: fw.maintenance.stat().st_mtime for fw in fws.values()} == mtimes


def test_drill_without_the_synced_state_reports_the_invalid_drops(lab, tmp_path) -> None:
    """The control: once the probe connections run, their synced state is deleted from the backup's kernel (FTFW
    sends state changes only, and an established connection has none, so it does not come back): after the drain
    the new master drops their packets as invalid (tcp_loose=0), and the report must say so: drops counted on n2,
    connections stalled or lost. Proof that the ruleset is strict and that the first test's 0 drops mean something."""
    fws, inv, show = lab
    report = tmp_path / "report.json"
    done = threading.Event()
    deleted: dict[str, str] = {}

    def forget() -> None:
        def started() -> bool:
            return done.is_set() or any(p.read_text().startswith("ready")
                                        for p in tmp_path.glob("ctpy-drill-*/probe.ready"))
        try:
            wait_for(started, 120, "the probe's connections", interval=0.05)
        except AssertionError:
            return
        if not done.is_set():
            deleted["n2"] = ns("n2", C_CONNTRACK, "-D", "-p", "tcp", "-s", "10.236.1.10", check=False).stderr

    thread = threading.Thread(target=forget, daemon=True)
    thread.start()
    try:
        res = play(inv, tmp_path, "-e", f"drill_report={report}", "-e", f"drill_connections={N}")
    finally:
        done.set()
        thread.join(10)
    m = re.search(r"(\d+) flow entries have been deleted", deleted.get("n2", ""))
    assert m and int(m[1]) >= N, deleted
    assert report.exists(), res.stdout[-6000:] + show()
    r = json.loads(report.read_text())
    print(f"\ndrill without the backup's state: rc {res.returncode}, {m[1]} entries deleted on n2: "
          + json.dumps({k: v for k, v in r.items() if k != "gaps_s"}))
    assert r["invalid_dropped"]["n2"] > 0, r
    assert r["lost"] > 0 or r["gap_max_s"] > 2.0, r
    assert r["gap_max_s"] > 2.0, r  # a lost connection's silence lasts until it failed
    assert (res.returncode == 0) == (r["lost"] == 0), res.stdout[-3000:]
    assert fws[1].vips() == {VIP_IN, VIP_OUT} and fws[1].maintenance.read_text().strip() == "0"
