"""Control socket server and client over a real AF_UNIX socket, on the daemon loop."""

from __future__ import annotations

import os
import stat
import threading

from conntrack_tools.daemon.control import Action
from conntrack_tools.daemon.control_server import ControlServer, request
from conntrack_tools.daemon.loop import Loop


def test_request_roundtrip_and_streaming(tmp_path) -> None:
    path = str(tmp_path / "ctl")
    loop = Loop()
    seen: list[int] = []
    failed: list[int] = []

    def dispatch(code: int):
        seen.append(code)
        if code == Action.KILL:
            server.close()
            loop.stop()
            return None
        if code == Action.CT_DUMP_INTERNAL:
            return (f"line {i}\n" * 100 for i in range(200))  # ~1.4 MB, streamed
        return ["hello\n"]

    server = ControlServer(path, loop, dispatch, lambda: failed.append(1))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    results: dict[str, bytes] = {}

    def client() -> None:
        for name, code in (("stats", Action.STATS), ("dump", Action.CT_DUMP_INTERNAL)):
            chunks: list[bytes] = []
            assert request(path, code, chunks.append, timeout=5)
            results[name] = b"".join(chunks)
        import socket

        s = socket.socket(socket.AF_UNIX)
        s.connect(path)
        s.close()  # no request: C counts "local read failed"
        assert request(path, Action.KILL, lambda _b: None, timeout=5)

    t = threading.Thread(target=client)
    t.start()
    loop.add_timer(10, loop.stop)  # safety net
    loop.run()
    t.join(5)
    loop.close()
    assert results["stats"] == b"hello\n"
    assert len(results["dump"].splitlines()) == 20000
    assert seen == [Action.STATS, Action.CT_DUMP_INTERNAL, Action.KILL]
    assert failed == [1]
    assert not os.path.exists(path)


def test_client_without_daemon(tmp_path) -> None:
    assert not request(str(tmp_path / "none"), Action.STATS, lambda _b: None)
    assert not request(None, Action.STATS, lambda _b: None)
    assert not request("/" + "x" * 200, Action.STATS, lambda _b: None)  # longer than sun_path


def test_loop_timers_order() -> None:
    loop = Loop()
    order: list[str] = []
    loop.add_timer(0.02, lambda: order.append("b"))
    loop.add_timer(0.01, lambda: order.append("a"))
    t = loop.add_timer(0.015, lambda: order.append("x"))
    t.cancel()
    loop.add_timer(0.03, loop.stop)
    loop.run()
    loop.close()
    assert order == ["a", "b"]
