"""nfnetlink / ctnetlink constants as data.

Values are from include/uapi/linux/netfilter/nfnetlink*.h and
nfnetlink_conntrack.h. Kept in one place so the codec, the socket shell and the
tests agree on them.
"""

from __future__ import annotations

import enum

NETLINK_NETFILTER = 12
SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_BROADCAST_ERROR = 4
NETLINK_NO_ENOBUFS = 5
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12
SO_RCVBUFFORCE = 33

# nlmsghdr types and flags
NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLMSG_OVERRUN = 4

NLM_F_REQUEST = 0x1
NLM_F_MULTI = 0x2
NLM_F_ACK = 0x4
NLM_F_ECHO = 0x8
NLM_F_DUMP_INTR = 0x10
NLM_F_ROOT = 0x100
NLM_F_MATCH = 0x200
NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
NLM_F_REPLACE = 0x100
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400

NLA_F_NESTED = 0x8000
NLA_F_NET_BYTEORDER = 0x4000
NLA_TYPE_MASK = 0x3FFF

NFNETLINK_V0 = 0
NFNL_SUBSYS_CTNETLINK = 1
NFNL_SUBSYS_CTNETLINK_EXP = 2


class CtMsg(enum.IntEnum):
    NEW = 0
    GET = 1
    DELETE = 2
    GET_CTRZERO = 3
    GET_STATS_CPU = 4
    GET_STATS = 5
    GET_DYING = 6
    GET_UNCONFIRMED = 7


class ExpMsg(enum.IntEnum):
    NEW = 0
    GET = 1
    DELETE = 2
    GET_STATS_CPU = 3


def ct_type(msg: int) -> int:
    return (NFNL_SUBSYS_CTNETLINK << 8) | msg


def exp_type(msg: int) -> int:
    return (NFNL_SUBSYS_CTNETLINK_EXP << 8) | msg


# Multicast groups (enum nfnetlink_groups).
NFNLGRP_CONNTRACK_NEW = 1
NFNLGRP_CONNTRACK_UPDATE = 2
NFNLGRP_CONNTRACK_DESTROY = 3
NFNLGRP_CONNTRACK_EXP_NEW = 4
NFNLGRP_CONNTRACK_EXP_UPDATE = 5
NFNLGRP_CONNTRACK_EXP_DESTROY = 6


class CTA(enum.IntEnum):
    TUPLE_ORIG = 1
    TUPLE_REPLY = 2
    STATUS = 3
    PROTOINFO = 4
    HELP = 5
    NAT_SRC = 6
    TIMEOUT = 7
    MARK = 8
    COUNTERS_ORIG = 9
    COUNTERS_REPLY = 10
    USE = 11
    ID = 12
    NAT_DST = 13
    TUPLE_MASTER = 14
    SEQ_ADJ_ORIG = 15
    SEQ_ADJ_REPLY = 16
    SECMARK = 17
    ZONE = 18
    SECCTX = 19
    TIMESTAMP = 20
    MARK_MASK = 21
    LABELS = 22
    LABELS_MASK = 23
    SYNPROXY = 24
    FILTER = 25
    STATUS_MASK = 26
    TIMESTAMP_EVENT = 27


class TupleAttr(enum.IntEnum):
    IP = 1
    PROTO = 2
    ZONE = 3


class IpAttr(enum.IntEnum):
    V4_SRC = 1
    V4_DST = 2
    V6_SRC = 3
    V6_DST = 4


class ProtoAttr(enum.IntEnum):
    NUM = 1
    SRC_PORT = 2
    DST_PORT = 3
    ICMP_ID = 4
    ICMP_TYPE = 5
    ICMP_CODE = 6
    ICMPV6_ID = 7
    ICMPV6_TYPE = 8
    ICMPV6_CODE = 9


class ProtoinfoAttr(enum.IntEnum):
    TCP = 1
    DCCP = 2
    SCTP = 3


class TcpAttr(enum.IntEnum):
    STATE = 1
    WSCALE_ORIGINAL = 2
    WSCALE_REPLY = 3
    FLAGS_ORIGINAL = 4
    FLAGS_REPLY = 5


class DccpAttr(enum.IntEnum):
    STATE = 1
    ROLE = 2
    HANDSHAKE_SEQ = 3


class SctpAttr(enum.IntEnum):
    STATE = 1
    VTAG_ORIGINAL = 2
    VTAG_REPLY = 3


class CountersAttr(enum.IntEnum):
    PACKETS = 1
    BYTES = 2
    PACKETS32 = 3
    BYTES32 = 4


class TimestampAttr(enum.IntEnum):
    START = 1
    STOP = 2


class HelpAttr(enum.IntEnum):
    NAME = 1
    INFO = 2


class NatAttr(enum.IntEnum):
    V4_MINIP = 1
    V4_MAXIP = 2
    PROTO = 3
    V6_MINIP = 4
    V6_MAXIP = 5


class ProtoNatAttr(enum.IntEnum):
    PORT_MIN = 1
    PORT_MAX = 2


class SeqAdjAttr(enum.IntEnum):
    CORRECTION_POS = 1
    OFFSET_BEFORE = 2
    OFFSET_AFTER = 3


class SecctxAttr(enum.IntEnum):
    NAME = 1


class SynproxyAttr(enum.IntEnum):
    ISN = 1
    ITS = 2
    TSOFF = 3


class FilterAttr(enum.IntEnum):
    ORIG_FLAGS = 1
    REPLY_FLAGS = 2


# CTA_FILTER flag bits: which tuple fields the kernel compares.
FILTER_IP_SRC = 1 << 0
FILTER_IP_DST = 1 << 1
FILTER_TUPLE_ZONE = 1 << 2
FILTER_PROTO_NUM = 1 << 3
FILTER_PROTO_SRC_PORT = 1 << 4
FILTER_PROTO_DST_PORT = 1 << 5
FILTER_ICMP_TYPE = 1 << 6
FILTER_ICMP_CODE = 1 << 7
FILTER_ICMP_ID = 1 << 8
FILTER_ICMPV6_TYPE = 1 << 9
FILTER_ICMPV6_CODE = 1 << 10
FILTER_ICMPV6_ID = 1 << 11


class ExpectAttr(enum.IntEnum):
    MASTER = 1
    TUPLE = 2
    MASK = 3
    TIMEOUT = 4
    ID = 5
    HELP_NAME = 6
    ZONE = 7
    FLAGS = 8
    CLASS = 9
    NAT = 10
    FN = 11


class ExpectNatAttr(enum.IntEnum):
    DIR = 1
    TUPLE = 2


# CTA_STATS_* for IPCTNL_MSG_CT_GET_STATS_CPU, in attribute order; the names are what `-S` prints.
CPU_STATS_NAMES: dict[int, str] = {
    1: "searched",
    2: "found",
    3: "new",
    4: "invalid",
    5: "ignore",
    6: "delete",
    7: "delete_list",
    8: "insert",
    9: "insert_failed",
    10: "drop",
    11: "early_drop",
    12: "error",
    13: "search_restart",
    14: "clash_resolve",
    15: "chaintoolong",
}
EXP_STATS_NAMES: dict[int, str] = {1: "expect_new", 2: "expect_create", 3: "expect_delete"}
STATS_GLOBAL_ENTRIES = 1
STATS_GLOBAL_MAX_ENTRIES = 2
