"""The renderers against the verbatim C captures (conntrack 1.4.7, t1a/t1b/t1c/t1d/t1f/t1h).

A small parser turns a captured default-format line back into a Flow (itself a check
of our reading of the format); the Flow is then rendered in the same format and in the
other formats, and compared byte for byte with the capture of the same entries.
Only volatile values (timeouts and delta-times that moved by a second between two
captures, ns timestamps that the text line rounds to seconds) are taken from the
target capture.
"""

from __future__ import annotations

import calendar
import re
import shlex
import time
from dataclasses import dataclass, field, replace

import pytest

from conntrack_tools.flow import (
    AF_INET,
    AF_INET6,
    DCCP_STATES,
    IPS_ASSURED,
    IPS_CONFIRMED,
    IPS_DST_NAT,
    IPS_DST_NAT_DONE,
    IPS_HW_OFFLOAD,
    IPS_OFFLOAD,
    IPS_SEEN_REPLY,
    IPS_SRC_NAT,
    IPS_SRC_NAT_DONE,
    SCTP_STATES,
    TCP_STATES,
    Counters,
    DccpInfo,
    Expect,
    Flow,
    SctpInfo,
    TcpInfo,
    Tuple,
)
from conntrack_tools.formats import (
    OutputOptions,
    expect_xml_footer,
    expect_xml_header,
    flow_xml_footer,
    flow_xml_header,
    render_expect,
    render_flow,
)
from tests.conftest import REFERENCE

REF = REFERENCE / "c-tools-behaviour"
pytestmark = pytest.mark.skipif(not REF.is_dir(), reason="reference captures not available")

FIXED_NOW = 1_795_684_700  # any second; delta-times are rebuilt around it
NS = 1_000_000_000
L4_NUMS = {"tcp": 6, "udp": 17, "udplite": 136, "icmp": 1, "icmpv6": 58, "sctp": 132, "dccp": 33, "gre": 47}
LABELS = {"ref-blue": 0, "ref-green": 1, "ref-red": 2}  # any bits: names are what the line shows
LABEL_MAP = {v: k for k, v in LABELS.items()}


# --------------------------------------------------------------------------- captures
@dataclass
class Capture:
    name: str
    cmd: list[str]
    stdout: str
    stderr: str


def _all_txt(directory: str) -> list[Capture]:
    text = (REF / directory / "ALL.txt").read_text()
    out = []
    for block in text.split("==================================================================\n"):
        m = re.match(
            r"### (\S+)\n\$ (.*)\n--- stdout \((\d+) bytes\) ---\n(.*?)--- stderr \((\d+) bytes\) ---\n(.*?)--- exit",
            block,
            re.S,
        )
        if m:
            out.append(Capture(m[1], m[2].split(), m[4], m[6]))
    return out


def _events_dir() -> list[Capture]:
    out = []
    for cmd_file in sorted((REF / "t1d_events").glob("*.cmd")):
        base = cmd_file.with_suffix("")
        out.append(
            Capture(
                base.name,
                cmd_file.read_text().split(),
                base.with_suffix(".out").read_text(),
                base.with_suffix(".err").read_text(),
            )
        )
    gc = REF / "t1d_events" / "E_gc_destroy.out"
    out.append(Capture("E_gc_destroy", ["conntrack", "-E", "-o", "timestamp"], gc.read_text(), ""))
    return out


def captures() -> list[Capture]:
    caps = []
    for d in ("t1a", "t1b", "t1c", "t1f_labels", "t1h_expect"):
        caps += [replace(c, name=f"{d}/{c.name}") for c in _all_txt(d)]
    caps += [replace(c, name=f"t1d/{c.name}") for c in _events_dir()]
    return caps


def options_of(cmd: list[str]) -> set[str]:
    out: set[str] = set()
    for i, arg in enumerate(cmd):
        if arg in ("-o", "--output") and i + 1 < len(cmd):
            out |= set(cmd[i + 1].split(","))
    return out


def is_conntrack_listing(c: Capture) -> bool:
    cmd = c.cmd
    if "conntrack" not in cmd or "expect" in cmd:
        return False
    if not any(x in cmd for x in ("-L", "-G", "-E", "-U", "-D")):
        return False
    return bool(c.stdout)


# --------------------------------------------------------------------------- parser
@dataclass
class Parsed:
    flow: Flow
    event: str | None
    now_ns: int
    portid: int = 0
    progname: str | None = None
    has_start: bool = False
    extras: dict[str, int] = field(default_factory=dict)


_EVENTS = {"    [NEW] ": "new", " [UPDATE] ": "update", "[DESTROY] ": "destroy"}
_TS_RE = re.compile(r"^\[(\d+)\.(\d+)\]\t")
_US_RE = re.compile(r" \[USERSPACE\] portid=(\d+)(?: progname=(\S+))?$")
_CTIME_RE = re.compile(r"\[(start|stop)=(\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4})\] ")


def _ctime_to_s(text: str) -> int:
    return calendar.timegm(time.strptime(text, "%a %b %d %H:%M:%S %Y"))


def _addr(text: str) -> tuple[int, bytes]:
    import socket

    if ":" in text:
        return AF_INET6, socket.inet_pton(AF_INET6, text)
    return AF_INET, socket.inet_pton(AF_INET, text)


def parse_line(line: str) -> Parsed:
    """A captured default-format line (any -o flags, events too) back into a Flow."""
    now_ns = FIXED_NOW * NS
    m = _TS_RE.match(line)
    if m:
        now_ns = int(m[1]) * NS + int(m[2]) * 1000
        line = line[m.end():]
    portid, progname = 0, None
    m = _US_RE.search(line)
    if m:
        portid, progname = int(m[1]), m[2]
        line = line[: m.start()]
    event = None
    for tag, ev in _EVENTS.items():
        if line.startswith(tag):
            event, line = ev, line[len(tag):]
    stamps = {k: _ctime_to_s(v) for k, v in _CTIME_RE.findall(line + " ")}
    line = _CTIME_RE.sub("", line + " ").rstrip(" ")

    toks = line.split(" ")
    f = Flow()
    if toks[0] in ("ipv4", "ipv6", "unknown") and toks[1].isdigit() and toks[2] != "":
        # extended prefix "ipv4     2 " -> tokens ipv4, '', '', '', '', '2'
        pass
    toks = [t for t in toks if t != ""]
    i = 0
    if toks[0] in ("ipv4", "ipv6"):
        f.family = int(toks[1])
        i = 2
    proto = int(toks[i + 1])
    i += 2
    if toks[i].isdigit():
        f.timeout = int(toks[i])
        i += 1
    state = None
    if "=" not in toks[i] and not toks[i].startswith("["):
        state = toks[i]
        i += 1
    if state is not None:
        if proto == 6:
            f.tcp = TcpInfo(state=TCP_STATES.index(state))
        elif proto == 132:
            f.sctp = SctpInfo(state=SCTP_STATES.index(state))
        elif proto == 33:
            f.dccp = DccpInfo(state=DCCP_STATES.index(state))

    tuples = [Tuple(proto=proto), Tuple(proto=proto)]
    cur = -1
    status = IPS_CONFIRMED | IPS_SEEN_REPLY
    start_delta = None
    prev = None
    for tok in toks[i:]:
        if tok.startswith("["):
            status |= {"[ASSURED]": IPS_ASSURED, "[OFFLOAD]": IPS_OFFLOAD, "[HW_OFFLOAD]": IPS_HW_OFFLOAD}.get(tok, 0)
            if tok == "[UNREPLIED]":
                status &= ~IPS_SEEN_REPLY
            prev = tok
            continue
        key, _, val = tok.partition("=")
        t = tuples[cur] if cur >= 0 else None
        if key == "src":
            cur += 1
            t = tuples[cur]
            t.family, t.src = _addr(val)
        elif key == "dst":
            t.family, t.dst = _addr(val)
        elif key in ("sport", "dport"):
            setattr(t, key, int(val))
        elif key == "srckey":
            t.sport = int(val, 16)
        elif key == "dstkey":
            t.dport = int(val, 16)
        elif key == "type":
            t.icmp_type = int(val)
        elif key == "code":
            t.icmp_code = int(val)
        elif key == "id" and prev == "code":
            t.icmp_id = int(val)
        elif key in ("zone-orig", "zone-reply"):
            tuples[0 if key == "zone-orig" else 1].zone = int(val)
        elif key == "packets":
            c = Counters(packets=int(val))
            if cur == 0:
                f.counters_orig = c
            else:
                f.counters_reply = c
        elif key == "bytes":
            (f.counters_orig if cur == 0 else f.counters_reply).bytes = int(val)
        elif key in ("mark", "secmark", "zone", "use", "id"):
            setattr(f, key, int(val))
        elif key in ("secctx", "helper"):
            setattr(f, key, val)
        elif key == "delta-time":
            start_delta = int(val)
        elif key == "labels":
            bits = 0
            for name in val.split(","):
                bits |= 1 << LABELS[name]
            f.labels = bits.to_bytes(16, "little")
        else:
            raise AssertionError(f"unexpected token {tok!r} in {line!r}")
        prev = key
    f.orig, f.reply = tuples
    if f.family == 0:
        f.family = f.orig.family
    if f.reply.dst != f.orig.src:
        status |= IPS_SRC_NAT | IPS_SRC_NAT_DONE
    if f.reply.src != f.orig.dst:
        status |= IPS_DST_NAT | IPS_DST_NAT_DONE
    f.status = status

    extras: dict[str, int] = {}
    if start_delta is not None:
        if "stop" in stamps:
            f.ts_stop = stamps["stop"] * NS
            f.ts_start = stamps.get("start", stamps["stop"] - start_delta) * NS
        elif "start" in stamps:
            f.ts_start = stamps["start"] * NS
            now_ns = (stamps["start"] + start_delta) * NS + now_ns % NS
        elif event == "destroy":
            f.ts_stop = now_ns // NS * NS
            f.ts_start = f.ts_stop - start_delta * NS
        else:
            f.ts_start = (now_ns // NS - start_delta) * NS
    return Parsed(f, event, now_ns, portid, progname, "start" in stamps, extras)


def opts_for(o: set[str], labels_loaded: bool) -> OutputOptions:
    return OutputOptions(
        extended="extended" in o,
        xml="xml" in o,
        save="save" in o,
        id="id" in o,
        ktimestamp="ktimestamp" in o,
        timestamp="timestamp" in o,
        labels=labels_loaded,
        userspace="userspace" in o,
        label_map=LABEL_MAP if labels_loaded else None,
    )


def _labels_loaded(c: Capture) -> bool:
    # C loads connlabel.conf for -o labels and for label options; t1a has no file.
    wants = "labels" in options_of(c.cmd) or any(a in c.cmd for a in ("-l", "--label-add", "--label-del"))
    return wants and "nfct_labelmap_new" not in c.stderr


def _render(p: Parsed, opts: OutputOptions) -> str:
    return render_flow(p.flow, opts, p.event, now_ns=p.now_ns, portid=p.portid, progname=p.progname)


def default_format_captures() -> list[Capture]:
    out = []
    for c in captures():
        o = options_of(c.cmd)
        if is_conntrack_listing(c) and not ({"xml", "save"} & o):
            out.append(c)
    return out


DEFAULT_CAPS = default_format_captures()


# --------------------------------------------------------------------------- tests
def test_there_are_many_captures() -> None:
    lines = sum(len(c.stdout.splitlines()) for c in DEFAULT_CAPS)
    assert len(DEFAULT_CAPS) > 40 and lines > 300


@pytest.mark.parametrize("cap", DEFAULT_CAPS, ids=lambda c: c.name)
def test_default_format_round_trip(cap: Capture) -> None:
    """Every captured default/extended/id/ktimestamp/labels/event line, byte-exact."""
    opts = opts_for(options_of(cap.cmd), _labels_loaded(cap))
    for line in cap.stdout.splitlines():
        p = parse_line(line)
        assert _render(p, opts) == line


def _by_name(name: str) -> Capture:
    for c in captures():
        if c.name == name:
            return c
    raise KeyError(name)


def _xml_lines(c: Capture) -> list[str]:
    lines = c.stdout.splitlines()
    return lines


def _patch_from_xml(p: Parsed, xml_line: str) -> Parsed:
    """Take the volatile values (timeout, deltatime, ns start) from the XML line."""
    f = p.flow
    m = re.search(r"<timeout>(\d+)</timeout>", xml_line)
    if m:
        f.timeout = int(m[1])
    m = re.search(r"<start>(\d+)</start>", xml_line)
    if m:
        assert int(m[1]) // NS == f.ts_start // NS
        f.ts_start = int(m[1])
    m = re.search(r"<deltatime>(\d+)</deltatime>", xml_line)
    if m and f.ts_stop is None:
        p.now_ns = (f.ts_start // NS + int(m[1])) * NS
    return p


XML_PAIRS = [
    # (xml capture, default capture with the same entries and ids)
    ("t1a/L_xml", "t1a/L_id"),
    ("t1b/L_xml", "t1b/L_ext_ktimestamp_id"),
    ("t1b/L_xml_ktimestamp", "t1b/L_ext_ktimestamp_id"),
    ("t1c/G_found_xml", "t1c/G_found_ext"),
    ("t1f_labels/L_xml", "t1f_labels/L_labels"),
    ("t1f_labels/L_xml_labels", "t1f_labels/L_labels"),
]


def _ids_from(cap: Capture) -> list[int]:
    return [int(m[1]) for m in re.finditer(r"<id>(\d+)</id>", cap.stdout)]


@pytest.mark.parametrize(("xml_name", "src_name"), XML_PAIRS)
def test_xml_listing(xml_name: str, src_name: str) -> None:
    xml_cap, src = _by_name(xml_name), _by_name(src_name)
    xml_lines = xml_cap.stdout.splitlines()
    assert xml_lines[0] + "\n" + xml_lines[1] == flow_xml_header()
    if "-G" in xml_cap.cmd:
        # C prints the footer only after -L (and -E on SIGINT), never after -G.
        body = xml_lines[2:]
    else:
        assert xml_lines[-1] == flow_xml_footer()
        body = xml_lines[2:-1]
    parsed = [parse_line(x) for x in src.stdout.splitlines()]
    ids = _ids_from(xml_cap)
    if all(p.flow.id is None for p in parsed):
        for p, i in zip(parsed, ids, strict=True):
            p.flow.id = i
    by_id = {p.flow.id: p for p in parsed}
    o = options_of(xml_cap.cmd)
    opts = opts_for(o, _labels_loaded(xml_cap))
    for line, fid in zip(body, ids, strict=True):
        p = _patch_from_xml(by_id[fid], line)
        assert _render(p, opts) == line


def test_xml_events_with_c_userspace_bug_and_fix() -> None:
    xml_cap, src = _by_name("t1d/E_xml"), _by_name("t1d/E_ext_id")
    lines = xml_cap.stdout.splitlines()
    assert "\n".join(lines[:2]) == flow_xml_header() and lines[-1] == flow_xml_footer()
    parsed = [parse_line(x) for x in src.stdout.splitlines()]
    bug = OutputOptions(xml=True, xml_userspace_c_bug=True)
    fixed = OutputOptions(xml=True)
    for p, line in zip(parsed, lines[2:-1], strict=True):
        assert _render(p, bug) == line
        ours = _render(p, fixed)
        if p.portid:
            assert "</flow> [USERSPACE]" in line
            prog = f"<progname>{p.progname}</progname>" if p.progname else ""
            expected = line[: line.index("</flow>")] + (
                f"<userspace><portid>{p.portid}</portid>{prog}</userspace></flow>"
            )
            assert ours == expected
        else:
            assert ours == line


SAVE_PAIRS = [
    ("t1a/L_save", "t1a/L"),
    ("t1b/L_save", "t1b/L"),
    ("t1c/L_save", "t1c/L_all"),
    ("t1f_labels/L_save", "t1f_labels/L_plain"),
    ("t1d/E_save", "t1d/E_plain"),
]


@pytest.mark.parametrize(("save_name", "src_name"), SAVE_PAIRS)
def test_save_format(save_name: str, src_name: str) -> None:
    save_cap, src = _by_name(save_name), _by_name(src_name)
    opts = OutputOptions(save=True)
    for line, src_line in zip(save_cap.stdout.splitlines(), src.stdout.splitlines(), strict=True):
        p = parse_line(src_line)
        m = re.search(r"-t (\d+) ", line)
        if m:
            p.flow.timeout = int(m[1])
        vt = re.search(r"--orig-vtag (\d+) --reply-vtag (\d+)", line)
        if vt:  # not in the default line: feed the host-order vtags the kernel sent
            swap = [int.from_bytes(int(x).to_bytes(4, "big"), "little") for x in vt.groups()]
            p.flow.sctp = replace(p.flow.sctp, vtag_orig=swap[0], vtag_reply=swap[1])
        assert _render(p, opts) == line


def test_sctp_vtag_byte_swap_quirk() -> None:
    line = _by_name("t1a/L").stdout.splitlines()[2]
    p = parse_line(line)
    p.flow.sctp.vtag_orig, p.flow.sctp.vtag_reply = 0x2222, 0x1111
    out = render_flow(p.flow, OutputOptions(save=True))
    assert out.endswith("--state ESTABLISHED --orig-vtag 572653568 --reply-vtag 286326784")


# --------------------------------------------------------------------------- expectations
def parse_expect(line: str) -> tuple[Expect, str | None]:
    event = None
    for tag, ev in _EVENTS.items():
        if line.startswith(tag):
            event, line = ev, line[len(tag):]
    toks = line.split(" ")
    e = Expect()
    i = 0
    if toks[0].isdigit():
        e.timeout = int(toks[0])
        i = 1
    proto = int(toks[i].split("=")[1])
    tuples = {"": Tuple(proto=proto), "mask-": Tuple(proto=proto), "master-": Tuple(proto=proto)}
    cur = None
    for tok in toks[i + 1:]:
        key, _, val = tok.partition("=")
        if key.endswith("src") and key != "sport":
            cur = tuples[key[: -len("src")]]
            cur.family, cur.src = _addr(val)
        elif key.endswith("dst") and key != "dport":
            cur.family, cur.dst = _addr(val)
        elif key in ("sport", "dport"):
            setattr(cur, key, int(val))
        elif key == "class":
            e.klass = int(val)
        elif key == "helper":
            e.helper = val
        elif key == "zone":
            e.zone = int(val)
        else:
            raise AssertionError(tok)
    e.tuple, e.mask, e.master = tuples[""], tuples["mask-"], tuples["master-"]
    e.master.proto = 6  # the master of an FTP expectation
    e.family = e.tuple.family
    return e, event


EXPECT_CAPS = ["t1a/L_expect", "t1a/L_expect_ext", "t1b/L_expect", "t1h_expect/L_expect", "t1d/E_expect"]


@pytest.mark.parametrize("name", EXPECT_CAPS)
def test_expect_default(name: str) -> None:
    caps = [c for c in captures() if c.name == name]
    assert caps
    for cap in caps:
        for line in cap.stdout.splitlines():
            e, ev = parse_expect(line)
            assert render_expect(e, OutputOptions(), ev) == line


def test_expect_timestamp_prefix() -> None:
    cap = _by_name("t1d/E_expect_ts")
    for line in cap.stdout.splitlines():
        m = _TS_RE.match(line)
        e, ev = parse_expect(line[m.end():])
        now_ns = int(m[1]) * NS + int(m[2]) * 1000
        assert render_expect(e, OutputOptions(timestamp=True), ev, now_ns=now_ns) == line


@pytest.mark.parametrize(
    ("xml_name", "src_name"),
    [("t1a/L_expect_xml", "t1a/L_expect"), ("t1b/L_expect_xml", "t1b/L_expect"),
     ("t1d/E_expect_xml", "t1d/E_expect")],
)
def test_expect_xml(xml_name: str, src_name: str) -> None:
    xml_lines = _by_name(xml_name).stdout.splitlines()
    assert "\n".join(xml_lines[:2]) == expect_xml_header() and xml_lines[-1] == expect_xml_footer()
    src_lines = _by_name(src_name).stdout.splitlines()
    for xml_line, src_line in zip(xml_lines[2:-1], src_lines, strict=True):
        e, ev = parse_expect(src_line)
        assert render_expect(e, OutputOptions(xml=True), ev) == xml_line


def test_expect_xml_t1h_second_listing() -> None:
    caps = [c for c in captures() if c.name == "t1h_expect/L_expect_xml"]
    src = [c for c in captures() if c.name == "t1h_expect/L_expect" and "dport=1536" in c.stdout][0]
    xml_line = caps[0].stdout.splitlines()[2]
    e, _ = parse_expect(src.stdout.splitlines()[0])
    assert render_expect(e, OutputOptions(xml=True)) == xml_line


def test_cmd_parsing_sanity() -> None:
    assert options_of(shlex.split("conntrack -L -o extended,id")) == {"extended", "id"}
