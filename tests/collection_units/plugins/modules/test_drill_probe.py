"""ctpy.conntrack_tools.drill_probe: the drill's probe against echo servers on loopback, and its address watch
(faked ``ip``) (ansible-test units)."""

from __future__ import annotations

import socket
import socketserver
import threading
from pathlib import Path

import pytest
from ansible_collections.ctpy.conntrack_tools.plugins.modules import drill_probe
from ansible_collections.ctpy.conntrack_tools.tests.unit.plugins.modules.utils import run_module


class _Echo(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _server(lines_per_connection: int | None = None):
    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            for n, line in enumerate(self.rfile, 1):
                if lines_per_connection is not None and n > lines_per_connection:
                    return  # closes the connection: the probe sees it closed by the other side
                self.wfile.write(line)

    srv = _Echo(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def _stop_later(path: Path, seconds: float) -> None:
    threading.Timer(seconds, path.touch).start()


def test_probe_keeps_every_connection_of_an_echo_service(tmp_path: Path) -> None:
    srv = _server()
    try:
        stop, ready = tmp_path / "stop", tmp_path / "ready"
        _stop_later(stop, 1.0)
        res, _ = run_module(drill_probe, {"target": f"127.0.0.1:{srv.server_address[1]}", "connections": 5,
                                          "interval": 0.05, "stop_file": str(stop), "ready_file": str(ready)}, None)
    finally:
        srv.shutdown()
    r = res.result
    assert not res.failed, r
    assert (r["connections"], r["kept"], r["lost"], r["resets"], r["hangs"]) == (5, 5, 0, 0, 0)
    assert len(r["gaps"]) == 5 and 0 < r["gap_max"] < 0.5 and r["gap_median"] <= r["gap_max"]
    assert r["echoed"] >= 5 * 5 and r["errors"] == [] and r["changed"] is False
    assert ready.read_text() == "ready\n" and r["ended"] >= r["began"]


def test_probe_counts_connections_closed_by_the_other_side(tmp_path: Path) -> None:
    srv = _server(lines_per_connection=5)
    try:
        stop = tmp_path / "stop"
        _stop_later(stop, 1.0)
        res, _ = run_module(drill_probe, {"target": f"127.0.0.1:{srv.server_address[1]}", "connections": 3,
                                          "interval": 0.05, "stop_file": str(stop)}, None)
    finally:
        srv.shutdown()
    r = res.result
    assert (r["kept"], r["lost"], r["resets"]) == (0, 3, 3), r
    assert r["errors"] == ["reset: connection closed by the other side"]


def test_probe_fails_before_the_drill_when_nothing_listens(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    ready = tmp_path / "ready"
    res, _ = run_module(drill_probe, {"target": f"127.0.0.1:{port}", "connections": 2,
                                      "stop_file": str(tmp_path / "stop"), "ready_file": str(ready)}, None)
    assert res.failed and "failed before the drill" in res.result["msg"]
    assert ready.read_text().startswith("failed: connection ")


@pytest.mark.parametrize("target", ["10.0.0.1", "10.0.0.1:0", "[::1]", "host:port"])
def test_probe_refuses_a_target_without_a_port(tmp_path: Path, target: str) -> None:
    res, _ = run_module(drill_probe, {"target": target, "stop_file": str(tmp_path / "stop")}, None)
    assert res.failed and "target must be HOST:PORT" in res.result["msg"]


def test_parse_target_takes_ipv6_in_brackets() -> None:
    assert drill_probe.parse_target("[2001:db8::1]:7777") == ("2001:db8::1", 7777)
    assert drill_probe.parse_target("echo.example:7") == ("echo.example", 7)


def test_watch_records_when_the_addresses_arrive(tmp_path: Path) -> None:
    stop = tmp_path / "stop"
    outputs = iter(["2: eth0    inet 10.0.0.1/24 brd 10.0.0.255 scope global eth0\n"] * 3
                   + ["2: eth0    inet 10.0.0.254/24 scope global secondary eth0\n"] * 2
                   + ["2: eth0    inet 10.0.0.254/24 scope global eth0\n    inet6 2001:db8::fe/64 scope global\n"] * 3)

    def answers(argv):
        assert argv == ["ip", "-o", "addr", "show"]
        try:
            return 0, next(outputs), ""
        except StopIteration:
            stop.touch()
            return 0, "", ""

    res, _ = run_module(drill_probe, {"addresses": ["10.0.0.254/24", "2001:db8::fe"], "stop_file": str(stop),
                                      "ready_file": str(tmp_path / "ready")}, answers)
    held = [c[1] for c in res.result["changes"]]
    assert held == ["none", "some", "all", "none"], res.result
    times = [c[0] for c in res.result["changes"]]
    assert times == sorted(times)


def test_check_mode_probes_nothing(tmp_path: Path) -> None:
    res, calls = run_module(drill_probe, {"target": "127.0.0.1:9", "stop_file": str(tmp_path / "stop")}, None,
                            check_mode=True)
    assert not res.failed and res.result["changed"] is False and calls == []
