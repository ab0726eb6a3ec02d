"""``-S``/``-C`` output and the stderr summaries of conntrack 1.4.7.

The summaries are the strings scripts grep for, so they are kept verbatim here in one
place (``exit_msg`` and the flush messages in src/conntrack.c).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

PROGNAME = "conntrack"
VERSION = "1.4.7"
SUMMARY_PREFIX = f"{PROGNAME} v{VERSION} (conntrack-tools): "

# exit_msg[] by command.
_SUMMARY = {
    "list": "{n} flow entries have been shown.",
    "get": "{n} flow entries have been shown.",
    "create": "{n} flow entries have been created.",
    "update": "{n} flow entries have been updated.",
    "delete": "{n} flow entries have been deleted.",
    "event": "{n} flow events have been shown.",
    "add": "{n} flow entries have been added.",
    "exp_list": "{n} expectations have been shown.",
    "exp_delete": "{n} expectations have been shown.",
    "exp_event": "{n} expectation events have been shown.",
}

FLUSH_CT = SUMMARY_PREFIX + "connection tracking table has been emptied."
FLUSH_EXP = SUMMARY_PREFIX + "expectation table has been emptied."

# CTA_STATS_* attribute number -> name (nfct_stats_cb), printed in attribute order.
CT_STATS_NAMES: dict[int, str] = {
    1: "searched", 2: "found", 3: "new", 4: "invalid", 5: "ignore", 6: "delete",
    7: "delete_list", 8: "insert", 9: "insert_failed", 10: "drop", 11: "early_drop",
    12: "error", 13: "search_restart", 14: "clash_resolve", 15: "chaintoolong",
    16: "unknown1", 17: "unknown2", 18: "unknown3", 19: "unknown4",
}
# CTA_STATS_EXP_* (nfexp_stats_cb).
EXP_STATS_NAMES: dict[int, str] = {1: "expect_new", 2: "expect_create", 3: "expect_delete"}


def summary(kind: str, count: int) -> str:
    """The stderr summary line (no newline), e.g. ``summary("list", 12)``.

    kinds: list, get, create, update, delete, event, add, exp_list, exp_delete, exp_event.
    """
    return SUMMARY_PREFIX + _SUMMARY[kind].format(n=count)


def render_cpu_stats(cpu: int, attrs: Mapping[int, int], names: Mapping[int, str] = CT_STATS_NAMES) -> str:
    """One ``-S`` line (no newline): ``cpu=%-4u\\t`` then ``name=%u `` per attribute present.

    ``attrs`` maps CTA_STATS_* numbers to values; numbers C does not know are skipped,
    like mnl_attr_type_valid() does.  The trailing space is kept (C prints it).
    """
    out = f"cpu={cpu:<4}\t"
    for num in sorted(attrs):
        name = names.get(num)
        if name is not None:
            out += f"{name}={attrs[num] & 0xFFFFFFFF} "
    return out


def render_exp_cpu_stats(cpu: int, attrs: Mapping[int, int]) -> str:
    """One ``-S expect`` line (no newline)."""
    return render_cpu_stats(cpu, attrs, EXP_STATS_NAMES)


def render_proc_stats(text: str) -> list[str]:
    """``-S`` fallback from /proc/net/stat/nf_conntrack (display_proc_conntrack_stats).

    Header tokens name the columns; each following line is one CPU of hex values.
    """
    lines = text.split("\n")
    if not lines or not lines[0]:
        return []
    names = lines[0].split()[:64]
    out = []
    for cpu, line in enumerate(x for x in lines[1:] if x):
        values = [int(tok, 16) & 0xFFFFFFFF for tok in line.split()[:64]]
        values += [0] * (len(names) - len(values))
        out.append(f"cpu={cpu:<4}\t" + "".join(f"{n}={v} " for n, v in zip(names, values, strict=False)))
    return out


def render_count(count: int) -> str:
    """``-C`` output (no newline)."""
    return f"{count}"


def render_summaries(kinds: Iterable[tuple[str, int]]) -> list[str]:
    return [summary(k, n) for k, n in kinds]
