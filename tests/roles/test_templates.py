"""Render templates/ for a matrix of variables and validate the results without Ansible."""

from __future__ import annotations

import copy
import itertools
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from conntrack_tools import render

from .helpers import ROOT, context, find, have_netns, keepalived_interfaces, parse_blocks, run_in_netns

GOLDEN = Path(__file__).parent / "golden"
NETNS = pytest.mark.skipif(not have_netns(), reason="needs root and unshare --net to create test interfaces")

MODES = ["FTFW", "NOTRACK", "ALARM"]
TRANSPORTS = ["udp", "multicast", "tcp"]
FAMILIES = ["inet", "inet6"]
VRRP = ["unicast", "multicast"]

PAIR_ADDRESSES = {
    "n1": {"eth0": ["192.0.2.1", "2001:db8::1"], "eth1": ["10.0.0.1"], "sync0": ["10.9.0.1", "fd00:9::1"]},
    "n2": {"eth0": ["192.0.2.2", "2001:db8::2"], "eth1": ["10.0.0.2"], "sync0": ["10.9.0.2", "fd00:9::2"]},
}


def matrix_context(mode: str, transport: str, family: str, vrrp: str, node: str = "n1") -> dict:
    """A pair n1/n2 with one VRRP instance of ``family`` on eth0 and one sync channel on sync0."""
    vip = "2001:db8::100/64" if family == "inet6" else "192.0.2.100/24"
    inv = {
        "ha_firewall_pair_group": "pair_t",
        "ha_firewall_pair_addresses": PAIR_ADDRESSES,
        "keepalived_vrrp_transport": vrrp,
        "keepalived_auth_pass": "s3cret",
        "keepalived_instances": [
            {"name": "VI_OUT", "interface": "eth0", "virtual_router_id": 10,
             "virtual_ipaddress": [{"address": vip}], "track_interfaces": ["eth1"]},
            {"name": "VI_IN", "interface": "eth1", "virtual_router_id": 11,
             "virtual_ipaddress": [{"address": "10.0.0.254/24"}]},
        ],
        "conntrackd_mode": mode,
        "conntrackd_transport": transport,
        "conntrackd_channels": [{"interface": "sync0", "family": family}],
    }
    from .helpers import build

    return build(node, {"pair_t": ["n1", "n2"], "all": ["n1", "n2"]}, inv)


MATRIX = list(itertools.product(MODES, TRANSPORTS, FAMILIES, VRRP))
IDS = ["-".join(c) for c in MATRIX]


# --- conntrackd.conf ------------------------------------------------------------------------------

ALLOWED_MODE_KEYS = {
    "FTFW": {"ResendQueueSize", "ACKWindowSize", "DisableExternalCache", "StartupResync", "CommitTimeout",
             "PurgeTimeout"},
    "NOTRACK": {"DisableInternalCache", "DisableExternalCache", "StartupResync", "CommitTimeout", "PurgeTimeout"},
    "ALARM": {"RefreshTime", "CacheTimeout", "CommitTimeout", "PurgeTimeout"},
}
CHANNEL_KEYS = {
    "UDP": {"IPv4_address", "IPv6_address", "IPv4_Destination_Address", "IPv6_Destination_Address", "Port",
            "Interface", "SndSocketBuffer", "RcvSocketBuffer", "Checksum"},
    "Multicast": {"IPv4_address", "IPv6_address", "IPv4_interface", "Group", "Interface", "SndSocketBuffer",
                  "RcvSocketBuffer", "Checksum"},
}
CHANNEL_KEYS["TCP"] = CHANNEL_KEYS["UDP"] | {"ErrorQueueLength"}


def check_conntrackd_structure(text: str, mode: str, transport: str, family: str) -> None:
    tree = parse_blocks(text)
    assert [w[0] for w, _ in tree] == ["Sync", "General"]
    modes = find(tree, "Sync", "Mode")
    assert len(modes) == 1 and modes[0][0] == ["Mode", mode]
    keys = {w[0] for w, _ in modes[0][1]}
    assert keys <= ALLOWED_MODE_KEYS[mode], keys - ALLOWED_MODE_KEYS[mode]
    section = {"udp": "UDP", "multicast": "Multicast", "tcp": "TCP"}[transport]
    sync_children = [w[0] for w, _ in find(tree, "Sync")[0][1]]
    channels = [c for c in sync_children if c in CHANNEL_KEYS]
    assert channels == [section], "exactly one transport kind"
    chan = dict((w[0], w[1:]) for w, _ in find(tree, "Sync", section)[0][1])
    assert set(chan) <= CHANNEL_KEYS[section]
    assert chan["Interface"] == ["sync0"]
    v = "IPv6" if family == "inet6" else "IPv4"
    if transport == "multicast":
        assert chan[f"{v}_address"] == (["ff02::3780"] if family == "inet6" else ["225.0.0.50"])
        assert chan["Group"] == ["3780"]
        if family == "inet":
            assert chan["IPv4_interface"] == ["10.9.0.1"]
    else:
        local, peer = ("fd00:9::1", "fd00:9::2") if family == "inet6" else ("10.9.0.1", "10.9.0.2")
        assert chan[f"{v}_address"] == [local]
        assert chan[f"{v}_Destination_Address"] == [peer]
        assert chan["Port"] == ["3780"]
    general = dict((w[0], w[1:]) for w, _ in find(tree, "General")[0][1])
    assert int(general["HashLimit"][0]) == 2 * 262144
    ignore = [w for w, _ in find(tree, "General", "Filter", "Address")[0][1]]
    ignored = {w[1] for w in ignore}
    # Every address of both nodes and the VIPs (as host addresses, never their subnets).
    assert {"10.9.0.1", "10.9.0.2", "192.0.2.1", "2001:db8::2", "127.0.0.1", "10.0.0.254"} <= ignored
    assert all("/" not in a for a in ignored)
    for word, addr in ignore:
        assert word == ("IPv6_address" if ":" in addr else "IPv4_address")
    assert "nf_conntrack_tcp_be_liberal" not in text


@pytest.mark.parametrize(("mode", "transport", "family", "vrrp"), MATRIX, ids=IDS)
def test_conntrackd_matrix(mode: str, transport: str, family: str, vrrp: str) -> None:
    text = render.render("conntrackd.conf.j2", matrix_context(mode, transport, family, vrrp))
    check_conntrackd_structure(text, mode, transport, family)


def test_conntrackd_mode_options() -> None:
    ctx = matrix_context("NOTRACK", "udp", "inet", "unicast")
    ctx.update(conntrackd_disable_internal_cache=True, conntrackd_commit_timeout=30,
               conntrackd_disable_external_cache=False,
               conntrackd_expectation_helpers=["ftp", "sip"], conntrackd_scheduler_type="FIFO",
               conntrackd_filter_tcp_states=["ESTABLISHED", "CLOSED"])
    text = render.render("conntrackd.conf.j2", ctx)
    assert "DisableInternalCache on" in text
    assert "CommitTimeout 30" in text
    assert "ExpectationSync {\n\t\t\tftp\n\t\t\tsip\n\t\t}" in text
    assert "Scheduler {\n\t\tType FIFO" in text
    assert "ESTABLISHED CLOSED for TCP" in text
    # CommitTimeout is ignored by conntrackd with DisableExternalCache: do not render it.
    ctx.update(conntrackd_disable_external_cache=True)
    assert "CommitTimeout" not in render.render("conntrackd.conf.j2", ctx)
    ctx = matrix_context("ALARM", "udp", "inet", "unicast")
    ctx.update(conntrackd_disable_external_cache=True)
    assert "DisableExternalCache" not in render.render("conntrackd.conf.j2", ctx)


def _daemon_config():
    import conntrack_tools.daemon.config as config

    return config


def _findings(config, cfg) -> list[str]:
    """check_config's findings but the one expected warning: Readiness is our extension."""
    return [str(f) for f in config.check_config(cfg)
            if not (f.code == "c-incompatible" and "'Readiness'" in f.message)]


def test_readiness_rendered_for_our_daemon_only() -> None:
    ctx = matrix_context("FTFW", "udp", "inet", "unicast")
    text = render.render("conntrackd.conf.j2", ctx)
    assert "\tReadiness {\n\t\tFile /run/conntrackd-ready\n\t\tWeight -100\n\t}\n" in text
    assert "DisableExternalCache on" in text  # direct injection is the default
    ka = render.render("keepalived.conf.j2", ctx)
    assert ("\ntrack_file conntrackd_ready {\n    file /run/conntrackd-ready\n    weight 1\n    init_file -100\n}"
            in ka)
    assert ka.count("track_file {\n        conntrackd_ready\n        ctpy_maintenance\n    }") == 2  # every instance
    ctx = matrix_context("FTFW", "udp", "inet", "unicast")
    ctx.update(conntrackd_implementation="c", keepalived_readiness_file="")
    assert "Readiness" not in render.render("conntrackd.conf.j2", ctx)
    ka = render.render("keepalived.conf.j2", ctx)
    assert "conntrackd_ready" not in ka
    # the drain file of playbooks/maintenance.yml is tracked for both daemons
    assert ka.count("track_file {\n        ctpy_maintenance\n    }") == 2


def test_maintenance_file_tracked_and_optional() -> None:
    """The drain file: weight 1, created with 0 (in service) by keepalived, never by the role; "" = none."""
    ctx = matrix_context("FTFW", "udp", "inet", "unicast")
    ka = render.render("keepalived.conf.j2", ctx)
    assert ("\ntrack_file ctpy_maintenance {\n    file /etc/keepalived/ctpy-maintenance\n    weight 1\n"
            "    init_file 0\n}" in ka)
    ctx.update(keepalived_maintenance_file="", keepalived_readiness_file="")
    ka = render.render("keepalived.conf.j2", ctx)
    assert "track_file" not in ka


@pytest.mark.skipif(not os.access("/usr/sbin/conntrackd", os.X_OK), reason="the C conntrackd is not installed")
@pytest.mark.parametrize("impl", ["c", "python"])
def test_c_node_config_is_accepted_by_the_c_binary(tmp_path: Path, impl: str) -> None:
    """The role's validate for a C node: C's client parses the whole file, then fails to connect."""
    import subprocess

    ctx = matrix_context("FTFW", "udp", "inet", "unicast")
    ctx.update(conntrackd_implementation=impl, conntrackd_socket_path=str(tmp_path / "none.ctl"))
    conf = tmp_path / "conntrackd.conf"
    conf.write_text(render.render("conntrackd.conf.j2", ctx))
    res = subprocess.run(["/usr/sbin/conntrackd", "-C", str(conf), "-s"], capture_output=True, text=True)
    if impl == "c":
        assert "is conntrackd running" in res.stderr + res.stdout, res.stderr
    else:  # ours carries Readiness: C would not start with it, which is why a C node never gets it
        assert "symbol 'Readiness'" in res.stderr + res.stdout, res.stderr


@pytest.mark.parametrize(("mode", "transport", "family"), list(itertools.product(MODES, TRANSPORTS, FAMILIES)))
def test_conntrackd_parses_with_our_daemon(mode: str, transport: str, family: str) -> None:
    config = _daemon_config()
    text = render.render("conntrackd.conf.j2", matrix_context(mode, transport, family, "unicast"))
    cfg = config.parse_config(text, "conntrackd.conf")
    assert _findings(config, cfg) == []


@pytest.mark.parametrize("host", ["fw-edge-a", "fw-edge-b", "fw-dc-a", "fw-dc-b"])
def test_example_inventory_conntrackd_parses_with_our_daemon(host: str) -> None:
    config = _daemon_config()
    cfg = config.parse_config(render.render("conntrackd.conf.j2", context(host)), "conntrackd.conf")
    assert _findings(config, cfg) == []


# --- sync authentication (AuthKey keyring, our daemon only) ---------------------------------------------------

AUTH_KEYS = [{"id": 2, "key": "AB" * 16}, {"id": 1, "key": "0123456789abcdef" * 4}]


def test_auth_key_rendered_for_our_daemon_only() -> None:
    from conntrack_tools.daemon.sync.keyring import parse_key_file

    config = _daemon_config()
    ours = render.render("conntrackd.conf.j2", context("fw-edge-a", conntrackd_auth_keys=AUTH_KEYS))
    assert "\t}\n\tAuthKey /etc/conntrackd/sync.key\n\n\tUDP {" in ours
    assert "ab" * 16 not in ours.lower()  # the config names the file, never a key
    cfg = config.parse_config(ours, "conntrackd.conf")
    assert cfg.sync is not None and cfg.sync.auth_key == "/etc/conntrackd/sync.key"
    assert "AuthKey" not in render.render("conntrackd.conf.j2", context("fw-edge-a"))  # off by default
    c_node = render.render("conntrackd.conf.j2", context("fw-edge-a", conntrackd_implementation="c",
                                                         conntrackd_auth_keys=AUTH_KEYS))
    assert "AuthKey" not in c_node
    keyfile = render.render("conntrackd-sync.key.j2", context("fw-edge-a", conntrackd_auth_keys=AUTH_KEYS))
    assert keyfile.startswith("# Managed by Ansible") and keyfile.endswith(
        "key 2 " + "ab" * 16 + "\nkey 1 " + "0123456789abcdef" * 4 + "\n")
    ring = parse_key_file(keyfile.encode(), "sync.key")
    assert ring.keyring and ring.send_id == 2 and ring.ids == [2, 1]


# --- metrics (General { Metrics }, ha_firewall scraper rule) ----------------------------------------------------

C_CONNTRACKD = "/usr/sbin/conntrackd"
METRICS = {"conntrackd_metrics_address": "10.255.10.1", "conntrackd_metrics_port": 9102,
           "conntrackd_metrics_textfile": "/var/lib/node_exporter/textfile_collector/conntrackd.prom",
           "ha_firewall_metrics_scrapers": ["192.0.2.50", "198.51.100.0/28", "2001:db8:50::/64"]}


def test_metrics_block_only_for_our_daemon() -> None:
    config = _daemon_config()
    ours = render.render("conntrackd.conf.j2", context("fw-edge-a", **METRICS))
    assert "\tMetrics {\n\t\tListen 10.255.10.1:9102\n\t\tTextfile " + METRICS["conntrackd_metrics_textfile"] in ours
    cfg = config.parse_config(ours, "conntrackd.conf")
    assert (cfg.general.metrics_listen, cfg.general.metrics_textfile) == ("10.255.10.1:9102",
                                                                          METRICS["conntrackd_metrics_textfile"])
    assert cfg.general.metrics_pair == context("fw-edge-a")["conntrackd_pair_group"]  # the pair label
    findings = [str(f) for f in config.check_config(cfg)]  # our extensions, each said once (Readiness is on by default)
    assert len(findings) == 2 and any("'Metrics' is an extension" in f for f in findings), findings
    assert any("'Readiness' is an extension" in f for f in findings), findings
    v6 = render.render("conntrackd.conf.j2", context("fw-edge-a", conntrackd_metrics_address="2001:db8:10::1"))
    assert "\t\tListen [2001:db8:10::1]:9101\n" in v6 and "Textfile" not in v6
    c_node = render.render("conntrackd.conf.j2", context("fw-edge-a", conntrackd_implementation="c", **METRICS))
    assert "Metrics" not in c_node and "Listen" not in c_node
    assert "Metrics" not in render.render("conntrackd.conf.j2", context("fw-edge-a"))  # off by default


@pytest.mark.skipif(not Path(C_CONNTRACKD).exists(), reason="the C conntrackd is not installed")
@pytest.mark.parametrize("host", ["fw-edge-a", "fw-dc-b"])
def test_c_conntrackd_accepts_the_c_nodes_config(tmp_path: Path, host: str) -> None:
    """C 1.4.7 has no config test: its client (-s) parses the whole file before it connects, so "can't connect"
    means the file parsed and "parsing config file" means C rejects it. Ours (with Metrics) is the control."""
    socket_path = str(tmp_path / "nobody-listens.ctl")

    def c_client(impl: str) -> str:
        conf = tmp_path / f"{impl}.conf"
        conf.write_text(render.render("conntrackd.conf.j2", context(
            host, conntrackd_implementation=impl, conntrackd_socket_path=socket_path, **METRICS)))
        run = subprocess.run([C_CONNTRACKD, "-C", str(conf), "-s"], capture_output=True, text=True, timeout=30)
        return run.stdout + run.stderr

    c_node = c_client("c")
    assert "can't connect" in c_node and "parsing config file" not in c_node, c_node
    ours = c_client("python")
    assert "parsing config file" in ours and ("'Readiness'" in ours or "'Metrics'" in ours), ours  # first extension


def test_nftables_metrics_rule_admits_only_the_scrapers() -> None:
    text = render.render("ha_firewall.nft.j2", context("fw-edge-a", **METRICS))
    rules = [ln.strip() for ln in text.splitlines() if "dport 9102" in ln]
    assert rules == ['iifname "lo" ip daddr 10.255.10.1 tcp dport 9102 accept',
                     "ip daddr 10.255.10.1 tcp dport 9102 ip saddr { 192.0.2.50, 198.51.100.0/28 } accept",
                     "ip daddr 10.255.10.1 tcp dport 9102 counter drop"]
    v6 = render.render("ha_firewall.nft.j2", context("fw-edge-a", **{**METRICS,
                                                                     "conntrackd_metrics_address": "2001:db8:10::1"}))
    assert "ip6 daddr 2001:db8:10::1 tcp dport 9102 ip6 saddr { 2001:db8:50::/64 } accept" in v6
    assert "ip saddr { 192.0.2.50" not in v6
    wildcard = render.render("ha_firewall.nft.j2", context("fw-edge-a", **{**METRICS,
                                                                           "conntrackd_metrics_address": "::"}))
    assert "\t\ttcp dport 9102 ip saddr { 192.0.2.50, 198.51.100.0/28 } accept" in wildcard
    assert "\t\ttcp dport 9102 ip6 saddr { 2001:db8:50::/64 } accept" in wildcard
    for off in (context("fw-edge-a"), context("fw-edge-a", conntrackd_implementation="c", **METRICS)):
        assert "metrics" not in render.render("ha_firewall.nft.j2", off)


@NETNS
@pytest.mark.skipif(not shutil.which("nft"), reason="nft is not installed")
@pytest.mark.parametrize("address", ["10.255.10.1", "2001:db8:10::1", "0.0.0.0", "::"])
def test_nftables_metrics_rule_check(tmp_path: Path, address: str) -> None:
    rules = tmp_path / "ha.nft"
    rules.write_text(render.render("ha_firewall.nft.j2", context("fw-edge-a", **{
        **METRICS, "conntrackd_metrics_address": address})))
    res = run_in_netns([], ["nft", "-c", "-f", str(rules)])
    assert res.returncode == 0, res.stderr + rules.read_text()


# --- keepalived.conf ------------------------------------------------------------------------------

@pytest.mark.parametrize(("family", "vrrp"), list(itertools.product(FAMILIES, VRRP)))
def test_keepalived_content(family: str, vrrp: str) -> None:
    text = render.render("keepalived.conf.j2", matrix_context("FTFW", "udp", family, vrrp))
    out = text.split("vrrp_instance VI_OUT {", 1)[1].split("\n}\n", 1)[0]
    if vrrp == "unicast":
        src, peer = ("2001:db8::1", "2001:db8::2") if family == "inet6" else ("192.0.2.1", "192.0.2.2")
        assert f"unicast_src_ip {src}\n" in out
        assert f"unicast_peer {{\n        {peer}\n    }}" in out
    else:
        assert "unicast" not in text
    assert ("native_ipv6" in out) == (family == "inet6")
    # VRRPv2 PASS authentication only on IPv4 instances.
    assert ("auth_pass s3cret" in out) == (family == "inet")
    assert "vrrp_sync_group G_FIREWALL {" in text
    assert text.count('notify_master "/etc/keepalived/conntrackd-notify.sh primary"') == 1
    assert "priority 150" in out


def test_keepalived_single_instance_puts_notify_in_instance() -> None:
    ctx = matrix_context("FTFW", "udp", "inet", "unicast")
    ctx["keepalived_instances"] = ctx["keepalived_instances"][:1]
    text = render.render("keepalived.conf.j2", ctx)
    assert "vrrp_sync_group" not in text  # a one-member sync group makes keepalived warn
    assert 'notify_fault "/etc/keepalived/conntrackd-notify.sh fault"' in text.split("vrrp_instance VI_OUT", 1)[1]


def test_keepalived_second_node_and_overrides() -> None:
    ctx = matrix_context("FTFW", "udp", "inet", "unicast", node="n2")
    ctx["keepalived_instances"][1].update(priority=90, nopreempt=True, unicast_peers=["10.0.0.77"])
    text = render.render("keepalived.conf.j2", ctx)
    out, inside = text.split("vrrp_instance VI_OUT {", 1)[1].split("vrrp_instance VI_IN {")
    assert "priority 100" in out and "unicast_src_ip 192.0.2.2" in out and "192.0.2.1\n" in out
    assert "priority 90" in inside and "nopreempt" in inside and "10.0.0.77" in inside


@NETNS
@pytest.mark.skipif(not shutil.which("keepalived"), reason="keepalived is not installed")
@pytest.mark.parametrize(("family", "vrrp", "node"), list(itertools.product(FAMILIES, VRRP, ["n1", "n2"])))
def test_keepalived_config_test_matrix(tmp_path: Path, family: str, vrrp: str, node: str) -> None:
    ctx = matrix_context("FTFW", "udp", family, vrrp, node)
    conf = tmp_path / "keepalived.conf"
    conf.write_text(render.render("keepalived.conf.j2", ctx))
    res = run_in_netns(keepalived_interfaces(ctx), ["keepalived", "--config-test", "-f", str(conf)])
    assert res.returncode == 0, res.stderr
    assert "WARNING" not in res.stderr, res.stderr


@NETNS
@pytest.mark.skipif(not shutil.which("keepalived"), reason="keepalived is not installed")
@pytest.mark.parametrize("host", ["fw-edge-a", "fw-edge-b", "fw-dc-a", "fw-dc-b"])
def test_example_inventory_keepalived_validates(tmp_path: Path, host: str) -> None:
    ctx = context(host)
    # keepalived -t exits 5 when a track script is missing; on a node conntrack_tools installs it
    # before keepalived.conf is validated, here a root-owned stand-in is used.
    for script in ctx["keepalived_vrrp_scripts"]:
        script["script"] = shutil.which("true") or "/bin/true"
    conf = tmp_path / "keepalived.conf"
    conf.write_text(render.render("keepalived.conf.j2", ctx))
    res = run_in_netns(keepalived_interfaces(ctx), ["keepalived", "--config-test", "-f", str(conf)])
    assert res.returncode == 0, res.stderr


def test_keepalived_config_test_catches_missing_interface(tmp_path: Path) -> None:
    if not (have_netns() and shutil.which("keepalived")):
        pytest.skip("needs root, unshare and keepalived")
    ctx = matrix_context("FTFW", "udp", "inet", "unicast")
    conf = tmp_path / "keepalived.conf"
    conf.write_text(render.render("keepalived.conf.j2", ctx))
    res = run_in_netns(["eth1"], ["keepalived", "--config-test", "-f", str(conf)])
    assert res.returncode != 0  # eth0 is missing: the validate step would refuse the file


@pytest.mark.parametrize("host", ["fw-edge-a", "fw-edge-b", "fw-dc-a", "fw-dc-b"])
def test_example_inventory_conntrackd_structure(host: str) -> None:
    ctx = context(host)
    tree = parse_blocks(render.render("conntrackd.conf.j2", ctx))
    section = {"udp": "UDP", "multicast": "Multicast", "tcp": "TCP"}[ctx["conntrackd_transport"]]
    assert len(find(tree, "Sync", section)) == len(ctx["conntrackd_channels"])
    assert find(tree, "Sync", "Mode")[0][0] == ["Mode", ctx["conntrackd_mode"]]


# --- nftables, notify wrapper, unit, sysctl -------------------------------------------------------

@NETNS
@pytest.mark.skipif(not shutil.which("nft"), reason="nft is not installed")
@pytest.mark.parametrize(("transport", "family", "vrrp"), list(itertools.product(TRANSPORTS, FAMILIES, VRRP)))
def test_nftables_rules_check(tmp_path: Path, transport: str, family: str, vrrp: str) -> None:
    ctx = matrix_context("FTFW", transport, family, vrrp)
    ctx["keepalived_auth_type"] = "AH"
    rules = tmp_path / "ha.nft"
    rules.write_text(render.render("ha_firewall.nft.j2", ctx))
    res = run_in_netns([], ["nft", "-c", "-f", str(rules)])
    assert res.returncode == 0, res.stderr + rules.read_text()


def test_nftables_rules_content() -> None:
    text = render.render("ha_firewall.nft.j2", matrix_context("FTFW", "tcp", "inet", "unicast"))
    assert 'iifname "eth0" meta nfproto ipv4 meta l4proto 112 ip saddr { 192.0.2.2 } accept' in text
    assert 'iifname "sync0" meta nfproto ipv4 tcp dport 3780 ip saddr { 10.9.0.2 } accept' in text
    assert text.index("meta l4proto 112 counter drop") > text.index('iifname "eth1"')
    assert text.rstrip().endswith("tcp dport 3780 counter drop\n\t}\n}".rstrip())
    mc = render.render("ha_firewall.nft.j2", matrix_context("FTFW", "udp", "inet6", "multicast"))
    assert "ip daddr 224.0.0.18 accept" in mc


def test_notify_wrapper(tmp_path: Path) -> None:
    import subprocess

    log = tmp_path / "calls"
    fake = tmp_path / "conntrackd-notify"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {log}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    ctx = {"keepalived_notify_command": str(fake), "keepalived_notify_args": ["-C", "/etc/conntrackd/x.conf"]}
    wrapper = tmp_path / "wrapper.sh"
    wrapper.write_text(render.render("conntrackd-notify.sh.j2", ctx))
    for state in ("primary", "backup", "fault"):
        assert subprocess.run(["sh", str(wrapper), state]).returncode == 0
    assert log.read_text().splitlines() == [f"-C /etc/conntrackd/x.conf {s}" for s in ("primary", "backup", "fault")]
    env = {**os.environ, "PATH": "/usr/bin:/bin"}
    assert subprocess.run(["sh", str(wrapper), "master"], env=env, capture_output=True).returncode == 2
    missing = dict(ctx, keepalived_notify_command=str(tmp_path / "absent"))
    wrapper.write_text(render.render("conntrackd-notify.sh.j2", missing))
    assert subprocess.run(["sh", str(wrapper), "primary"], capture_output=True).returncode == 0


def test_unit_and_sysctl() -> None:
    ctx = context("fw-edge-a")
    unit = render.render("conntrackd.service.j2", ctx)
    assert "Type=notify" in unit
    assert "ExecStart=/opt/conntrack-tools/bin/conntrackd -C /etc/conntrackd/conntrackd.conf" in unit
    ctx["conntrack_tools_nf_conntrack_max"] = ctx["conntrackd_nf_conntrack_max"]
    ctx["conntrack_tools_nf_conntrack_buckets"] = 131072
    sysctl = render.render("conntrack-sysctl.conf.j2", ctx)
    assert "net.netfilter.nf_conntrack_max = 524288" in sysctl
    assert int(ctx["conntrackd_hash_limit"]) == 2 * 524288


@pytest.mark.parametrize(("tracking", "liberal", "option"), [(False, 1, "off"), (True, 0, "on")])
def test_one_window_tracking_policy_on_both_sides(tracking: bool, liberal: int, option: str) -> None:
    """ha_firewall_tcp_window_tracking sets conntrackd's TCPWindowTracking (the injected entries) and the kernel's
    be_liberal (the entries the node made itself) together: a pair with liberal injected entries but strict local
    ones drops the old master's stragglers as invalid at every transition (docs/failover.md)."""
    ctx = context("fw-edge-a", ha_firewall_tcp_window_tracking=tracking)
    sysctl = [ln for ln in render.render("conntrack-sysctl.conf.j2", ctx).splitlines() if not ln.startswith("#")]
    assert [ln for ln in sysctl if "be_liberal" in ln] == [f"net.netfilter.nf_conntrack_tcp_be_liberal = {liberal}"]
    conf = render.render("conntrackd.conf.j2", ctx)
    assert [ln.split() for ln in conf.splitlines() if "TCPWindowTracking" in ln] == [["TCPWindowTracking", option]]


# --- golden files, templates as the single source -------------------------------------------------

GOLDEN_CASES = [("fw-edge-a", "keepalived.conf.j2"), ("fw-edge-a", "conntrackd.conf.j2"),
                ("fw-dc-b", "keepalived.conf.j2"), ("fw-dc-b", "conntrackd.conf.j2")]


@pytest.mark.parametrize(("host", "template"), GOLDEN_CASES)
def test_golden(host: str, template: str) -> None:
    text = render.render(template, context(host))
    golden = GOLDEN / f"{host}.{template.removesuffix('.j2')}"
    if os.environ.get("UPDATE_GOLDEN"):
        golden.write_text(text)
    assert text == golden.read_text(), f"{golden} differs; rerun with UPDATE_GOLDEN=1 after reviewing"


def test_role_templates_are_symlinks_into_templates() -> None:
    links = sorted(ROOT.glob("roles/*/templates/*.j2"))
    assert links
    for link in links:
        assert link.is_symlink(), link
        assert link.resolve().parent == ROOT / "templates", link
    used = {link.resolve().name for link in links}
    assert used == set(render.list_templates())


def test_render_errors_are_clear() -> None:
    with pytest.raises(render.TemplateError, match="is undefined"):
        render.render("conntrackd.conf.j2", {})
    with pytest.raises(render.TemplateError, match="no such template"):
        render.render("nope.j2", {})


def test_cli_renders_from_role_defaults(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    ctx = copy.deepcopy(context("fw-edge-a"))
    ctx.pop("groups")
    vars_file = tmp_path / "vars.json"
    vars_file.write_text(json.dumps(ctx))
    out = tmp_path / "k.conf"
    assert render.main(["keepalived.conf.j2", "-e", f"@{vars_file}", "-o", str(out)]) == 0
    assert out.read_text() == render.render("keepalived.conf.j2", context("fw-edge-a"))
    assert render.main(["conntrackd.conf.j2", "-e", "conntrackd_mode=FTFW"]) == 1
    assert "conntrackd-render" not in capsys.readouterr().err


def test_ha_firewall_mapping_is_resolved_from_its_vars_file() -> None:
    """render.role_vars reads roles/ha_firewall/vars/main.yml (the file Ansible loads): native values, VIPs
    without prefix length joined to the extra ignore list."""
    base = render.role_defaults("ha_firewall", {
        "inventory_hostname": "fw1", "ha_firewall_pair_group": "pair_x", "ha_firewall_pair_addresses": {"fw1": {}},
        "ha_firewall_ignore_addresses": ["10.1.0.0/16"],
        "keepalived_instances": [{"virtual_ipaddress": [{"address": "192.0.2.1/24"}, {"address": "2001:db8::1/64"}]},
                                 {"virtual_ipaddress": [{"address": "192.0.2.9"}]}]})
    mapped = render.role_vars("ha_firewall", base)
    assert mapped["conntrackd_pair_addresses"] == {"fw1": {}} and mapped["keepalived_node"] == "fw1"
    assert mapped["conntrackd_nf_conntrack_max"] == 262144
    assert mapped["conntrackd_ignore_addresses"] == ["10.1.0.0/16", "192.0.2.1", "2001:db8::1", "192.0.2.9"]
    assert mapped["keepalived_notify_command"] == "/opt/conntrack-tools/bin/conntrackd-notify"
    assert "ha_firewall_pair_group" not in mapped  # only the file's own variables
