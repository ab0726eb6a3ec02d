"""The thin I/O shell around the codec: one raw NETLINK_NETFILTER socket.

Why a raw socket and not pyroute2's: pyroute2 0.9.7 dumps 100k entries in
~27 s here (it builds an object per attribute); C needs 0.4 s. This shell only
moves bytes; decoding is the caller's choice (codec.decode_flow, or the
formatters' fast path). pyroute2 is the library of the netns test and bench harness (links, addresses,
namespaces: tests/netns/test_sync_burst.py, bench/sync_run.py); the package itself does not need it.
"""

from __future__ import annotations

import ctypes
import errno as _errno
import os
import socket
import struct
import sys
from collections.abc import Iterable, Iterator

from .attrs import (
    NETLINK_ADD_MEMBERSHIP,
    NETLINK_CAP_ACK,
    NETLINK_NETFILTER,
    NLM_F_ACK,
    NLMSG_ERROR,
    SO_RCVBUFFORCE,
    SOL_NETLINK,
)
from .codec import DecodeError, decode_error, frame_dump, iter_messages, message_type

SO_MEMINFO = 55  # <asm-generic/socket.h>: u32[SK_MEMINFO_VARS]; the drop counter is the last one
_MEMINFO = struct.Struct("=9I")
RECV_BUFSIZE = 1 << 20  # one recv() may carry many dump messages; 1 MiB keeps syscalls few


class NetlinkError(OSError):
    """The kernel answered a request with an error (errno in .errno)."""

    def __init__(self, err: int, seq: int = 0):
        super().__init__(err, os.strerror(err))
        self.seq = seq


def socket_drops(sock: socket.socket) -> int:
    """The kernel's count of datagrams it dropped on ``sock`` (SO_MEMINFO, SK_MEMINFO_DROPS; any
    socket family: netlink event sockets and the sync channels' UDP sockets)."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, _MEMINFO.size)
    except OSError:
        return 0
    return _MEMINFO.unpack(raw)[8] if len(raw) == _MEMINFO.size else 0


class CtnlSocket:
    """A NETLINK_NETFILTER socket with request/ack, dump and batch helpers."""

    def __init__(self, groups: int = 0, rcvbuf: int | None = None):
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.bind((0, 0))
        for group in _bits(groups):
            self.sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, group)
        if rcvbuf:
            self.set_rcvbuf(rcvbuf)
        self.portid = self.sock.getsockname()[0]
        self.seq = 0
        self._batch_ready = False
        self.buf = bytearray(RECV_BUFSIZE)
        self.view = memoryview(self.buf)

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> CtnlSocket:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def set_rcvbuf(self, size: int) -> int:
        """SO_RCVBUFFORCE (root) with SO_RCVBUF as fallback; returns what the kernel granted."""
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
        except OSError:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
        return self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)

    def next_seq(self) -> int:
        self.seq += 1
        return self.seq

    def send(self, data: bytes) -> None:
        self.sock.send(data)

    def drops(self) -> int:
        """The kernel's count of datagrams it dropped on this socket."""
        return socket_drops(self.sock)

    def recv(self) -> int:
        """Receive one datagram into the shared buffer; raises OSError(ENOBUFS) on overrun."""
        return self.sock.recv_into(self.buf)

    # ------------------------------------------------------------ requests

    def request(self, msg: bytes, seq: int) -> list[tuple[int, bytes]]:
        """Send one request with NLM_F_ACK expected set by the caller; return (type, payload) replies.

        The receive loop is :meth:`dump`'s: replies up to the ACK (or NLMSG_DONE), an error raised."""
        return [(mtype, bytes(buf[start:end])) for buf, mtype, start, end in self.dump(msg, seq)]

    def dump(self, msg: bytes, seq: int) -> Iterator[tuple[memoryview, int, int, int]]:
        """Yield ``(buffer, type, payload_start, payload_end)`` for every message of a dump.

        The buffer is reused between receives: consume each message before the next one.
        """
        for view, spans in self.dump_spans(msg, seq):
            it = iter(spans)
            for start, end in zip(it, it, strict=True):
                yield view, message_type(view, start), start, end

    def dump_spans(self, msg: bytes, seq: int) -> Iterator[tuple[memoryview, list[int]]]:
        """Send a dump request and yield, per receive buffer, ``(buffer, spans)``: its data messages as
        ``codec.frame_dump`` gives them (payload start and end, flat); an NLMSG_ERROR raises NetlinkError.
        The package's one dump receive loop: :meth:`dump` walks the spans a message at a time,
        ``conntrack -L``/``-D`` hand whole lists to ``ShapeDecoder.lines``. The buffer is reused: consume
        the spans before the next one.

        NLM_F_DUMP_INTR (the table changed during the dump) is ignored, as C does.
        """
        self.send(msg)
        view = self.view
        while True:
            spans: list[int] = []
            end = frame_dump(view, self.recv(), seq, spans)
            if spans:
                yield view, spans
            if end is not None:
                if end:
                    raise NetlinkError(end, seq)
                return

    def batch(self, msgs: Iterable[tuple[int, bytes]], chunk: int = 1 << 16) -> dict[int, int]:
        """Send many (seq, message) requests with few syscalls; return {seq: errno} for failures.

        Messages are sent without NLM_F_ACK: the kernel still reports errors. A
        trailing ACK'ed message on each chunk (the last message of the chunk)
        marks where the chunk's answers end, so we know when to stop reading.
        Chunks stay well under the receive buffer so error replies cannot overrun it.
        """
        errors: dict[int, int] = {}
        self._prepare_batch()
        pending: list[bytes] = []
        size = 0
        last_seq = None
        for seq, msg in msgs:
            pending.append(msg)
            size += len(msg)
            last_seq = seq
            if size >= chunk:
                self._flush_batch(pending, last_seq, errors)
                pending, size = [], 0
        if pending and last_seq is not None:
            self._flush_batch(pending, last_seq, errors)
        return errors

    def batch_raw(self, data: bytes | bytearray, last_seq: int) -> dict[int, int]:
        """One chunk of :meth:`batch` built by the caller: ``data`` is the messages back to back,
        the last one (sequence ``last_seq``) already with NLM_F_ACK.  Returns {seq: errno}."""
        errors: dict[int, int] = {}
        self._prepare_batch()
        self._send_chunk(data, last_seq, errors)
        return errors

    def _prepare_batch(self) -> None:
        if not self._batch_ready:
            # Error replies queue up while a chunk is processed: give them room, and no echoed requests.
            self.set_rcvbuf(8 << 20)
            try:
                self.sock.setsockopt(SOL_NETLINK, NETLINK_CAP_ACK, 1)
            except OSError:
                pass
            self._batch_ready = True

    def _flush_batch(self, pending: list[bytes], last_seq: int, errors: dict[int, int]) -> None:
        last = bytearray(pending[-1])
        flags = int.from_bytes(last[6:8], "little") | NLM_F_ACK
        last[6:8] = flags.to_bytes(2, "little")
        pending[-1] = bytes(last)
        self._send_chunk(b"".join(pending), last_seq, errors)

    def _send_chunk(self, data: bytes | bytearray, last_seq: int, errors: dict[int, int]) -> None:
        self.send(data)
        while True:
            try:
                n = self.recv()
            except OSError as exc:
                if exc.errno == _errno.ENOBUFS:
                    continue  # some error replies were dropped; the chunk's final ACK still arrives
                raise
            done = False
            try:
                for mtype, _flags, mseq, _pid, start, end in iter_messages(self.view, n):
                    if mtype == NLMSG_ERROR:
                        err = decode_error(self.view, start, end)
                        if err:
                            errors[mseq] = err
                        if mseq == last_seq:
                            done = True
            except DecodeError:
                errors[last_seq] = _errno.EBADMSG
                return
            if done:
                return


SO_ATTACH_FILTER = 26  # <asm-generic/socket.h>
_BPF_INSN = struct.Struct("=HBBI")  # struct sock_filter: code, jt, jf, k
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_RET_K = 0x20, 0x15, 0x06


def pid_filter(portids: Iterable[int]) -> bytes:
    """A classic BPF program that drops every message whose ``nlmsg_pid`` is one of ``portids``.

    The kernel stamps an event with the port id of the socket whose request caused it; a program on an
    event socket thus drops the echoes of our own writes before they take room in its receive buffer.
    ``BPF_LD|BPF_W|BPF_ABS`` reads big endian, ``nlmsg_pid`` is in host order: the constants are swapped
    to match.
    """
    ids = [int.from_bytes(p.to_bytes(4, sys.byteorder), "big") for p in portids]
    n = len(ids)
    prog = [_BPF_INSN.pack(_BPF_LD_W_ABS, 0, 0, 12)]  # A = nlmsg_pid (offset 12 of struct nlmsghdr)
    for i, k in enumerate(ids):  # equal: jump over the remaining tests and the accept to the drop
        prog.append(_BPF_INSN.pack(_BPF_JEQ_K, n - i, 0, k))
    prog.append(_BPF_INSN.pack(_BPF_RET_K, 0, 0, 0xFFFFFFFF))  # accept the whole message
    prog.append(_BPF_INSN.pack(_BPF_RET_K, 0, 0, 0))  # drop
    return b"".join(prog)


def attach_filter(sock: socket.socket, prog: bytes) -> None:
    """SO_ATTACH_FILTER: ``prog`` is packed ``struct sock_filter`` instructions (:func:`pid_filter`)."""
    buf = ctypes.create_string_buffer(prog, len(prog))
    fprog = struct.pack("HL", len(prog) // _BPF_INSN.size, ctypes.addressof(buf))
    sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, fprog)  # the kernel copies the program


def _bits(mask: int) -> Iterator[int]:
    """Group numbers (1-based) set in a legacy group bitmask."""
    n = 1
    while mask:
        if mask & 1:
            yield n
        mask >>= 1
        n += 1
