#!/usr/bin/env python3
"""Traffic helper copied into the lab's client and server containers.

    lab_traffic.py serve PORT              TCP and UDP echo on PORT (threads)
    lab_traffic.py hold HOST PORT N SECS   N TCP connections, one line per 100 ms each,
                                           for SECS seconds; prints a JSON summary

Standard library only (the node image has python3 and no package index).
"""

from __future__ import annotations

import json
import socket
import socketserver
import sys
import threading
import time


class _TCPEcho(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        for line in self.rfile:
            self.wfile.write(line)


class _UDPEcho(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        sock.sendto(data, self.client_address)


def serve(port: int) -> None:
    socketserver.ThreadingTCPServer.allow_reuse_address = True
    socketserver.ThreadingTCPServer.daemon_threads = True
    tcp = socketserver.ThreadingTCPServer(("0.0.0.0", port), _TCPEcho)
    udp = socketserver.ThreadingUDPServer(("0.0.0.0", port), _UDPEcho)
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


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        serve(int(argv[1]))
    elif argv[:1] == ["hold"]:
        print(json.dumps(hold(argv[1], int(argv[2]), int(argv[3]), float(argv[4]))))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
