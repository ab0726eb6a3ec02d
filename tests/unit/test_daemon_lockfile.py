"""LockFile: C's O_EXCL semantics plus stale-lock detection."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conntrack_tools.daemon import lockfile


def never(*_a) -> bool:
    return False


def always(*_a) -> bool:
    return True


@pytest.mark.parametrize(
    ("content", "flocked", "pid_alive", "sock_alive", "stale"),
    [
        ("123\n", True, never, never, False),  # someone holds the flock
        ("123\n", False, never, always, True),  # pid dead
        ("123\n", False, always, never, False),  # pid alive
        ("", False, always, never, True),  # C's empty lock, nobody answers on the socket
        ("", False, always, always, False),  # C daemon running
        ("garbage", False, never, never, False),  # unknown content: conservative
    ],
)
def test_is_stale(content, flocked, pid_alive, sock_alive, stale) -> None:
    assert lockfile.is_stale(content, flocked, pid_alive, sock_alive) is stale


def test_acquire_busy_and_release(tmp_path) -> None:
    path = str(tmp_path / "lock")
    fd = lockfile.acquire(path, never)
    assert oct(os.stat(path).st_mode)[-3:] == "600"
    assert open(path).read() == f"{os.getpid()}\n"
    with pytest.raises(lockfile.LockBusy):
        lockfile.acquire(path, never)  # our own flock is held
    lockfile.release(fd, path)
    assert not os.path.exists(path)


def test_stale_lock_of_dead_process_is_taken_over(tmp_path) -> None:
    path = tmp_path / "lock"
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    path.write_text(p.stdout)  # that pid has exited
    msgs = []
    fd = lockfile.acquire(str(path), never, lambda lvl, m: msgs.append((lvl, m)))
    assert msgs == [("warning", f"removing stale lockfile `{path}'")]
    lockfile.release(fd, str(path))


def test_empty_lock_with_live_socket_is_busy(tmp_path) -> None:
    path = tmp_path / "lock"
    path.write_text("")
    with pytest.raises(lockfile.LockBusy):
        lockfile.acquire(str(path), always)
    fd = lockfile.acquire(str(path), never)
    lockfile.release(fd, str(path))
