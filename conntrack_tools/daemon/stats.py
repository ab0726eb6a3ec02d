"""``conntrackd -s`` views: the text C prints (byte-exact) and the same data as JSON.

Pure functions over counter snapshots; see c-tools-behaviour/t3/cmds/*_s_*.out for the
C 1.4.7 output these reproduce.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields

from .cache import CacheStats

__all__ = [
    "RuntimeStats",
    "cache_stats_text",
    "cache_stats_extended_text",
    "runtime_text",
    "traffic_text",
    "uptime_text",
    "to_json",
]


@dataclass(slots=True)
class RuntimeStats:
    """C's ``STATE(stats)`` counters (src/run.c, src/ctnl.c)."""

    daemon_start_time: int = 0
    nl_events_received: int = 0
    nl_events_filtered: int = 0
    nl_events_unknown_type: int = 0
    nl_catch_event_failed: int = 0
    nl_dump_unknown_type: int = 0
    nl_overrun: int = 0
    nl_silent_drops: int = 0  # beyond C: reads after which SO_MEMINFO showed drops no ENOBUFS reported
    nl_kernel_table_flush: int = 0
    nl_kernel_table_resync: int = 0
    child_process_failed: int = 0
    child_process_error_segfault: int = 0
    child_process_error_term: int = 0
    select_failed: int = 0
    wait_failed: int = 0
    local_read_failed: int = 0
    local_unknown_request: int = 0
    bytes_orig: int = 0
    bytes_repl: int = 0
    packets_orig: int = 0
    packets_repl: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


# a commit of 1k entries takes ~10 ms, of 1M ~10 s (docs/benchmarks.md)
COMMIT_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


@dataclass(slots=True)
class DurationHistogram:
    """Cumulative-bucket histogram of durations (the commit's), pure: metrics.py exports it.

    Why not prometheus_client's Histogram here: importing that library costs ~14 MB of RSS, which a
    daemon without a Metrics endpoint must not pay (bench/sync_run.py compares RSS with C's)."""

    buckets: tuple[float, ...] = COMMIT_BUCKETS
    counts: list[int] = field(default_factory=list)  # per bucket, cumulative; the last one is +Inf
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
        self.counts[-1] += 1
        self.total += value
        self.count += 1


def _u32(v: int) -> int:
    return v & 0xFFFFFFFF


def cache_stats_text(name: str, s: CacheStats) -> str:
    """cache_stats(): the ``cache <name>:`` block of ``-s``."""
    return (
        f"cache {name}:\n"
        f"current active connections:\t{_u32(s.active):12d}\n"
        f"connections created:\t\t{_u32(s.add_ok):12d}\tfailed:\t{_u32(s.add_fail):12d}\n"
        f"connections updated:\t\t{_u32(s.upd_ok):12d}\tfailed:\t{_u32(s.upd_fail):12d}\n"
        f"connections destroyed:\t\t{_u32(s.del_ok):12d}\tfailed:\t{_u32(s.del_fail):12d}\n\n"
    )


def cache_stats_extended_text(name: str, s: CacheStats, total: int) -> str:
    """cache_stats_extended(): one block of ``-s cache``; ``total`` = entries in the hash table."""
    return (
        f"cache:{name}\tactive objects:\t\t{_u32(s.objects):12d}\n"
        f"\tactive/total entries:\t\t{_u32(s.active):12d}/{_u32(total):12d}\n"
        f"\tcreation OK/failed:\t\t{_u32(s.add_ok):12d}/{_u32(s.add_fail):12d}\n"
        f"\t\tno memory available:\t{_u32(s.add_fail_enomem):12d}\n"
        f"\t\tno space left in cache:\t{_u32(s.add_fail_enospc):12d}\n"
        f"\tupdate OK/failed:\t\t{_u32(s.upd_ok):12d}/{_u32(s.upd_fail):12d}\n"
        f"\t\tentry not found:\t{_u32(s.upd_fail_enoent):12d}\n"
        f"\tdeletion created/failed:\t{_u32(s.del_ok):12d}/{_u32(s.del_fail):12d}\n"
        f"\t\tentry not found:\t{_u32(s.del_fail_enoent):12d}\n\n"
    )


def traffic_text(bytes_: int, packets: int) -> str:
    """dump_traffic_stats()."""
    return f"traffic processed:\n{bytes_:20d} Bytes      {packets:20d} Pckts\n\n"


def uptime_text(seconds: int) -> str:
    """C's uptime(): ``[N day[s] ]H h M min`` or ``M min``."""
    days = seconds // 86400
    out = f"{days} day{'s' if days != 1 else ''} " if days else ""
    minutes = seconds // 60
    hours = (minutes // 60) % 24
    minutes %= 60
    return out + (f"{hours} h {minutes} min" if hours else f"{minutes} min")


def runtime_text(r: RuntimeStats, now: int, buffer_size: int) -> str:
    """dump_stats_runtime(): ``-s runtime``."""
    return (
        f"daemon uptime: {uptime_text(now - r.daemon_start_time)}\n\n"
        "netlink stats:\n"
        f"\tevents received:\t{r.nl_events_received:20d}\n"
        f"\tevents filtered:\t{r.nl_events_filtered:20d}\n"
        f"\tevents unknown type:\t\t{_u32(r.nl_events_unknown_type):12d}\n"
        f"\tcatch event failed:\t\t{_u32(r.nl_catch_event_failed):12d}\n"
        f"\tdump unknown type:\t\t{_u32(r.nl_dump_unknown_type):12d}\n"
        f"\tnetlink overrun:\t\t{_u32(r.nl_overrun):12d}\n"
        f"\tflush kernel table:\t\t{_u32(r.nl_kernel_table_flush):12d}\n"
        f"\tresync with kernel table:\t{_u32(r.nl_kernel_table_resync):12d}\n"
        f"\tcurrent buffer size (in bytes):\t{_u32(buffer_size):12d}\n\n"
        "runtime stats:\n"
        f"\tchild process failed:\t\t{_u32(r.child_process_failed):12d}\n"
        f"\t\tchild process segfault:\t{_u32(r.child_process_error_segfault):12d}\n"
        f"\t\tchild process termsig:\t{_u32(r.child_process_error_term):12d}\n"
        f"\tselect failed:\t\t\t{_u32(r.select_failed):12d}\n"
        f"\twait failed:\t\t\t{_u32(r.wait_failed):12d}\n"
        f"\tlocal read failed:\t\t{_u32(r.local_read_failed):12d}\n"
        f"\tlocal unknown request:\t\t{_u32(r.local_unknown_request):12d}\n\n"
    )


def to_json(view: str, data: dict) -> str:
    """The JSON answer of ``-s <view> -o json``: ``{"view": ..., ...data}`` on one line."""
    return json.dumps({"view": view, **data}, sort_keys=False) + "\n"
