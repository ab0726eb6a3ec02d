"""Expectation line and XML (libnetfilter_conntrack 1.0.9 src/expect/snprintf_*.c).

The mask tuple is printed with its own family/protocol; the kernel always sends them
equal to the expected tuple's, so when a decoder leaves them unset we borrow the
expected tuple's values (same bytes as C for anything the kernel sends).
"""

from __future__ import annotations

from dataclasses import replace

from conntrack_tools.flow import EXPECT_INACTIVE, EXPECT_PERMANENT, EXPECT_USERSPACE, Expect, Tuple
from conntrack_tools.formats._tables import EVENT_TAG, addr_text, l3_name, l4_name
from conntrack_tools.formats.text import tuple_text
from conntrack_tools.formats.xml import XML_DECL, l4_xml, when_xml

EXPECT_HEADER = XML_DECL + "\n<expect>"
EXPECT_FOOTER = "</expect>"

_FLOW_OPEN: dict[str | None, str] = {
    None: "<flow>",
    "new": '<flow type="new">',
    "update": '<flow type="update">',
    "destroy": '<flow type="destroy">',
}


def _mask(exp: Expect) -> Tuple:
    m = exp.mask if exp.mask is not None else Tuple()
    t = exp.tuple
    if t is not None and (not m.family or m.proto is None):
        m = replace(m, family=m.family or t.family, proto=m.proto if m.proto is not None else t.proto)
    return m


def render_expect_default(exp: Expect, event: str | None = None) -> str:
    """One expectation line without the newline."""
    out = EVENT_TAG.get(event, "")
    if exp.timeout is not None:
        out += f"{exp.timeout} "
    t = exp.tuple if exp.tuple is not None else Tuple()
    out += f"proto={(t.proto or 0) & 0xFF} "
    out += tuple_text(t)
    out += tuple_text(_mask(exp), "mask-src", "mask-dst")
    out += tuple_text(exp.master if exp.master is not None else Tuple(), "master-src", "master-dst")
    if exp.zone is not None:
        out += f"zone={exp.zone} "
    flags = exp.flags or 0
    names = []
    if flags & EXPECT_PERMANENT:
        names.append("PERMANENT")
    if flags & EXPECT_INACTIVE:
        names.append("INACTIVE")
    if flags & EXPECT_USERSPACE:
        names.append("USERSPACE")
    out += ",".join(names)
    if flags:
        out += " "
    if exp.klass is not None:
        out += f"class={exp.klass} "
    if exp.helper is not None:
        out += f"helper={exp.helper}"
    if out.endswith(" "):
        out = out[:-1]
    return out


def _l3_block(tag: str, t: Tuple) -> str:
    return f"<{tag}><src>{addr_text(t.family, t.src)}</src><dst>{addr_text(t.family, t.dst)}</dst></{tag}>"


def render_expect_xml(exp: Expect, event: str | None = None, *, show_time: bool = False, now: int = 0) -> str:
    """One expectation ``<flow>`` element without the newline."""
    t = exp.tuple if exp.tuple is not None else Tuple()
    m = _mask(exp)
    master = exp.master if exp.master is not None else Tuple()
    fam = t.family & 0xFF
    proto = (t.proto or 0) & 0xFF
    out = _FLOW_OPEN.get(event, "<flow>")
    out += f'<layer3 protonum="{fam}" protoname="{l3_name(fam)}">'
    out += _l3_block("expected", t) + _l3_block("mask", m) + _l3_block("master", master) + "</layer3>"
    out += f'<layer4 protonum="{proto}" protoname="{l4_name(proto)}">'
    out += f"<expected>{l4_xml(t)}</expected><mask>{l4_xml(m)}</mask><master>{l4_xml(master)}</master>"
    out += "</layer4><meta>"
    if exp.helper is not None:
        out += f"<helper-name>{exp.helper}</helper-name>"
    if exp.timeout is not None:
        out += f"<timeout>{exp.timeout}</timeout>"
    if exp.klass is not None:
        out += f"<class>{exp.klass}</class>"
    if exp.zone is not None:
        out += f"<zone>{exp.zone}</zone>"
    if show_time:
        out += when_xml(now)
    flags = exp.flags or 0
    if flags & EXPECT_PERMANENT:
        out += "<permanent/>"
    if flags & EXPECT_INACTIVE:
        out += "<inactive/>"
    if flags & EXPECT_USERSPACE:
        out += "<userspace/>"
    return out + "</meta></flow>"
