"""sd_notify over $NOTIFY_SOCKET, written directly (it is one datagram per message).

C (src/systemd.c) sends READY=1 after initialisation, MAINPID=<pid> from the parent when
daemonising, STOPPING=1 on shutdown and WATCHDOG=1 every half WatchdogSec.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

__all__ = ["notify", "socket_address", "watchdog_interval"]


def socket_address(env: Mapping[str, str]) -> str | None:
    """The AF_UNIX address of $NOTIFY_SOCKET ('@' = abstract namespace), or None."""
    addr = env.get("NOTIFY_SOCKET")
    if not addr or addr[0] not in "/@":
        return None
    return "\0" + addr[1:] if addr[0] == "@" else addr


def watchdog_interval(env: Mapping[str, str], pid: int) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of WATCHDOG_USEC, as C), or None when not asked."""
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    wpid = env.get("WATCHDOG_PID", "")
    if wpid and (not wpid.isdigit() or int(wpid) != pid):
        return None
    return int(usec) / 2_000_000


def notify(message: str, env: Mapping[str, str] | None = None) -> bool:
    """Send one notification; False when there is no socket or it failed (never raises)."""
    addr = socket_address(os.environ if env is None else env)
    if addr is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(message.encode(), addr)
        return True
    except OSError:
        return False
