"""argv -> Request values (what C computes for each option), without the kernel or the C binary."""

from __future__ import annotations

import shlex

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conntrack_tools.cli import options as O
from conntrack_tools.cli.batch import parse_batch_file, parse_batch_requests, tokenize_line
from conntrack_tools.cli.errors import CliError
from conntrack_tools.cli.help import extension_help_text, usage_text, version_text
from conntrack_tools.cli.labelmap import read_labelmap
from conntrack_tools.cli.libc import c_atoi, c_strtoul, inet_aton
from conntrack_tools.cli.parse import parse_args
from conntrack_tools.cli.request import AF_INET, AF_INET6, AF_UNSPEC, Command, Table
from tests.conftest import REFERENCE

HELP_REF = REFERENCE / "c-tools-behaviour" / "help_conntrack.txt"


def p(line: str, **kw):
    return parse_args(shlex.split(line), **kw)


def err(line: str, **kw) -> CliError:
    with pytest.raises(CliError) as info:
        p(line, **kw)
    return info.value


# --- commands, tables, family -----------------------------------------------------------------

@pytest.mark.parametrize("line,command,table", [
    ("-L", Command.LIST, Table.CONNTRACK),
    ("-L expect", Command.LIST, Table.EXPECT),
    ("-L e", Command.LIST, Table.EXPECT),
    ("-L ''", Command.LIST, Table.EXPECT),  # strncmp(name, "", 0) matches the first table
    ("-L dy", Command.LIST, Table.DYING),
    ("-L unconfirmed", Command.LIST, Table.UNCONFIRMED),
    ("-Lexpect", Command.LIST, Table.CONNTRACK),  # glued optional arg is ignored in 1.4.7
    ("--dump=expect", Command.LIST, Table.CONNTRACK),
    ("--dump expect", Command.LIST, Table.EXPECT),
    ("-C expect", Command.COUNT, Table.EXPECT),
    ("-S", Command.STATS, Table.CONNTRACK),
    ("-E expect", Command.EVENT, Table.EXPECT),
    ("-F", Command.FLUSH, Table.CONNTRACK),
    ("-V", Command.VERSION, Table.CONNTRACK),
    ("-h", Command.HELP, Table.CONNTRACK),
    ("", Command.NONE, Table.CONNTRACK),
    ("foo bar", Command.NONE, Table.CONNTRACK),
    ("conntrack -L conntrack", Command.LIST, Table.CONNTRACK),
    ("--del", Command.DELETE, Table.CONNTRACK),
])
def test_commands(line, command, table):
    req = p(line)
    assert (req.command, req.table) == (command, table)


def test_load_file():
    req = parse_args(["-R", "-"])
    assert req.command is Command.LOAD_FILE and req.load_file == "-"
    assert err("-R").message == "unknown option `-R'"


@pytest.mark.parametrize("line,family", [
    ("-L", AF_UNSPEC), ("-D", AF_UNSPEC), ("-E", AF_UNSPEC), ("-F", AF_UNSPEC), ("-U", AF_UNSPEC),
    ("-L expect", AF_INET), ("-C", AF_INET), ("-S", AF_INET), ("-L -f ipv6", AF_INET6),
    ("-L -f ipv4foo", AF_INET), ("-L -s ::1", AF_INET6), ("-L -n 1.2.3.4", AF_INET),
])
def test_family(line, family):
    assert p(line).family == family


# --- addresses ----------------------------------------------------------------------------------

@pytest.mark.parametrize("text,packed", [
    ("1.2.3.4", bytes([1, 2, 3, 4])), ("1.2", bytes([1, 0, 0, 2])), ("1.2.3", bytes([1, 2, 0, 3])),
    ("16909060", bytes([1, 2, 3, 4])), ("0x7f.1", bytes([127, 0, 0, 1])), ("010.0.0.1", bytes([8, 0, 0, 1])),
    ("1.2.3.4 junk", bytes([1, 2, 3, 4])), ("1.2.3.4\t", bytes([1, 2, 3, 4])),
    ("1.2.3.256", None), ("1.2.3.4.5", None), ("08", None), ("0x", None), (" 1.2.3.4", None), ("", None),
    ("1.16777216", None), ("4294967296", None), ("1..2", None), ("-1", None),
])
def test_inet_aton(text, packed):
    assert inet_aton(text) == packed


def test_cidr_and_masks():
    req = p("-L -s 10.0.0.1/8 -d 10.1.1.1/32")
    assert req.orig.src == bytes([10, 0, 0, 1]) and req.mask.src == bytes([255, 0, 0, 0])
    assert req.mask.dst is None and "mask-dst" not in req.options  # /32 sets no mask
    assert {"src", "dst", "mask-src"} <= req.options
    req = p("-L -s 2001:db8::1/33")
    assert req.mask.src == bytes([255, 255, 255, 255, 128]) + bytes(11)
    assert p("-L -s 1.2.3.4/").mask.src == bytes(4)  # strtol("") consumed nothing -> 0
    assert err("-L -s 1.2.3.4/33").message == "Invalid netmask"
    assert err("-L -r 1.2.3.4/24").message == "CIDR notation unavailable for `--reply-src'"
    req = p("-I expect -s 1.1.1.1 -d 2.2.2.2 -p udp --sport 1 --dport 2 --tuple-src 3.3.3.0/24 "
            "--tuple-dst 4.4.4.4 --mask-dst 255.255.0.0 --mask-port-src 0 --mask-port-dst 65535 "
            "--tuple-port-src 0 --tuple-port-dst 5000 -t 10")
    assert req.exp.src == bytes([3, 3, 3, 0]) and req.mask.src == bytes([255, 255, 255, 0])
    assert req.mask.dst == bytes([255, 255, 0, 0]) and req.exp.dport == 5000 and req.exp.l4proto == 17


def test_nat():
    req = p("-L -n 1.2.3.4:80 -g")
    assert req.src_nat.addr == bytes([1, 2, 3, 4]) and req.src_nat.port == 80
    assert req.dst_nat.addr is None and req.dst_nat.port is None
    req = p("-L -j [::1]:443")
    assert req.any_nat.addr == bytes(15) + b"\x01" and req.any_nat.port == 443 and req.family == AF_INET6
    assert p("-L --src-nat=1.2.3.4").src_nat.addr is None  # optarg given => C ignores it
    assert p("-L -n ::1").src_nat.addr == bytes(15) + b"\x01"
    assert err("-L -n [::1]").message == "Invalid IP address `[::1]'"
    assert err("-L -n 1.1.1.1:").message == "No port specified after `:'"
    assert err("-L -j -n").message == "cannot specify `--src-nat' or `--dst-nat' with `--any-nat'"


# --- numbers as C computes them -----------------------------------------------------------------

@pytest.mark.parametrize("text,value", [
    ("80", 80), ("70000", 70000), ("abc", 0), (" 12x", 12), ("-1", -1), ("+7", 7),
    ("4294967297", 1), ("99999999999999999999", -1), ("0x10", 0),
])
def test_atoi(text, value):
    assert c_atoi(text) == value


@pytest.mark.parametrize("text,value", [
    ("0x10", 16), ("010", 8), ("10", 10), ("-1", 2**64 - 1), ("0xg", 0), ("", 0), ("99999999999999999999", 2**64 - 1),
])
def test_strtoul(text, value):
    assert c_strtoul(text) == value


def test_lenient_values():
    req = p("-L -p tcp --sport 70000 --dport abc -w 70000 -m xyz -c 0x10 --orig-zone 65536")
    assert (req.orig.sport, req.orig.dport, req.zone, req.orig_zone) == (4464, 0, 4464, 0)
    assert (req.mark_value, req.mark_mask, req.secmark) == (0, 0xFFFFFFFF, 16)
    req = p("-I -s 1.1.1.1 -d 2.2.2.2 -p udp --sport 1 --dport 2 -t abc")
    assert req.timeout == 0
    assert p("-I -s 1.1.1.1 -d 2.2.2.2 -p udp --sport 1 --dport 2 -t -1").timeout == 0xFFFFFFFF
    assert p("-E -b -1").buffer_size == 2**64 - 1
    assert p("-L -m 0x10/0xff").mark_filter == (16, 255)
    assert p("-L -m /5").mark_filter == (0, 5)
    assert p("-D --id=7").id == 7


def test_status_and_mark_quirk():
    req = p("-L -u ASSURED,!SEEN_REPLY")
    assert req.status == 4 and req.status_filter == (4, 2)
    assert p("-L -u UNREPLIED").status_filter == (0, 2)
    assert p("-L -u a,s").warnings == ["WARNING: ignoring SRC_NAT, use --src-nat instead"]
    req = p("-I -s 1.1.1.1 -d 2.2.2.2 -p udp --sport 1 --dport 2 -t 5 -m 5 -u ASSURED")
    assert req.mark_value == 4  # C: -u overwrites tmpl->mark.value
    assert err("-L -u ASSURED,FOO").message == "Bad parameter `FOO'"
    assert err("-L -u FOO,ASSURED").message == "Bad parameter `FOO,ASSURED'"


def test_keyword_lists():
    assert p("-L -o x,e").output == frozenset({"xml", "extended"})
    assert p("-L -o i,k,t,u").output == frozenset({"id", "ktimestamp", "timestamp"})
    assert p("-L -o json").output == frozenset({"json"})  # our extension
    assert p("-L -o save").output_mask == O.O_SAVE
    assert p("-E -e NEW,d").event_mask == O.EVENT_NEW  # "d" is swallowed as DST_NAT (with a warning)
    assert p("-E -e new,DESTROY").event_mask == O.EVENT_NEW | O.EVENT_DESTROY
    assert p("-E -e a").event_mask == 7
    e = err("-L -o save,xml")
    assert e.exit_code == 1 and str(e).endswith("use -o save only\n")


# --- protocols --------------------------------------------------------------------------------

@pytest.mark.parametrize("name,proto,num", [
    ("tcp", "tcp", 6), ("TCP", "tcp", 6), ("6", "tcp", 6), ("0x6", "tcp", 6), (" 6", "tcp", 6),
    ("igmp", "unknown", 2), ("IGMP", "unknown", 2), ("ipv6-icmp", "unknown", 58), ("58", "icmpv6", 58),
    ("200", "unknown", 200), ("-0", "unknown", 0), ("udplite", "udplite", 136), ("GRE", "gre", 47),
])
def test_findproto(name, proto, num):
    req = p(f"-L -p '{name}'")
    assert (req.proto, req.l4proto) == (proto, num)


def test_proto_options():
    req = p("-L -p tcp --state LISTEN --orig-port-s 5 --reply-port-dst 7")
    assert (req.state, req.orig.sport, req.reply.dport, req.reply.l4proto) == (9, 5, 7, 6)
    assert req.l4_options == frozenset({"state", "sport", "reply-port-dst"})
    req = p("-I -s 1.1.1.1 -d 2.2.2.2 -p tcp --sport 1 --dport 2 -t 5 --state TIME_WAIT")
    assert req.tcp_flags == 0x0E
    req = p("-I -s 1.1.1.1 -d 2.2.2.2 -p sctp --sport 1 --dport 2 -t 5 --state ESTABLISHED "
            "--orig-vtag 0x10 --reply-vtag -1")
    assert (req.state, req.sctp_vtag_orig, req.sctp_vtag_reply) == (4, 0, 0xFFFFFFFF)
    req = p("-I -s 1.1.1.1 -d 2.2.2.2 -p dccp --sport 1 --dport 2 -t 5 --state OPEN --role S")
    assert (req.state, req.dccp_role) == (4, 1)
    req = p("-I -s 1.1.1.1 -d 2.2.2.2 -r 2.2.2.2 -q 1.1.1.1 -p icmp --icmp-type 264 --icmp-code 0 --icmp-id 70000 -t 5")
    assert (req.icmp_type, req.icmp_code, req.icmp_id, req.reply.l4proto) == (8, 0, 4464, 1)
    req = p("-L -p gre --srckey 0x10 --reply-key-dst 070")
    assert (req.orig.sport, req.reply.dport) == (16, 56)
    req = p("-I -r 1.1.1.1 -q 2.2.2.2 -p 99 -t 5")
    assert req.reply.l4proto == 99  # unknown final_check copies L4PROTO into the reply
    # -p twice: options of both stay known, the value goes to the last handler's same code (as in C)
    assert err("-L -p tcp -p udp --state 1").message == "Illegal option `--tuple-port-src' with this command"


def test_tuple_port_l4proto_quirk():
    req = p("-I expect -s 1.1.1.1 -d 2.2.2.2 -p tcp --sport 1 --dport 21 --tuple-src 2.2.2.2 --tuple-dst 1.1.1.1 "
            "--mask-src 255.255.255.255 --mask-dst 255.255.255.255 --tuple-port-src 0 --tuple-port-dst 45000 "
            "--mask-port-src 0 --mask-port-dst 65535 -t 100")
    assert req.exp.l4proto == 175 and req.exp.dport == 45000


# --- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("line,message", [
    ("-L --bogus", "unknown option `--bogus'"),
    ("-L -Yx", "unknown option `-L'"),
    ("-L -p", "option `-p' requires an argument"),
    ("-L --sport 1", "unknown option `--sport'"),
    ("-L -p tcp -p tcp --spo 1", "unknown option `--spo'"),
    ("-L -D", "Invalid commands combination"),
    ("-U expect", "Can't do --update on expectations"),
    ("-C dying", "Can't do that command with tables `dying' and `unconfirmed'"),
    ("-L -s 1.1.1.1 -d ::1", "mismatched address family"),
    ("-I -s 1.1.1.1 -d 2.2.2.2 -p udp -t 5", "you have to specify `--sport' and `--dport'"),
    ("-I -s 1.1.1.1 -d 2.2.2.2 -p gre --reply-key-src 1 -t 5",
     "you have to specify `--reply-src-key' and `--reply-dst-key'"),
    ("-I -p tcp -r 1.1.1.1 -t 1", "you have to specify `--reply-src' and `--reply-dst'"),
    ("-G", "You need to supply the `--protonum' option for this command"),
    ("-L -z -s 1.1.1.1", "Can't use -z with filtering parameters"),
    ("-D --mask-src 255.0.0.0", "Can't use --mask-src without --src"),
    ("-L -p sctp --state FOO", "unknown SCTP state `FOO'"),  # C segfaults here
])
def test_error_messages(line, message):
    e = err(line)
    assert e.message == message and e.exit_code == 2
    assert str(e) == (f"conntrack v1.4.7 (conntrack-tools): {message}\n"
                      "Try `conntrack -h' or 'conntrack --help' for more information.\n")


def test_prog_in_first_arg_quirk():
    assert err("-Yx", prog="/usr/sbin/conntrack").message == "unknown option `/usr/sbin/conntrack'"


def test_id_without_value_is_required():
    # C 1.4.7 segfaults on `--id` without `=N`; we take the next word like 1.4.9.
    assert p("-D --id 5").id == 5
    assert err("-D --id").message == "option `--id' requires an argument"


def test_dying_ignores_zero_check():
    assert p("-L dying -z -s 1.1.1.1").table is Table.DYING


def test_event_buffer_defers_mask_check():
    req = p("-E -b 1000 --mask-src 255.0.0.0")
    assert req.deferred_error is not None and req.deferred_error.message == "Can't use --mask-src without --src"
    assert err("-E --mask-src 255.0.0.0").message == "Can't use --mask-src without --src"


def test_warnings():
    req = p("-I -s 1.1.1.1 -d 2.2.2.2 -p udp --sport 1 --dport 2 -t 5 -a x")
    assert req.warnings == ["WARNING: ignoring -a, deprecated option."]
    e = err("-L -a x -u FOO")
    assert str(e).startswith("WARNING: ignoring -a, deprecated option.\nconntrack v1.4.7")


# --- labels ---------------------------------------------------------------------------------------

def test_labels(tmp_path):
    conf = tmp_path / "connlabel.conf"
    conf.write_text("# comment\n0 eth0-in\n1\tbulk traffic  \n1 dup-bit\n0x2 x\n2000 toobig\n3 bad;name\n4 eth0-in\n")
    names, errtext = read_labelmap(str(conf))
    assert names == {"eth0-in": 0, "bulk traffic": 1, "x": 2} and errtext == ""
    req = p("-L -l eth0-in -l x,eth0-in", labelmap_path=str(conf))
    assert req.labels == frozenset({0, 2}) and req.warnings == []
    assert p("-U --label-del", labelmap_path=str(conf)).label_modify is None
    assert p("-U --label-add 'bulk traffic'", labelmap_path=str(conf)).label_modify == frozenset({1})
    e = err("-L -l nope", labelmap_path=str(conf))
    assert e.message == "unknown label 'nope'" and e.prelude == ()
    missing = str(tmp_path / "missing.conf")
    e = err("-L -l foo", labelmap_path=missing)
    assert str(e).startswith("nfct_labelmap_new: No such file or directory\n")
    assert p("-L -o labels", labelmap_path=missing).warnings == ["nfct_labelmap_new: No such file or directory"]
    empty = tmp_path / "empty.conf"
    empty.write_text("# nothing\n")
    assert p("-L -o labels", labelmap_path=str(empty)).warnings == ["nfct_labelmap_new: Success"]
    e = err("-U --label-del --label-add a", labelmap_path=missing)
    assert e.exit_code == 1 and e.message == "cannot use --label-add and --label-del at the same time"


# --- help / version ---------------------------------------------------------------------------------

def test_help_text_verbatim():
    with open(HELP_REF) as fh:
        ref = fh.read()
    assert ref == usage_text("conntrack") + "rc=0\n"
    assert version_text() == "conntrack v1.4.7 (conntrack-tools)\n"
    assert extension_help_text("tcp", 6).startswith("Proto `tcp' help:\n  --orig-port-src\t\toriginal source port\n")
    assert extension_help_text("unknown", 2) == "Proto `igmp' help:\n  no options (unsupported)\n"
    req = p("-h -p tcp --sport 1")
    assert req.command is Command.HELP and req.proto == "tcp"


# --- batch ------------------------------------------------------------------------------------

def test_tokenizer():
    assert tokenize_line(b'-A  -s "1.1.1.1" "a b"c "x\\"y" ""\n') == [
        b"-A", b"-s", b"1.1.1.1", b"a b", b"c", b'x"y', b""]
    assert tokenize_line(b"a\rb\tc") == [b"a\rb", b"c"]
    with pytest.raises(CliError, match="too many"):
        tokenize_line(b"x " * 254)
    assert len(tokenize_line(b"x " * 253)) == 253
    with pytest.raises(CliError, match="Parameter too long"):
        tokenize_line(b"x" * 1024)


def test_batch():
    data = b"# comment\n\n  -A -t 30 -u UNSET -s 1.1.1.1 -d 2.2.2.2 -p udp --sport 1 --dport 2\n-D -o xml\n-F\n"
    assert parse_batch_file(data) == [
        ["-A", "-t", "30", "-u", "UNSET", "-s", "1.1.1.1", "-d", "2.2.2.2", "-p", "udp",
         "--sport", "1", "--dport", "2"],
        ["-D", "-o", "xml"], ["-F"]]
    reqs = parse_batch_requests(data)
    assert [r.command for r in reqs] == [Command.ADD, Command.DELETE, Command.FLUSH]
    assert all(r.output == frozenset({"xml"}) for r in reqs)  # C's output_mask is global
    with pytest.raises(CliError, match="Cannot use command `-L' with --load-file"):
        parse_batch_requests(b"-A -s 1.1.1.1 -d 2.2.2.2 -p udp --sport 1 --dport 2 -t 1\n-L\n")
    with pytest.raises(CliError, match="`unknown'"):
        parse_batch_requests(b"   ")
    e = pytest.raises(CliError, parse_batch_requests, b"-D -u s\n-D -p foo\n").value
    assert e.prelude == ("WARNING: ignoring SRC_NAT, use --src-nat instead",)


# --- robustness -------------------------------------------------------------------------------------

_WORDS = st.sampled_from([
    "-L", "-I", "-U", "-D", "-G", "-E", "-F", "-A", "-C", "-S", "-V", "-h", "-s", "-d", "-r", "-q", "-p", "tcp",
    "udp", "sctp", "dccp", "icmp", "gre", "99", "-t", "-u", "-e", "-o", "-z", "-m", "-n", "-g", "-j", "-l",
    "--label-add", "--label-del", "-w", "-f", "ipv4", "ipv6", "--sport", "--dport", "--state", "--role",
    "--tuple-src", "--mask-src", "--icmp-type", "expect", "dying", "1.2.3.4", "::1", "1.2.3.4/24", "[::1]:80",
    "1.1.1.1:80", "ASSURED,!SEEN_REPLY", "xml,save", "--", "-", "!", "", "--s", "-Lexpect", "--src-nat=1.1.1.1",
])


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(_WORDS, st.text(max_size=12)), max_size=12))
def test_never_raises_anything_but_clierror(argv):
    try:
        parse_args(argv, labelmap_path="/nonexistent/connlabel.conf")
    except CliError as e:
        assert e.exit_code in (1, 2) and str(e).endswith("\n")


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300))
def test_batch_never_raises_anything_but_clierror(data):
    try:
        parse_batch_requests(data, labelmap_path="/nonexistent/connlabel.conf")
    except CliError:
        pass
