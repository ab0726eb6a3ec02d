"""Expectation sync conversions (C exp2msg / msg2exp rules) and the external expectation cache."""

from __future__ import annotations

from conntrack_tools.daemon.cache import ExpCache
from conntrack_tools.daemon.sync.expect import expect_to_sync, external_exp_apply, sync_to_expect
from conntrack_tools.daemon.sync.wire import MsgType, decode_message, encode_expect_message
from conntrack_tools.daemon.sync.wire_attrs import ExpAttr
from conntrack_tools.flow import AF_INET, AF_INET6, Expect, Tuple

A, B = bytes([192, 0, 2, 30]), bytes([198, 51, 100, 30])
ONES = b"\xff" * 4


def ftp_expect(proto: int = 6, timeout: int | None = 299) -> Expect:
    return Expect(AF_INET, master=Tuple(AF_INET, A, B, proto, 40030, 21), tuple=Tuple(AF_INET, B, A, proto, 0, 40000),
                  mask=Tuple(AF_INET, ONES, ONES, proto, 0, 0xFFFF), timeout=timeout, helper="ftp", flags=0,
                  klass=0)


def attr_ids(exp: Expect, **kw) -> list[int]:
    se = expect_to_sync(exp, **kw)
    assert se is not None
    return [a for a, _ in se.to_attrs()]


def test_ports_follow_the_masters_protocol_and_timeout_the_commit_setting():
    ids = attr_ids(ftp_expect())
    assert ids == [ExpAttr.MASTER_IPV4, ExpAttr.MASTER_L4PROTO, ExpAttr.MASTER_PORT,
                   ExpAttr.EXPECT_IPV4, ExpAttr.EXPECT_L4PROTO, ExpAttr.EXPECT_PORT,
                   ExpAttr.MASK_IPV4, ExpAttr.MASK_L4PROTO, ExpAttr.MASK_PORT,
                   ExpAttr.TIMEOUT, ExpAttr.FLAGS, ExpAttr.CLASS, ExpAttr.HELPER_NAME]
    assert ExpAttr.MASTER_PORT not in attr_ids(ftp_expect(proto=47))  # GRE: no port group (exp_l4proto_fcn)
    assert ExpAttr.TIMEOUT not in attr_ids(ftp_expect(), timeout=False)  # CommitTimeout set: not sent


def test_ipv6_nat_tuple_is_not_sent():
    exp = ftp_expect()
    exp.nat_tuple, exp.nat_dir = Tuple(AF_INET6, bytes(16), bytes(16), 6, 1, 2), 1
    assert ExpAttr.NAT_DIR not in attr_ids(exp)
    exp.nat_tuple = Tuple(AF_INET, A, B, 6, 1, 2)
    assert attr_ids(exp)[-4:-1] == [ExpAttr.NAT_L4PROTO, ExpAttr.NAT_PORT, ExpAttr.NAT_DIR]


def test_wire_round_trip_rebuilds_the_expectation():
    exp = ftp_expect()
    msg = decode_message(encode_expect_message(MsgType.EXP_NEW, expect_to_sync(exp), 7))
    back = sync_to_expect(msg.expect())
    assert (back.master, back.tuple, back.mask) == (exp.master, exp.tuple, exp.mask)
    assert (back.timeout, back.helper, back.flags, back.klass) == (299, "ftp", 0, 0)


def test_external_cache_new_replaces_upd_updates_del_removes():
    c = ExpCache("external")
    external_exp_apply(c, True, False, ftp_expect(timeout=100), 1)
    external_exp_apply(c, True, False, ftp_expect(timeout=200), 2)
    assert len(c) == 1 and next(iter(c)).exp.timeout == 200 and next(iter(c)).lifetime == 2
    external_exp_apply(c, False, False, ftp_expect(timeout=50), 3)
    assert len(c) == 1 and next(iter(c)).exp.timeout == 50 and next(iter(c)).lifetime == 2
    external_exp_apply(c, False, True, ftp_expect(), 4)
    assert len(c) == 0
    external_exp_apply(c, False, False, ftp_expect(), 5)  # UPD of an unknown one creates it
    assert len(c) == 1
