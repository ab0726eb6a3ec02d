"""UNIX stream control socket: the server side (C src/local.c) on the daemon's loop.

One request per connection: accept, read the 4-byte action code, dispatch, stream the
answer (chunks from a generator, written as the socket drains, so a 1M-entry ``-i`` does
not block the loop), close.  The socket file is created with mode 0600 (C: umask 0177).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Iterator

from .control import decode_request, encode_request
from .loop import Loop

__all__ = ["ControlServer", "request"]

BACKLOG = 100  # C's UNIX_SOCKET_BACKLOG
Dispatch = Callable[[int], Iterable[str] | None]


class ControlServer:
    def __init__(self, path: str, loop: Loop, dispatch: Dispatch, on_read_failed: Callable[[], None]) -> None:
        self.path = path
        self.loop = loop
        self.dispatch = dispatch
        self.on_read_failed = on_read_failed
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        old = os.umask(0o177)
        try:
            self.sock.bind(path)
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self.sock.listen(BACKLOG)
        self.sock.setblocking(False)
        loop.add_reader(self.sock.fileno(), self._accept)
        self.conns: set[_Conn] = set()

    def _accept(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        conn.setblocking(False)
        c = _Conn(self, conn)
        self.conns.add(c)
        self.loop.add_reader(conn.fileno(), c.on_read)

    def close(self) -> None:
        for c in list(self.conns):
            c.close()
        self.loop.remove(self.sock.fileno())
        self.sock.close()
        try:
            os.unlink(self.path)
        except OSError:
            pass


class _Conn:
    def __init__(self, server: ControlServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.buf = b""
        self.chunks: Iterator[str] | None = None
        self.pending = b""

    def on_read(self) -> None:
        try:
            data = self.sock.recv(4 - len(self.buf))
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.server.on_read_failed()
            self.close()
            return
        self.buf += data
        if len(self.buf) < 4:
            return
        self.server.loop.remove(self.sock.fileno())
        code = decode_request(self.buf)
        assert code is not None
        out = self.server.dispatch(code)
        if self.sock.fileno() < 0:  # dispatch closed us (KILL)
            return
        self.chunks = iter(out or ())
        self.server.loop.add_writer(self.sock.fileno(), self.on_write)

    def on_write(self) -> None:
        try:
            while True:
                if not self.pending:
                    assert self.chunks is not None
                    chunk = next(self.chunks, None)
                    if chunk is None:
                        self.close()
                        return
                    self.pending = chunk.encode("utf-8", "surrogateescape")
                    if not self.pending:
                        continue
                n = self.sock.send(self.pending)
                self.pending = self.pending[n:]
        except BlockingIOError:
            return
        except OSError:  # the client went away (C ignores EPIPE)
            self.close()

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self.server.loop.remove(self.sock.fileno())
            self.sock.close()
        self.server.conns.discard(self)


def request(path: str | None, code: int, sink: Callable[[bytes], None], timeout: float | None = None) -> bool:
    """The client side (do_local_request): False when the daemon cannot be reached."""
    if not path:
        return False
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        s.settimeout(timeout)
        try:
            s.connect(path)
        except (OSError, ValueError):
            return False
        try:
            s.sendall(encode_request(code))
        except OSError:
            return False
        while True:
            try:
                data = s.recv(65536)
            except OSError:
                break
            if not data:
                break
            sink(data)
        return True
    finally:
        s.close()

