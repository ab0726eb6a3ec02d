"""The lab's Prometheus: Debian's `prometheus` on the host scrapes both firewalls' metrics endpoints.

The lab inventory turns the metrics on (`conntrackd_metrics_address`: each node's outside address,
`ha_firewall_metrics_scrapers`: the host's address on the outside bridge). This module starts a throw-away
Prometheus (scrape interval 1 s, storage in a temporary directory, listening on 127.0.0.1), waits for a
couple of scrapes and queries it through its HTTP API: every node running our daemon is `up`, its samples carry
the pair label the roles render, and the pair has exactly one primary, the node holding the VIPs (a C node
exports nothing and is not scraped: docs/lab.md).
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import tempfile
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import addresses, wait_for

PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _targets(lab: dict[str, Any]) -> dict[str, str]:
    """node -> address:port of its metrics endpoint (our daemon only)."""
    out = {}
    for node in lab["firewalls"]:
        hv = lab["hostvars"][node]
        if lab["implementation"][node] != "python":
            continue
        addr = lab["nodes"][node]["addresses"]["outside"]
        out[node] = f"{addr}:{hv.get('conntrackd_metrics_port', 9101)}"
    return out


@pytest.fixture(scope="module")
def prometheus(lab: dict[str, Any]) -> Iterator[str]:
    assert Path(PROMETHEUS).exists(), "Debian's prometheus package is not installed (scripts/install-deps.sh)"
    targets = _targets(lab)
    tmp = Path(tempfile.mkdtemp(prefix="ctpy-prometheus-"))
    config = {"global": {"scrape_interval": "1s", "scrape_timeout": "900ms"},
              "scrape_configs": [{"job_name": "conntrackd",
                                  "static_configs": [{"targets": [targets[n]], "labels": {"node": n}}
                                                     for n in sorted(targets)]}]}
    (tmp / "prometheus.yml").write_text(json.dumps(config))  # JSON is YAML
    port = _free_port()
    proc = subprocess.Popen([PROMETHEUS, f"--config.file={tmp / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=(tmp / "prometheus.log").open("w"))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for("prometheus to answer", lambda: _ready(url), timeout=30)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def query(url: str, expr: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}", timeout=5) as r:
        data = json.load(r)
    assert data["status"] == "success", data
    return data["data"]["result"]


def test_every_node_is_scraped(prometheus: str, lab: dict[str, Any]) -> None:
    nodes = sorted(_targets(lab))
    assert nodes, "no node runs our daemon"

    def all_up() -> list[dict[str, Any]] | None:
        res = query(prometheus, 'up{job="conntrackd"} == 1')
        return res if sorted(r["metric"]["node"] for r in res) == nodes else None

    wait_for(f"up == 1 for {nodes}", all_up, timeout=30, interval=1)


def test_samples_carry_the_pair_label(prometheus: str, lab: dict[str, Any]) -> None:
    pair = lab["hostvars"]["fw1"]["ha_firewall_pair_group"]
    nodes = sorted(_targets(lab))
    res = wait_for("conntrackd_sync_role_primary of every node",
                   lambda: (r := query(prometheus, f'conntrackd_sync_role_primary{{pair="{pair}"}}'))
                   and sorted(x["metric"]["node"] for x in r) == nodes and r, timeout=30, interval=1)
    assert {x["metric"]["pair"] for x in res} == {pair}
    fill = query(prometheus, f'conntrackd_kernel_table_entries{{pair="{pair}"}} / conntrackd_kernel_table_max')
    assert sorted(x["metric"]["node"] for x in fill) == nodes, fill


def test_exactly_one_primary_the_vip_holder(prometheus: str, lab: dict[str, Any], firewalls: dict[str, Any]) -> None:
    """The role the daemons export against who holds the VIPs: exactly one primary in the pair (a C peer
    exports nothing: then the Python node is primary exactly when it holds the VIPs)."""
    pair = lab["hostvars"]["fw1"]["ha_firewall_pair_group"]
    ifname, vip = next(iter(lab["vips"].values()))
    holder = [n for n, h in firewalls.items() if vip in addresses(h, ifname)]
    assert len(holder) == 1, holder
    scraped = set(_targets(lab))
    want = 1 if holder[0] in scraped else 0

    def primaries() -> list[str] | None:
        res = query(prometheus, f'conntrackd_sync_role_primary{{pair="{pair}"}} == 1')
        names = sorted(r["metric"]["node"] for r in res)
        return names if len(names) == want and (not want or names == holder) else None

    wait_for(f"{want} primary ({holder[0]} holds the VIPs)", lambda: primaries() is not None, timeout=20, interval=1)
    total = query(prometheus, f'sum by (pair) (conntrackd_sync_role_primary{{pair="{pair}"}})')
    assert [float(r["value"][1]) for r in total] == [float(want)], total
