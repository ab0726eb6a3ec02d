"""Prometheus exposition text (beyond C)."""

from __future__ import annotations

import re

import pytest

from conntrack_tools.daemon.metrics import render


def samples(text: str) -> dict[tuple[str, tuple], float]:
    """Parse with Prometheus' own text parser (a page it rejects fails the whole scrape)."""
    from prometheus_client.parser import text_string_to_metric_families

    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_render_exposition_format() -> None:
    text = render({"nl_events_received": 5, "nl_overrun": 1, "bytes_orig": 10, "bytes_repl": 5},
                  {"internal": {"entries": 3, "active": 3, "add_ok": 4}}, 2097152, 60, {"link": {"sent": 9}})
    got = samples(text)
    assert got[("conntrackd_cache_entries", (("cache", "internal"),))] == 3
    assert got[("conntrackd_nl_events_received_total", ())] == 5
    assert got[("conntrackd_nl_overrun_total", ())] == 1
    assert got[("conntrackd_traffic_bytes_total", ())] == 15
    assert got[("conntrackd_sync_link_sent", ())] == 9
    for line in text.splitlines():
        assert line.startswith("#") or re.match(r"^[a-z_]+(\{[^}]*\})? -?\d+(\.\d+)?(e[+-]?\d+)?$", line), line


def test_peers_and_links_are_labels_not_names() -> None:
    """FTFW's per-peer statistics and the links list: one metric each, the address and device as labels."""
    sync = {"sync_mode": "ftfw", "network": {"malformed": 2},
            "peers": {"10.231.3.11": {"last_seq": 7, "acked": 5}, "fe80::1%eth1": {"last_seq": 9, "acked": None}},
            "links": [{"transport": "UDP", "device": "eth1", "status": "RUNNING", "role": "ACTIVE",
                       "pkts_recv": 3, "drop_kernel": 1}],
            "heal": {"requests": 1, "holdoff_seconds": 2.0}, "auth": {"enabled": False}}
    text = render({}, {}, 0, 1, sync)
    got = samples(text)
    assert got[("conntrackd_sync_peers_last_seq", (("peer", "10.231.3.11"),))] == 7
    assert got[("conntrackd_sync_peers_last_seq", (("peer", "fe80::1%eth1"),))] == 9
    assert got[("conntrackd_sync_peers_acked", (("peer", "10.231.3.11"),))] == 5
    link = (("device", "eth1"), ("role", "ACTIVE"), ("status", "RUNNING"), ("transport", "UDP"))
    assert got[("conntrackd_sync_link_drop_kernel", link)] == 1
    assert got[("conntrackd_sync_heal_requests", ())] == 1
    assert got[("conntrackd_sync_network_malformed", ())] == 2
    assert "10.231" not in "".join(name for name, _ in got)


def test_auth_counters_per_key_id_are_labels() -> None:
    """Key rotation: the per-key-id counters carry the id as a label; the key file's reload counters are gauges."""
    sync = {"auth": {"enabled": True, "sent": 9, "bad_mac": 1, "unknown_key": 2, "send_key_id": 2, "key_ids": [2, 1],
                     "by_key": {"2": {"accepted": 5, "bad_mac": 1}, "1": {"accepted": 3, "bad_mac": 0}},
                     "key_file": {"path": "/etc/conntrackd/sync.key", "reloads": 3, "refused": 1, "last_error": ""}}}
    got = samples(render({}, {}, 0, 1, sync))
    assert got[("conntrackd_sync_auth_by_key_accepted", (("key_id", "2"),))] == 5
    assert got[("conntrackd_sync_auth_by_key_accepted", (("key_id", "1"),))] == 3
    assert got[("conntrackd_sync_auth_unknown_key", ())] == 2 and got[("conntrackd_sync_auth_send_key_id", ())] == 2
    assert got[("conntrackd_sync_auth_key_file_refused", ())] == 1
    assert not any("by_key_2" in name or "by_key_1" in name for name, _ in got)


# ------------------------------------------------------------------ General { Metrics { ... } } (beyond C)

BASE = "General {{\n UNIX {{ Path /run/ct.ctl }}\n{body}}}\nStats {{\n}}\n"


def parse(body: str):
    from conntrack_tools.daemon.config import parse_config

    return parse_config(BASE.format(body=body))


def test_metrics_block_in_general() -> None:
    cfg = parse(" Metrics {\n  Listen 127.0.0.1:9101\n  Textfile /var/lib/node/ctd.prom\n }\n")
    assert (cfg.general.metrics_listen, cfg.general.metrics_textfile) == ("127.0.0.1:9101", "/var/lib/node/ctd.prom")
    w = [f for f in cfg.warnings if f.code == "c-incompatible"]
    assert len(w) == 1 and "Metrics" in w[0].message and (w[0].line, w[0].column) == (3, 2)
    assert parse(" Metrics {\n  Listen [::1]:9101\n }\n").general.metrics_listen == "[::1]:9101"
    assert parse(" Metrics { }\n").general.metrics_listen is None
    plain = parse("")
    assert (plain.general.metrics_listen, plain.general.metrics_textfile) == (None, None)
    assert not [f for f in plain.warnings if f.code == "c-incompatible"]


def test_pair_label_on_every_sample() -> None:
    """Metrics { Pair NAME }: alert rules group a pair's nodes by it, also from a node_exporter textfile."""
    cfg = parse(" Metrics {\n  Textfile /var/lib/node/ctd.prom\n  Pair pair_edge-1\n }\n")
    assert cfg.general.metrics_pair == "pair_edge-1"
    assert parse(" Metrics {\n  Textfile /x.prom\n }\n").general.metrics_pair is None
    sync = {"peers": {"10.0.0.2": {"last_seq": 7}}, "heal": {"requests": 1}}
    got = samples(render({"nl_overrun": 1}, {"internal": {"entries": 3}}, 0, 1, sync, labels={"pair": "p1"}))
    assert got and all(dict(labels).get("pair") == "p1" for _name, labels in got)
    assert got[("conntrackd_sync_peers_last_seq", (("pair", "p1"), ("peer", "10.0.0.2")))] == 7
    assert all("pair" not in dict(labels) for _name, labels in samples(render({}, {}, 0, 1, sync)))


@pytest.mark.parametrize(("body", "where", "words"), [
    (" Metrics {\n  Pair two words\n }\n", (4, 12), "Metrics"),
    (" Metrics {\n  Pair {\n }\n", (4, 8), "a name"),
    (" Metrics {\n  Listen 127.0.0.1\n }\n", (4, 10), "ADDRESS:PORT"),
    (" Metrics {\n  Listen 127.0.0.1:0\n }\n", (4, 10), "ADDRESS:PORT"),
    (" Metrics {\n  Listen host:9101\n }\n", (4, 10), "ADDRESS:PORT"),
    (" Metrics {\n  Listen\n }\n", (5, 2), "ADDRESS:PORT"),
    (" Metrics {\n  Textfile relative.prom\n }\n", (4, 12), "absolute path"),
    (" Metrics {\n  Port 9101\n }\n", (4, 3), "Metrics"),
    (" Listen 127.0.0.1:9101\n", (3, 2), "General"),
    (" Metrics 9101\n", (3, 10), "'{'"),
])
def test_metrics_block_errors(body: str, where: tuple[int, int], words: str) -> None:
    from conntrack_tools.daemon.config import ConfigError

    with pytest.raises(ConfigError) as ei:
        parse(body)
    assert (ei.value.line, ei.value.column) == where and words in ei.value.message, ei.value


def test_metrics_words_stay_names_elsewhere() -> None:
    """The extension does not change C's scanner: 'Metrics' is still a valid name where C takes one."""
    from conntrack_tools.daemon.config import parse_config

    text = ("General {\n UNIX { Path /run/ct.ctl }\n}\nSync {\n Mode FTFW { }\n UDP {\n  IPv4_address 10.0.0.1\n"
            "  IPv4_Destination_Address 10.0.0.2\n  Port 3780\n  Interface Metrics\n }\n"
            " Options { ExpectationSync { Listen ftp } }\n}\n")
    cfg = parse_config(text)
    assert cfg.sync is not None and cfg.sync.channels[0].interface == "Metrics"
    assert cfg.sync.expectation_helpers == ("Listen", "ftp")


def test_kernel_table_occupancy_and_commit_histogram(tmp_path) -> None:
    from conntrack_tools.daemon.metrics import histogram_family, kernel_table
    from conntrack_tools.daemon.stats import DurationHistogram

    (tmp_path / "nf_conntrack_count").write_text("1234\n")
    (tmp_path / "nf_conntrack_max").write_text("262144\n")
    assert kernel_table(str(tmp_path)) == {"entries": 1234, "max": 262144}
    assert kernel_table(str(tmp_path / "absent")) == {}
    hist = DurationHistogram()
    for dt in (0.004, 0.3, 7.0):
        hist.observe(dt)
    fam = histogram_family("conntrackd_commit_duration_seconds", "commits", hist)
    got = samples(render({}, {}, 0, 1, None, kernel_table(str(tmp_path)), [fam]))
    assert got[("conntrackd_kernel_table_entries", ())] == 1234
    assert got[("conntrackd_kernel_table_max", ())] == 262144
    assert got[("conntrackd_commit_duration_seconds_count", ())] == 3
    assert got[("conntrackd_commit_duration_seconds_bucket", (("le", "0.01"),))] == 1
    assert got[("conntrackd_commit_duration_seconds_bucket", (("le", "0.5"),))] == 2
    assert got[("conntrackd_commit_duration_seconds_sum", ())] == pytest.approx(7.304)
