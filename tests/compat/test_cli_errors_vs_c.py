"""Differential test: our parser's CliError vs /usr/sbin/conntrack 1.4.7 on bad command lines.

Every command line here fails while C parses it, so C never touches a table; it still runs in
a throwaway network namespace (`ctpy-parse-<pid>`) so that a mistake cannot hit the host.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess

import pytest

from conntrack_tools.cli.batch import parse_batch_requests
from conntrack_tools.cli.errors import CliError
from conntrack_tools.cli.parse import parse_args
from tests.conftest import REFERENCE

C_BIN = "/usr/sbin/conntrack"
TESTSUITE = REFERENCE / "upstream-tests" / "conntrack-testsuite"

pytestmark = [
    pytest.mark.compat,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to create a network namespace"),
    pytest.mark.skipif(not os.path.exists(C_BIN) or shutil.which("ip") is None,
                       reason="needs the C conntrack 1.4.7 and iproute2"),
]

# One line per error family (and then some); all fail at parse time in C.
BAD_LINES: list[str] = [
    # getopt: unknown / ambiguous / missing arguments, argv[optind-1] quirks
    "-L --bogus", "-Y", "-L -Yx", "-Yx", "-L --s 1", "--=x", "-L --zero=5", "-L -:", "-L -?",
    "-L --orig 1", "-L --d", "-L --reply 1.1.1.1", "-L -s", "--src", "-L -p", "-L --protonum",
    "-L -p tcp --sport", "-L -o", "-L -m", "-L --mark", "-E -b", "-L -w", "-L --zone", "-L -R",
    "-L --load-file x", "-R", "-L -p tcp -p tcp --spo 1", "-L --version=1",
    "-L -p tcp --state", "-I -t", "-L --label-add", "-L -l", "-L -f", "-L -x", "-L -5",
    # protocol options only after -p
    "-L --sport 80", "-L --state ESTABLISHED", "-L --sport 10 -p tcp", "-L -p udp --state NEW",
    "-L -p icmp --sport 1", "-L -p gre --sport 1", "-L -p 99 --sport 1",
    # findproto
    "-L -p foo", "-L -p 300", "-L -p 256", "-L -p -10", "-L -p 20foo", "-L -p foo20", "-L -p ''",
    "-L -p 0x100", "-L -p unknown", "-L -p ' 6x'",
    # commands and tables
    "-L -D", "-L -F", "-E -C", "-I -A", "-V -h", "-L foo", "-L expectx", "-C dying", "-S unconfirmed",
    "-D dying", "-U expect", "-A expect", "-U e", "-h foo", "-V bar", "-L dy -D",
    # family inference
    "-L -s 10.77.9.1 -d fd77::1", "-L -f ipv6 -s 10.77.9.1", "-L -f ipx", "-L -f ipv", "-L -f IPV4",
    "-L -s ::1 -f ipv4", "-L -s 1.1.1.1 -r ::1", "-L -n ::1 -s 1.1.1.1",
    # addresses
    "-L -s 10.77.9.300", "-L -s notanip", "-L -s fd77::zz", "-L -s ''", "-L -s 1.2.3.4.5",
    "-L -s 1.2.3.256", "-L -s 08.1.1.1", "-L -s 0x", "-L -s 1.2.3.4x", "-L -s 1.16777216",
    "-L -s 4294967296", "-L -s ' 1.2.3.4'", "-L -s 1..2", "-L -s [::1]", "-L -s 1.2.3.4/33",
    "-L -s 1.2.3.4/-1", "-L -s 1.2.3.4/x", "-L -s ::1/129", "-L -s 1.2.3.4/24x", "-L -r 1.2.3.4/24",
    "-L -q ::1/64", "-L --mask-src 1.2.3.4/24", "-L -d 300.1.1.1/8", "-L -s 1.2.3.4/4294967329",
    # NAT syntax
    "-L --dst-nat 1.1.1.1:", "-L --dst-nat 1.1.1.1::", "-L --dst-nat 1.1.1.1:80:80", "-L --dst-nat 1.1.1.1:65536",
    "-L --dst-nat [2001:DB8::1.1.1.1]:", "-L --dst-nat [2001:DB8::1.1.1.1]::", "-L --dst-nat [::1]:80:80",
    "-L --dst-nat [::1]:65536", "-L -n []:80", "-L -n [::1", "-L -n [::1]", "-L -n foo:80", "-L -n 1.2.3.4:+80",
    "-L -n 1.2.3.4:-1", "-L -n '1.2.3.4: 80'", "-L -g 1.2.3.4/24", "-L -j 1.2.3.4:99999999999999999999",
    "-L -n 1.2.3.4:80/24", "-L -j ::1/64",
    # keyword lists
    "-L -u FOO", "-L -u ASSURED,FOO", "-L -u ,ASSURED", "-L -u ASSURED,", "-L -u '!'", "-L -u '!,ASSURED'",
    "-L -u ASSUREDX", "-L -u SRC_NAT,x", "-L -u UNREP", "-L -u 'ASSURED,,SEEN'", "-E -e FOO", "-E -e NEW,BAR",
    "-E -e ''", "-L -o foo", "-L -o xml,foo", "-L -o ''", "-L -o json2", "-E -e S,X",
    # save combined (exit 1)
    "-L -o save,xml", "-L -o xml -o save", "-L -o save,extended", "-L -o save -o id",
    # legality table
    "-C -p tcp", "-S -p tcp", "-F -s 10.77.9.1", "-L -t 10", "-L -e NEW", "-L -b 100000",
    "-L expect -s 10.77.9.1", "-G -w 1 -s 1.1.1.1 -d 2.2.2.2 -p tcp --sport 1 --dport 2", "-I -f ipv4",
    "-I -c 1", "-U -w 1", "-U --orig-zone 1", "-G -z", "-V -s 1.1.1.1", "-h -s 1.1.1.1", "-F expect -f ipv4",
    "-L --tuple-src 1.1.1.1", "-D -e NEW", "-E -t 5", "-C expect -o xml", "-S -z", "-L -i 5", "-I -j",
    "-D -j", "-E expect -s 1.1.1.1", "-L --label-del x", "-F -m 1",
    # compulsory and coupled
    "-I -d 10.77.9.2 -p udp --sport 1 --dport 2 -t 5", "-I -s 10.77.9.1 -d 10.77.9.2 -t 5",
    "-I -s 1.1.1.1 -d 2.2.2.2 -p udp -t 5", "-I -s 1.1.1.1 -d 2.2.2.2 -p icmp -t 5", "-G",
    "-G -p tcp", "-G -p tcp -r 1.1.1.1", "-G -s 1.1.1.1 -r 2.2.2.2 -p tcp", "-I -p udp -t 1 -r 1.1.1.1 -q 2.2.2.2",
    "-I -s 1.1.1.1 -d 2.2.2.2 -p tcp --sport 1 --dport 2 -t 5",
    "-I -s 1.1.1.1 -d 2.2.2.2 -p tcp --reply-port-src 1 -t 5 --state NONE",
    "-I -s 1.1.1.1 -d 2.2.2.2 -p gre --srckey 1 -t 5", "-I -s 1.1.1.1 -d 2.2.2.2 -p gre --reply-key-dst 1 -t 5",
    "-I -s 1.1.1.1 -d 2.2.2.2 -p sctp --sport 1 --dport 2 -t 5",
    "-I -s 1.1.1.1 -d 2.2.2.2 -p sctp --sport 1 --dport 2 -t 5 --state CLOSED",
    "-I -s 1.1.1.1 -d 2.2.2.2 -p dccp --sport 1 --dport 2 -t 5 --state OPEN",
    "-I -s 1.1.1.1 -d 2.2.2.2 -p icmp --icmp-type 8 -t 5", "-I -s ::1 -d ::2 -p icmpv6 --icmpv6-code 0 -t 5",
    "-G expect -p tcp -s 10.77.9.1 -d 10.77.9.2 --sport 1 --dport 2", "-I expect -s 1.1.1.1",
    "-D expect -p udp -s 1.1.1.1 -d 2.2.2.2", "-I expect -s 1.1.1.1 -d 2.2.2.2 -p tcp -t 5",
    "-L -p tcp --mask-port-src 1", "-L -p tcp --tuple-port-src 1", "-U -p tcp --mask-port-dst 1",
    "-L -p sctp --orig-vtag 1", "-L -p dccp --role client", "-G -p icmp -s 1.1.1.1 -d 2.2.2.2",
    "-L -p tcp -p udp --state FOO",
    # extension value errors
    "-L -p tcp --state FOO", "-L -p tcp --state established", "-L -p dccp --state FOO",
    "-L -p dccp --role foo", "-L -p dccp --role clients",
    # nat / label / zero / mask combinations
    "-L --dst-nat --any-nat", "-L --src-nat --any-nat", "-L -j -n", "-L -l foo", "-L --label-add foo",
    "-U --label-add a --label-del b", "-U --label-del --label-add a", "-L -z -s 1.1.1.1", "-L -z -p tcp",
    "-L -z -m 1", "-L -z -u ASSURED", "-L -z -w 1", "-L -z -s 1.1.1.0/24", "-L --mask-src 255.0.0.0",
    "-D --mask-dst 255.0.0.0", "-U --mask-src ::", "-L -d 1.1.1.1 --mask-src 255.0.0.0",
    "-L -o labels -l foo", "-L -o labels,save",
    # warnings printed before the error
    "-L -a x -u FOO", "-L -u SRC_NAT -p foo", "-L -o d -o xy", "-L -e s -u FOO", "-L --nat-range 1 -f ipx",
    # stray words, permutation
    "-L -e s", "-L -p dccp --role ''", "-L --dump", "-L -s 1.2.3.4/32 -z", "-L -l ''",
    "conntrack -L -p foo", "-L x y -s 1.1.1.1 -D", "-L - -p foo",
]


def _testsuite_lines() -> list[str]:
    lines = []
    if not TESTSUITE.is_dir():
        return lines
    for path in sorted(TESTSUITE.iterdir()):
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            if not line or line[0] in "# " or ";" not in line:
                continue
            args = line.split(";", 1)[0].strip()
            if "-R" not in args.split():
                lines.append(args)
    return lines


def _ours(args: list[str]) -> CliError | None:
    try:
        parse_args(args, prog=C_BIN)
    except CliError as err:
        return err
    return None


@pytest.fixture(scope="module")
def netns():
    name = f"ctpy-parse-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def _run_c(netns: str, args: list[str]) -> tuple[str, str, int]:
    proc = subprocess.run(["ip", "netns", "exec", netns, C_BIN, *args], capture_output=True, timeout=10,
                          env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C"})
    return proc.stdout.decode(errors="surrogateescape"), proc.stderr.decode(errors="surrogateescape"), proc.returncode


def test_enough_cases():
    assert len(BAD_LINES) >= 100
    assert len(set(BAD_LINES)) == len(BAD_LINES)


@pytest.mark.parametrize("line", BAD_LINES)
def test_bad_line_matches_c(netns, line):
    args = shlex.split(line)
    ours = _ours(args)
    assert ours is not None, f"we accept {line!r}"
    out, err, rc = _run_c(netns, args)
    assert rc in (1, 2), f"C did not fail at parse time: rc={rc} {err!r}"
    assert out == ""
    assert (str(ours), ours.exit_code) == (err, rc)


# Only the upstream lines we reject at parse time are run through C (others would touch a table).
UPSTREAM_BAD = [line for line in _testsuite_lines() if _ours(shlex.split(line)) is not None]


def test_upstream_has_parse_errors():
    assert len(UPSTREAM_BAD) >= 40


@pytest.mark.parametrize("line", UPSTREAM_BAD)
def test_upstream_testsuite_parse_errors_match_c(netns, line):
    args = shlex.split(line)
    ours = _ours(args)
    assert ours is not None
    out, err, rc = _run_c(netns, args)
    assert (str(ours), ours.exit_code) == (err, rc)


# -R batch files that C rejects before executing anything (all lines are parsed first).
BAD_BATCHES: list[bytes] = [
    b"-A -t 30 -s 10.77.9.5 -d 10.77.9.6 -p udp --sport 10 --dport 20\n-L\n",
    b"-D\n-G -s 1.1.1.1 -d 2.2.2.2 -p tcp --sport 1 --dport 2\n",
    b"-D\n-E\n", b"-V\n", b"-h\n", b"-C\n", b"-S\n", b"-L expect\n", b"-F expect\n",
    b"-D expect -p tcp -s 1.1.1.1 -d 2.2.2.2 --sport 1 --dport 2 --reply-port-src 1 --reply-port-dst 2\n",
    b"-I expect --orig-src 1.1.1.1 --orig-dst 2.2.2.2 --tuple-src 2.2.2.2 --tuple-dst 1.1.1.1 "
    b"--mask-src 255.255.255.255 --mask-dst 255.255.255.255 -p udp --sport 1 --dport 21 "
    b"--tuple-port-src 0 --tuple-port-dst 5000 "
    b"--mask-port-src 0 --mask-port-dst 65535 -t 100\n",
    b"   \n\t# comment\n  ", b"-D\n-D -p foo\n", b"-D -u S\n-D -u FOO\n", b"-D -o xml\n-D -o save\n",
    b"-D -o labels\n-D -l x\n", b"-D \"-p\" \"foo bar\"\n", b'-D -s "1.1.1.1\\"\n', b'-D -p ""\n',
    b"-D " + b"x" * 1100 + b"\n", b"-D" + b" x" * 300 + b"\n", b"-D -s 1.1.1.1\r -L\r\n", b'-D "-s"1.1.1.1 -L\n',
    b"-U -p tcp\n-D --sport 1\n", b"-D -p tcp\n-I -s 1.1.1.1 -d 2.2.2.2 -t 1\n",
]


@pytest.mark.parametrize("data", BAD_BATCHES, ids=range(len(BAD_BATCHES)))
def test_bad_batch_matches_c(netns, data):
    try:
        parse_batch_requests(data, prog=C_BIN)
    except CliError as err:
        ours = err
    else:
        pytest.fail("we accept the batch")
    proc = subprocess.run(["ip", "netns", "exec", netns, C_BIN, "-R", "-"], input=data, capture_output=True,
                          timeout=10)
    assert (str(ours), ours.exit_code) == (proc.stderr.decode(errors="surrogateescape"), proc.returncode)
