"""Beyond C: Prometheus metrics (``--metrics-listen ADDR:PORT`` / ``--metrics-textfile PATH``, or
``General { Metrics { Listen ADDR:PORT  Textfile PATH } }`` in conntrackd.conf).

:func:`families` is pure (counters in, metric families out) and :func:`render` turns them into the
exposition text with prometheus_client, the well-kept library for the types and the text format
(its parser checks our output in the tests).  The families are built at scrape time from the
daemon's own counters: nothing is updated on the event hot path.

:class:`Metrics` serves them on the daemon loop without blocking it: the request is read and the
answer written by non-blocking callbacks (a slow or silent client costs a file descriptor until
``CLIENT_TIMEOUT``, never loop time), or rewrites a node-exporter textfile atomically every 15 s.

Sync statistics (``engine.stats_json()``) become ``conntrackd_sync_<path>``; what varies per peer or
per link is a label, never part of a name (an address in a name is not a valid metric name, and
a Prometheus scrape of such a page fails whole).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from .stats import DurationHistogram

__all__ = ["Metrics", "families", "histogram_family", "kernel_table", "render", "with_labels"]

TEXTFILE_PERIOD = 15.0
CLIENT_TIMEOUT = 5.0  # a scrape connection that has not sent its request by then is closed
_RUNTIME_HELP = {
    "nl_events_received": "ctnetlink events received",
    "nl_events_filtered": "ctnetlink events dropped by the Filter block",
    "nl_catch_event_failed": "errors reading the event socket",
    "nl_overrun": "event socket overruns (ENOBUFS)",
    "nl_silent_drops": "event reads after which the socket's drop counter grew with no ENOBUFS",
    "nl_kernel_table_flush": "kernel table flushes (-F)",
    "nl_kernel_table_resync": "resyncs with the kernel table",
    "local_read_failed": "control socket reads that failed",
}
# stats_json() subtrees whose keys are not names but instances: they become one label
_LABELLED = {"peers": "peer", "by_key": "key_id"}  # by_key: auth counters per sync key id (key rotation)
_LINK_LABELS = ("device", "transport", "role", "status")
def histogram_family(name: str, help_: str, h: DurationHistogram) -> Metric:
    """A pure DurationHistogram (daemon/stats.py) as a Prometheus histogram family."""
    bounds = [*(repr(float(b)) for b in h.buckets), "+Inf"]
    return HistogramMetricFamily(name, help_, buckets=list(zip(bounds, h.counts, strict=True)), sum_value=h.total)


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _sync_families(sync: dict) -> Iterable[Metric]:
    """Every numeric leaf of ``stats_json()`` as an untyped gauge; instances as labels."""
    flat: dict[str, list[tuple[dict[str, str], float]]] = {}

    def walk(prefix: str, data: dict, labels: dict[str, str]) -> None:
        for k, v in data.items():
            if isinstance(v, dict):
                label = _LABELLED.get(k)
                if label is not None:
                    for inst, sub in v.items():
                        if isinstance(sub, dict):
                            walk(f"{prefix}_{k}", sub, {**labels, label: str(inst)})
                else:
                    walk(f"{prefix}_{k}", v, labels)
            elif _number(v):
                flat.setdefault(f"{prefix}_{k}", []).append((labels, v))

    walk("conntrackd_sync", {k: v for k, v in sync.items() if k != "links"}, {})
    for link in sync.get("links", ()):
        labels = {k: str(link.get(k, "")) for k in _LINK_LABELS}
        for k, v in link.items():
            if k not in _LINK_LABELS and _number(v):
                flat.setdefault(f"conntrackd_sync_link_{k}", []).append((labels, v))
    for name, samples in flat.items():
        keys = sorted({k for labels, _ in samples for k in labels})
        fam = GaugeMetricFamily(name, f"sync statistic {name[len('conntrackd_sync_'):]}", labels=keys)
        for labels, v in samples:
            fam.add_metric([labels.get(k, "") for k in keys], v)
        yield fam


def kernel_table(proc: str = "/proc/sys/net/netfilter") -> dict[str, int]:
    """Occupancy of the kernel table of the daemon's network namespace (count and max are per netns)."""
    out = {}
    for key, name in (("entries", "nf_conntrack_count"), ("max", "nf_conntrack_max")):
        try:
            with open(f"{proc}/{name}") as fh:
                out[key] = int(fh.read().strip())
        except (OSError, ValueError):
            pass
    return out


def families(runtime: dict, caches: dict[str, dict], buffer_size: int, uptime: int,
             sync: dict | None = None, kernel: dict[str, int] | None = None,
             extra: Iterable[Metric] = ()) -> list[Metric]:
    """The daemon's counters as metric families (pure)."""
    out: list[Metric] = []
    for key, help_ in (("entries", "entries in the kernel conntrack table of the daemon's netns"),
                       ("max", "nf_conntrack_max of the daemon's netns")):
        if kernel and key in kernel:
            out.append(GaugeMetricFamily(f"conntrackd_kernel_table_{key}", help_, value=kernel[key]))
    for key, help_ in _RUNTIME_HELP.items():
        c = CounterMetricFamily(f"conntrackd_{key}", help_)
        c.add_metric([], runtime.get(key, 0))
        out.append(c)
    out.append(GaugeMetricFamily("conntrackd_netlink_buffer_bytes", "event socket receive buffer", value=buffer_size))
    out.append(GaugeMetricFamily("conntrackd_uptime_seconds", "seconds since initialisation", value=uptime))
    out.append(CounterMetricFamily("conntrackd_traffic_bytes", "bytes of destroyed flows",
                                   value=runtime.get("bytes_orig", 0) + runtime.get("bytes_repl", 0)))
    out.append(CounterMetricFamily("conntrackd_traffic_packets", "packets of destroyed flows",
                                   value=runtime.get("packets_orig", 0) + runtime.get("packets_repl", 0)))

    def per_cache(fam: Metric, key: str) -> Metric:
        for n, c in caches.items():
            fam.add_metric([n], c.get(key, 0))
        return fam

    out.append(per_cache(GaugeMetricFamily("conntrackd_cache_entries", "entries in a cache", labels=["cache"]),
                         "entries"))
    out.append(per_cache(GaugeMetricFamily("conntrackd_cache_active", "live entries in a cache", labels=["cache"]),
                         "active"))
    for op, key in (("created", "add_ok"), ("updated", "upd_ok"), ("destroyed", "del_ok")):
        out.append(per_cache(CounterMetricFamily(f"conntrackd_cache_{op}", f"cache entries {op}",
                                                 labels=["cache"]), key))
    for op, key in (("created", "add_fail"), ("updated", "upd_fail"), ("destroyed", "del_fail")):
        out.append(per_cache(CounterMetricFamily(f"conntrackd_cache_{op}_failed",
                                                 f"cache entries that failed to be {op}", labels=["cache"]), key))
    if sync:
        out.extend(_sync_families(sync))
    out.extend(extra)
    return out


class _Snapshot(Collector):
    def __init__(self, fams: list[Metric]) -> None:
        self.fams = fams

    def collect(self) -> Iterable[Metric]:
        return self.fams


def with_labels(fams: list[Metric], labels: dict[str, str]) -> list[Metric]:
    """The same families with ``labels`` on every sample (``Metrics { Pair NAME }``: pair="NAME").

    Why in the daemon and not only in the scrape config: a textfile read by node_exporter has no
    per-target labels, and alert rules group a pair's two nodes by this label."""
    if labels:
        for fam in fams:
            fam.samples = [s._replace(labels={**s.labels, **labels}) for s in fam.samples]
    return fams


def render(runtime: dict, caches: dict[str, dict], buffer_size: int, uptime: int, sync: dict | None = None,
           kernel: dict[str, int] | None = None, extra: Iterable[Metric] = (),
           labels: dict[str, str] | None = None) -> str:
    """The exposition text (Prometheus text format 0.0.4) of :func:`families`, ``labels`` on every sample."""
    registry = CollectorRegistry(auto_describe=False)
    fams = families(runtime, caches, buffer_size, uptime, sync, kernel, extra)
    registry.register(_Snapshot(with_labels(fams, labels or {})))
    return generate_latest(registry).decode()


class _Client:
    """One scrape connection: read until the end of the request headers, then write the answer."""

    __slots__ = ("conn", "request", "reply", "deadline")

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.request = b""
        self.reply = b""
        self.deadline = time.monotonic() + CLIENT_TIMEOUT


class Metrics:
    def __init__(self, daemon, listen: str | None, textfile: str | None, pair: str | None = None) -> None:
        self.d = daemon
        self.labels = {"pair": pair} if pair else {}
        self.sock: socket.socket | None = None
        self.textfile = textfile
        self.clients: dict[int, _Client] = {}
        if listen:
            host, _, port = listen.rpartition(":")
            fam = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
            self.sock = socket.socket(fam, socket.SOCK_STREAM)
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host.strip("[]") or "127.0.0.1", int(port)))
            self.sock.listen(16)
            self.sock.setblocking(False)
            daemon.loop.add_reader(self.sock.fileno(), self._accept)
            daemon.loop.every(1.0, self._expire)
        if textfile:
            self._write_textfile()
            daemon.loop.every(TEXTFILE_PERIOD, self._write_textfile)

    def text(self) -> str:
        d = self.d
        mode = d.mode
        caches = {mode.cache.name: {**mode.cache.stats.as_dict(), "entries": len(mode.cache)}}
        sync = None
        extra: list[Metric] = []
        engine = getattr(mode, "engine", None)
        if engine is not None:
            if engine.external is not None:
                caches["external"] = {**engine.external.stats.as_dict(), "entries": len(engine.external)}
            sync = engine.stats_json()
            hist = getattr(engine, "commit_seconds", None)
            if hist is not None:
                extra.append(histogram_family("conntrackd_commit_duration_seconds",
                                              "duration of external cache commits (conntrackd -c)", hist))
        if getattr(mode, "expect", False):  # ExpectationSync: the expectation caches too
            for name, c in (("expect-internal", mode.exp_cache), ("expect-external", mode.exp_external)):
                if c is not None:
                    caches[name] = {**c.stats.as_dict(), "entries": len(c)}
        buf = d.ctnl.buffer_size if d.ctnl is not None else 0
        return render(d.runtime.as_dict(), caches, buf, int(time.time()) - d.runtime.daemon_start_time, sync,
                      kernel_table(), extra, self.labels)

    def _write_textfile(self) -> None:
        assert self.textfile is not None
        tmp = f"{self.textfile}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w") as fh:
                fh.write(self.text())
            os.replace(tmp, self.textfile)
        except OSError as exc:
            self.d.log("warning", f"cannot write metrics textfile `{self.textfile}': {exc.strerror}")

    # ------------------------------------------------------------------ non-blocking HTTP/1.0 responder
    def _accept(self) -> None:
        assert self.sock is not None
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        conn.setblocking(False)
        c = self.clients[conn.fileno()] = _Client(conn)
        self.d.loop.add_reader(conn.fileno(), lambda: self._read(c))

    def _read(self, c: _Client) -> None:
        try:
            data = c.conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        c.request += data
        if data and b"\r\n\r\n" not in c.request and b"\n\n" not in c.request and len(c.request) < 16384:
            return  # the rest of the request is still on its way
        self.d.loop.remove(c.conn.fileno())
        if not data and not c.request:
            self._close(c)
            return
        body = self.text().encode()  # every path answers the metrics
        c.reply = (b"HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"
                   + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        self.d.loop.add_writer(c.conn.fileno(), lambda: self._write(c))

    def _write(self, c: _Client) -> None:
        try:
            n = c.conn.send(c.reply)
        except BlockingIOError:
            return
        except OSError:
            n = len(c.reply)
        c.reply = c.reply[n:]
        if not c.reply:
            self._close(c)

    def _close(self, c: _Client) -> None:
        fd = c.conn.fileno()
        self.d.loop.remove(fd)
        self.clients.pop(fd, None)
        c.conn.close()

    def _expire(self) -> None:
        now = time.monotonic()
        for c in [c for c in self.clients.values() if now > c.deadline]:
            self._close(c)

    def close(self) -> None:
        for c in list(self.clients.values()):
            self._close(c)
        if self.sock is not None:
            self.d.loop.remove(self.sock.fileno())
            self.sock.close()
            self.sock = None
