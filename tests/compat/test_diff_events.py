"""Differential: `conntrack -E` (C and ours side by side, every variant at once) over one scripted sequence.

All listeners start first (ready = their netlink sockets have joined multicast groups), then C's
-I/-U/-D, a TCP lifecycle and an FTP exchange with an expectation run in the namespace; SIGINT ends
every listener and each variant's masked stdout/stderr/exit code are compared (portid/progname masked).
XML variants only see kernel events: ours puts [USERSPACE] inside the XML element on purpose (docs/compat.md).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.compat import diffkit
from tests.compat.diffkit import drained, netlink_listeners, run, wait_for
from tests.conftest import C_CONNTRACK, PY_CONNTRACK, Netns, require_c_tools, require_root

pytestmark = [pytest.mark.compat, pytest.mark.root]

VARIANTS = [
    "-E", "-E -o extended,id", "-E -o ktimestamp", "-E -e NEW,DESTROY", "-E -e UPDATE", "-E -p tcp",
    "-E -p udp -o save", "-E -o save", "-E -o timestamp", "-E -o timestamp,ktimestamp,extended",
    "-E -o userspace", "-E -o xml -p tcp", "-E -s 10.77.9.1", "-E -f ipv6", "-E -m 5", "-E -o id",
    "-E expect", "-E expect -o timestamp", "-E expect -o xml", "-E -e DESTROY -o extended",
]
S = "-s 10.77.9.1 -d 10.77.9.2"
SCRIPT = [
    f"-I {S} -p udp --sport 1 --dport 2 -t 50 -m 5",
    f"-U {S} -p udp --sport 1 --dport 2 -m 6",
    f"-I {S} -p gre --srckey 1 --dstkey 2 -t 40",
    "-I -s fd77:9::1 -d fd77:9::2 -p udp --sport 3 --dport 4 -t 30 -u ASSURED",
    f"-D {S} -p udp --sport 1 --dport 2",
    "-D -f ipv6",
    f"-D {S} -p gre",
]
NFT = """table inet ctpy {
    ct helper ftp-std { type "ftp" protocol tcp; }
    chain out { type filter hook output priority 0; policy accept; tcp dport 21 ct helper set "ftp-std"; }
    chain inp { type filter hook input priority 0; policy accept; ct state established,related accept; }
}
"""


@pytest.fixture(scope="module")
def captured():
    require_root()
    require_c_tools()
    ns = Netns("devt")
    tmp = Path(tempfile.mkdtemp(prefix="ctpy-events-"))
    procs: list[tuple[str, str, subprocess.Popen]] = []
    try:
        assert ns.run(["nft", "-f", "-"], input=NFT).returncode == 0
        ns.run(["sysctl", "-qw", "net.netfilter.nf_conntrack_timestamp=1"], check=True)
        for i, args in enumerate(VARIANTS):
            for who, binary in (("C", C_CONNTRACK), ("ours", PY_CONNTRACK)):
                out = open(tmp / f"{i}.{who}.out", "w")
                err = open(tmp / f"{i}.{who}.err", "w")
                p = subprocess.Popen(ns.prefix() + [binary, *args.split()], stdout=out, stderr=err,
                                     stdin=subprocess.DEVNULL)
                out.close()
                err.close()
                procs.append((args, who, p))
        wait_for(lambda: netlink_listeners(ns) >= sum(p.poll() is None for _a, _w, p in procs), 20,
                 "event listeners")
        me = [sys.executable, diffkit.__file__]
        for line in SCRIPT:
            r = run(ns, C_CONNTRACK, line)
            assert r.rc == 0, r.show()
        ns.run(me + ["tcp-lo", "4022"], check=True)
        ns.run(me + ["ftp-lo", "127.0.0.1", "40021"], check=True)
        run(ns, C_CONNTRACK, "-F expect")
        # every event is queued by the time the commands above return: wait until the listeners read them all
        wait_for(drained(ns), 20, "event listeners drained")
        for _a, _w, p in procs:
            p.send_signal(signal.SIGINT)
        results: dict[str, dict[str, diffkit.Result]] = {}
        for i, (args, who, p) in enumerate(procs):
            rc = p.wait(10)
            idx = i // 2
            res = diffkit.Result((tmp / f"{idx}.{who}.out").read_text(), (tmp / f"{idx}.{who}.err").read_text(), rc)
            results.setdefault(args, {})[who] = res.masked()
        yield results
    finally:
        for _a, _w, p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        ns.close()
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()


@pytest.mark.parametrize("args", VARIANTS)
def test_same_events(captured, args):
    c, py = captured[args]["C"], captured[args]["ours"]
    assert c.out or c.err, "C printed nothing"
    if c != py:
        pytest.fail(f"conntrack {args}: ours differs from C\n{diffkit._diff(c, py)}", pytrace=False)
