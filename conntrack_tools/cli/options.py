"""Option tables of conntrack 1.4.7 as data (src/conntrack.c, extensions/libct_proto_*.c).

Everything the parser needs to behave like C lives here: the getopt string, the long option
arrays (order matters: getopt_long takes the first exact match and reports prefixes that hit
options with different values as ambiguous), the command x option legality matrix, and the
per-protocol extension tables that `-p` merges in at 256*k offsets.
"""

from __future__ import annotations

from collections import namedtuple  # typing.NamedTuple would add ~3 ms of imports to startup

NO_ARG, REQUIRED_ARG, OPTIONAL_ARG = 0, 1, 2
OPTION_OFFSET = 256

# getopt_str of 1.4.7: commands take an *optional glued* argument (`-Lexpect`), which
# get_optional_arg() then ignores -- so `-Lexpect` lists the conntrack table.
GETOPT_STR = ":L::I::U::D::G::E::F::A::hVs:d:r:q:p:t:u:e:a:z[:]:{:}:m:i:f:o:n::g::c:b:C::Sj::w:l:<:>::(:):"


# struct option: (name, has_arg, val)
LongOpt = namedtuple("LongOpt", "name has_arg val")


def _lo(name: str, has_arg: int, ch: str) -> LongOpt:
    return LongOpt(name, has_arg, ord(ch))


# `original_opts`. Deviation: C declares --id as optional_argument and then segfaults on
# `--id` without `=VALUE` (strtoul(NULL)); we make it required like 1.4.9 does.
ORIGINAL_OPTS: tuple[LongOpt, ...] = (
    _lo("dump", 2, "L"),
    _lo("create", 2, "I"),
    _lo("add", 2, "A"),
    _lo("delete", 2, "D"),
    _lo("update", 2, "U"),
    _lo("get", 2, "G"),
    _lo("flush", 2, "F"),
    _lo("event", 2, "E"),
    _lo("counter", 2, "C"),
    _lo("stats", 0, "S"),
    _lo("version", 0, "V"),
    _lo("help", 0, "h"),
    _lo("orig-src", 1, "s"),
    _lo("src", 1, "s"),
    _lo("orig-dst", 1, "d"),
    _lo("dst", 1, "d"),
    _lo("reply-src", 1, "r"),
    _lo("reply-dst", 1, "q"),
    _lo("protonum", 1, "p"),
    _lo("timeout", 1, "t"),
    _lo("status", 1, "u"),
    _lo("zero", 0, "z"),
    _lo("event-mask", 1, "e"),
    _lo("tuple-src", 1, "["),
    _lo("tuple-dst", 1, "]"),
    _lo("mask-src", 1, "{"),
    _lo("mask-dst", 1, "}"),
    _lo("nat-range", 1, "a"),
    _lo("mark", 1, "m"),
    _lo("secmark", 1, "c"),
    _lo("id", 1, "i"),
    _lo("family", 1, "f"),
    _lo("src-nat", 2, "n"),
    _lo("dst-nat", 2, "g"),
    _lo("output", 1, "o"),
    _lo("buffer-size", 1, "b"),
    _lo("any-nat", 2, "j"),
    _lo("zone", 1, "w"),
    _lo("label", 1, "l"),
    _lo("label-add", 1, "<"),
    _lo("label-del", 2, ">"),
    _lo("orig-zone", 1, "("),
    _lo("reply-zone", 1, ")"),
)

# enum ct_command bit numbers (include/conntrack.h). NO_COMMAND is bit2cmd(0) == 20: C indexes
# one past the table there; observed behaviour is an all-illegal row.
CT_LIST, CT_CREATE, CT_UPDATE, CT_DELETE, CT_GET, CT_FLUSH, CT_EVENT, CT_VERSION, CT_HELP = range(9)
EXP_LIST, EXP_CREATE, EXP_DELETE, EXP_GET, EXP_FLUSH, EXP_EVENT = range(9, 15)
CT_COUNT, EXP_COUNT, CT_STATS, EXP_STATS, CT_ADD = range(15, 20)
NO_COMMAND = 20
NUMBER_OF_CMD = 20

# cmd2type: command letter -> (conntrack-table bit, expect-table bit); None = no such command.
CMD2TYPE: dict[str, tuple[int, int | None]] = {
    "L": (CT_LIST, EXP_LIST),
    "I": (CT_CREATE, EXP_CREATE),
    "D": (CT_DELETE, EXP_DELETE),
    "G": (CT_GET, EXP_GET),
    "F": (CT_FLUSH, EXP_FLUSH),
    "E": (CT_EVENT, EXP_EVENT),
    "V": (CT_VERSION, CT_VERSION),
    "h": (CT_HELP, CT_HELP),
    "C": (CT_COUNT, EXP_COUNT),
    "S": (CT_STATS, EXP_STATS),
    "U": (CT_UPDATE, None),
    "A": (CT_ADD, None),
}

# -R batch mode: the text printed for commands it refuses (`ct_unsupp_cmd_parse_file`,
# including upstream's "-C expect" label for EXP_CREATE). Missing bits print "unknown".
BATCH_ALLOWED = frozenset({CT_CREATE, CT_ADD, CT_UPDATE, CT_DELETE, CT_FLUSH})
BATCH_UNSUPPORTED_TEXT: dict[int, str] = {
    CT_LIST: "-L",
    CT_GET: "-G",
    CT_EVENT: "-E",
    CT_VERSION: "-V",
    CT_HELP: "-h",
    EXP_LIST: "-L expect",
    EXP_CREATE: "-C expect",
    EXP_DELETE: "-D expect",
    EXP_GET: "-G expect",
    EXP_FLUSH: "-F expect",
    EXP_EVENT: "-E expect",
    CT_COUNT: "-C",
    EXP_COUNT: "-C expect",
    CT_STATS: "-S",
    EXP_STATS: "-S expect",
}

# enum ct_options, in bit order: (short option char, optflags name).
OPTIONS: tuple[tuple[str, str], ...] = (
    ("s", "src"),
    ("d", "dst"),
    ("r", "reply-src"),
    ("q", "reply-dst"),
    ("p", "protonum"),
    ("t", "timeout"),
    ("u", "status"),
    ("z", "zero"),
    ("e", "event-mask"),
    ("[", "tuple-src"),
    ("]", "tuple-dst"),
    ("{", "mask-src"),
    ("}", "mask-dst"),
    ("a", "nat-range"),
    ("m", "mark"),
    ("i", "id"),
    ("f", "family"),
    ("n", "src-nat"),
    ("g", "dst-nat"),
    ("o", "output"),
    ("c", "secmark"),
    ("b", "buffer-size"),
    ("j", "any-nat"),
    ("w", "zone"),
    ("l", "label"),
    ("<", "label-add"),
    (">", "label-del"),
    ("(", "orig-zone"),
    (")", "reply-zone"),
)
OPT_NAMES: tuple[str, ...] = tuple(name for _, name in OPTIONS)
OPT_BIT: dict[str, int] = {name: i for i, name in enumerate(OPT_NAMES)}

# CT_COMPARISON: options that make -L a filtered dump (forbidden together with -z).
CT_COMPARISON = frozenset(
    {"protonum", "src", "dst", "reply-src", "reply-dst", "mark", "secmark", "status", "id", "zone",
     "label", "orig-zone", "reply-zone"}
)

# commands_v_options, one digit per OPTIONS column:
# 0 illegal, 1 compulsory, 2 optional, 3 "need --src+--dst or --reply-src+--reply-dst".
#                    s d r q p t u z e [ ] { } a m i f n g o c b j w l < > ( )
COMMANDS_V_OPTIONS: dict[int, str] = {
    CT_LIST:    "22222022000220202222202220022",
    CT_CREATE:  "33331120000002200220000202022",
    CT_UPDATE:  "22222220000220222222000022200",
    CT_DELETE:  "22222220000220222222000220022",
    CT_GET:     "33331000000000020002000020000",
    CT_FLUSH:   "00000000000000002000000000000",
    CT_EVENT:   "22222000200220202222222220022",
    CT_VERSION: "00000000000000000000000000000",
    CT_HELP:    "00002000000000000000000000000",
    EXP_LIST:   "00000000000000002002000000000",
    EXP_CREATE: "11221120011110000000000000000",
    EXP_DELETE: "11221000000000000000000000000",
    EXP_GET:    "11221000000000000000000000000",
    EXP_FLUSH:  "00000000000000000000000000000",
    EXP_EVENT:  "00000000000000000002000000000",
    CT_COUNT:   "00000000000000000000000000000",
    EXP_COUNT:  "00000000000000000000000000000",
    CT_STATS:   "00000000000000000000000000000",
    EXP_STATS:  "00000000000000000000000000000",
    CT_ADD:     "33331120000002200220000202022",
    NO_COMMAND: "00000000000000000000000000000",
}

# addr_valid_flags: the two "coupled" pairs and the message for each partial match.
COUPLED_PAIRS: tuple[tuple[str, str], ...] = (("src", "dst"), ("reply-src", "reply-dst"))
COUPLED_MESSAGES = ("you have to specify `--src' and `--dst'", "you have to specify `--reply-src' and `--reply-dst'")

# Keyword lists (`parse_array`): matched by case-insensitive prefix of the user's token, first
# match wins. "json" is OUR extension to -o (appended last so C's prefixes keep their meaning).
IPS_EXPECTED, IPS_SEEN_REPLY, IPS_ASSURED = 1, 2, 4
IPS_FIXED_TIMEOUT, IPS_OFFLOAD, IPS_HW_OFFLOAD = 1 << 10, 1 << 14, 1 << 15
STATUS_KEYWORDS: tuple[tuple[str, int], ...] = (
    ("ASSURED", IPS_ASSURED),
    ("SEEN_REPLY", IPS_SEEN_REPLY),
    ("UNSET", 0),
    ("FIXED_TIMEOUT", IPS_FIXED_TIMEOUT),
    ("EXPECTED", IPS_EXPECTED),
    ("OFFLOAD", IPS_OFFLOAD),
    ("HW_OFFLOAD", IPS_HW_OFFLOAD),
)
EVENT_NEW, EVENT_UPDATE, EVENT_DESTROY = 1, 2, 4
EVENT_KEYWORDS: tuple[tuple[str, int], ...] = (
    ("ALL", EVENT_NEW | EVENT_UPDATE | EVENT_DESTROY),
    ("NEW", EVENT_NEW),
    ("UPDATES", EVENT_UPDATE),
    ("DESTROY", EVENT_DESTROY),
)
O_XML, O_EXT, O_TMS, O_ID, O_KTMS, O_CL, O_SAVE, O_JSON = (1 << i for i in range(8))
OUTPUT_KEYWORDS: tuple[tuple[str, int], ...] = (
    ("xml", O_XML),
    ("extended", O_EXT),
    ("timestamp", O_TMS),
    ("id", O_ID),
    ("ktimestamp", O_KTMS),
    ("labels", O_CL),
    ("userspace", 0),
    ("save", O_SAVE),
    ("json", O_JSON),
)
OUTPUT_FLAG_NAMES: dict[int, str] = {bit: name for name, bit in OUTPUT_KEYWORDS if bit}
# -o save may not be combined with these (C: everything but userspace).
O_SAVE_CONFLICTS = O_EXT | O_TMS | O_ID | O_KTMS | O_CL | O_XML | O_JSON

# Tables accepted after a command, matched as `strncmp(name, word, strlen(word))` in this order.
TABLE_NAMES: tuple[str, ...] = ("expect", "conntrack", "dying", "unconfirmed")


# ---------------------------------------------------------------------------------------------
# Protocol extensions (extensions/libct_proto_*.c)
# ---------------------------------------------------------------------------------------------

# What one extension option does: set `field` of `target` from the argument, set bit `flag`.
#   target: "orig" | "reply" | "mask" | "exp" (tuples) or "req" (Request attribute);
#   conv: "atoi16" (htons(atoi())), "strtoul16" (GRE keys), "atoi8", "atoi32", "state", "role";
#   l4: protocol number the option also stores in that tuple's L4PROTO (None: untouched,
#   -1: the upstream bug that stores (u8)htons(port) in the expectation tuple's L4PROTO).
ExtAction = namedtuple("ExtAction", "flag target field conv l4", defaults=(None,))

# One protocol extension (struct ctproto_handler + its tables):
#   opts: (long name, val before offset), all required-argument, in C's order;
#   optflags: names per flag bit (None pads to C's NUMBER_OF_OPT);
#   legality: command bit -> digits per flag (absent rows are all 0);
#   coupled_messages: for the flag pairs (0,1) and (2,3), None when there is no coupling.
ProtoExt = namedtuple("ProtoExt", "name protonum opts optflags legality actions coupled_messages states state_error",
                      defaults=((), ""))


def _c(s: str) -> int:
    return ord(s)


def _port_actions(proto: int, exp_l4: int, keys: bool = False) -> dict[int, ExtAction]:
    """The common port option set: codes '1'..'6' plus the expectation tuple ports."""
    conv = "strtoul16" if keys else "atoi16"
    return {
        _c("1"): ExtAction(0, "orig", "sport", conv, proto),
        _c("2"): ExtAction(1, "orig", "dport", conv, proto),
        _c("3"): ExtAction(2, "reply", "sport", conv, proto),
        _c("4"): ExtAction(3, "reply", "dport", conv, proto),
        _c("5"): ExtAction(4, "mask", "sport", conv, proto),
        _c("6"): ExtAction(5, "mask", "dport", conv, proto),
    }


def _rows(**rows: str) -> dict[int, str]:
    names = {
        "L": CT_LIST, "I": CT_CREATE, "U": CT_UPDATE, "D": CT_DELETE, "G": CT_GET, "F": CT_FLUSH,
        "E": CT_EVENT, "V": CT_VERSION, "h": CT_HELP, "xL": EXP_LIST, "xI": EXP_CREATE,
        "xD": EXP_DELETE, "xG": EXP_GET, "xF": EXP_FLUSH, "xE": EXP_EVENT, "A": CT_ADD,
    }
    return {names[k]: v for k, v in rows.items()}


_PORT_MSGS = ("you have to specify `--sport' and `--dport'",
              "you have to specify `--reply-src-port' and `--reply-dst-port'")

TCP_STATES = ("NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK",
              "TIME_WAIT", "CLOSE", "SYN_SENT2")
# SCTP_CONNTRACK_MAX is 10 in libnetfilter_conntrack 1.0.9 but the name table has 8 entries:
# C strcmp()s NULL and segfaults on an unknown name; we report it as intended instead.
SCTP_STATES = ("NONE", "CLOSED", "COOKIE_WAIT", "COOKIE_ECHOED", "ESTABLISHED", "SHUTDOWN_SENT",
               "SHUTDOWN_RECD", "SHUTDOWN_ACK_SENT")
DCCP_STATES = ("NONE", "REQUEST", "RESPOND", "PARTOPEN", "OPEN", "CLOSEREQ", "CLOSING", "TIMEWAIT",
               "IGNORE", "INVALID")
TCP_CONNTRACK_TIME_WAIT = 7
TCP_CONNTRACK_LISTEN = 9
IP_CT_TCP_FLAG_SACK_PERM, IP_CT_TCP_FLAG_CLOSE_INIT, IP_CT_TCP_FLAG_BE_LIBERAL = 0x02, 0x04, 0x08

_UDP_ROWS = _rows(L="2222", I="3333", U="2222", D="2222", G="3333", E="2222",
                  xI="11001111", xD="1111", xG="1111", A="3333")

TCP = ProtoExt(
    name="tcp",
    protonum=6,
    opts=(("orig-port-src", _c("1")), ("sport", _c("1")), ("orig-port-dst", _c("2")), ("dport", _c("2")),
          ("reply-port-src", _c("3")), ("reply-port-dst", _c("4")), ("mask-port-src", _c("5")),
          ("mask-port-dst", _c("6")), ("state", _c("7")), ("tuple-port-src", _c("8")),
          ("tuple-port-dst", _c("9"))),
    optflags=("sport", "dport", "reply-port-src", "reply-port-dst", "mask-port-src", "mask-port-dst",
              "state", "tuple-port-src", "tuple-port-dst", None),
    legality=_rows(L="222200200", I="333300100", U="222200200", D="222200200", G="333300200",
                   E="222200200", xI="110011011", xD="111100000", xG="111100000", A="333300100"),
    actions={**_port_actions(6, -1),
             _c("7"): ExtAction(6, "req", "state", "state"),
             _c("8"): ExtAction(7, "exp", "sport", "atoi16", -1),
             _c("9"): ExtAction(8, "exp", "dport", "atoi16", -1)},
    coupled_messages=_PORT_MSGS,
    states=TCP_STATES,
    state_error="unknown TCP state `%s'",
)

UDP = ProtoExt(
    name="udp",
    protonum=17,
    opts=(("orig-port-src", _c("1")), ("sport", _c("1")), ("orig-port-dst", _c("2")), ("dport", _c("2")),
          ("reply-port-src", _c("3")), ("reply-port-dst", _c("4")), ("mask-port-src", _c("5")),
          ("mask-port-dst", _c("6")), ("tuple-port-src", _c("7")), ("tuple-port-dst", _c("8"))),
    optflags=("sport", "dport", "reply-port-src", "reply-port-dst", "mask-port-src", "mask-port-dst",
              "tuple-port-src", "tuple-port-dst", None),
    legality=_UDP_ROWS,
    actions={**_port_actions(17, 17),
             _c("7"): ExtAction(6, "exp", "sport", "atoi16", 17),
             _c("8"): ExtAction(7, "exp", "dport", "atoi16", 17)},
    coupled_messages=_PORT_MSGS,
)

UDPLITE = ProtoExt(
    name="udplite",
    protonum=136,
    opts=(("orig-port-src", _c("1")), ("orig-port-dst", _c("2")), ("reply-port-src", _c("3")),
          ("reply-port-dst", _c("4")), ("mask-port-src", _c("5")), ("mask-port-dst", _c("6")),
          ("tuple-port-src", _c("7")), ("tuple-port-dst", _c("8")), ("sport", _c("1")), ("dport", _c("2"))),
    optflags=("sport", "dport", "reply-port-src", "reply-port-dst", "mask-port-src", "mask-port-dst",
              "tuple-port-src", "tuple-port-dst", None, None, None),
    legality=_UDP_ROWS,
    actions={**_port_actions(136, 136),
             _c("7"): ExtAction(6, "exp", "sport", "atoi16", 136),
             _c("8"): ExtAction(7, "exp", "dport", "atoi16", 136)},
    coupled_messages=_PORT_MSGS,
)

SCTP = ProtoExt(
    name="sctp",
    protonum=132,
    opts=(("orig-port-src", 1), ("orig-port-dst", 2), ("reply-port-src", 3), ("reply-port-dst", 4),
          ("mask-port-src", 5), ("mask-port-dst", 6), ("state", 7), ("tuple-port-src", 8),
          ("tuple-port-dst", 9), ("orig-vtag", 10), ("reply-vtag", 11), ("sport", 1), ("dport", 2)),
    optflags=("sport", "dport", "reply-port-src", "reply-port-dst", "mask-port-src", "mask-port-dst",
              "state", "tuple-port-src", "tuple-port-dst", "orig-vtag", "reply-vtag", None, None, None),
    legality=_rows(L="22220020000", I="33330010011", U="22220020022", D="22220020000", G="33330020022",
                   E="22220020000", xI="11001101111", xD="11110000000", xG="11110000000",
                   A="33330010011"),
    actions={1: ExtAction(0, "orig", "sport", "atoi16", 132),
             2: ExtAction(1, "orig", "dport", "atoi16", 132),
             3: ExtAction(2, "reply", "sport", "atoi16", 132),
             4: ExtAction(3, "reply", "dport", "atoi16", 132),
             5: ExtAction(4, "mask", "sport", "atoi16", 132),
             6: ExtAction(5, "mask", "dport", "atoi16", 132),
             7: ExtAction(6, "req", "state", "state"),
             8: ExtAction(7, "exp", "sport", "atoi16", -1),
             9: ExtAction(8, "exp", "dport", "atoi16", -1),
             10: ExtAction(9, "req", "sctp_vtag_orig", "atoi32"),
             11: ExtAction(10, "req", "sctp_vtag_reply", "atoi32")},
    coupled_messages=_PORT_MSGS,
    states=SCTP_STATES,
    state_error="unknown SCTP state `%s'",
)

DCCP = ProtoExt(
    name="dccp",
    protonum=33,
    opts=(("orig-port-src", 1), ("orig-port-dst", 2), ("reply-port-src", 3), ("reply-port-dst", 4),
          ("mask-port-src", 5), ("mask-port-dst", 6), ("state", 7), ("tuple-port-src", 8),
          ("tuple-port-dst", 9), ("sport", 1), ("dport", 2), ("role", 10)),
    optflags=("sport", "dport", "reply-port-src", "reply-port-dst", "mask-port-src", "mask-port-dst",
              "state", "tuple-port-src", "tuple-port-dst", "role", None, None, None),
    legality=_rows(L="2222002000", I="3333001001", U="2222002000", D="2222002000", G="3333002000",
                   E="2222002000", xI="1100110111", xD="1111000000", xG="1111000000", A="3333001001"),
    actions={1: ExtAction(0, "orig", "sport", "atoi16", 33),
             2: ExtAction(1, "orig", "dport", "atoi16", 33),
             3: ExtAction(2, "reply", "sport", "atoi16", 33),
             4: ExtAction(3, "reply", "dport", "atoi16", 33),
             5: ExtAction(4, "mask", "sport", "atoi16", 33),
             6: ExtAction(5, "mask", "dport", "atoi16", 33),
             7: ExtAction(6, "req", "state", "state"),
             8: ExtAction(7, "exp", "sport", "atoi16", -1),
             9: ExtAction(8, "exp", "dport", "atoi16", -1),
             10: ExtAction(9, "req", "dccp_role", "role")},
    coupled_messages=_PORT_MSGS,
    states=DCCP_STATES,
    state_error="Unknown DCCP state `%s'",
)
DCCP_ROLES = ("client", "server")

_ICMP_ROWS = _rows(L="222", I="112", U="222", D="222", G="112", E="222", A="112")


def _icmp(name: str, protonum: int, prefix: str) -> ProtoExt:
    return ProtoExt(
        name=name,
        protonum=protonum,
        opts=((f"{prefix}-type", _c("1")), (f"{prefix}-code", _c("2")), (f"{prefix}-id", _c("3"))),
        optflags=(f"{prefix}-type", f"{prefix}-code", f"{prefix}-id", None),
        legality=_ICMP_ROWS,
        actions={_c("1"): ExtAction(0, "req", "icmp_type", "atoi8", protonum),
                 _c("2"): ExtAction(1, "req", "icmp_code", "atoi8", protonum),
                 _c("3"): ExtAction(2, "req", "icmp_id", "atoi16", protonum)},
        coupled_messages=None,
    )


ICMP = _icmp("icmp", 1, "icmp")
ICMPV6 = _icmp("icmpv6", 58, "icmpv6")

GRE = ProtoExt(
    name="gre",
    protonum=47,
    opts=(("orig-key-src", _c("1")), ("srckey", _c("1")), ("orig-key-dst", _c("2")), ("dstkey", _c("2")),
          ("reply-key-src", _c("3")), ("reply-key-dst", _c("4")), ("mask-key-src", _c("5")),
          ("mask-key-dst", _c("6")), ("tuple-key-src", _c("7")), ("tuple-key-dst", _c("8"))),
    optflags=("srckey", "dstkey", "reply-key-src", "reply-key-dst", "mask-key-src", "mask-key-dst",
              "tuple-key-src", "tuple-key-dst", None, None, None),
    legality=_rows(L="2222", I="3333", U="2222", D="2222", G="3333", E="2222",
                   xI="11111111", xD="1111", xG="1111", A="3333"),
    actions={**_port_actions(47, 47, keys=True),
             _c("7"): ExtAction(6, "exp", "sport", "strtoul16", 47),
             _c("8"): ExtAction(7, "exp", "dport", "strtoul16", 47)},
    coupled_messages=("you have to specify `--srckey' and `--dstkey'",
                      "you have to specify `--reply-src-key' and `--reply-dst-key'"),
)

# The catch-all handler for any other protocol: no options, no checks.
UNKNOWN = ProtoExt(name="unknown", protonum=0, opts=(), optflags=(), legality={}, actions={},
                   coupled_messages=None)

# proto_list order: register_proto() uses list_add (prepend), so the *last* registered comes first.
EXTENSIONS: tuple[ProtoExt, ...] = (GRE, ICMPV6, ICMP, DCCP, SCTP, UDPLITE, UDP, TCP)
