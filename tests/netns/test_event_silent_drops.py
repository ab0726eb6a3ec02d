"""Events the kernel drops without a second ENOBUFS still trigger a resync.

The kernel reports ENOBUFS on a netlink socket once per congestion episode: it sets a
"congested" bit with the error and clears it only when the socket's queue is empty again.
Events dropped while the bit is set (typically while the daemon is busy with the resync dump
the first ENOBUFS asked for) are lost without an error. C conntrackd never notices them, and
those flows stay missing on the backup. Our ``Ctnl.read_events`` also checks the socket's drop
counter (SO_MEMINFO). The script below runs in a fresh namespace and shows both facts: the
kernel's silent drops, and ``read_events`` asking for a resync because of them.
"""

from __future__ import annotations

import json
import sys

from tests.conftest import PY_CONNTRACK, REPO

SCRIPT = r"""
import errno, json, subprocess, sys
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[1] + "/bench")
from populate import populate
from conntrack_tools.daemon.config.parser import parse_config
from conntrack_tools.daemon.ctnl import Ctnl
from conntrack_tools.daemon.filter import compile_filter
from conntrack_tools.daemon.stats import RuntimeStats

cfg = parse_config("General {\n NetlinkBufferSize 8192\n NetlinkBufferSizeMaxGrowth 8192\n"
                   " NetlinkOverrunResync 1\n}\nStats {\n}\n")
stats = RuntimeStats()
ctnl = Ctnl(cfg, compile_filter(None), lambda lv, msg: None, stats)
s = ctnl.open_events()
out = {}
populate(2000, "udp")                    # far more than 8 KiB of events: overrun
try:
    s.recv()
    out["first_recv"] = "data"
except OSError as exc:
    out["first_recv"] = errno.errorcode[exc.errno]
ctnl._drops_seen = ctnl.drops()          # as read_events does after an ENOBUFS
s.recv()                                 # read one event: the queue is still not empty
subprocess.run([sys.argv[2], "-F"], capture_output=True, check=True)  # 2000 DESTROY events: more drops
enobufs_again = False
while True:                              # drain by hand: is there a second ENOBUFS?
    try:
        s.recv()
    except BlockingIOError:
        break
    except OSError as exc:
        enobufs_again = exc.errno == errno.ENOBUFS
        break
out["enobufs_again"] = enobufs_again
out["dropped_since"] = ctnl.drops() - ctnl._drops_seen
out["resync_asked"] = ctnl.read_events(lambda *a: None, 100000)
out["silent"] = stats.nl_silent_drops
out["resync_asked_again"] = ctnl.read_events(lambda *a: None, 100000)  # nothing new dropped
print(json.dumps(out))
"""


def test_silent_drops_ask_for_a_resync(netns):
    r = netns.run([sys.executable, "-c", SCRIPT, str(REPO), PY_CONNTRACK], timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["first_recv"] == "ENOBUFS"
    assert out["enobufs_again"] is False  # the kernel said nothing about the second batch of drops...
    assert out["dropped_since"] > 0  # ...but it dropped events
    assert out["resync_asked"] is True and out["silent"] == 1
    assert out["resync_asked_again"] is False
