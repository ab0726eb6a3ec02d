"""Executing a parsed `conntrack` request: the one place of the CLI with I/O.

 Parsing (parse.py), the netlink
codec and the renderers are pure; this module wires them to a socket and to
stdout/stderr, and maps kernel errors to C's messages and exit codes.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import sys
import time
from collections.abc import Callable

from ..flow import AF_INET, Flow
from ..formats import OutputOptions, render_expect, render_flow
from ..formats import stats as stats_fmt
from ..formats.expect import EXPECT_FOOTER, EXPECT_HEADER
from ..formats.fastline import make_line_factory
from ..formats.xml import CONNTRACK_FOOTER, CONNTRACK_HEADER
from ..netlink.attrs import (
    NLM_F_ACK,
    NLM_F_CREATE,
    NLM_F_DUMP,
    NLM_F_EXCL,
    STATS_GLOBAL_ENTRIES,
    CtMsg,
    ExpMsg,
    ct_type,
    exp_type,
)
from ..netlink.codec import (
    DecodeError,
    decode_expect,
    decode_flow,
    decode_u32_attrs,
    encode_dump_filter,
    encode_expect,
    encode_flow,
    key_request_from_dump,
    nlmsg,
)
from ..netlink.shapes import ShapeDecoder
from ..netlink.socket import CtnlSocket, NetlinkError
from .errors import OTHER_PROBLEM, PREFIX, CliError
from .request import Command, Request, Table
from .shapefilter import make_predicate_factory
from .template import (
    accept_all,
    apply_protoinfo,
    build_create,
    build_expect,
    build_expect_key,
    build_get,
    kernel_dumps,
    make_filter,
)

# err2str(): (errno, command) -> message; command None = any command.
_ERR_MESSAGES: dict[tuple[int, Command | None], str] = {
    (errno.ENOTSUP, Command.LIST): "function not implemented",
    (errno.ENOTSUP, Command.EVENT): "function not implemented",
    (errno.EINVAL, None): "invalid parameters",
    (errno.EEXIST, Command.CREATE): "Such conntrack exists, try -U to update",
    (errno.ENOENT, Command.CREATE): "such conntrack doesn't exist",
    (errno.ENOENT, Command.GET): "such conntrack doesn't exist",
    (errno.ENOENT, Command.DELETE): "such conntrack doesn't exist",
    (errno.ENOENT, Command.ADD): "such conntrack doesn't exist",
    (errno.ENOMEM, None): "not enough memory",
    (errno.EAFNOSUPPORT, Command.GET): "protocol not supported",
    (errno.ETIME, Command.CREATE): "conntrack has expired",
    (errno.ETIME, Command.ADD): "conntrack has expired",
    (errno.EPERM, None): "sorry, you must be root or get CAP_NET_ADMIN capability to do this",
}
_EXP_ERR_MESSAGES: dict[tuple[int, Command | None], str] = {
    (errno.ENOENT, Command.CREATE): "master conntrack not found",
}


def err2str(err: int, command: Command, expect: bool = False) -> str:
    table = _EXP_ERR_MESSAGES if expect else {}
    for key in ((err, command), (err, None)):
        if key in table:
            return table[key]
        if key in _ERR_MESSAGES:
            return _ERR_MESSAGES[key]
    return os.strerror(err)


class Exit(Exception):
    def __init__(self, code: int):
        self.code = code


def output_options(req: Request, *, for_delete: bool = False, for_update: bool = False) -> OutputOptions:
    """What each C callback honours: delete prints extended/id/xml; dump/get/update also labels."""
    out = req.output
    label_map = None
    want_labels = not for_delete and ("labels" in out or req.labels or req.label_modify is not None
                                      or "label-add" in req.options or "label-del" in req.options)
    if want_labels:
        from .labelmap import read_labelmap
        names, _err = read_labelmap()
        if names is not None:
            label_map = {bit: name for name, bit in names.items()}
    return OutputOptions(
        extended="extended" in out,
        xml="xml" in out,  # -D prints <flow> lines too (no document header)
        save="save" in out,
        json="json" in out,
        id="id" in out,
        ktimestamp="ktimestamp" in out and not for_delete and not for_update,
        timestamp="timestamp" in out,
        labels=want_labels,
        userspace="userspace" in out,
        label_map=label_map,
    )


class Runner:
    """Runs requests on one netlink socket (shared across `-R` batch lines, like C)."""

    def __init__(self, out=None, err=None):
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._sock: CtnlSocket | None = None
        self.batch = False  # -R: C prints no per-command "N flow entries have been ..." summary

    @property
    def sock(self) -> CtnlSocket:
        if self._sock is None:
            self._sock = CtnlSocket()
        return self._sock

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()

    # ---------------------------------------------------------------- helpers

    def fail(self, err: int, req: Request, expect: bool = False) -> CliError:
        return CliError(f"Operation failed: {err2str(err, req.command, expect)}", OTHER_PROBLEM)

    def summary(self, kind: str, n: int) -> None:
        if not self.batch:
            self.err.write(stats_fmt.summary(kind, n) + "\n")

    def write_lines(self, lines: list[str]) -> None:
        if lines:
            self.out.write("\n".join(lines))
            self.out.write("\n")

    # ---------------------------------------------------------------- dispatch

    def run(self, req: Request, batch: bool = False) -> int:
        """Execute one request; returns the exit status (counted commands give 1 when nothing matched)."""
        handler = _HANDLERS[(req.command, req.table is Table.EXPECT)]
        self.batch = batch
        count = handler(self, req)
        if batch or count is None:
            return 0
        return 0 if count > 0 else OTHER_PROBLEM

    # ---------------------------------------------------------------- conntrack table

    def ct_list(self, req: Request) -> int | None:
        opts = output_options(req)
        msg_type = {Table.CONNTRACK: CtMsg.GET_CTRZERO if req.zero else CtMsg.GET,
                    Table.DYING: CtMsg.GET_DYING, Table.UNCONFIRMED: CtMsg.GET_UNCONFIRMED}[req.table]
        if req.table is Table.CONNTRACK:
            dumps = kernel_dumps(req, mark=True, status=True)
            keep = make_filter(req, kernel_filtered=True, kernel_tuples=True)
        else:
            dumps = [(req.family, b"")]
            keep = make_filter(req)
        now_ns = time.time_ns()

        def reference(flow: Flow) -> str:
            return render_flow(flow, opts, now_ns=now_ns)

        filter_kw = ({"kernel_filtered": True, "kernel_tuples": True} if req.table is Table.CONNTRACK else {})
        decoder = ShapeDecoder(line_factory=make_line_factory(opts), reference=reference,
                               keep=None if keep is accept_all else keep,
                               predicate_factory=make_predicate_factory(req, **filter_kw))
        lines: list[str] = []
        count = 0
        try:
            for family, body in dumps:
                request = nlmsg(ct_type(msg_type), NLM_F_DUMP, 0, family, body)
                if not opts.xml:
                    # Fast path: filter and render from the unpacked values, whole receive buffers at a time.
                    count += self._stream_lines(request, decoder, lines)
                    continue
                for flow in self._dump_flows(request, decoder):
                    if not keep(flow):
                        continue
                    if opts.xml and count == 0:
                        lines.append(CONNTRACK_HEADER)
                    lines.append(reference(flow))
                    count += 1
                    if len(lines) >= 4096:
                        self.write_lines(lines)
                        lines.clear()
        except NetlinkError as exc:
            self.write_lines(lines)
            raise self.fail(exc.errno, req) from None
        if opts.xml and count and req.table is Table.CONNTRACK:
            lines.append(CONNTRACK_FOOTER)
        self.write_lines(lines)
        self.out.flush()
        self.summary("list", count)
        return None

    def _stream_lines(self, request: bytes, decoder: ShapeDecoder, lines: list[str],
                      on_message: Callable | None = None, flush: bool = True) -> int:
        """Send a dump request and render every reply buffer in one loop; returns the number of lines."""
        sock = self.sock
        seq = sock.next_seq()
        request = request[:8] + seq.to_bytes(4, sys.byteorder) + request[12:]
        render = decoder.lines
        append = lines.append
        count = 0
        for view, spans in sock.dump_spans(request, seq):
            before = len(lines)
            render(view, spans, append, on_message)
            count += len(lines) - before
            if flush and len(lines) >= 4096:
                self.write_lines(lines)
                lines.clear()
        return count

    def _dump_flows(self, request: bytes, decoder: ShapeDecoder):
        sock = self.sock
        seq = sock.next_seq()
        request = request[:8] + seq.to_bytes(4, sys.byteorder) + request[12:]
        decode = decoder.decode
        for buf, _t, start, end in sock.dump(request, seq):
            yield decode(buf, start, end)

    def ct_get(self, req: Request) -> int:
        opts = output_options(req)
        key = build_get(req)
        if key is None:
            raise self.fail(errno.EINVAL, req)
        sock = self.sock
        seq = sock.next_seq()
        msg = nlmsg(ct_type(CtMsg.GET), NLM_F_ACK, seq, key.family, encode_flow(key))
        try:
            replies = sock.request(msg, seq)
        except NetlinkError as exc:
            raise self.fail(exc.errno, req) from None
        count = 0
        lines = []
        for _mtype, payload in replies:
            flow = decode_flow(payload, 0, len(payload))
            if opts.xml and count == 0:
                lines.append(CONNTRACK_HEADER)
            lines.append(render_flow(flow, opts, now_ns=time.time_ns()))
            count += 1
        self.write_lines(lines)
        self.out.flush()
        self.summary("get", count)
        return count

    def _dump_matching(self, req: Request, *, use_mark: bool, kernel_mark: bool, use_status: bool = True,
                       use_protoinfo: bool = True) -> list[Flow]:
        mark = req.mark_filter if kernel_mark else None
        body = encode_dump_filter(mark=mark[0] if mark else None, mark_mask=mark[1] if mark else None)
        keep = make_filter(req, use_mark=use_mark, use_status=use_status, use_protoinfo=use_protoinfo,
                           kernel_filtered=kernel_mark)
        sock = self.sock
        seq = sock.next_seq()
        decode = ShapeDecoder().decode
        flows = []
        try:
            for buf, _t, start, end in sock.dump(nlmsg(ct_type(CtMsg.GET), NLM_F_DUMP, seq, req.family, body), seq):
                flow = decode(buf, start, end)
                if keep(flow):
                    flows.append(flow)
        except NetlinkError as exc:
            raise self.fail(exc.errno, req) from None
        return flows

    def ct_delete(self, req: Request) -> int:
        """-D: kernel-filtered dump, then one batch of deletes built from the dumped bytes."""
        opts = output_options(req, for_delete=True)
        keep = make_filter(req, kernel_filtered=False, kernel_tuples=True)
        now_ns = time.time_ns()

        def reference(flow: Flow) -> str:
            return render_flow(flow, opts, now_ns=now_ns, save_event="destroy")

        decoder = ShapeDecoder(line_factory=make_line_factory(opts), reference=reference,
                               keep=None if keep is accept_all else keep,
                               predicate_factory=make_predicate_factory(req, kernel_tuples=True))
        sock = self.sock
        del_type = ct_type(CtMsg.DELETE)
        lines: list[str] = []
        msgs: list[tuple[int, bytes]] = []

        def on_message(buf, start: int, end: int, shape=None) -> None:
            sock.seq += 1
            dseq = sock.seq
            if shape is not None:
                msgs.append((dseq, shape.key_request(buf, start, del_type, 0, dseq)))
            else:
                msgs.append((dseq, key_request_from_dump(buf, start, end, del_type, 0, dseq)))

        try:
            for family, body in kernel_dumps(req, mark=True):
                request = nlmsg(ct_type(CtMsg.GET), NLM_F_DUMP, 0, family, body)
                self._stream_lines(request, decoder, lines, on_message, flush=False)
            errors = sock.batch(msgs) if msgs else {}
        except NetlinkError as exc:
            raise self.fail(exc.errno, req) from None
        out = []
        count = 0
        for (seq, _msg), line in zip(msgs, lines, strict=True):
            err = errors.get(seq)
            if err == errno.ENOENT:
                continue  # vanished meanwhile: C ignores it
            if err:
                self.write_lines(out)
                raise self.fail(err, req)
            out.append(line)
            count += 1
        self.write_lines(out)
        self.out.flush()
        self.summary("delete", count)
        return count

    def ct_update(self, req: Request) -> int:
        """-U as C's update_cb: every entry the tuple options match gets the new mark/status/timeout/labels and
        protocol state (the template's meta); unchanged ones are skipped.

        Like C, the update and the read-back carry the original tuple without any zone (-U refuses -w):
        an entry in another zone is looked up in zone 0, so it fails with `Operation failed: ...` on stderr
        (ENOENT when zone 0 has no such tuple) and is not counted, or it updates the zone-0 twin.
        """
        opts = output_options(req, for_update=True)
        flows = self._dump_matching(req, use_mark=False, kernel_mark=False, use_status=False, use_protoinfo=False)
        new_proto = Flow(req.family)
        apply_protoinfo(req, new_proto, update=True)
        sock = self.sock
        count = 0
        lines = []
        for flow in flows:
            upd = self._update_of(flow, req, new_proto)
            if upd is None:
                continue
            seq = sock.next_seq()
            try:
                sock.request(nlmsg(ct_type(CtMsg.NEW), NLM_F_ACK, seq, flow.family, encode_flow(upd)), seq)
            except NetlinkError as exc:
                self.err.write(f"Operation failed: {err2str(exc.errno, req.command)}\n")
                self.err.flush()
            seq = sock.next_seq()
            key = Flow(flow.family, upd.orig, id=upd.id)
            try:
                replies = sock.request(nlmsg(ct_type(CtMsg.GET), NLM_F_ACK, seq, flow.family, encode_flow(key)), seq)
            except NetlinkError as exc:
                if exc.errno == errno.ENOENT:
                    continue  # vanished in the middle of the update
                self.write_lines(lines)
                raise self.fail(exc.errno, req) from None
            count += 1
            for _t, payload in replies:
                lines.append(render_flow(decode_flow(payload, 0, len(payload)), opts, now_ns=time.time_ns()))
        self.write_lines(lines)
        self.out.flush()
        self.summary("update", count)
        return count

    @staticmethod
    def _update_of(flow: Flow, req: Request, new_proto: Flow) -> Flow | None:
        """The update C sends for ``flow`` (orig tuple without zone + the template's meta), None if unchanged."""
        orig = dataclasses.replace(flow.orig, zone=None) if flow.orig is not None else None
        upd = Flow(flow.family, orig, id=req.id)
        changed = False
        if req.timeout is not None:
            upd.timeout = req.timeout
            changed = True
        if "mark" in req.options:
            new_mark = ((flow.mark or 0) & ~req.mark_mask & 0xFFFFFFFF) ^ req.mark_value
            if new_mark != (flow.mark or 0):
                upd.mark = new_mark
                changed = True
        if req.status is not None and "status" in req.options:
            new_status = (flow.status or 0) | req.status
            if new_status != (flow.status or 0):
                upd.status = new_status
                changed = True
        for name, compared in _UPDATE_PROTOINFO:
            want = getattr(new_proto, name)
            if want is None:
                continue
            setattr(upd, name, want)  # sent whenever the entry changes, as C sends the template's meta
            have = getattr(flow, name)
            if any(getattr(want, f) is not None and (have is None or getattr(have, f) != getattr(want, f))
                   for f in compared):
                changed = True
        if "label-add" in req.options or "label-del" in req.options:
            old = int.from_bytes(flow.labels or b"", "little")
            if "label-add" in req.options:
                new = old
                for b in req.label_modify or ():
                    new |= 1 << b
            elif req.label_modify is None:
                new = 0
            else:
                new = old
                for b in req.label_modify:
                    new &= ~(1 << b)
            if new != old:
                size = max(len(flow.labels or b""), ((max(new.bit_length(), 1) + 31) // 32) * 4, 4)
                upd.labels = new.to_bytes(size, "little")
                upd.labels_mask = ((1 << (size * 8)) - 1).to_bytes(size, "little")
                changed = True
        return upd if changed else None

    def ct_create(self, req: Request) -> int | None:
        flow = build_create(req)
        # C sends NLM_F_EXCL for -A too: an existing entry is left untouched and counted as 0 added (exit 0).
        flags = NLM_F_CREATE | NLM_F_ACK | NLM_F_EXCL
        sock = self.sock
        seq = sock.next_seq()
        try:
            sock.request(nlmsg(ct_type(CtMsg.NEW), flags, seq, flow.family, encode_flow(flow)), seq)
        except NetlinkError as exc:
            if exc.errno == errno.EEXIST and req.command is Command.ADD:
                self.summary("add", 0)
                return None
            raise self.fail(exc.errno, req) from None
        self.summary("create" if req.command is Command.CREATE else "add", 1)
        return 1

    def ct_flush(self, req: Request) -> None:
        sock = self.sock
        seq = sock.next_seq()
        try:
            sock.request(nlmsg(ct_type(CtMsg.DELETE), NLM_F_ACK, seq, req.family), seq)
        except NetlinkError as exc:
            raise self.fail(exc.errno, req) from None
        self.err.write(stats_fmt.FLUSH_CT + "\n")
        return None

    def ct_count(self, req: Request) -> None:
        sock = self.sock
        seq = sock.next_seq()
        try:
            replies = sock.request(nlmsg(ct_type(CtMsg.GET_STATS), NLM_F_ACK, seq, AF_INET), seq)
            attrs = decode_u32_attrs(replies[0][1], 0, len(replies[0][1])) if replies else {}
            count = attrs[STATS_GLOBAL_ENTRIES]
        except (NetlinkError, KeyError, DecodeError):
            with open("/proc/sys/net/netfilter/nf_conntrack_count") as fh:
                count = int(fh.read())
        self.out.write(stats_fmt.render_count(count) + "\n")
        return None

    def ct_stats(self, req: Request) -> None:
        self._cpu_stats(ct_type(CtMsg.GET_STATS_CPU), stats_fmt.render_cpu_stats, req)
        return None

    def _cpu_stats(self, msg_type: int, render: Callable, req: Request) -> None:
        sock = self.sock
        seq = sock.next_seq()
        lines = []
        try:
            for buf, _t, start, end in sock.dump(nlmsg(msg_type, NLM_F_DUMP, seq, AF_INET), seq):
                cpu = int.from_bytes(buf[start + 2:start + 4], "big")
                lines.append(render(cpu, decode_u32_attrs(buf, start, end)))
        except NetlinkError as exc:
            raise self.fail(exc.errno, req) from None
        self.write_lines(lines)
        return None

    def ct_event(self, req: Request) -> None:
        from .events import run_events
        run_events(self, req, expect=False)
        return None

    # ---------------------------------------------------------------- expectations

    def exp_list(self, req: Request) -> None:
        opts = output_options(req)
        sock = self.sock
        seq = sock.next_seq()
        lines = []
        count = 0
        now_ns = time.time_ns()
        try:
            for buf, _t, start, end in sock.dump(nlmsg(exp_type(ExpMsg.GET), NLM_F_DUMP, seq, req.family), seq):
                exp = decode_expect(buf, start, end)
                if opts.xml and count == 0:
                    lines.append(EXPECT_HEADER)
                lines.append(render_expect(exp, opts, now_ns=now_ns))
                count += 1
        except NetlinkError as exc:
            raise self.fail(exc.errno, req, True) from None
        if opts.xml and count:
            lines.append(EXPECT_FOOTER)
        self.write_lines(lines)
        self.out.flush()
        self.summary("exp_list", count)
        return None

    def exp_get(self, req: Request) -> int:
        opts = output_options(req)
        key = build_expect_key(req)
        sock = self.sock
        seq = sock.next_seq()
        try:
            replies = sock.request(nlmsg(exp_type(ExpMsg.GET), NLM_F_ACK, seq, key.family, encode_expect(key)), seq)
        except NetlinkError as exc:
            raise self.fail(exc.errno, req, True) from None
        lines = [render_expect(decode_expect(p, 0, len(p)), opts, now_ns=time.time_ns()) for _t, p in replies]
        self.write_lines(lines)
        return len(lines) or 1  # C prints no summary for -G expect and exits 0 when found

    def exp_delete(self, req: Request) -> int:
        key = build_expect_key(req)
        sock = self.sock
        seq = sock.next_seq()
        try:
            sock.request(nlmsg(exp_type(ExpMsg.DELETE), NLM_F_ACK, seq, key.family, encode_expect(key)), seq)
        except NetlinkError as exc:
            raise self.fail(exc.errno, req, True) from None
        # COMPAT (docs/compat.md): C counts nothing here and reports failure after a successful delete.
        self.err.write(PREFIX + "1 expectations have been deleted.\n")
        return 1

    def exp_create(self, req: Request) -> int:
        exp = build_expect(req)
        sock = self.sock
        seq = sock.next_seq()
        flags = NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK
        try:
            sock.request(nlmsg(exp_type(ExpMsg.NEW), flags, seq, exp.family, encode_expect(exp)), seq)
        except NetlinkError as exc:
            raise self.fail(exc.errno, req, True) from None
        return 1

    def exp_flush(self, req: Request) -> None:
        sock = self.sock
        seq = sock.next_seq()
        try:
            sock.request(nlmsg(exp_type(ExpMsg.DELETE), NLM_F_ACK, seq, req.family), seq)
        except NetlinkError as exc:
            raise self.fail(exc.errno, req, True) from None
        self.err.write(stats_fmt.FLUSH_EXP + "\n")
        return None

    def exp_count(self, req: Request) -> None:
        sock = self.sock
        seq = sock.next_seq()
        count = 0
        try:
            for _b, _t, _s, _e in sock.dump(nlmsg(exp_type(ExpMsg.GET), NLM_F_DUMP, seq, req.family), seq):
                count += 1
        except NetlinkError as exc:
            raise self.fail(exc.errno, req, True) from None
        self.out.write(stats_fmt.render_count(count) + "\n")
        return None

    def exp_stats(self, req: Request) -> None:
        self._cpu_stats(exp_type(ExpMsg.GET_STATS_CPU), stats_fmt.render_exp_cpu_stats, req)
        return None

    def exp_event(self, req: Request) -> None:
        from .events import run_events
        run_events(self, req, expect=True)
        return None


# -U: protocol info fields whose new value makes an entry "changed" (C's nfct_cmp ignores the TCP flags)
_UPDATE_PROTOINFO = (("tcp", ("state",)), ("sctp", ("state", "vtag_orig", "vtag_reply")), ("dccp", ("state", "role")))


def _unsupported(_runner: Runner, req: Request) -> None:
    raise CliError(f"Can't do --{req.command.value} on expectations", 2)


_HANDLERS: dict[tuple[Command, bool], Callable[[Runner, Request], int | None]] = {
    (Command.LIST, False): Runner.ct_list,
    (Command.GET, False): Runner.ct_get,
    (Command.DELETE, False): Runner.ct_delete,
    (Command.UPDATE, False): Runner.ct_update,
    (Command.CREATE, False): Runner.ct_create,
    (Command.ADD, False): Runner.ct_create,
    (Command.FLUSH, False): Runner.ct_flush,
    (Command.COUNT, False): Runner.ct_count,
    (Command.STATS, False): Runner.ct_stats,
    (Command.EVENT, False): Runner.ct_event,
    (Command.LIST, True): Runner.exp_list,
    (Command.GET, True): Runner.exp_get,
    (Command.DELETE, True): Runner.exp_delete,
    (Command.CREATE, True): Runner.exp_create,
    (Command.FLUSH, True): Runner.exp_flush,
    (Command.COUNT, True): Runner.exp_count,
    (Command.STATS, True): Runner.exp_stats,
    (Command.EVENT, True): Runner.exp_event,
    (Command.UPDATE, True): _unsupported,
    (Command.ADD, True): _unsupported,
}


__all__ = ["Runner", "err2str", "output_options"]
