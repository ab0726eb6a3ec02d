"""Differential: read-only commands on a table filled by real traffic (NAT, FTP helper, IPv6, acct, timestamps).

Topology and flows follow c-tools-behaviour/t1a-t1b (client <-> router <-> server, DNAT 10.77.1.1:8080 ->
10.77.2.2:80, SNAT to 10.77.2.1 for port 9000, masquerade for UDP 5555, FTP helper with one expectation);
every command runs in the router namespace with C and with ours, outputs compared byte for byte after
masking timeouts/ids (tests/compat/diffkit.py).
"""

from __future__ import annotations

import re

import pytest

from tests.compat.diffkit import STATS_MASK, Topology, check, compare, compare_all, run
from tests.compat.diffkit import _diff as diffkit_diff
from tests.conftest import C_CONNTRACK, PY_CONNTRACK, require_c_tools, require_root

pytestmark = [pytest.mark.compat, pytest.mark.root]

G_SSH = "-s 10.77.1.2 -d 10.77.2.2 -p tcp --sport 40022 --dport 22"

OUTPUTS = [
    "-L", "-L -o extended", "-L -o xml", "-L -o id", "-L -o save", "-L -o labels", "-L -o ktimestamp",
    "-L -o timestamp", "-L -o userspace", "-L -o extended,id", "-L -o extended,ktimestamp,id",
    "-L -o xml,ktimestamp", "-L -o xml,id", "-L -o xml,extended", "-L -o save,id", "-L -o id,ktimestamp",
    "-L conntrack", "-L conntrack -o extended", "-L dying", "-L unconfirmed", "-L dying -o xml",
]
FAMILIES = [
    "-L -f ipv4", "-L -f ipv6", "-L -f ipv6 -o extended", "-L -f ipv6 -o xml", "-L -f ipv6 -o save",
    "-L -f ipv4 -o save",
]
PROTOCOLS = [
    "-L -p tcp", "-L -p udp", "-L -p icmp", "-L -p icmpv6", "-L -p 6", "-L -p 17 -o extended", "-L -p sctp",
    "-L -p gre", "-L -p tcp --state ESTABLISHED", "-L -p tcp --state TIME_WAIT", "-L -p tcp --state SYN_SENT",
    "-L -p tcp --state SYN_SENT -o save", "-L -p tcp --dport 22", "-L -p tcp --sport 40022",
    "-L -p tcp --dport 21", "-L -p udp --dport 53", "-L -p udp --sport 40053 --dport 53",
    "-L -p tcp --reply-port-src 80", "-L -p tcp --reply-port-dst 40080", "-L -p icmp --icmp-type 8",
    "-L -p icmp --icmp-type 0", "-L -p icmp --icmp-id 17882", "-L -p icmp --icmp-code 0 -o xml",
    "-L -p icmpv6 --icmpv6-type 128", "-L -p icmpv6 --icmpv6-id 17883 -o extended", "-L -p udplite",
    "-L -p tcp --state ESTABLISHED -f ipv6",
]
ADDRESSES = [
    "-L -s 10.77.1.2", "-L -d 10.77.2.2", "-L -d 10.77.1.1", "-L -s 10.77.1.0/24", "-L -d 10.77.0.0/16",
    "-L -s 10.77.1.0/255.255.255.0", "-L -d 10.77.2.2/32 -p udp", "-L -s fd77:1::2", "-L -s fd77:1::/64",
    "-L -d fd77:2::2 -o extended", "-L -r 10.77.2.2", "-L -q 10.77.2.1", "-L -q 10.77.1.2 -p tcp",
    "-L --reply-src 10.77.2.2 --reply-dst 10.77.1.2", "-L -r fd77:2::2", "-L -s 10.77.9.9",
    "-L -s 10.77.1.2 -d 10.77.2.2 -p tcp --dport 22", "-L --orig-src 10.77.1.2 --orig-dst 10.77.1.1",
    "-L -s 10.77.1.2 -r 10.77.2.2 -p udp", "-L -d 10.77.2.2 -q 10.77.2.1",
]
NAT = [
    "-L --src-nat", "-L --dst-nat", "-L --any-nat", "-L --src-nat 10.77.2.1", "-L --dst-nat 10.77.2.2",
    "-L --any-nat 10.77.2.2", "-L --any-nat 10.77.2.1", "-L -f ipv6 --src-nat", "-L --dst-nat 10.77.2.2:80",
    "-L --dst-nat :80", "-L --src-nat 10.77.9.9", "-L -n", "-L -g", "-L -j", "-L --src-nat -o save",
    "-L --dst-nat -o xml", "-L --any-nat -p tcp", "-L --src-nat -p udp", "-L --dst-nat -f ipv4 -o extended",
    "-L --src-nat fd77:2::1",
]
STATUS_MARK_ZONE = [
    "-L -u ASSURED", "-L -u SEEN_REPLY", "-L -u UNREPLIED", "-L -u SRC_NAT", "-L -u DST_NAT",
    "-L -u ASSURED,SEEN_REPLY", "-L -u HELPER", "-L -u CONFIRMED", "-L -m 0", "-L -m 1", "-L -m 0/0",
    "-L -w 0", "-L -w 1", "-L --orig-zone 0", "-L --reply-zone 1", "-L -u ASSURED -p tcp -o save",
]
GET = [
    f"-G {G_SSH}", f"-G {G_SSH} -o xml", f"-G {G_SSH} -o extended,id", f"-G {G_SSH} -o save",
    f"-G {G_SSH} -o ktimestamp", f"-G {G_SSH} -w 0",
    "-G -s 10.77.1.2 -d 10.77.1.1 -p tcp --sport 40080 --dport 8080",
    "-G -r 10.77.2.2 -q 10.77.1.2 -p tcp --reply-port-src 80 --reply-port-dst 40080",
    "-G -f ipv6 -s fd77:1::2 -d fd77:2::2 -p tcp --sport 40680 --dport 80",
    "-G -s fd77:1::2 -d fd77:2::2 -p udp --sport 40653 --dport 53 -o xml",
    "-G -s 10.77.1.2 -d 10.77.2.2 -p icmp --icmp-type 8 --icmp-code 0 --icmp-id 17882",
    "-G -s 10.77.1.2 -d 10.77.2.2 -p tcp --sport 1 --dport 2",
    "-G -s 10.77.1.2 -d 10.77.2.2 -p udp --sport 40053 --dport 53",
    "-G -s 10.77.1.2 -d 10.77.2.2 -p tcp --sport 40900 --dport 9000 -o save",
    "-G -s 10.77.1.2 -d 10.77.2.2 -p tcp --sport 40021 --dport 21 -o xml",
    "-G -r 10.77.2.2 -q 10.77.2.1 -p tcp --reply-port-src 9000 --reply-port-dst 40900",
    "-G -s 10.77.1.2 -r 10.77.2.2 -q 10.77.1.2 -p tcp --reply-port-src 80 --reply-port-dst 40080",
]
EXPECT = [
    "-L expect", "-L expect -o xml", "-L expect -o extended", "-L expect -o id", "-L expect -o timestamp",
    "-L expect -f ipv4", "-L expect -f ipv6", "-C expect",
    "-G expect -s 10.77.1.2 -d 10.77.2.2 -p tcp --sport 40021 --dport 21",
    "-G expect -s 10.77.1.2 -d 10.77.2.2 -p tcp --sport 40021 --dport 21 -o xml",
    "-G expect -s 10.77.1.2 -d 10.77.2.2 -p tcp --sport 1 --dport 21",
    "-G expect -s 10.77.2.2 -d 10.77.1.2 -p tcp --sport 0 --dport 40000 --reply-port-src 1 --reply-port-dst 1",
]
COUNT = ["-C", "-C conntrack"]
CORPUS = OUTPUTS + FAMILIES + PROTOCOLS + ADDRESSES + NAT + STATUS_MARK_ZONE + GET + EXPECT + COUNT
# C prints nothing on stdout for these (errors, filters matching nothing here): compare() checks that they stay
# empty, and that every other line lists something, so that no case compares two empty outputs by accident.
EMPTY = frozenset([
    "-L -o save,id",
    "-L dying",
    "-L unconfirmed",
    "-L dying -o xml",
    "-L -p sctp",
    "-L -p gre",
    "-L -p icmp --icmp-type 0",
    "-L -p udplite",
    "-L -s 10.77.1.0/255.255.255.0",
    "-L -s 10.77.9.9",
    "-L -f ipv6 --src-nat",
    "-L --dst-nat :80",
    "-L --src-nat 10.77.9.9",
    "-L --src-nat fd77:2::1",
    "-L -u SRC_NAT",
    "-L -u DST_NAT",
    "-L -u HELPER",
    "-L -u CONFIRMED",
    "-L -m 1",
    "-L -w 1",
    "-L --reply-zone 1",
    "-G -s 10.77.1.2 -d 10.77.2.2 -p tcp --sport 40022 --dport 22 -w 0",
    "-G -r 10.77.2.2 -q 10.77.1.2 -p tcp --reply-port-src 80 --reply-port-dst 40080",
    "-G -f ipv6 -s fd77:1::2 -d fd77:2::2 -p tcp --sport 40680 --dport 80",
    "-G -s 10.77.1.2 -d 10.77.2.2 -p tcp --sport 1 --dport 2",
    "-G -r 10.77.2.2 -q 10.77.2.1 -p tcp --reply-port-src 9000 --reply-port-dst 40900",
    "-G -s 10.77.1.2 -r 10.77.2.2 -q 10.77.1.2 -p tcp --reply-port-src 80 --reply-port-dst 40080",
    "-L expect -f ipv6",
    "-G expect -s 10.77.1.2 -d 10.77.2.2 -p tcp --sport 40021 --dport 21",
    "-G expect -s 10.77.1.2 -d 10.77.2.2 -p tcp --sport 40021 --dport 21 -o xml",
    "-G expect -s 10.77.1.2 -d 10.77.2.2 -p tcp --sport 1 --dport 21",
])


@pytest.fixture(scope="module")
def topo():
    require_root()
    require_c_tools()
    t = Topology(acct=True)
    try:
        t.start_traffic()
        yield t
    finally:
        t.close()


@pytest.fixture(scope="module")
def results(topo):
    return compare_all(topo.rtr, CORPUS, empty=EMPTY)


@pytest.mark.parametrize("args", CORPUS)
def test_same_output(results, args):
    check(results, args)


@pytest.mark.parametrize("args", ["-S", "-S expect"])
def test_stats_format(topo, args):
    """Per-CPU counters move between runs: compare the lines with the numbers masked."""
    compare(topo.rtr, args, extra=STATS_MASK)


def test_zero_counters(topo):
    """`-L -z` lists the counters, then zeroes them (runs last). Each binary runs after the same burst of
    traffic on a zeroed table: same listing (with non-zero counters), and C lists every counter zero after."""
    assert run(topo.rtr, C_CONNTRACK, "-L -z").rc == 0
    got = {}
    for who, binary in (("C", C_CONNTRACK), ("ours", PY_CONNTRACK)):
        topo.burst()
        before = run(topo.rtr, C_CONNTRACK, "-L -o extended").masked()
        zeroed = run(topo.rtr, binary, "-L -z -o extended").masked()
        after = run(topo.rtr, C_CONNTRACK, "-L -o extended").masked()
        got[who] = (before, zeroed, after)
    for who, (before, zeroed, after) in got.items():
        assert re.search(r"packets=[1-9]", before.out), f"{who}: the burst left no counter to zero\n{before.out}"
        assert zeroed == before, f"{who}: -L -z did not list the counters it zeroed\n{diffkit_diff(before, zeroed)}"
        counters = re.findall(r"(?:packets|bytes)=(\d+)", after.out)
        assert counters and set(counters) == {"0"}, f"{who}: counters left after -L -z\n{after.out}"
    assert got["C"] == got["ours"], diffkit_diff(got["C"][1], got["ours"][1])
