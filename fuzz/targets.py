"""Fuzz targets shared by the atheris harnesses (fuzz/fuzz_*.py), the CI hypothesis budget
(tests/unit/test_fuzz_budget.py) and the crasher replay (tests/unit/test_fuzz_crashers.py).

Each target takes arbitrary bytes and drives one parser the way the daemon or a client does.
The contract checked everywhere: the only exception that may escape is the module's own
error type (``ALLOWED[name]``); anything else is a crash. ``run(name, data)`` returns
"ok" or "rejected" (malformed input counted), and raises on a crash.

Targets:

wire      sync wire decoder: iter_datagram (UDP), StreamDecoder (TCP, split at a data-chosen
          point), Message.flow()/expect(), re-encoding of what decoded.  Allowed: WireError.
netlink   ctnetlink decoders: iter_messages + decode_flow/decode_expect/decode_error/
          key_request_from_dump, ShapeDecoder.decode (generic and compiled-shape paths, pre-warmed
          with real shapes) and codec.frame_dump + ShapeDecoder.lines on the whole buffer with the generated line
          renderers.  Allowed: DecodeError.
events    the daemon's event path on an arbitrary receive buffer: the real Ctnl.read_events
          (framing, decode, sanity, filter) feeding StatsMode and SyncCacheMode, then ``-i`` in
          text, XML and JSON from the caches.  Allowed: nothing (read_events counts bad input).
config    parse_config (bytes decoded as load_config does) + check_config.  Allowed: ConfigError.
control   control socket: the real server connection (_Conn) fed the bytes in data-chosen
          chunks, decode_request/split_json, Daemon.dispatch of the decoded code against both
          modes with cached flows, and conntrackd's argv parser.  Allowed: nothing.
notify    conntrackd-notify argument validation (parse_args).  Allowed: UsageError.
cli       conntrack's command line and --load-file batch parser.  Allowed: CliError.
keyring   the AuthKey key file parser (parse_key_file, what the daemon re-reads on a change), then a
          datagram sealed with the parsed ring's sending key opened by the same ring.  Allowed: KeyFileError.
"""

from __future__ import annotations

import io
import os
import struct
import sys
from collections.abc import Callable
from contextlib import redirect_stdout
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from anywhere
    sys.path.insert(0, str(REPO))

from conntrack_tools.cli.batch import parse_batch_requests  # noqa: E402
from conntrack_tools.cli.errors import CliError  # noqa: E402
from conntrack_tools.cli.parse import parse_args as cli_parse_args  # noqa: E402
from conntrack_tools.daemon.config import ConfigError, check_config, parse_config  # noqa: E402
from conntrack_tools.daemon.config.checks import HostFacts  # noqa: E402
from conntrack_tools.daemon.control import decode_request, parse_argv, split_json  # noqa: E402
from conntrack_tools.daemon.notify import UsageError  # noqa: E402
from conntrack_tools.daemon.notify import parse_args as notify_parse_args  # noqa: E402
from conntrack_tools.daemon.sync import wire  # noqa: E402
from conntrack_tools.daemon.sync.auth import Opener, Sealer  # noqa: E402
from conntrack_tools.daemon.sync.keyring import KeyFileError, parse_key_file  # noqa: E402
from conntrack_tools.daemon.sync.wire import WireError  # noqa: E402
from conntrack_tools.flow import (  # noqa: E402
    AF_INET,
    AF_INET6,
    IPS_ASSURED,
    IPS_CONFIRMED,
    Counters,
    Flow,
    TcpInfo,
    Tuple,
)
from conntrack_tools.formats import OutputOptions, render_flow  # noqa: E402
from conntrack_tools.formats.fastline import make_line_factory  # noqa: E402
from conntrack_tools.netlink.attrs import NLM_F_CREATE, NLM_F_EXCL, CtMsg, ct_type  # noqa: E402
from conntrack_tools.netlink.codec import (  # noqa: E402
    NLMSG_HDR,
    DecodeError,
    decode_error,
    decode_expect,
    decode_flow,
    encode_flow,
    frame_dump,
    iter_messages,
    key_request_from_dump,
    nlmsg,
)
from conntrack_tools.netlink.shapes import ShapeDecoder  # noqa: E402

__all__ = ["ALLOWED", "TARGETS", "run", "seeds", "Crash"]


class Crash(Exception):
    """Raised by run() for an exception the target's contract does not allow."""


# ------------------------------------------------------------------------------------ samples


def sample_flows() -> list[Flow]:
    """A few realistic flows: IPv4/IPv6, TCP/UDP/ICMP, counters, zone, mark."""
    a4, b4 = bytes([10, 1, 0, 1]), bytes([10, 2, 0, 1])
    a6, b6 = bytes(15) + b"\x01", bytes(15) + b"\x02"
    out = []
    t = Tuple(AF_INET, a4, b4, 6, 1234, 80)
    f = Flow(AF_INET, t, t.reversed(), status=IPS_CONFIRMED | IPS_ASSURED, timeout=300, mark=7, use=1, id=42)
    f.tcp = TcpInfo(3, 7, 7, 3, 3, 3, 3)
    f.counters_orig, f.counters_reply = Counters(3, 180), Counters(2, 120)
    out.append(f)
    t = Tuple(AF_INET, a4, b4, 17, 5353, 53)
    out.append(Flow(AF_INET, t, t.reversed(), status=IPS_CONFIRMED, timeout=30, zone=3, use=1, id=43))
    t = Tuple(AF_INET6, a6, b6, 58)
    t.icmp_type, t.icmp_code, t.icmp_id = 128, 0, 9
    r = Tuple(AF_INET6, b6, a6, 58)
    r.icmp_type, r.icmp_code, r.icmp_id = 129, 0, 9
    out.append(Flow(AF_INET6, t, r, status=IPS_CONFIRMED, timeout=29, use=1, id=44))
    t = Tuple(AF_INET6, a6, b6, 6, 40000, 443)
    f = Flow(AF_INET6, t, t.reversed(), status=IPS_CONFIRMED | IPS_ASSURED, timeout=431999, use=1, id=45)
    f.tcp = TcpInfo(3, 7, 7, 35, 35, 35, 35)
    out.append(f)
    return out


def _event(flow: Flow, seq: int = 0, new: bool = True) -> bytes:
    flags = NLM_F_CREATE | NLM_F_EXCL if new else 0
    return nlmsg(ct_type(CtMsg.NEW), flags, seq, flow.family, encode_flow(flow))


SAMPLE_CONFIG = b"""General {
    HashSize 8192
    HashLimit 65535
    LockFile /var/lock/conntrack.lock
    UNIX { Path /var/run/conntrackd.ctl }
    NetlinkBufferSize 2097152
    NetlinkBufferSizeMaxGrowth 8388608
    Filter From Userspace {
        Protocol Accept { TCP UDP }
        Address Ignore { IPv4_address 127.0.0.1 IPv6_address ::1 }
    }
}
Sync {
    Mode FTFW { ResendQueueSize 131072 }
    Multicast { IPv4_address 225.0.0.50 Group 3780 IPv4_interface 192.168.100.100
                Interface eth2 SndSocketBuffer 1249280 RcvSocketBuffer 1249280 Checksum on }
    Options { ExpectationSync on }
}
"""


def seeds() -> dict[str, list[bytes]]:
    """Seed inputs per target (the atheris corpora start from these)."""
    flows = sample_flows()
    msgs = [_event(f, i + 1, new=bool(i % 2)) for i, f in enumerate(flows)]
    done = NLMSG_HDR.pack(20, 3, 2, 1, 0) + bytes(4)
    sf = _sync_flow_sample()
    wire_msgs = [wire.encode_ctl(wire.MsgFlag.HELLO, 1), wire.encode_ctl(wire.MsgFlag.ACK, 2, 1, 5),
                 wire.encode_flow_message(wire.MsgType.CT_NEW, sf, 3),
                 wire.encode_flow_message(wire.MsgType.CT_DEL, sf, 4)]
    return {
        "wire": [b"".join(wire_msgs), *wire_msgs],
        "netlink": [b"".join(msgs) + done, *msgs],
        "events": [b"\x00\x00" + b"".join(msgs), b"\x01\x01" + msgs[0]],
        "config": [SAMPLE_CONFIG, b"General { }\nStats { LogFile on }\n"],
        "control": [struct.pack("=i", 21), struct.pack("=i", 16 | 1 << 16), b"\x00-s\x00cache", b"-i\x00-x"],
        "notify": [b"primary\x00-C\x00/nonexistent", b"backup\x00--restart\x00--timeout\x005"],
        "cli": [b"-L\x00-p\x00tcp\x00--dport\x0080", b"\x01-I -s 1.1.1.1 -d 2.2.2.2 -p udp -t 10\n"],
        "keyring": [b"# sync keys\nkey 2 " + b"ab" * 32 + b"  # sends\nkey 1 " + b"0123456789abcdef" * 2 + b"\n",
                    b"0011 2233 4455 6677\n8899 aabb ccdd eeff\n"],
    }


def _sync_flow_sample() -> wire.SyncFlow:
    from ipaddress import IPv4Address

    return wire.SyncFlow(orig=wire.FlowTuple(IPv4Address("10.1.0.1"), IPv4Address("10.2.0.1"), 6, 1234, 80),
                         status=IPS_CONFIRMED | IPS_ASSURED, tcp_state=3, timeout=300, mark=7)


# ------------------------------------------------------------------------------------ wire


def target_wire(data: bytes) -> None:
    rejected = False
    for item in wire.iter_datagram(data):
        if isinstance(item, WireError):
            assert isinstance(item.kind, wire.WireErrorKind) and item.reason
            rejected = True
            continue
        msg = item
        try:
            if msg.is_ct:
                msg.flow()
            elif msg.is_exp:
                msg.expect()
        except WireError:
            rejected = True
        try:
            again = wire.decode_message(wire.encode_message(msg))
        except WireError:
            rejected = True
        else:
            assert again.header.type == msg.header.type
    cut = data[0] % (len(data) + 1) if data else 0
    dec = wire.StreamDecoder()
    for part in (data[:cut], data[cut:]):
        for item in dec.feed(part):
            if isinstance(item, WireError):
                rejected = True
    assert dec.pending <= len(data)
    if rejected:
        raise WireError("fuzz: rejected")


# ------------------------------------------------------------------------------------ netlink

_OPTS = [OutputOptions(), OutputOptions(extended=True, id=True)]
_WARM: list[ShapeDecoder] = []


def _warm_decoders() -> list[ShapeDecoder]:
    if not _WARM:
        for opts in _OPTS:
            d = ShapeDecoder(line_factory=make_line_factory(opts),
                             reference=lambda f, o=opts: render_flow(f, o, now_ns=0))
            for i, f in enumerate(sample_flows()):
                m = _event(f, i)
                d.decode(m, 16, len(m))
            _WARM.append(d)
    return _WARM


def _fresh(warm: ShapeDecoder) -> ShapeDecoder:
    """A decoder holding the pre-compiled shapes (so fuzzed bytes hit the compiled path too)."""
    d = ShapeDecoder(line_factory=warm.line_factory, reference=warm.reference)
    d.layouts = warm.layouts.copy()
    return d


def target_netlink(data: bytes) -> None:
    rejected = False
    # 1. the whole buffer as one receive: messages, then each payload through every decoder
    try:
        for mtype, flags, seq, _pid, start, end in iter_messages(data):
            for fn in (decode_flow, decode_expect, decode_error):
                try:
                    fn(data, start, end)
                except DecodeError:
                    rejected = True
            try:
                key_request_from_dump(data, start, end, mtype, flags, seq)
            except DecodeError:
                rejected = True
    except DecodeError:
        rejected = True
    # 2. the buffer as one payload (nfgenmsg on) through the shape decoder, twice: the second
    #    call may hit the shape compiled by the first
    for warm in _warm_decoders():
        d = _fresh(warm)
        for _ in range(2):
            try:
                ref = decode_flow(data, 0, len(data))
            except DecodeError:
                ref = None
                rejected = True
            try:
                got = d.decode(data, 0, len(data))
            except DecodeError:
                got = None
            assert got == ref, "ShapeDecoder.decode disagrees with decode_flow"
        # 3. the whole buffer framed as a dump reply (sequence number of its first header), then lines()
        seq = NLMSG_HDR.unpack_from(data, 0)[3] if len(data) >= 16 else 0
        lines: list[str] = []
        spans: list[int] = []
        try:
            frame_dump(data, len(data), seq, spans)
        except DecodeError:
            rejected = True
        try:
            d.lines(data, spans, lines.append)
        except DecodeError:
            rejected = True
        assert all(isinstance(x, str) for x in lines)
    if rejected:
        raise DecodeError("fuzz: rejected")


# ------------------------------------------------------------------------------------ events


class _FakeEventSocket:
    """What Ctnl.read_events needs of a CtnlSocket: recv() -> n, view; then EAGAIN."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.view = memoryview(b"")

    def recv(self) -> int:
        if not self.chunks:
            raise BlockingIOError
        c = self.chunks.pop(0)
        self.view = memoryview(c)
        return len(c)

    def drops(self) -> int:
        return 0


_EVENT_CTX: dict = {}


def _event_ctx():
    if not _EVENT_CTX:
        from conntrack_tools.daemon.ctnl import Ctnl
        from conntrack_tools.daemon.filter import compile_filter

        cfg = parse_config(SAMPLE_CONFIG.decode(), "fuzz.conf")
        _EVENT_CTX.update(Ctnl=Ctnl, cfg=cfg, filters=[compile_filter(None), compile_filter(cfg.general.filter)])
    return _EVENT_CTX


def _null_log(*_a) -> None:
    pass


def target_events(data: bytes) -> None:
    from conntrack_tools.daemon.ctnl import EV_DESTROY, EV_NEW, EV_UPDATE
    from conntrack_tools.daemon.mode import StatsMode, SyncCacheMode, dump_cache
    from conntrack_tools.daemon.stats import RuntimeStats

    ctx = _event_ctx()
    if len(data) < 2:
        return
    ctl, data = data[:2], data[2:]
    runtime = RuntimeStats()
    ctnl = ctx["Ctnl"].__new__(ctx["Ctnl"])
    ctnl.g = ctx["cfg"].general
    ctnl.filter = ctx["filters"][ctl[0] & 1]
    ctnl.stats = runtime
    ctnl.decode = ShapeDecoder().decode
    ctnl.origins = {7: "commit"}
    ctnl.log = _null_log
    # split the bytes into receive buffers at data-chosen points
    chunks, step = [], (ctl[1] % 5) * 97
    if step:
        chunks = [data[i:i + step] for i in range(0, len(data), step)]
    else:
        chunks = [data]
    ctnl.events = _FakeEventSocket(chunks)

    def exists(flows):
        return [bool(i % 2) for i in range(len(flows))]

    modes = [StatsMode(64, runtime, exists, _null_log, _null_log),
             SyncCacheMode(64, runtime, exists, _null_log, _null_log)]
    mode = modes[(ctl[0] >> 1) & 1]

    def handle(kind, flow, origin):
        if kind == EV_NEW:
            mode.new(flow, origin)
        elif kind == EV_UPDATE:
            mode.upd(flow, origin)
        elif kind == EV_DESTROY:
            mode.destroy(flow, origin)

    while ctnl.events.chunks:
        ctnl.read_events(handle, 1000)
    mode.purge()
    for xml, js in ((False, False), (True, False), (False, True)):
        for chunk in dump_cache(mode.cache, xml, js):
            assert isinstance(chunk, str)
    if isinstance(mode, SyncCacheMode):
        mode.engine.local(17, False)


# ------------------------------------------------------------------------------------ config

_HOST = HostFacts(has_interface=lambda n: n == "eth2", has_address=lambda a: a.startswith("192.168."))


def target_config(data: bytes) -> None:
    text = data.decode("utf-8", "surrogateescape")  # what load_config does
    try:
        config = parse_config(text, "fuzz.conf")
    except ConfigError as exc:
        assert exc.file == "fuzz.conf" and exc.line >= 0 and exc.column >= 0 and exc.message
        raise
    for finding in check_config(config, _HOST):
        assert finding.severity in ("error", "warning") and finding.message


# ------------------------------------------------------------------------------------ keyring


def target_keyring(data: bytes) -> None:
    ring = parse_key_file(data, "fuzz.key")
    assert ring.send_id in ring.keys and 0 <= ring.send_id <= 255 and ring.describe()
    assert all(len(k) >= 16 for k in ring.keys.values())
    assert ring.keyring or list(ring.keys) == [0]
    t = lambda: 1_700_000_000  # noqa: E731
    sealed = Sealer(ring, boot_id=1, clock=t).seal(b"")
    assert sealed[8] == ring.send_id and Opener(ring, clock=t).open(sealed) == b""


# ------------------------------------------------------------------------------------ control


class _FakeLoop:
    def __init__(self) -> None:
        self.readers: dict[int, Callable] = {}
        self.writers: dict[int, Callable] = {}

    def add_reader(self, fd, cb):
        self.readers[fd] = cb

    def add_writer(self, fd, cb):
        self.writers[fd] = cb

    def remove(self, fd):
        self.readers.pop(fd, None)
        self.writers.pop(fd, None)

    def add_timer(self, *_a):
        return None


class _FakeConnSock:
    """A non-blocking stream socket whose reads come from data in given chunk sizes."""

    def __init__(self, chunks: list[bytes], send_max: int) -> None:
        self.chunks = chunks
        self.fd = 3
        self.sent = 0
        self.send_max = send_max
        self.calls = 0

    def fileno(self) -> int:
        return self.fd

    def recv(self, n: int) -> bytes:
        if not self.chunks:
            return b""  # peer closed
        c = self.chunks[0]
        if c == b"\xff":  # marker: "would block" once
            self.chunks.pop(0)
            raise BlockingIOError
        self.chunks[0] = c[n:]
        if not self.chunks[0]:
            self.chunks.pop(0)
        return c[:n]

    def send(self, b: bytes) -> int:
        self.calls += 1
        if self.calls % 3 == 0:
            raise BlockingIOError
        n = min(len(b), self.send_max)
        self.sent += n
        return n

    def close(self) -> None:
        self.fd = -1


class _FakeServer:
    def __init__(self, dispatch) -> None:
        self.loop = _FakeLoop()
        self.dispatch = dispatch
        self.failed = 0
        self.conns: set = set()

    def on_read_failed(self) -> None:
        self.failed += 1


_DAEMON: dict = {}


def _daemon():
    """One Daemon (its loop created once) with a fake ctnl; each input gets fresh modes."""
    if not _DAEMON:
        from conntrack_tools.daemon.core import Daemon

        class FakeCtnl:
            """The kernel side of Daemon.dispatch, without a kernel (a real one would flush the host)."""

            buffer_size = 212992
            expect = True  # expectation sync on: EXP_* requests take their kernel paths too

            def flush_selective(self):
                return 0

            def flush_expect(self):
                return 0

            def dump(self, cb, interleave=None, every=4096, fast=None):  # Ctnl.dump; no compiled layouts here
                for f in sample_flows():
                    cb(f)
                return 4

            def dump_expect(self, cb):
                return 0

        class Log:
            def __call__(self, *_a):
                pass

            def flow(self, *_a):
                pass

        cfg = parse_config(SAMPLE_CONFIG.decode(), "fuzz.conf")
        d = Daemon(cfg, Log())
        d.ctnl = FakeCtnl()
        d.kills = 0

        def shutdown():
            d.kills += 1

        d.shutdown = shutdown
        _DAEMON["d"] = d
    return _DAEMON["d"]


def target_control(data: bytes) -> None:
    from conntrack_tools.daemon.control_server import _Conn
    from conntrack_tools.daemon.mode import StatsMode, SyncCacheMode

    d = _daemon()
    if not data:
        data = b"\0"
    sel, rest = data[0], data[1:]
    # fresh modes per input, holding the sample flows
    mode = (StatsMode if sel & 1 else SyncCacheMode)(64, d.runtime, lambda fl: [True] * len(fl), d.log, d.log.flow)
    for f in sample_flows():
        mode.populate(f)
    d.mode = mode
    # 1. the request codec on the raw bytes
    code = decode_request(rest)
    if code is not None:
        action, as_json = split_json(code)
        assert isinstance(action, int) and isinstance(as_json, bool)
    # 2. the real connection handler, bytes in data-chosen chunks (0xff = one EAGAIN)
    size = (sel >> 1) % 5 + 1
    chunks = [rest[i:i + size] for i in range(0, min(len(rest), 16), size)]
    if sel & 0x40:
        chunks.insert(1, b"\xff")
    server = _FakeServer(d.dispatch)
    sock = _FakeConnSock(chunks, send_max=(sel >> 4 & 3) * 1000 + 1)
    conn = _Conn(server, sock)
    server.conns.add(conn)
    for _ in range(8):
        if sock.fd < 0 or conn.chunks is not None:
            break
        conn.on_read()
    if conn.chunks is not None:
        for _ in range(100000):
            if sock.fd < 0:
                break
            conn.on_write()
        assert sock.fd < 0, "answer never finished"
    # 3. conntrackd's own command line
    argv = [a.decode("utf-8", "surrogateescape") for a in rest.split(b"\0")][:24]
    inv = parse_argv(argv)
    assert inv.exit_code in (None, 0, 1)


# ------------------------------------------------------------------------------------ notify / cli


def target_notify(data: bytes) -> None:
    argv = [a.decode("utf-8", "surrogateescape") for a in data.split(b"\0")][:16]
    with redirect_stdout(io.StringIO()):
        notify_parse_args(argv)


def target_cli(data: bytes) -> None:
    if not data:
        return
    if data[0] & 1:
        parse_batch_requests(data[1:], labelmap_path="/nonexistent/connlabel.conf")
    else:
        argv = [a.decode("utf-8", "surrogateescape") for a in data[1:].split(b"\0")][:24]
        cli_parse_args(argv, labelmap_path="/nonexistent/connlabel.conf")


TARGETS: dict[str, Callable[[bytes], None]] = {
    "wire": target_wire,
    "netlink": target_netlink,
    "events": target_events,
    "config": target_config,
    "control": target_control,
    "notify": target_notify,
    "cli": target_cli,
    "keyring": target_keyring,
}
ALLOWED: dict[str, tuple[type[BaseException], ...]] = {
    "wire": (WireError,),
    "netlink": (DecodeError,),
    "events": (),
    "config": (ConfigError,),
    "control": (),
    "notify": (UsageError,),
    "cli": (CliError,),
    "keyring": (KeyFileError,),
}


def run(name: str, data: bytes) -> str:
    """'ok' or 'rejected'; a disallowed exception is re-raised as Crash (with the original chained)."""
    try:
        TARGETS[name](data)
    except ALLOWED[name]:
        return "rejected"
    except Exception as exc:
        raise Crash(f"{name}: {type(exc).__name__}: {exc}") from exc
    return "ok"


if __name__ == "__main__":  # python fuzz/targets.py NAME FILE... : replay inputs
    name = sys.argv[1]
    for p in sys.argv[2:]:
        print(p, run(name, Path(p).read_bytes()))
    os._exit(0)
