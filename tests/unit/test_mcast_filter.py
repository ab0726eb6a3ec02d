"""Multicast receive filter (channels.mcast_verdict, LinkAddresses): pure logic, no sockets.

A datagram is dropped when it arrived on another interface than the configured one, was not
sent to the group, comes from one of this host's addresses, or comes from outside every
prefix of the configured interface.  The netns test is
tests/netns/test_reliability_security.py::test_multicast_wrong_interface_or_source_is_dropped.
"""

from __future__ import annotations

import socket

from conntrack_tools.daemon.sync.channels import ChannelStats, LinkAddresses, _counters, mcast_verdict

A4 = socket.AF_INET
A6 = socket.AF_INET6


def ip(text: str) -> bytes:
    return socket.inet_pton(A6 if ":" in text else A4, text)


GROUP = ip("225.0.0.50")


def addrs(*rows):
    return lambda: [(A6 if ":" in a else A4, idx, plen, ip(a), ip(loc or a)) for idx, a, plen, loc in rows]


class Dump:
    def __init__(self, rows) -> None:
        self.rows, self.calls = rows, 0

    def __call__(self):
        self.calls += 1
        return self.rows() if callable(self.rows) else self.rows


def link4(**kw) -> LinkAddresses:
    # ifindex 3 = the sync link 10.0.0.1/24 (+ a secondary 172.16.5.1/30); ifindex 4 = another LAN
    return LinkAddresses(A4, 3, addrs((3, "10.0.0.1", 24, None), (3, "172.16.5.1", 30, None),
                                      (4, "192.168.1.1", 24, None), (1, "127.0.0.1", 8, None),
                                      (3, "fd00::1", 64, None)), **kw)


def test_accepts_a_peer_on_the_link() -> None:
    link = link4()
    assert mcast_verdict(3, GROUP, 3, GROUP, ip("10.0.0.2"), link) is None
    assert mcast_verdict(3, GROUP, 3, GROUP, ip("172.16.5.2"), link) is None  # secondary prefix


def test_wrong_interface_group_own_source() -> None:
    link = link4()
    assert mcast_verdict(3, GROUP, 4, GROUP, ip("10.0.0.2"), link) == "iface"
    assert mcast_verdict(3, GROUP, 0, GROUP, ip("10.0.0.2"), link) == "iface"  # no pktinfo
    assert mcast_verdict(3, GROUP, 3, ip("225.0.0.51"), ip("10.0.0.2"), link) == "group"
    assert mcast_verdict(3, GROUP, 3, GROUP, ip("10.0.0.1"), link) == "own"
    assert mcast_verdict(3, GROUP, 3, GROUP, ip("192.168.1.1"), link) == "own"  # any local address
    assert mcast_verdict(3, GROUP, 3, GROUP, ip("192.168.1.7"), link) == "source"  # the other LAN
    assert mcast_verdict(3, GROUP, 3, GROUP, ip("10.0.1.2"), link) == "source"
    assert mcast_verdict(3, GROUP, 3, GROUP, ip("172.16.5.4"), link) == "source"  # outside the /30


def test_ipv6_link_local_and_global_prefixes() -> None:
    g6 = ip("ff02::1:3")
    link = LinkAddresses(A6, 5, addrs((5, "fe80::1", 64, None), (5, "fd00:231::2", 64, None),
                                      (6, "fd00:999::2", 64, None), (5, "10.0.0.1", 24, None)))
    assert mcast_verdict(5, g6, 5, g6, ip("fe80::abcd"), link) is None
    assert mcast_verdict(5, g6, 5, g6, ip("fd00:231::1"), link) is None
    assert mcast_verdict(5, g6, 5, g6, ip("fd00:231::2"), link) == "own"
    assert mcast_verdict(5, g6, 5, g6, ip("fd00:999::1"), link) == "source"
    assert mcast_verdict(5, g6, 6, g6, ip("fe80::abcd"), link) == "iface"


def test_no_interface_or_no_addresses_means_no_check() -> None:
    # neither Interface nor a known IPv4_interface: only the group is checked
    assert mcast_verdict(0, GROUP, 7, GROUP, ip("8.8.8.8"), None) is None
    assert mcast_verdict(0, GROUP, 7, ip("225.0.0.1"), ip("8.8.8.8"), None) == "group"
    failed = LinkAddresses(A4, 3, lambda: None)  # the dump failed: no own/source check
    assert not failed.known
    assert mcast_verdict(3, GROUP, 3, GROUP, ip("8.8.8.8"), failed) is None
    assert mcast_verdict(3, GROUP, 4, GROUP, ip("8.8.8.8"), failed) == "iface"
    bare = LinkAddresses(A4, 3, addrs((4, "192.168.1.1", 24, None)))  # link without an IPv4 prefix
    assert mcast_verdict(3, GROUP, 3, GROUP, ip("8.8.8.8"), bare) is None
    assert mcast_verdict(3, GROUP, 3, GROUP, ip("192.168.1.1"), bare) == "own"


def test_point_to_point_peer_prefix() -> None:
    # ip addr add 10.9.0.1 peer 10.9.0.2/32: IFA_LOCAL 10.9.0.1, IFA_ADDRESS 10.9.0.2
    link = LinkAddresses(A4, 3, addrs((3, "10.9.0.2", 32, "10.9.0.1")))
    assert mcast_verdict(3, GROUP, 3, GROUP, ip("10.9.0.2"), link) is None
    assert mcast_verdict(3, GROUP, 3, GROUP, ip("10.9.0.1"), link) == "own"
    assert mcast_verdict(3, GROUP, 3, GROUP, ip("10.9.0.3"), link) == "source"


def test_refresh_is_rate_limited_and_periodic() -> None:
    rows = [(3, "10.0.0.1", 24, None)]
    dump = Dump(lambda: addrs(*rows)())
    link = LinkAddresses(A4, 3, dump, min_age=1.0, max_age=30.0)
    assert dump.calls == 1
    t = link.loaded_at
    assert not link.may_refresh(t + 0.5) and dump.calls == 1
    rows.append((3, "10.50.0.1", 16, None))  # an address added at runtime
    assert mcast_verdict(3, GROUP, 3, GROUP, ip("10.50.3.4"), link) == "source"
    assert link.may_refresh(t + 1.5) and dump.calls == 2
    assert mcast_verdict(3, GROUP, 3, GROUP, ip("10.50.3.4"), link) is None
    assert not link.stale(link.loaded_at + 29) and link.stale(link.loaded_at + 30)


def test_drop_line_only_when_something_was_dropped() -> None:
    st = ChannelStats()
    assert "Dropped" not in _counters(st)  # C's block, byte for byte
    assert _counters(st).endswith("Error recv\n\n")
    st.drop_recv, st.drop_source, st.drop_iface = 3, 2, 1
    text = _counters(st)
    assert "                   3 Dropped recv (wrong interface 1, group 0, source 2, own 0)\n\n" in text
