#!/usr/bin/env python3
"""Traffic helper copied into the lab's client and server containers.

    lab_traffic.py serve PORT              TCP and UDP echo on PORT (a thread per TCP connection)
    lab_traffic.py hold HOST PORT N SECS   N TCP connections, one line per 100 ms each (sequential),
                                           for SECS seconds; prints a JSON summary
    lab_traffic.py flows HOST PORT --tcp N --udp M --out FILE [--stop-file F] [--duration S]
                                           N long-lived TCP connections, each in its own thread and
                                           concurrently, plus M UDP flows (own source port each);
                                           every flow sends a line per --interval (100 ms) and waits
                                           for the echo.  Per flow it records every gap between two
                                           echoes longer than --gap-threshold (wall-clock start/end)
                                           and the first error (reset, EOF, bad echo, hang).  A JSON
                                           snapshot is written to FILE (atomically) every second and
                                           at the end; the run ends when F exists or after S seconds.
                                           --nat-tcp K --nat-port P adds K more TCP connections (kind
                                           "nat") to P, which the lab pair source-NATs to its inside VIP.
    lab_traffic.py ftpserve PORT           a minimal passive-mode FTP server (USER PASS TYPE PASV RETR QUIT)
    lab_traffic.py ftp HOST PORT --out FILE [--stop-file F]
                                           one FTP control connection, a PASV + RETR of 10 KiB every
                                           --interval (0.5 s) over a new data connection each: the data
                                           connections pass a strict firewall only as RELATED, i.e. only
                                           where the conntrack FTP helper saw the PASV reply; records every
                                           transfer (start, end, error) and the control connection's fate.

Standard library only (the node image has python3 and no package index).  Wall-clock times
(time.time()) are comparable with the host's: containers share the host kernel's clock.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import socketserver
import sys
import threading
import time
from typing import Any


class _TCPEcho(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line)


class _UDPEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        sock.sendto(data, self.client_address)


class _ThreadingTCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 1024


def serve(port: int) -> None:
    tcp = _ThreadingTCPServer(("0.0.0.0", port), _TCPEcho)
    udp = socketserver.UDPServer(("0.0.0.0", port), _UDPEcho)  # echo inline: no thread per datagram
    threading.Thread(target=udp.serve_forever, daemon=True).start()
    tcp.serve_forever()


def hold(host: str, port: int, count: int, seconds: float) -> dict[str, object]:
    """Keep `count` connections busy; record per-connection errors and the longest gap."""
    conns = []
    for _ in range(count):
        s = socket.create_connection((host, port), timeout=5)
        s.settimeout(5)
        conns.append({"sock": s, "file": s.makefile("rb"), "max_gap": 0.0, "last": time.monotonic(),
                      "error": None, "sent": 0})
    end = time.monotonic() + seconds
    seq = 0
    while time.monotonic() < end:
        seq += 1
        for c in conns:
            if c["error"]:
                continue
            try:
                c["sock"].sendall(b"%d\n" % seq)
                if c["file"].readline() != b"%d\n" % seq:
                    raise ConnectionError("bad echo")
                now = time.monotonic()
                c["max_gap"] = max(c["max_gap"], now - c["last"])
                c["last"] = now
                c["sent"] += 1
            except OSError as exc:
                c["error"] = f"{type(exc).__name__}: {exc}"
        time.sleep(0.1)
    for c in conns:
        c["sock"].close()
    return {
        "connections": count,
        "kept": sum(1 for c in conns if not c["error"]),
        "errors": [c["error"] for c in conns if c["error"]],
        "max_gap_s": round(max(c["max_gap"] for c in conns), 3),
    }


# --------------------------------------------------------------------------- FTP (helper-tracked)

FTP_BLOB = bytes(range(256)) * 40  # 10 KiB per transfer


class _FtpControl(socketserver.StreamRequestHandler):
    """Just enough FTP for the conntrack helper: passive mode, one file."""

    def handle(self) -> None:
        self.wfile.write(b"220 ctpy lab ftp\r\n")
        data_srv: socket.socket | None = None
        local = self.connection.getsockname()[0]
        for raw in self.rfile:
            verb = raw.decode("ascii", "replace").strip().split(" ", 1)[0].upper()
            if verb == "USER":
                reply = "331 password please"
            elif verb in ("PASS", "TYPE"):
                reply = "230 ok" if verb == "PASS" else "200 ok"
            elif verb == "PASV":
                if data_srv is not None:
                    data_srv.close()
                data_srv = socket.socket()
                data_srv.bind((local, 0))
                data_srv.listen(1)
                data_srv.settimeout(10)
                port = data_srv.getsockname()[1]
                reply = f"227 Entering Passive Mode ({local.replace('.', ',')},{port >> 8},{port & 255})"
            elif verb == "RETR" and data_srv is not None:
                self.wfile.write(b"150 sending\r\n")
                try:
                    conn, _ = data_srv.accept()
                    conn.sendall(FTP_BLOB)
                    conn.close()
                    reply = "226 done"
                except OSError:
                    reply = "425 no data connection"
                data_srv.close()
                data_srv = None
            elif verb == "QUIT":
                self.wfile.write(b"221 bye\r\n")
                return
            else:
                reply = "502 not here"
            self.wfile.write(reply.encode() + b"\r\n")


def ftpserve(port: int) -> None:
    _ThreadingTCPServer(("0.0.0.0", port), _FtpControl).serve_forever()


def _ftp_reply(f) -> str:  # type: ignore[no-untyped-def]
    line = f.readline()
    if not line:
        raise ConnectionError("control connection closed")
    return line.decode("ascii", "replace").strip()


def ftp(args: argparse.Namespace) -> int:
    """One control connection, a passive transfer every interval; JSON report to --out."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    transfers: list[list[Any]] = []  # [start, end, error or None]
    state: dict[str, Any] = {"host": args.host, "port": args.port, "control_error": None, "final": False}

    def report() -> dict[str, Any]:
        return {**state, "now": time.time(), "transfers": transfers}

    try:
        ctrl = socket.create_connection((args.host, args.port), timeout=args.control_timeout)
        f = ctrl.makefile("rb")
        for line in (None, b"USER lab", b"PASS lab", b"TYPE I"):
            if line is not None:
                ctrl.sendall(line + b"\r\n")
            _ftp_reply(f)
    except OSError as exc:
        state["control_error"] = f"{type(exc).__name__}: {exc}"
        state["final"] = True
        _write(args.out, report())
        return 1
    end = time.monotonic() + args.duration
    last_write = 0.0
    while not stop.is_set() and time.monotonic() < end:
        if args.stop_file and os.path.exists(args.stop_file):
            break
        t0 = time.time()
        err = None
        try:
            ctrl.sendall(b"PASV\r\n")
            r = _ftp_reply(f)
            if not r.startswith("227"):
                raise ConnectionError(f"PASV: {r}")
            nums = [int(x) for x in r[r.index("(") + 1:r.index(")")].split(",")]
            try:
                d = socket.create_connection((".".join(map(str, nums[:4])), nums[4] * 256 + nums[5]),
                                             timeout=args.data_timeout)
            except OSError as exc:  # the data SYN was dropped (not RELATED): the server's accept times out
                err = f"data connect: {type(exc).__name__}"
                d = None
            if d is not None:
                ctrl.sendall(b"RETR blob\r\n")
                _ftp_reply(f)  # 150
                got = bytearray()
                try:
                    d.settimeout(args.data_timeout)
                    while chunk := d.recv(65536):
                        got += chunk
                except OSError as exc:
                    err = f"data: {type(exc).__name__}"
                finally:
                    d.close()
                r = _ftp_reply(f)  # 226 (or 425): the control stream stays in step
                if err is None and (not r.startswith("226") or bytes(got) != FTP_BLOB):
                    err = f"transfer: {r}, {len(got)} bytes"
        except (OSError, ConnectionError, ValueError) as exc:
            state["control_error"] = f"{type(exc).__name__}: {exc}"
            transfers.append([round(t0, 3), round(time.time(), 3), state["control_error"]])
            break
        transfers.append([round(t0, 3), round(time.time(), 3), err])
        if time.monotonic() - last_write > 1.0:
            _write(args.out, report())
            last_write = time.monotonic()
        stop.wait(max(0.0, args.interval - (time.time() - t0)))
    state["final"] = True
    _write(args.out, report())
    return 0


# --------------------------------------------------------------------------- flows


class Flow:
    """One flow's record.  Times are wall clock (time.time())."""

    def __init__(self, kind: str, idx: int) -> None:
        self.kind = kind
        self.idx = idx
        self.sport = 0
        self.connected: float | None = None
        self.sent = 0
        self.echoed = 0
        self.first_echo: float | None = None
        self.last_echo: float | None = None
        self.gaps: list[tuple[float, float]] = []  # (last echo before, first echo after)
        self.error: str | None = None
        self.error_kind: str | None = None  # reset | eof | timeout | hang | bad-echo | connect | other
        self.error_at: float | None = None
        self.lock = threading.Lock()

    def echo(self, now: float, threshold: float) -> None:
        with self.lock:
            if self.last_echo is not None and now - self.last_echo > threshold:
                self.gaps.append((self.last_echo, now))
            if self.first_echo is None:
                self.first_echo = now
            self.last_echo = now
            self.echoed += 1

    def fail(self, kind: str, msg: str) -> None:
        with self.lock:
            if self.error is None:
                self.error_kind, self.error, self.error_at = kind, msg, time.time()

    def snapshot(self) -> dict[str, Any]:
        with self.lock:
            return {"kind": self.kind, "idx": self.idx, "sport": self.sport, "connected": self.connected,
                    "sent": self.sent, "echoed": self.echoed, "first_echo": self.first_echo,
                    "last_echo": self.last_echo, "gaps": [[round(a, 3), round(b, 3)] for a, b in self.gaps],
                    "error": self.error, "error_kind": self.error_kind, "error_at": self.error_at}


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, ConnectionResetError):
        return "reset"
    if isinstance(exc, (ConnectionRefusedError, ConnectionAbortedError, BrokenPipeError)):
        return "reset"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "other"


def _tcp_flow(flow: Flow, host: str, port: int, args: argparse.Namespace, stop: threading.Event) -> None:
    try:
        sock = socket.create_connection((host, port), timeout=args.connect_timeout)
    except OSError as exc:
        flow.fail("connect", f"{type(exc).__name__}: {exc}")
        return
    flow.sport = sock.getsockname()[1]
    flow.connected = time.time()
    sock.settimeout(0.5)  # short reads so the thread notices `stop`; hangs are timed below
    buf = b""
    seq = 0
    next_send = time.monotonic()
    try:
        while not stop.is_set():
            seq += 1
            line = b"%d %d\n" % (flow.idx, seq)
            sock.sendall(line)
            flow.sent += 1
            waited_since = time.monotonic()
            while b"\n" not in buf:
                if stop.is_set():
                    return
                try:
                    chunk = sock.recv(4096)
                except TimeoutError:
                    if time.monotonic() - waited_since > args.hang_timeout:
                        flow.fail("hang", f"no echo for {args.hang_timeout:.0f} s")
                        return
                    continue
                if not chunk:
                    flow.fail("eof", "connection closed by peer")
                    return
                buf += chunk
            got, buf = buf.split(b"\n", 1)
            if got + b"\n" != line:
                flow.fail("bad-echo", f"sent {line!r}, got {got!r}")
                return
            flow.echo(time.time(), args.gap_threshold)
            next_send += args.interval
            delay = next_send - time.monotonic()
            if delay > 0:
                stop.wait(delay)
            else:
                next_send = time.monotonic()
    except OSError as exc:
        flow.fail(_error_kind(exc), f"{type(exc).__name__}: {exc}")
    finally:
        sock.close()


def _udp_flows(flows: list[Flow], host: str, port: int, args: argparse.Namespace, stop: threading.Event) -> None:
    """All UDP flows in one thread: a datagram per interval each, echoes matched by sequence."""
    socks = []
    for f in flows:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.connect((host, port))
        s.setblocking(False)
        f.sport = s.getsockname()[1]
        f.connected = time.time()
        socks.append(s)
    by_fd = {s.fileno(): (s, f) for s, f in zip(socks, flows, strict=True)}
    seqs = [0] * len(flows)
    next_send = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        if now >= next_send:
            for i, (s, f) in enumerate(zip(socks, flows, strict=True)):
                seqs[i] += 1
                try:
                    s.send(b"%d %d\n" % (f.idx, seqs[i]))
                    f.sent += 1
                except OSError as exc:  # ICMP errors surface here (ECONNREFUSED)
                    f.fail(_error_kind(exc), f"{type(exc).__name__}: {exc}")
            next_send += args.interval
            if next_send < now:
                next_send = now + args.interval
        ready, _, _ = select.select(socks, [], [], max(0.0, min(0.05, next_send - time.monotonic())))
        for s in ready:
            sock, f = by_fd[s.fileno()]
            while True:
                try:
                    data = sock.recv(2048)
                except BlockingIOError:
                    break
                except OSError as exc:
                    f.fail(_error_kind(exc), f"{type(exc).__name__}: {exc}")
                    break
                if data:
                    f.echo(time.time(), args.gap_threshold)
    for s in socks:
        s.close()


def _write(path: str, data: dict[str, Any]) -> None:
    tmp = f"{path}.tmp"
    with open(tmp, "w") as fh:
        json.dump(data, fh)
    os.replace(tmp, path)


def flows(args: argparse.Namespace) -> int:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    tcp = [Flow("tcp", i) for i in range(args.tcp)]
    udp = [Flow("udp", i) for i in range(args.udp)]
    nat = [Flow("nat", i) for i in range(args.nat_tcp)]
    threads = []
    started = time.time()
    for f, port in [(f, args.port) for f in tcp] + [(f, args.nat_port) for f in nat]:
        t = threading.Thread(target=_tcp_flow, args=(f, args.host, port, args, stop), daemon=True)
        t.start()
        threads.append(t)
    if udp:
        t = threading.Thread(target=_udp_flows, args=(udp, args.host, args.port, args, stop), daemon=True)
        t.start()
        threads.append(t)

    def report(final: bool) -> dict[str, Any]:
        return {"host": args.host, "port": args.port, "interval": args.interval,
                "gap_threshold": args.gap_threshold, "hang_timeout": args.hang_timeout,
                "started": started, "now": time.time(), "final": final, "pid": os.getpid(),
                "flows": [f.snapshot() for f in tcp + udp + nat]}

    end = time.monotonic() + args.duration
    while time.monotonic() < end and not stop.is_set():
        if args.stop_file and os.path.exists(args.stop_file):
            break
        _write(args.out, report(False))
        stop.wait(1.0)
    stop.set()
    for t in threads:
        t.join(timeout=2)
    _write(args.out, report(True))
    return 0


def _run_parser(cmd: str, duration: float, interval: float) -> argparse.ArgumentParser:
    """What `flows` and `ftp` share: the target, the JSON report, when to stop, the pace."""
    p = argparse.ArgumentParser(prog=f"lab_traffic.py {cmd}")
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--out", required=True)
    p.add_argument("--stop-file")
    p.add_argument("--duration", type=float, default=duration)
    p.add_argument("--interval", type=float, default=interval)
    return p


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        serve(int(argv[1]))
    elif argv[:1] == ["ftpserve"]:
        ftpserve(int(argv[1]))
    elif argv[:1] == ["ftp"]:
        p = _run_parser("ftp", duration=900, interval=0.5)
        p.add_argument("--data-timeout", type=float, default=3)
        p.add_argument("--control-timeout", type=float, default=30)
        return ftp(p.parse_args(argv[1:]))
    elif argv[:1] == ["hold"]:
        print(json.dumps(hold(argv[1], int(argv[2]), int(argv[3]), float(argv[4]))))
    elif argv[:1] == ["flows"]:
        p = _run_parser("flows", duration=600, interval=0.1)
        p.add_argument("--tcp", type=int, default=100)
        p.add_argument("--udp", type=int, default=10)
        p.add_argument("--nat-tcp", type=int, default=0)
        p.add_argument("--nat-port", type=int, default=0)
        p.add_argument("--gap-threshold", type=float, default=0.2)
        p.add_argument("--hang-timeout", type=float, default=60)
        p.add_argument("--connect-timeout", type=float, default=10)
        return flows(p.parse_args(argv[1:]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
