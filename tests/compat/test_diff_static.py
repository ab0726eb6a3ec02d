"""Differential: read-only commands on a table built with `conntrack -I` (marks, zones, labels, SCTP, GRE, ...).

The table is loaded once by C (`-R -`), in a namespace whose nft rule uses `ct label` (without it the
kernel drops labels) and with a connlabel.conf overlaid on /etc for both binaries (diffkit.with_labels).
"""

from __future__ import annotations

import pytest

from tests.compat.diffkit import check, compare_all, reset, run
from tests.conftest import Netns, require_c_tools, require_root

pytestmark = [pytest.mark.compat, pytest.mark.root]

S, D = "-s 10.77.9.1 -d 10.77.9.2", "-d 10.77.9.2"
T = "-t 3600"
SETUP = [
    f"-I {S} -p tcp --sport 1111 --dport 80 --state ESTABLISHED {T}",
    f"-I {S} -r 10.77.9.2 -q 10.77.9.1 -p tcp --sport 1112 --dport 80 --reply-port-src 80 --reply-port-dst 1112"
    f" --state ESTABLISHED {T} -u SEEN_REPLY,ASSURED -m 42",
    f"-I {S} -p tcp --sport 1113 --dport 80 --state SYN_SENT {T} -m 0x11",
    f"-I {S} -p udp --sport 5353 --dport 53 {T} -m 7 -w 5",
    f"-I {S} -p udp --sport 5353 --dport 53 {T}",
    f"-I {S} -p udp --sport 5354 --dport 53 {T} --orig-zone 3",
    f"-I {S} -p udp --sport 5355 --dport 53 {T} --reply-zone 4",
    f"-I {S} -p icmp --icmp-type 8 --icmp-code 0 --icmp-id 77 {T}",
    f"-I -s fd77:9::1 -d fd77:9::2 -p tcp --sport 1000 --dport 2000 --state SYN_SENT {T}",
    f"-I -s fd77:9::1 -d fd77:9::2 -p udp --sport 1000 --dport 2000 {T} -m 5",
    f"-I -s fd77:9::1 -d fd77:9::2 -p icmpv6 --icmpv6-type 128 --icmpv6-code 0 --icmpv6-id 9 {T}",
    f"-I {S} -p sctp --sport 5000 --dport 5001 --state ESTABLISHED --orig-vtag 1 --reply-vtag 2 {T}",
    f"-I {S} -p gre --srckey 1 --dstkey 2 {T}",
    f"-I {S} -p 99 {T}",
    f"-I {S} -p udplite --sport 7 --dport 8 {T}",
    f"-I {S} -p tcp --sport 2222 --dport 80 --state ESTABLISHED {T} --src-nat 10.77.9.254",
    f"-I -s 10.77.9.1 -d 10.77.9.3 -p tcp --sport 2223 --dport 80 --state ESTABLISHED {T} --dst-nat 10.77.9.2",
    f"-I {S} -p tcp --sport 2224 --dport 80 --state ESTABLISHED {T} -u ASSURED",
    f"-I {S} -p tcp --sport 3002 --dport 80 --state ESTABLISHED {T} --label-add ref-blue,ref-green",
    f"-I {S} -p tcp --sport 3004 --dport 80 --state TIME_WAIT {T} --label-add ref-red -m 3",
    f"-I {S} -p tcp --sport 3005 --dport 80 --state CLOSE_WAIT {T} --label-add ctpy-forty,ctpy-zero",
    f"-I -s 10.77.8.1 -d 10.77.8.2 -p tcp --sport 10 --dport 20 --state LAST_ACK {T} -w 7 -m 0xff00",
    f"-I -s fd77:8::1 -d fd77:8::2 -p sctp --sport 1 --dport 2 --state COOKIE_WAIT {T} --orig-vtag 7 --reply-vtag 8",
]

OUTPUTS = [
    "-L", "-L -o extended", "-L -o xml", "-L -o id", "-L -o save", "-L -o labels", "-L -o extended,labels",
    "-L -o xml,labels", "-L -o save,labels", "-L -o ktimestamp", "-L -o extended,id,labels", "-L -o timestamp",
    "-L -o userspace", "-L -o xml,id,extended", "-L -o id,labels", "-C",
]
FILTERS = [
    "-L -m 42", "-L -m 40/0xfffffff8", "-L -m 0x11", "-L -m 0xff00/0xff00", "-L -m 0/0xffffffff", "-L -m 3 -o labels",
    "-L -w 0", "-L -w 5", "-L -w 7 -o save", "-L --orig-zone 3", "-L --reply-zone 4", "-L --orig-zone 0",
    "-L --reply-zone 4 -o xml", "-L --orig-zone 3 -o save", "-L -w 5 -o extended",
    "-L -u ASSURED", "-L -u SEEN_REPLY", "-L -u SEEN_REPLY,ASSURED", "-L -u SRC_NAT", "-L -u DST_NAT",
    "-L -u CONFIRMED -p udp", "-L -u ASSURED -o save",
    "-L -l ref-blue", "-L -l ref-blue -o labels", "-L -l ref-blue -l ref-green -o labels",
    "-L -l ref-blue,ref-green -o labels", "-L -l ref-red -o labels", "-L -l ctpy-forty -o xml,labels",
    "-L -l ctpy-zero -o extended,labels", "-L -l ctpy-five", "-L -l ref-blue,ref-red",
    "-L -p sctp", "-L -p sctp --state ESTABLISHED", "-L -p sctp --state COOKIE_WAIT", "-L -p sctp --orig-vtag 1",
    "-L -p sctp --reply-vtag 2", "-L -p sctp -o xml", "-L -p sctp -o save", "-L -p sctp -o extended",
    "-L -p gre", "-L -p gre -o xml", "-L -p gre -o save", "-L -p gre --srckey 1", "-L -p 99", "-L -p 99 -o xml",
    "-L -p 99 -o save", "-L -p udplite", "-L -p udplite -o xml", "-L -p udplite --sport 7", "-L -p icmp -o save",
    "-L -p icmp -o xml", "-L -p icmpv6 -o xml", "-L -p icmpv6 -o save", "-L -f ipv6 -o save",
    "-L -p tcp --state TIME_WAIT", "-L -p tcp --state SYN_SENT", "-L -p tcp --state CLOSE_WAIT -o labels",
    "-L -p tcp --state LAST_ACK -o extended", "-L --src-nat", "-L --dst-nat", "-L --any-nat",
    "-L --src-nat 10.77.9.254", "-L --dst-nat 10.77.9.2", "-L --any-nat 10.77.9.254", "-L --src-nat -o save",
    "-L --dst-nat -o save", "-L -s 10.77.8.0/24", "-L -d 10.77.9.3", "-L -r 10.77.9.254", "-L -q 10.77.9.254",
    "-L -s 10.77.9.1 -p udp --sport 5353", "-L -s fd77:8::/32", "-L -d fd77:9::2 -p udp --dport 2000",
    "-L -s 10.77.9.1 -m 3 -u ASSURED",
]
GET = [
    f"-G {S} -p tcp --sport 1111 --dport 80", f"-G {S} -p tcp --sport 1111 --dport 80 -o xml",
    f"-G {S} -p tcp --sport 1111 --dport 80 -o extended,id", f"-G {S} -p tcp --sport 1112 --dport 80 -o save",
    f"-G {S} -p tcp --sport 3002 --dport 80 -o labels", f"-G {S} -p tcp --sport 3002 --dport 80 -o xml,labels",
    f"-G {S} -p tcp --sport 9999 --dport 80", f"-G {S} -p udp --sport 5353 --dport 53",
    f"-G {S} -p udp --sport 5354 --dport 53 --orig-zone 3",
    f"-G {S} -p sctp --sport 5000 --dport 5001", f"-G {S} -p sctp --sport 5000 --dport 5001 -o save",
    f"-G {S} -p gre --srckey 1 --dstkey 2", f"-G {S} -p 99", f"-G {S} -p udplite --sport 7 --dport 8",
    f"-G {S} -p icmp --icmp-type 8 --icmp-code 0 --icmp-id 77",
    "-G -s fd77:9::1 -d fd77:9::2 -p icmpv6 --icmpv6-type 128 --icmpv6-code 0 --icmpv6-id 9 -o xml",
    "-G -s fd77:9::1 -d fd77:9::2 -p udp --sport 1000 --dport 2000 -o extended",
    f"-G {S} -p tcp --sport 2222 --dport 80 -o save", "-G -s 10.77.9.1 -d 10.77.9.3 -p tcp --sport 2223 --dport 80",
    "-G -r 10.77.9.2 -q 10.77.9.1 -p tcp --reply-port-src 80 --reply-port-dst 1111",
    "-G -s 10.77.9.1 -r 10.77.9.2 -q 10.77.9.1 -p tcp --reply-port-src 80 --reply-port-dst 1111",
]
CORPUS = OUTPUTS + FILTERS + GET
# C prints nothing on stdout for these (errors, filters matching nothing here): compare() checks that they stay
# empty, and that every other line lists something, so that no case compares two empty outputs by accident.
EMPTY = frozenset([
    "-L -o save,labels",
    "-L -u SRC_NAT",
    "-L -u DST_NAT",
    "-L -u CONFIRMED -p udp",
    "-L -l ctpy-five",
    "-L -l ref-blue,ref-red",
    "-L -p sctp --orig-vtag 1",
    "-L -p sctp --reply-vtag 2",
    "-L -r 10.77.9.254",
    "-L -s 10.77.9.1 -m 3 -u ASSURED",
    "-G -s 10.77.9.1 -d 10.77.9.2 -p tcp --sport 9999 --dport 80",
    "-G -s 10.77.9.1 -d 10.77.9.2 -p udp --sport 5354 --dport 53 --orig-zone 3",
    "-G -r 10.77.9.2 -q 10.77.9.1 -p tcp --reply-port-src 80 --reply-port-dst 1111",
    "-G -s 10.77.9.1 -r 10.77.9.2 -q 10.77.9.1 -p tcp --reply-port-src 80 --reply-port-dst 1111",
])


@pytest.fixture(scope="module")
def table():
    require_root()
    require_c_tools()
    ns = Netns("dstat")
    try:
        # A rule using `ct label` makes the kernel keep labels on entries created with -I.
        nft = ("table inet ctpy {\n chain out { type filter hook output priority 0; ct label set 1; }\n}\n")
        r = run(ns, "nft", ["-f", "-"], labels=True, stdin=nft)
        assert r.rc == 0, r.show()
        reset(ns, SETUP, labels=True)
        n = run(ns, "/usr/sbin/conntrack", "-C").out.strip()
        assert n == str(len(SETUP)), f"expected {len(SETUP)} entries, got {n}"
        yield ns
    finally:
        ns.close()


@pytest.fixture(scope="module")
def results(table):
    return compare_all(table, CORPUS, labels=True, empty=EMPTY)


@pytest.mark.parametrize("args", CORPUS)
def test_same_output(results, args):
    check(results, args)
