"""Beyond C: Prometheus text-format metrics (``--metrics-listen ADDR:PORT`` / ``--metrics-textfile PATH``,
or ``General { Metrics { Listen ADDR:PORT  Textfile PATH } }`` in conntrackd.conf).

:func:`render` is pure (counters in, exposition text out); :class:`Metrics` serves it over a
minimal HTTP/1.0 responder on the daemon loop, or rewrites a node-exporter textfile
atomically every 15 s.  The sync engine can add samples through ``stats_json()``: every
numeric leaf becomes ``conntrackd_sync_<path>``.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable

__all__ = ["Metrics", "render"]

TEXTFILE_PERIOD = 15.0
_RUNTIME_HELP = {
    "nl_events_received": ("counter", "ctnetlink events received"),
    "nl_events_filtered": ("counter", "ctnetlink events dropped by the Filter block"),
    "nl_catch_event_failed": ("counter", "errors reading the event socket"),
    "nl_overrun": ("counter", "event socket overruns (ENOBUFS)"),
    "nl_silent_drops": ("counter", "event reads after which the socket's drop counter grew with no ENOBUFS"),
    "nl_kernel_table_flush": ("counter", "kernel table flushes (-F)"),
    "nl_kernel_table_resync": ("counter", "resyncs with the kernel table"),
    "local_read_failed": ("counter", "control socket reads that failed"),
}


def _flatten(prefix: str, data: dict) -> Iterable[tuple[str, float]]:
    for k, v in data.items():
        name = f"{prefix}_{k}"
        if isinstance(v, dict):
            yield from _flatten(name, v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            yield name, v


def render(runtime: dict, caches: dict[str, dict], buffer_size: int, uptime: int, sync: dict | None = None) -> str:
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples: Iterable[tuple[str, float]]) -> None:
        lines.append(f"# HELP {name} {help_}")
        lines.append(f"# TYPE {name} {kind}")
        for labels, value in samples:
            lines.append(f"{name}{labels} {value}")

    for key, (kind, help_) in _RUNTIME_HELP.items():
        metric(f"conntrackd_{key}_total", kind, help_, [("", runtime.get(key, 0))])
    metric("conntrackd_netlink_buffer_bytes", "gauge", "event socket receive buffer", [("", buffer_size)])
    metric("conntrackd_uptime_seconds", "gauge", "seconds since initialisation", [("", uptime)])
    metric("conntrackd_traffic_bytes_total", "counter", "bytes of destroyed flows",
           [("", runtime.get("bytes_orig", 0) + runtime.get("bytes_repl", 0))])
    metric("conntrackd_traffic_packets_total", "counter", "packets of destroyed flows",
           [("", runtime.get("packets_orig", 0) + runtime.get("packets_repl", 0))])
    metric("conntrackd_cache_entries", "gauge", "entries in a cache",
           [(f'{{cache="{n}"}}', c.get("entries", 0)) for n, c in caches.items()])
    metric("conntrackd_cache_active", "gauge", "live entries in a cache",
           [(f'{{cache="{n}"}}', c.get("active", 0)) for n, c in caches.items()])
    for op, key in (("created", "add_ok"), ("updated", "upd_ok"), ("destroyed", "del_ok")):
        metric(f"conntrackd_cache_{op}_total", "counter", f"cache entries {op}",
               [(f'{{cache="{n}"}}', c.get(key, 0)) for n, c in caches.items()])
    for op, key in (("created", "add_fail"), ("updated", "upd_fail"), ("destroyed", "del_fail")):
        metric(f"conntrackd_cache_{op}_failed_total", "counter", f"cache entries that failed to be {op}",
               [(f'{{cache="{n}"}}', c.get(key, 0)) for n, c in caches.items()])
    for name, value in _flatten("conntrackd_sync", sync or {}):
        lines.append(f"# TYPE {name} untyped")
        lines.append(f"{name} {value}")
    return "\n".join(lines) + "\n"


class Metrics:
    def __init__(self, daemon, listen: str | None, textfile: str | None) -> None:
        self.d = daemon
        self.sock: socket.socket | None = None
        self.textfile = textfile
        if listen:
            host, _, port = listen.rpartition(":")
            fam = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
            self.sock = socket.socket(fam, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host.strip("[]") or "127.0.0.1", int(port)))
            self.sock.listen(16)
            self.sock.setblocking(False)
            daemon.loop.add_reader(self.sock.fileno(), self._accept)
        if textfile:
            self._write_textfile()
            daemon.loop.every(TEXTFILE_PERIOD, self._write_textfile)

    def text(self) -> str:
        import time

        d = self.d
        mode = d.mode
        caches = {mode.cache.name: {**mode.cache.stats.as_dict(), "entries": len(mode.cache)}}
        sync = None
        engine = getattr(mode, "engine", None)
        if engine is not None:
            if engine.external is not None:
                caches["external"] = {**engine.external.stats.as_dict(), "entries": len(engine.external)}
            sync = engine.stats_json()
        if getattr(mode, "expect", False):  # ExpectationSync: the expectation caches too
            for name, c in (("expect-internal", mode.exp_cache), ("expect-external", mode.exp_external)):
                if c is not None:
                    caches[name] = {**c.stats.as_dict(), "entries": len(c)}
        buf = d.ctnl.buffer_size if d.ctnl is not None else 0
        return render(d.runtime.as_dict(), caches, buf, int(time.time()) - d.runtime.daemon_start_time, sync)

    def _write_textfile(self) -> None:
        assert self.textfile is not None
        tmp = f"{self.textfile}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as fh:
                fh.write(self.text())
            os.replace(tmp, self.textfile)
        except OSError as exc:
            self.d.log("warning", f"cannot write metrics textfile `{self.textfile}': {exc.strerror}")

    def _accept(self) -> None:
        assert self.sock is not None
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        try:
            conn.settimeout(1.0)
            conn.recv(4096)  # the request line; every path answers the metrics
            body = self.text().encode()
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                         + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        if self.sock is not None:
            self.d.loop.remove(self.sock.fileno())
            self.sock.close()
            self.sock = None
