"""`conntrack -E`: follow ctnetlink events without losing them silently.

C reads events through a 208 KiB socket buffer and, when the kernel overruns
it, prints a warning and loses an unknown number of events (24-30 % survive at
90k events/s here). We instead:

* start with a large receive buffer (SO_RCVBUFFORCE, 64 MiB unless `-b` says
  otherwise) and drain every queued datagram before writing, so the reader
  keeps up with bursts;
* on ENOBUFS double the buffer (up to 1 GiB), keep reading, and read the exact
  number of dropped datagrams from the kernel's per-socket `Drops` counter
  in /proc/net/netlink, which we print on exit (`N events lost`).
"""

from __future__ import annotations

import errno
import os
import select
import signal
import sys
import time

from ..formats import render_expect, render_flow
from ..formats.expect import EXPECT_FOOTER, EXPECT_HEADER
from ..formats.xml import CONNTRACK_FOOTER, CONNTRACK_HEADER
from ..netlink.attrs import (
    NFNLGRP_CONNTRACK_DESTROY,
    NFNLGRP_CONNTRACK_EXP_DESTROY,
    NFNLGRP_CONNTRACK_EXP_NEW,
    NFNLGRP_CONNTRACK_EXP_UPDATE,
    NFNLGRP_CONNTRACK_NEW,
    NFNLGRP_CONNTRACK_UPDATE,
    NLM_F_CREATE,
    NLM_F_EXCL,
    NLMSG_ERROR,
    CtMsg,
)
from ..netlink.codec import DecodeError, decode_expect, decode_flow, iter_messages
from ..netlink.socket import CtnlSocket
from . import options as O
from .errors import PREFIX
from .template import make_filter

DEFAULT_EVENT_RCVBUF = 64 << 20
MAX_EVENT_RCVBUF = 1 << 30
ENOBUFS_WARNING = (
    "WARNING: We have hit ENOBUFS! We are losing events.\n"
    "This message means that the current netlink socket buffer size is too small.\n"
    "Please, check --buffer-size in conntrack(8) manpage.\n"
)


def _groups(mask: int, expect: bool) -> int:
    mask = mask or (O.EVENT_NEW | O.EVENT_UPDATE | O.EVENT_DESTROY)
    table = ((O.EVENT_NEW, NFNLGRP_CONNTRACK_EXP_NEW if expect else NFNLGRP_CONNTRACK_NEW),
             (O.EVENT_UPDATE, NFNLGRP_CONNTRACK_EXP_UPDATE if expect else NFNLGRP_CONNTRACK_UPDATE),
             (O.EVENT_DESTROY, NFNLGRP_CONNTRACK_EXP_DESTROY if expect else NFNLGRP_CONNTRACK_DESTROY))
    groups = 0
    for bit, group in table:
        if mask & bit:
            groups |= 1 << (group - 1)
    return groups


def _proc_netlink(portid: int, column: str) -> str | None:
    """One column of the socket ``portid``'s line in /proc/net/netlink (None: no such line, unreadable)."""
    try:
        with open("/proc/net/netlink") as fh:
            header = fh.readline().split()
            pid_col, col = header.index("Pid"), header.index(column)
            for line in fh:
                cols = line.split()
                if len(cols) > col and int(cols[pid_col]) == portid:
                    return cols[col]
    except (OSError, ValueError, IndexError):
        return None
    return None


def netlink_drops(portid: int) -> int | None:
    """The kernel's count of datagrams dropped on our socket (/proc/net/netlink `Drops`)."""
    drops = _proc_netlink(portid, "Drops")
    try:
        return None if drops is None else int(drops)
    except ValueError:
        return None


class ProgramNames:
    """portid -> process name via /proc/net/netlink inodes and /proc/*/fd (cached, like C's lookup)."""

    def __init__(self) -> None:
        self.cache: dict[int, str | None] = {}

    def __call__(self, portid: int) -> str | None:
        if portid in self.cache:
            return self.cache[portid]
        name = self._lookup(portid)
        if name is not None:
            self.cache[portid] = name
        return name

    @staticmethod
    def _lookup(portid: int) -> str | None:
        inode = _proc_netlink(portid, "Inode")
        if inode is None:
            return None
        target = f"socket:[{inode}]"
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            fd_dir = f"/proc/{pid}/fd"
            try:
                for fd in os.listdir(fd_dir):
                    if os.readlink(f"{fd_dir}/{fd}") == target:
                        with open(f"/proc/{pid}/comm") as fh:
                            return fh.read().strip()
            except OSError:
                continue
        return None


def run_events(runner, req, expect: bool) -> None:
    from .execute import output_options

    opts = output_options(req)
    rcvbuf = req.buffer_size if req.buffer_size else DEFAULT_EVENT_RCVBUF
    sock = CtnlSocket(groups=_groups(req.event_mask, expect))
    sock.set_rcvbuf(rcvbuf)
    if req.buffer_size:
        # C prints the size it asked for; ours goes to the event socket (C's goes to the wrong one).
        sys.stderr.write(f"NOTICE: Netlink socket buffer size has been set to {req.buffer_size} bytes.\n")
    if req.deferred_error is not None:
        raise req.deferred_error
    _EventLoop(sock, req, opts, expect, rcvbuf).run()


class _EventLoop:
    """-E: poll the event socket until SIGINT/SIGTERM, render each burst of events, report losses."""

    def __init__(self, sock: CtnlSocket, req, opts, expect: bool, rcvbuf: int) -> None:
        self.sock, self.opts, self.expect = sock, opts, expect
        self.keep = make_filter(req) if not expect else (lambda f: True)
        self.out, self.err = sys.stdout, sys.stderr
        self.progname = ProgramNames()
        self.stop = False
        self.count = 0
        self.header_done = False
        self.overruns = 0
        self.size = max(rcvbuf, 1)

    def _on_signal(self, _signum, _frame) -> None:
        self.stop = True

    def run(self) -> None:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        sock, out = self.sock, self.out
        sock.sock.setblocking(False)
        poller = select.poll()
        poller.register(sock.fileno(), select.POLLIN)
        while not self.stop:
            try:
                ready = poller.poll(200)
            except InterruptedError:
                continue
            if not ready:
                continue
            lines = self._burst()
            if lines:
                out.write("\n".join(lines) + "\n")
                out.flush()
        if self.opts.xml and self.header_done:
            out.write((EXPECT_FOOTER if self.expect else CONNTRACK_FOOTER) + "\n")
        out.flush()
        lost = netlink_drops(sock.portid) or 0  # also catches an overrun we had no recv() left to see
        if lost:
            self.err.write(f"{PREFIX}{lost} events lost: netlink socket buffer overrun "
                           f"(seen {self.overruns} times, buffer {self.size} bytes).\n")
        self.err.write(runner_summary(self.expect, self.count))
        sock.close()

    def _burst(self) -> list[str]:
        """Everything the socket holds now (up to ~4096 lines); an overrun grows the buffer and warns."""
        sock = self.sock
        buf, fd = sock.buf, sock.sock
        lines: list[str] = []
        while True:
            try:
                n = fd.recv_into(buf)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    self.overruns += 1
                    if self.size < MAX_EVENT_RCVBUF:
                        self.size = min(self.size * 2, MAX_EVENT_RCVBUF)
                        sock.set_rcvbuf(self.size)
                    self.err.write(ENOBUFS_WARNING)
                    continue
                raise
            try:
                self._render(sock.view, n, time.time_ns(), lines)
            except DecodeError as exc:
                self.err.write(f"{PREFIX}skipping malformed event: {exc}\n")
            if len(lines) > 4096:
                break
        return lines

    def _render(self, view, n: int, now_ns: int, lines: list[str]) -> None:
        opts, expect, keep = self.opts, self.expect, self.keep
        for mtype, flags, _seq, portid, start, end in iter_messages(view, n):
            if mtype == NLMSG_ERROR:
                continue
            msg = mtype & 0xFF
            if msg == CtMsg.DELETE:
                event = "destroy"
            elif flags & (NLM_F_CREATE | NLM_F_EXCL):
                event = "new"
            else:
                event = "update"
            if expect:
                exp = decode_expect(view, start, end)
                if opts.xml and not self.header_done:
                    lines.append(EXPECT_HEADER)
                    self.header_done = True
                lines.append(render_expect(exp, opts, event, now_ns=now_ns))
            else:
                flow = decode_flow(view, start, end)
                if not keep(flow):
                    continue
                if opts.xml and not self.header_done:
                    lines.append(CONNTRACK_HEADER)
                    self.header_done = True
                name = self.progname(portid) if portid else None
                lines.append(render_flow(flow, opts, event, now_ns=now_ns, portid=portid, progname=name))
            self.count += 1


def runner_summary(expect: bool, count: int) -> str:
    from ..formats import stats as stats_fmt
    return stats_fmt.summary("exp_event" if expect else "event", count) + "\n"
