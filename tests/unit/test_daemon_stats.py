"""``-s`` views byte-exact with C 1.4.7 (c-tools-behaviour/t3/cmds), plus JSON."""

from __future__ import annotations

import json

import pytest

from conntrack_tools.daemon.cache import CacheStats
from conntrack_tools.daemon.stats import (
    RuntimeStats,
    cache_stats_extended_text,
    cache_stats_text,
    runtime_text,
    to_json,
    traffic_text,
    uptime_text,
)
from tests.conftest import REFERENCE

CMDS = REFERENCE / "c-tools-behaviour" / "t3" / "cmds"


def ref(name: str) -> str:
    p = CMDS / f"{name}.out"
    if not p.exists():
        pytest.skip("reference outputs not available (set CT_SHARED)")
    return p.read_text()


def test_default_stats_blocks() -> None:
    internal = CacheStats(objects=7, active=7, add_ok=7, upd_ok=11)
    text = cache_stats_text("internal", internal) + cache_stats_text("external", CacheStats())
    text += traffic_text(0, 0)
    assert ref("n1_s_ct").startswith(text)


def test_cache_extended() -> None:
    internal = CacheStats(objects=7, active=7, add_ok=7, upd_ok=11)
    text = cache_stats_extended_text("internal", internal, 7) + cache_stats_extended_text("external", CacheStats(), 0)
    assert text == ref("n1_s_cache")


def test_runtime() -> None:
    r = RuntimeStats(daemon_start_time=1000, nl_events_received=20, nl_events_filtered=2)
    assert runtime_text(r, 1030, 2097152) == ref("n1_s_runtime")


@pytest.mark.parametrize(
    ("secs", "text"),
    [(0, "0 min"), (59, "0 min"), (3600, "1 h 0 min"), (86400, "1 day 0 min"), (2 * 86400 + 3720, "2 days 1 h 2 min")],
)
def test_uptime(secs: int, text: str) -> None:
    assert uptime_text(secs) == text


def test_counters_wrap_like_c_u32() -> None:
    assert "current active connections:\t  4294967295\n" in cache_stats_text("x", CacheStats(active=-1))
    assert cache_stats_text("x", CacheStats(add_ok=1 << 32)).count("           0") >= 6


def test_traffic_is_64_bit() -> None:
    assert traffic_text(5_000_000_000, 3) == (
        "traffic processed:\n          5000000000 Bytes                         3 Pckts\n\n")


def test_json() -> None:
    doc = json.loads(to_json("cache", {"cache": {"stats": CacheStats(active=1).as_dict()}}))
    assert doc["view"] == "cache" and doc["cache"]["stats"]["active"] == 1
