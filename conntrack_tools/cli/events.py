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


def netlink_drops(portid: int) -> int | None:
    """The kernel's count of datagrams dropped on our socket (/proc/net/netlink `Drops`)."""
    try:
        with open("/proc/net/netlink") as fh:
            header = fh.readline().split()
            pid_col, drops_col = header.index("Pid"), header.index("Drops")
            for line in fh:
                cols = line.split()
                if len(cols) > drops_col and int(cols[pid_col]) == portid:
                    return int(cols[drops_col])
    except (OSError, ValueError, IndexError):
        return None
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
        inode = None
        try:
            with open("/proc/net/netlink") as fh:
                header = fh.readline().split()
                pid_col, inode_col = header.index("Pid"), header.index("Inode")
                for line in fh:
                    cols = line.split()
                    if len(cols) > inode_col and int(cols[pid_col]) == portid:
                        inode = cols[inode_col]
                        break
        except (OSError, ValueError):
            return None
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
    keep = make_filter(req) if not expect else (lambda f: True)
    rcvbuf = req.buffer_size if req.buffer_size else DEFAULT_EVENT_RCVBUF
    sock = CtnlSocket(groups=_groups(req.event_mask, expect))
    granted = sock.set_rcvbuf(rcvbuf)
    if req.buffer_size:
        # C prints the size it asked for; ours goes to the event socket (C's goes to the wrong one).
        sys.stderr.write(f"NOTICE: Netlink socket buffer size has been set to {req.buffer_size} bytes.\n")
    if req.deferred_error is not None:
        raise req.deferred_error
    del granted
    out = sys.stdout
    err = sys.stderr
    progname = ProgramNames()
    stop = False

    def _stop(_signum, _frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    count = 0
    header_done = False
    overruns = 0
    size = max(rcvbuf, 1)
    buf, view = sock.buf, sock.view
    fd = sock.sock
    fd.setblocking(False)
    poller = select.poll()
    poller.register(sock.fileno(), select.POLLIN)
    while not stop:
        try:
            ready = poller.poll(200)
        except InterruptedError:
            continue
        if not ready:
            continue
        lines: list[str] = []
        while True:
            try:
                n = fd.recv_into(buf)
            except BlockingIOError:
                break
            except InterruptedError:
                break
            except OSError as exc:
                if exc.errno == errno.ENOBUFS:
                    overruns += 1
                    if size < MAX_EVENT_RCVBUF:
                        size = min(size * 2, MAX_EVENT_RCVBUF)
                        sock.set_rcvbuf(size)
                    err.write(ENOBUFS_WARNING)
                    continue
                raise
            now_ns = time.time_ns()
            try:
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
                        if opts.xml and not header_done:
                            lines.append(EXPECT_HEADER)
                            header_done = True
                        lines.append(render_expect(exp, opts, event, now_ns=now_ns))
                    else:
                        flow = decode_flow(view, start, end)
                        if not keep(flow):
                            continue
                        if opts.xml and not header_done:
                            lines.append(CONNTRACK_HEADER)
                            header_done = True
                        name = progname(portid) if portid else None
                        lines.append(render_flow(flow, opts, event, now_ns=now_ns, portid=portid, progname=name))
                    count += 1
            except DecodeError as exc:
                err.write(f"{PREFIX}skipping malformed event: {exc}\n")
            if len(lines) > 4096:
                break
        if lines:
            out.write("\n".join(lines) + "\n")
            out.flush()
    if opts.xml and header_done:
        out.write((EXPECT_FOOTER if expect else CONNTRACK_FOOTER) + "\n")
    out.flush()
    lost = netlink_drops(sock.portid) or 0  # also catches an overrun we had no recv() left to see
    if lost:
        err.write(f"{PREFIX}{lost} events lost: netlink socket buffer overrun "
                  f"(seen {overruns} times, buffer {size} bytes).\n")
    err.write(runner_summary(expect, count))
    sock.close()


def runner_summary(expect: bool, count: int) -> str:
    from ..formats import stats as stats_fmt
    return stats_fmt.summary("exp_event" if expect else "event", count) + "\n"
