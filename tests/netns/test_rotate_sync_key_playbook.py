"""playbooks/rotate_sync_key.yml for real, without containers: two network namespaces are the two hosts.

Each inventory host runs its modules through a Python wrapper that enters its namespace (``ip netns exec``), so the
playbook's ``ip addr`` (who holds the VIP), gather_facts (interfaces), key file writes and conntrackd queries see
that node; files get per-node paths. No keepalived runs here (the VIP is set by hand): for the pair pre-check's
``systemctl is-active keepalived`` the wrapper puts a stand-in ``systemctl`` first in the PATH. Two of our daemons
sync over UDP on a veth pair with keyring AuthKey files while both nodes create a steady stream of flows; the
playbook rotates key 1 -> 2: 0 datagrams rejected, every flow on the peer, no restart. Also: check mode changes
nothing, a second run changes nothing, a pair without a VIP holder and a reused key id are refused before any
change.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_root, stop_process
from tests.netns.daemon_proc import C_CONNTRACK, PY_DAEMON, Conntrackd, ns_run, sh, wait_for
from tests.netns.sync_mesh import assert_nothing_rejected, sync_auth, sync_general
from tests.roles.helpers import ROOT, VENV_BIN, checkout_playbook_env, netns_python

pytestmark = [pytest.mark.root]

TAG = f"{os.getpid() % 100000}"
NS = {1: f"ctpy-rk{TAG}a", 2: f"ctpy-rk{TAG}b"}
VIP = "10.234.0.100"
K1, K2, K3 = "11" * 32, "22" * 32, "33" * 32
PLAYBOOK = VENV_BIN / "ansible-playbook"


def setup_namespaces() -> None:
    """Two namespaces joined by two veth pairs: ctpy-rks (the sync link) and ctpy-rkv (the VRRP interface)."""
    for ns in NS.values():
        sh("ip", "netns", "add", ns, check=True)
        ns_run(ns, "ip", "link", "set", "lo", "up", check=True)
    for name, net in (("ctpy-rks", "10.233.9"), ("ctpy-rkv", "10.234.0")):
        tmp = {1: f"ctpy-rk{TAG}x", 2: f"ctpy-rk{TAG}y"}
        sh("ip", "link", "add", tmp[1], "netns", NS[1], "type", "veth", "peer", "name", tmp[2], "netns", NS[2],
           check=True)
        for i, ns in NS.items():
            ns_run(ns, "ip", "link", "set", tmp[i], "name", name, check=True)
            ns_run(ns, "ip", "addr", "add", f"{net}.{i}/24", "dev", name, check=True)
            ns_run(ns, "ip", "link", "set", name, "up", check=True)
    ns_run(NS[1], "ip", "addr", "add", f"{VIP}/24", "dev", "ctpy-rkv", check=True)  # node 1 is the master


def write_keys(path: Path, *keys: tuple[int, str]) -> None:
    path.write_text("".join(f"key {i} {k}\n" for i, k in keys))
    path.chmod(0o600)


class PairNode(Conntrackd):
    def __init__(self, tmp: Path, i: int) -> None:
        super().__init__(NS[i], tmp / f"n{i}", PY_DAEMON)
        self.i = i
        self.key = self.dir / "sync.key"
        write_keys(self.key, (1, K1))
        self.conf.write_text(
            f"Sync {{\n Mode FTFW {{\n  StartupResync on\n }}\n AuthKey {self.key}\n"
            f" UDP {{\n  IPv4_address 10.233.9.{i}\n  IPv4_Destination_Address 10.233.9.{3 - i}\n"
            "  Port 3799\n  Interface ctpy-rks\n  Checksum on\n }\n}\n"
            + sync_general(self, 8192, 131072, "10.233.9.0/24"))
        self.conf.chmod(0o600)

    def auth(self) -> dict:
        return sync_auth(self)

    def external(self) -> str:
        return self.client("-e").stdout


def inventory(tmp: Path, nodes: dict[int, PairNode]) -> Path:
    hosts = {}
    fake = tmp / "fakebin"
    fake.mkdir(exist_ok=True)
    (fake / "systemctl").write_text('#!/bin/sh\n[ "$*" = "is-active keepalived" ] && echo active && exit 0\nexit 3\n')
    (fake / "systemctl").chmod(0o755)
    for i, n in nodes.items():
        hosts[f"n{i}"] = {"ansible_python_interpreter": netns_python(tmp / f"python-n{i}", NS[i], fake),
                          "conntrackd_config_path": str(n.conf),
                          "conntrackd_auth_key_file": str(n.key),
                          "ha_firewall_maintenance_file": str(tmp / f"n{i}-maintenance")}
    inv = {"all": {"vars": {
        "ansible_connection": "local",
        "ha_firewall_pair_group": "pair_rk",
        "ha_firewall_conntrack_tools_venv": str(VENV_BIN.parent),
        "ha_firewall_pair_addresses": {f"n{i}": {"ctpy-rkv": [f"10.234.0.{i}"], "ctpy-rks": [f"10.233.9.{i}"]}
                                       for i in nodes},
        "keepalived_auth_pass": "rk",
        "keepalived_instances": [{"name": "VI_RK", "interface": "ctpy-rkv", "virtual_router_id": 77,
                                  "virtual_ipaddress": [{"address": f"{VIP}/24"}]}],
        "conntrackd_channels": [{"interface": "ctpy-rks"}],
        "conntrackd_auth_keys": [{"id": 1, "key": K1}],
        # both nodes create flows without a pause here, so each acknowledges the other only every ACK window (300
        # messages): seconds, not the active/backup pair's one (docs/operations.md, the pre-check's lag limit)
        "ha_firewall_precheck_max_unacked_seconds": 60,
    }, "children": {"ha_firewalls": {"children": {"pair_rk": {"hosts": hosts}}}}}}
    path = tmp / "inventory.yml"
    path.write_text(yaml.safe_dump(inv))
    return path


def play(inv: Path, *keys: tuple[int, str], check: bool = False) -> subprocess.CompletedProcess[str]:
    target = {"conntrackd_auth_keys": [{"id": i, "key": k} for i, k in keys]}
    env = checkout_playbook_env()
    cmd = [str(PLAYBOOK), "-i", str(inv), str(ROOT / "playbooks" / "rotate_sync_key.yml"), "-e", json.dumps(target)]
    return subprocess.run(cmd + (["--check"] if check else []), cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def _keys(n: PairNode) -> set[str]:
    return set(re.findall(r"src=\S+ dst=\S+ sport=\d+ dport=\d+", n.external()))


def recap(res: subprocess.CompletedProcess[str]) -> dict[str, dict[str, int]]:
    out = {}
    for line in res.stdout.splitlines():
        if line.startswith(("n1 ", "n2 ")) and "ok=" in line:
            out[line.split()[0]] = {k: int(v) for k, v in (w.split("=") for w in line.split()[2:])}
    return out


def stream(i: int, stop: Path) -> subprocess.Popen:
    """Creates flows on node i, one every ~20 ms, until ``stop`` exists; prints how many it created."""
    script = (f"k=0; while [ ! -e {stop} ]; do {C_CONNTRACK} -I -p udp -s 192.0.{i}.$((k % 250 + 1)) "
              f"-d 198.51.100.{i} --sport $((1000 + k)) --dport 53 -t 600 >/dev/null 2>&1 || exit 1; "
              "k=$((k + 1)); sleep 0.02; done; echo $k")
    return subprocess.Popen(["ip", "netns", "exec", NS[i], "sh", "-c", script], stdout=subprocess.PIPE, text=True)


def key_of(i: int, k: int) -> str:
    return f"src=192.0.{i}.{k % 250 + 1} dst=198.51.100.{i} sport={1000 + k} dport=53"


@pytest.mark.skipif(not PLAYBOOK.exists(), reason="ansible-core is not installed in the venv")
def test_rotate_sync_key_playbook_on_a_live_pair(tmp_path):
    require_root()
    if not (os.path.exists(C_CONNTRACK) and shutil.which("ip")):
        pytest.fail("needs iproute2 and /usr/sbin/conntrack")
    nodes: dict[int, PairNode] = {}
    streams: list[subprocess.Popen] = []
    try:
        setup_namespaces()
        for i in (1, 2):
            nodes[i] = PairNode(tmp_path, i)
            nodes[i].start()
        n1, n2 = nodes[1], nodes[2]
        wait_for(lambda: all(n.auth()["accepted"] > 0 for n in (n1, n2)), 15, "the pair syncs with key 1")
        inv = inventory(tmp_path, nodes)
        # refused before any change: a new key under id 1 (another key than the pair's key 1)
        res = play(inv, (1, K3))
        assert res.returncode != 0 and "key id(s) 1 of conntrackd_auth_keys already name another key" in " ".join(
            res.stdout.split()), res.stdout[-3000:]
        # check mode: reads, reports, writes nothing
        res = play(inv, (2, K2), check=True)
        assert res.returncode == 0, res.stdout[-3000:]
        assert all(n.key.read_text() == f"key 1 {K1}\n" for n in (n1, n2))
        assert K2 not in res.stdout + res.stderr and K1 not in res.stdout + res.stderr
        pids = {i: n.proc.pid for i, n in nodes.items()}
        stop = tmp_path / "stop"
        streams = [stream(1, stop), stream(2, stop)]
        wait_for(lambda: key_of(1, 20) in n2.external() and key_of(2, 20) in n1.external(), 30, "stream on")
        res = play(inv, (2, K2))
        assert res.returncode == 0, res.stdout[-4000:]
        # the shared pair pre-check ran first and read what each peer has not acknowledged (under the streams)
        text = " ".join(res.stdout.split())
        assert "precheck: pair pair_rk is healthy (master n1)" in text, res.stdout[-4000:]
        acks = re.findall(r"(n[12]) \(conntrackd python.*?unacknowledged (\d+) \(oldest ([\d.]+) s\)", text)
        assert {a[0] for a in acks} == {"n1", "n2"}, text[-3000:]
        print("pre-check under the streams: (node, unacknowledged, oldest s)", acks)
        assert K2 not in res.stdout + res.stderr and K1 not in res.stdout + res.stderr
        assert {h: r["changed"] for h, r in recap(res).items()} == {"n1": 3, "n2": 3}, res.stdout[-1500:]
        assert all(s.poll() is None for s in streams), "a stream failed during the rotation"
        stop.touch()
        made = {i: int(s.communicate(timeout=60)[0]) for i, s in zip((1, 2), streams, strict=True)}
        assert all(s.returncode == 0 for s in streams) and min(made.values()) > 100, made
        want = {i: {key_of(i, k) for k in range(made[i])} for i in (1, 2)}
        wait_for(lambda: want[1] <= _keys(n2) and want[2] <= _keys(n1), 30,
                 "every flow on the peer", show=lambda: f"missing on 2: {len(want[1] - _keys(n2))}, "
                                                        f"on 1: {len(want[2] - _keys(n1))}")
        for n in (n1, n2):
            a = n.auth()
            assert_nothing_rejected(a)
            assert a["send_key_id"] == 2 and a["key_ids"] == [2] and a["key_file"]["reloads"] == 3, a
            assert n.key.read_text().splitlines()[-1] == f"key 2 {K2}" and oct(n.key.stat().st_mode)[-3:] == "600"
            assert n.proc.pid == pids[n.i] and n.proc.poll() is None  # never restarted
        # again with the same list: three no-op steps
        res = play(inv, (2, K2))
        assert res.returncode == 0 and {h: r["changed"] for h, r in recap(res).items()} == {"n1": 0, "n2": 0}, \
            res.stdout[-3000:]
        # an unhealthy pair (nobody holds the VIP) is refused before any change
        ns_run(NS[1], "ip", "addr", "del", f"{VIP}/24", "dev", "ctpy-rkv", check=True)
        res = play(inv, (3, K3))
        assert res.returncode != 0 and ("precheck: pair pair_rk is not healthy, nothing changed: no master: no node of"
                                        " pair_rk holds a VIP") in " ".join(res.stdout.split()), res.stdout[-3000:]
        assert all(n.auth()["key_ids"] == [2] for n in (n1, n2))
        counters = {n.i: {k: n.auth()[k] for k in ("accepted", "sent", "by_key")} for n in (n1, n2)}
        print("rotate_sync_key playbook: flows created", made, counters)
    finally:
        for s in streams:
            stop_process(s, sig=signal.SIGKILL)
        for n in nodes.values():
            n.stop()
        for ns in NS.values():
            subprocess.run(["ip", "netns", "del", ns], check=False, capture_output=True)
