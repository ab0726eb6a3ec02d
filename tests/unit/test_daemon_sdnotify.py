"""sd_notify written directly: one datagram on $NOTIFY_SOCKET."""

from __future__ import annotations

import socket

from conntrack_tools.daemon import sdnotify


def test_notify_datagram(tmp_path) -> None:
    path = str(tmp_path / "notify")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(path)
    rx.settimeout(2)
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": path})
    assert rx.recv(100) == b"READY=1"
    rx.close()


def test_abstract_and_missing_socket() -> None:
    assert sdnotify.socket_address({"NOTIFY_SOCKET": "@abc"}) == "\0abc"
    assert sdnotify.socket_address({}) is None
    assert sdnotify.socket_address({"NOTIFY_SOCKET": "relative"}) is None
    assert not sdnotify.notify("READY=1", {})


def test_watchdog_interval_is_half() -> None:
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "10000000"}, 5) == 5.0
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "6"}, 5) is None
    assert sdnotify.watchdog_interval({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": "5"}, 5) == 5.0
    assert sdnotify.watchdog_interval({}, 5) is None


def test_service_unit_is_the_template_rendered() -> None:
    """One unit: templates/conntrackd.service.j2, rendered by the role or, for a plain pip install, by
    ``conntrack-tools-render conntrackd.service.j2 -r conntrack_tools -e conntrack_tools_venv=/usr/local``."""
    from conntrack_tools import render

    unit = render.render("conntrackd.service.j2", render.role_defaults(
        "conntrack_tools", {"conntrack_tools_venv": "/usr/local"}))
    assert "Type=notify" in unit and "NotifyAccess=main" in unit
    assert "ExecStart=/usr/local/bin/conntrackd -C /etc/conntrackd/conntrackd.conf" in unit
