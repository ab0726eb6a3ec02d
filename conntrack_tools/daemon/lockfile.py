"""LockFile with stale-lock detection.

C creates the LockFile with ``O_CREAT|O_EXCL`` and refuses to start while it exists, so a
crash blocks every restart until someone deletes it.  We create it the same way, but write
our pid into it and hold an ``flock`` on it while running.  An existing file is *stale* when
nobody holds the flock and either the pid written in it is dead, or it is empty (a C
daemon's lock) and no daemon answers on the UNIX socket.  The decision is the pure
:func:`is_stale`; :func:`acquire` does the I/O.
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Callable

__all__ = ["LockBusy", "acquire", "is_stale", "parse_pid", "release"]


class LockBusy(Exception):
    """Another daemon holds the lock (C: "lockfile `%s' exists, perhaps conntrackd already running?")."""


def parse_pid(content: str) -> int | None:
    text = content.strip()
    return int(text) if text.isdigit() and int(text) > 0 else None


def is_stale(content: str, flocked: bool, pid_alive: Callable[[int], bool], socket_alive: Callable[[], bool]) -> bool:
    """Whether an existing lock file can be taken over."""
    if flocked:
        return False
    pid = parse_pid(content)
    if pid is not None:
        return not pid_alive(pid)
    if content.strip():
        return False  # something we do not understand: be conservative, like C
    return not socket_alive()


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def acquire(path: str, socket_alive: Callable[[], bool], log: Callable[[str, str], None] | None = None) -> int:
    """Create the lock file (mode 0600) and return its descriptor, holding an flock on it."""
    for _attempt in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_TRUNC | os.O_RDWR, 0o600)
        except FileExistsError:
            if not _stale(path, socket_alive):
                raise LockBusy(path) from None
            if log:
                log("warning", f"removing stale lockfile `{path}'")
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            continue
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, f"{os.getpid()}\n".encode())
        return fd
    raise LockBusy(path)


def _stale(path: str, socket_alive: Callable[[], bool]) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            flocked = False
            fcntl.flock(fd, fcntl.LOCK_UN)
        except OSError as exc:
            flocked = exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN)
        content = os.read(fd, 64).decode("ascii", "replace")
    finally:
        os.close(fd)
    return is_stale(content, flocked, _pid_alive, socket_alive)


def rewrite_pid(fd: int) -> None:
    """After daemonizing the pid changed: rewrite it."""
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)


def release(fd: int | None, path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
    if fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass
