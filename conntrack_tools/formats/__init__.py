"""Pure output renderers of the ``conntrack`` command (no I/O, no clock, no globals).

API (every ``render_*`` returns the text of one output line *without* its newline):

* ``render_flow(flow, opts, event=None, *, now_ns=..., portid=0, progname=None)``:
  the line C would print for a dump (``event=None``) or an event
  (``"new" | "update" | "destroy"``) in the format ``opts`` selects
  (default/extended, xml, save, json).  For events it adds the ``-o timestamp``
  prefix and the `` [USERSPACE] portid=N progname=X`` suffix (``portid`` 0 = kernel).
  ``now_ns`` (time.time_ns() of the caller) replaces C's time()/gettimeofday() for
  ``delta-time``, ``<deltatime>``, ``<when>`` and the timestamp prefix.
* ``render_expect(exp, opts, event=None, *, now_ns=...)``: expectation line / XML.
* ``flow_xml_header()``/``flow_xml_footer()``, ``expect_xml_header()``/``expect_xml_footer()``:
  printed once before the first element and after the last one (C prints the header
  lazily at the first entry, so an empty dump prints nothing, not even the footer).
* ``stats.summary(kind, n)`` and friends for stderr summaries, ``-S`` and ``-C``.

Which callback prints what, in C (the CLI must pick the matching options):
dump/get (-L/-G) honour extended, ktimestamp, id, labels; events (-E) additionally
honour timestamp; delete (-D) honours extended and id only (no labels, no
ktimestamp); update (-U) honours extended, id and labels.
"""

from __future__ import annotations

from conntrack_tools.flow import Expect, Flow
from conntrack_tools.formats.expect import (
    EXPECT_FOOTER,
    EXPECT_HEADER,
    render_expect_default,
    render_expect_xml,
)
from conntrack_tools.formats.json import render_expect_json, render_flow_json
from conntrack_tools.formats.options import DEFAULT_OPTIONS, OutputOptions
from conntrack_tools.formats.save import render_save, save_l3_warning
from conntrack_tools.formats.stats import summary
from conntrack_tools.formats.text import render_default
from conntrack_tools.formats.xml import CONNTRACK_FOOTER, CONNTRACK_HEADER, render_flow_xml, userspace_xml

__all__ = [
    "DEFAULT_OPTIONS",
    "OutputOptions",
    "event_timestamp_prefix",
    "expect_timestamp_prefix",
    "expect_xml_footer",
    "expect_xml_header",
    "flow_xml_footer",
    "flow_xml_header",
    "render_default",
    "render_expect",
    "render_flow",
    "render_save",
    "save_l3_warning",
    "summary",
]


def flow_xml_header() -> str:
    return CONNTRACK_HEADER


def flow_xml_footer() -> str:
    return CONNTRACK_FOOTER


def expect_xml_header() -> str:
    return EXPECT_HEADER


def expect_xml_footer() -> str:
    return EXPECT_FOOTER


def event_timestamp_prefix(now_ns: int) -> str:
    """``[%-.8ld.%-.6ld]\\t`` of event_cb: seconds and microseconds zero-padded."""
    sec, usec = now_ns // 1_000_000_000, now_ns // 1000 % 1_000_000
    return f"[{sec:08d}.{usec:06d}]\t"


def expect_timestamp_prefix(now_ns: int) -> str:
    """``[%-8ld.%-6ld]\\t`` of the expectation callbacks: left-aligned, space-padded."""
    sec, usec = now_ns // 1_000_000_000, now_ns // 1000 % 1_000_000
    return f"[{sec:<8d}.{usec:<6d}]\t"


def _userspace_text(portid: int, progname: str | None) -> str:
    if progname:
        return f" [USERSPACE] portid={portid} progname={progname}"
    return f" [USERSPACE] portid={portid}"


def render_flow(
    flow: Flow,
    opts: OutputOptions = DEFAULT_OPTIONS,
    event: str | None = None,
    *,
    now_ns: int = 0,
    portid: int = 0,
    progname: str | None = None,
    save_event: str | None = None,
) -> str:
    """One flow as conntrack 1.4.7 prints it (see the module docstring).

    ``portid``/``progname`` only matter for events; they come from the netlink header
    and /proc, which is the caller's business.  ``save_event`` picks the ``-o save``
    verb outside events: the delete command (-D) passes ``"destroy"`` to get ``-D``
    lines; dumps default to ``-A``.
    """
    if opts.json:
        return render_flow_json(
            flow, event, label_map=opts.label_map, portid=portid if event else 0, progname=progname
        )
    suffix = _userspace_text(portid, progname) if portid and event else ""
    if opts.save:
        return render_save(flow, event or save_event or "new") + suffix
    now = now_ns // 1_000_000_000
    label_map = opts.label_map if opts.labels else None
    if opts.xml:
        inner = ""
        if suffix and not opts.xml_userspace_c_bug:
            inner, suffix = userspace_xml(portid, progname), ""
        return (
            render_flow_xml(
                flow,
                event,
                ktimestamp=opts.ktimestamp,
                show_time=opts.timestamp and event is not None,
                label_map=label_map,
                now=now,
                userspace=inner,
            )
            + suffix
        )
    line = render_default(
        flow,
        event,
        extended=opts.extended,
        show_id=opts.id,
        ktimestamp=opts.ktimestamp,
        label_map=label_map,
        now=now,
    )
    if event is not None and opts.timestamp:
        line = event_timestamp_prefix(now_ns) + line
    return line + suffix


def render_expect(
    exp: Expect,
    opts: OutputOptions = DEFAULT_OPTIONS,
    event: str | None = None,
    *,
    now_ns: int = 0,
) -> str:
    """One expectation as conntrack 1.4.7 prints it (list, get and events alike).

    Unlike flows, the ``-o timestamp`` prefix is printed for listings too (dump_exp_cb
    does it), with a different, space-padded format.  ``extended``/``id``/``save`` have no
    effect on expectations.
    """
    if opts.json:
        return render_expect_json(exp, event)
    if opts.xml:
        return render_expect_xml(exp, event, show_time=opts.timestamp, now=now_ns // 1_000_000_000)
    line = render_expect_default(exp, event)
    if opts.timestamp:
        line = expect_timestamp_prefix(now_ns) + line
    return line
