"""Renderer cases the captures do not cover, each checked against the C source's rules."""

from __future__ import annotations

import json
import socket

from conntrack_tools.flow import (
    AF_INET,
    AF_INET6,
    EXPECT_INACTIVE,
    EXPECT_PERMANENT,
    IPS_ASSURED,
    IPS_CONFIRMED,
    IPS_HW_OFFLOAD,
    IPS_OFFLOAD,
    IPS_SEEN_REPLY,
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
    event_timestamp_prefix,
    expect_timestamp_prefix,
    render_expect,
    render_flow,
    save_l3_warning,
    stats,
)
from conntrack_tools.formats.save import render_save

A = socket.inet_aton
NS = 1_000_000_000


def v6(text: str) -> bytes:
    return socket.inet_pton(AF_INET6, text)


def tcp_flow(**kw: object) -> Flow:
    f = Flow(
        family=AF_INET,
        orig=Tuple(AF_INET, A("1.1.1.1"), A("2.2.2.2"), 6, 10, 20),
        reply=Tuple(AF_INET, A("2.2.2.2"), A("1.1.1.1"), 6, 20, 10),
        status=IPS_CONFIRMED | IPS_SEEN_REPLY,
        timeout=49,
        tcp=TcpInfo(state=9),
        mark=0,
        use=1,
        id=1575093302,
    )
    for k, v in kw.items():
        setattr(f, k, v)
    return f


def test_catalog_example_syn_sent2() -> None:
    f = tcp_flow()
    base = ("tcp      6 49 SYN_SENT2 src=1.1.1.1 dst=2.2.2.2 sport=10 dport=20 "
            "src=2.2.2.2 dst=1.1.1.1 sport=20 dport=10 mark=0 use=1")
    assert render_flow(f) == base
    assert render_flow(f, OutputOptions(extended=True, id=True)) == "ipv4     2 " + base + " id=1575093302"
    assert render_flow(f, OutputOptions(save=True)) == (
        "-A -t 49 -u SEEN_REPLY -s 1.1.1.1 -d 2.2.2.2 -r 2.2.2.2 -q 1.1.1.1 -p tcp --sport 10 --dport 20 "
        "--reply-port-src 20 --reply-port-dst 10 --state SYN_SENT2"
    )


def test_offload_tags_take_precedence() -> None:
    st = IPS_CONFIRMED | IPS_SEEN_REPLY | IPS_ASSURED
    assert "[ASSURED] mark=0" in render_flow(tcp_flow(status=st))
    assert "[OFFLOAD] mark=0" in render_flow(tcp_flow(status=st | IPS_OFFLOAD))
    assert "[HW_OFFLOAD] mark=0" in render_flow(tcp_flow(status=st | IPS_OFFLOAD | IPS_HW_OFFLOAD))


def test_no_status_means_no_status_tags() -> None:
    assert "[" not in render_flow(tcp_flow(status=None))


def test_all_optional_fields_in_c_order() -> None:
    f = tcp_flow(secmark=7, secctx="system_u:object_r:x", zone=5, helper="ftp",
                 counters_orig=Counters(3, 180), counters_reply=Counters(2, 120),
                 ts_start=100 * NS + 5, ts_stop=130 * NS + 7, labels=(0b101).to_bytes(16, "little"))
    f.orig.zone, f.reply.zone = 3, 4
    out = render_flow(f, OutputOptions(id=True, ktimestamp=True, labels=True, label_map={0: "a", 2: "c"}))
    assert out == (
        "tcp      6 49 SYN_SENT2 src=1.1.1.1 dst=2.2.2.2 sport=10 dport=20 zone-orig=3 packets=3 bytes=180 "
        "src=2.2.2.2 dst=1.1.1.1 sport=20 dport=10 zone-reply=4 packets=2 bytes=120 mark=0 secmark=7 "
        "secctx=system_u:object_r:x zone=5 delta-time=30 [start=Thu Jan  1 00:01:40 1970] "
        "[stop=Thu Jan  1 00:02:10 1970] helper=ftp use=1 id=1575093302 labels=a,c"
    )


def test_labels_without_known_names_quirk() -> None:
    f = tcp_flow(labels=(1 << 9).to_bytes(16, "little"))
    assert render_flow(f, OutputOptions(labels=True, label_map={})).endswith("use=1 labels")
    # No label map loaded (connlabel.conf missing, or no label option): nothing.
    assert render_flow(f, OutputOptions(labels=True)).endswith("use=1")
    assert render_flow(f, OutputOptions(label_map={9: "x"})).endswith("use=1")


def test_delta_time_uses_injected_clock_and_wraps_like_llu() -> None:
    f = tcp_flow(ts_start=1000 * NS)
    assert "delta-time=25 " in render_flow(f, now_ns=1025 * NS + 999)
    assert f"delta-time={2**64 - 5} " in render_flow(f, now_ns=995 * NS)


def test_ktimestamp_stop_without_start() -> None:
    out = render_flow(tcp_flow(ts_stop=0), OutputOptions(ktimestamp=True))
    assert "delta-time" not in out and "[stop=Thu Jan  1 00:00:00 1970] use=1" in out


def test_protocols() -> None:
    def line(proto: int, **tk: int) -> str:
        f = Flow(family=AF_INET, orig=Tuple(AF_INET, A("1.1.1.1"), A("2.2.2.2"), proto, **tk),
                 reply=Tuple(AF_INET, A("2.2.2.2"), A("1.1.1.1"), proto), status=IPS_SEEN_REPLY, timeout=1)
        return render_flow(f)

    assert line(136, sport=1, dport=2).startswith("udplite  136 1 src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2 src=")
    assert line(33, sport=1, dport=2).startswith("dccp     33 1 src=1.1.1.1 dst=2.2.2.2 sport=1 dport=2 ")
    gre = line(47, sport=0x1234, dport=0xAB)
    assert gre.startswith("gre      47 1 src=1.1.1.1 dst=2.2.2.2 srckey=0x1234 dstkey=0xab ")
    assert line(1, icmp_type=3).startswith("icmp     1 1 src=1.1.1.1 dst=2.2.2.2 type=3 code=0 id=0 src=")
    assert line(255) == "unknown  255 1 src=1.1.1.1 dst=2.2.2.2 src=2.2.2.2 dst=1.1.1.1"


def test_dccp_and_sctp_states() -> None:
    f = tcp_flow(tcp=None, dccp=DccpInfo(state=4, role=1))
    f.orig.proto = f.reply.proto = 33
    assert render_flow(f).startswith("dccp     33 49 OPEN src=")
    assert "--state OPEN --role server" in render_flow(f, OutputOptions(save=True))
    assert "<state>FIN_WAIT</state>" in render_flow(f, OutputOptions(xml=True))  # TCP table quirk
    g = tcp_flow(tcp=None, sctp=SctpInfo(state=8))
    g.orig.proto = g.reply.proto = 132
    assert render_flow(g).startswith("sctp     132 49 HEARTBEAT_SENT src=")
    assert "--state (null)" in render_flow(g, OutputOptions(save=True))


def test_ipv6_compressed_and_mapped() -> None:
    f = Flow(family=AF_INET6, orig=Tuple(AF_INET6, v6("::ffff:1.2.3.4"), v6("2001:db8::1"), 17, 1, 2),
             reply=Tuple(AF_INET6, v6("2001:db8::1"), v6("::ffff:1.2.3.4"), 17, 2, 1), timeout=3)
    out = render_flow(f, OutputOptions(extended=True))
    assert out == ("ipv6     10 udp      17 3 src=::ffff:1.2.3.4 dst=2001:db8::1 sport=1 dport=2 "
                   "src=2001:db8::1 dst=::ffff:1.2.3.4 sport=2 dport=1")


def test_missing_l4proto_prints_what_c_had_buffered() -> None:
    f = Flow(family=AF_INET, orig=Tuple(AF_INET, A("1.1.1.1"), A("2.2.2.2")))
    assert render_flow(f, OutputOptions(extended=True), "new") == "    [NEW] ipv4     2 "


def test_event_prefix_and_userspace_suffix() -> None:
    f = tcp_flow(use=None)
    opts = OutputOptions(timestamp=True)
    out = render_flow(f, opts, "destroy", now_ns=1795684687_011018_123, portid=42, progname="conntrack")
    assert out.startswith("[1795684687.011018]\t[DESTROY] tcp ")
    assert out.endswith(" mark=0 [USERSPACE] portid=42 progname=conntrack")
    # Dumps never get the prefix or the suffix.
    assert render_flow(f, opts, None, now_ns=1, portid=42) == render_flow(f)
    assert event_timestamp_prefix(5 * NS + 7000) == "[00000005.000007]\t"
    assert expect_timestamp_prefix(5 * NS + 7000) == "[5       .7     ]\t"


def test_save_event_verbs_nat_zone_and_unknown_l3() -> None:
    f = tcp_flow(status=0, zone=5)
    f.reply.dst = A("9.9.9.9")
    assert render_save(f, "update").startswith("-U -t 49 -u UNSET -w 5 -s 1.1.1.1 -d 2.2.2.2 -r 2.2.2.2 -q 9.9.9.9 ")
    from conntrack_tools.flow import IPS_SRC_NAT_DONE

    f.status = IPS_SRC_NAT_DONE
    assert " -n 9.9.9.9 " in render_save(f, "destroy") and render_save(f, "destroy").startswith("-D ")
    f.status = None  # no status attribute: address comparison only
    assert " -n 9.9.9.9 " in render_save(f, None) and render_save(f, None).startswith("-t 49 -w 5")
    bad = Flow(orig=Tuple(0), timeout=3, status=0)
    assert render_save(bad) == "-A -t 3 -u UNSET "
    assert save_l3_warning(bad) == "WARNING: unsupported l3proto 0, skipping."
    assert save_l3_warning(f) is None


def test_save_verb_for_delete_command() -> None:
    assert render_flow(tcp_flow(), OutputOptions(save=True), save_event="destroy").startswith("-D -t 49 ")
    assert render_flow(tcp_flow(), OutputOptions(save=True)).startswith("-A -t 49 ")


def test_save_portid_suffix_even_in_save_mode() -> None:
    out = render_flow(tcp_flow(), OutputOptions(save=True), "new", portid=7)
    assert out.endswith("--state SYN_SENT2 [USERSPACE] portid=7")


def test_xml_zones_secctx_and_missing_reply() -> None:
    f = tcp_flow(secctx="ctx", counters_orig=Counters(1, 2))
    f.orig.zone = 3
    f.reply = None
    out = render_flow(f, OutputOptions(xml=True))
    assert "<layer4 protonum=\"6\" protoname=\"tcp\"><sport>10</sport><dport>20</dport></layer4><zone>3</zone>" in out
    # reply counters shown because the orig ones are (C quirk), zeroed tuple for the reply
    assert ('<meta direction="reply"><layer3 protonum="0" protoname="unknown"><src></src><dst></dst></layer3>'
            '<layer4 protonum="0" protoname="unknown"></layer4><counters><packets>0</packets>'
            "<bytes>0</bytes></counters></meta>") in out
    assert "<secctx>ctx</secctx>" in out


def test_xml_event_timestamp_when_block() -> None:
    out = render_flow(tcp_flow(), OutputOptions(xml=True, timestamp=True), "new", now_ns=1795684687 * NS)
    import time

    tm = time.localtime(1795684687)
    assert f"<when><hour>{tm.tm_hour}</hour><min>{tm.tm_min:02d}</min>" in out
    assert "<wday>5</wday><day>26</day><month>11</month><year>2026</year></when></flow>" in out  # a Thursday


def test_expect_flags_zone_and_event() -> None:
    e = Expect(family=AF_INET, master=Tuple(AF_INET, A("1.1.1.1"), A("2.2.2.2"), 6, 1000, 21),
               tuple=Tuple(AF_INET, A("2.2.2.2"), A("1.1.1.1"), 6, 0, 5000),
               mask=Tuple(AF_INET, A("255.255.255.255"), A("255.255.255.255"), None, 0, 0xFFFF),
               timeout=300, zone=2, flags=EXPECT_PERMANENT | EXPECT_INACTIVE, klass=0)
    assert render_expect(e, event="new") == (
        "    [NEW] 300 proto=6 src=2.2.2.2 dst=1.1.1.1 sport=0 dport=5000 mask-src=255.255.255.255 "
        "mask-dst=255.255.255.255 sport=0 dport=65535 master-src=1.1.1.1 master-dst=2.2.2.2 sport=1000 "
        "dport=21 zone=2 PERMANENT,INACTIVE class=0"
    )
    xml = render_expect(e, OutputOptions(xml=True), "destroy")
    assert xml.startswith('<flow type="destroy">')
    assert xml.endswith("<timeout>300</timeout><class>0</class><zone>2</zone><permanent/><inactive/></meta></flow>")


def test_json_schema() -> None:
    f = tcp_flow(counters_orig=Counters(1, 60), counters_reply=Counters(0, 0), ts_start=5, helper="ftp",
                 labels=(0b11).to_bytes(16, "little"), status=IPS_CONFIRMED | IPS_ASSURED)
    line = render_flow(f, OutputOptions(json=True, label_map={0: "blue"}), "new", portid=9, progname="x")
    assert "\n" not in line
    d = json.loads(line)
    assert list(d) == ["event", "family", "proto", "protonum", "timeout", "state", "orig", "reply", "status",
                       "mark", "use", "id", "helper", "labels", "timestamp", "userspace"]
    assert d["event"] == "new" and d["family"] == "ipv4" and d["proto"] == "tcp" and d["state"] == "SYN_SENT2"
    assert d["orig"] == {"src": "1.1.1.1", "dst": "2.2.2.2", "sport": 10, "dport": 20, "packets": 1, "bytes": 60}
    assert d["status"] == ["ASSURED", "CONFIRMED"]
    assert d["labels"] == ["blue", "1"] and d["timestamp"] == {"start": 5}
    assert d["userspace"] == {"portid": 9, "progname": "x"}
    dump = json.loads(render_flow(Flow(family=AF_INET, orig=Tuple(AF_INET, proto=1, icmp_type=8)),
                                  OutputOptions(json=True), portid=9))
    assert dump == {"event": None, "family": "ipv4", "proto": "icmp", "protonum": 1, "orig": {"type": 8}}


def test_json_expect() -> None:
    e = Expect(family=AF_INET, tuple=Tuple(AF_INET, A("2.2.2.2"), A("1.1.1.1"), 6, 0, 5000),
               mask=Tuple(AF_INET, A("255.255.255.255"), A("255.255.255.255"), None, 0, 65535),
               timeout=3, helper="ftp", flags=0)
    d = json.loads(render_expect(e, OutputOptions(json=True)))
    assert d["mask"] == {"src": "255.255.255.255", "dst": "255.255.255.255", "sport": 0, "dport": 65535}
    assert d["flags"] == [] and d["helper"] == "ftp"


def test_stats_lines_and_summaries() -> None:
    ref = ("cpu=0   \tfound=0 invalid=0 insert=0 insert_failed=0 drop=0 early_drop=0 error=0 "
           "search_restart=0 clash_resolve=0 chaintoolong=0 ")
    attrs = {2: 0, 4: 0, 8: 0, 9: 0, 10: 0, 11: 0, 12: 0, 13: 0, 14: 0, 15: 0, 99: 5}
    assert stats.render_cpu_stats(0, attrs) == ref
    assert stats.render_cpu_stats(12345, {}) == "cpu=12345\t"
    assert stats.render_exp_cpu_stats(1, {3: 2, 1: 7}) == "cpu=1   \texpect_new=7 expect_delete=2 "
    assert stats.summary("list", 12) == "conntrack v1.4.7 (conntrack-tools): 12 flow entries have been shown."
    assert stats.summary("exp_event", 2) == "conntrack v1.4.7 (conntrack-tools): 2 expectation events have been shown."
    assert stats.FLUSH_CT == "conntrack v1.4.7 (conntrack-tools): connection tracking table has been emptied."
    proc = "entries  found new\n0000000b  00000010 00000000\n"
    assert stats.render_proc_stats(proc) == ["cpu=0   \tentries=11 found=16 new=0 "]
    assert stats.render_count(11) == "11"
