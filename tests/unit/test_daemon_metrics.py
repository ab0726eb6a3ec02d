"""Prometheus exposition text (beyond C)."""

from __future__ import annotations

import re

from conntrack_tools.daemon.metrics import render


def test_render_exposition_format() -> None:
    text = render({"nl_events_received": 5, "nl_overrun": 1, "bytes_orig": 10, "bytes_repl": 5},
                  {"internal": {"entries": 3, "active": 3, "add_ok": 4}}, 2097152, 60, {"link": {"sent": 9}})
    assert 'conntrackd_cache_entries{cache="internal"} 3' in text
    assert "conntrackd_nl_events_received_total 5" in text
    assert "conntrackd_nl_overrun_total 1" in text
    assert "conntrackd_traffic_bytes_total 15" in text
    assert "conntrackd_sync_link_sent 9" in text
    for line in text.splitlines():
        assert line.startswith("#") or re.match(r"^[a-z_]+(\{[^}]*\})? -?\d+(\.\d+)?$", line), line
