"""Direct injection never replaces a live kernel entry that an update in place can keep (hitless #13).

Against the real kernel, in a fresh namespace: the injector creates a master flow, an expected flow
(the create names the master, so the kernel marks it IPS_EXPECTED as the FTP helper would) and an
assured flow; then the peer's states arrive again as a bulk would bring them: the expected flow with a
new TCP state, the assured flow from an older state without ASSURED (the kernel refuses to clear it).
Each entry must keep its conntrack id (not deleted and re-created: between the two a packet of the
flow finds no entry and a strict ruleset drops it as invalid, the lab's `stop` flake) and take the
new TCP state.
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.conftest import REPO, Netns, require_root

pytestmark = [pytest.mark.root]

SCRIPT = r"""
import json, sys
from ipaddress import IPv4Address as A
from conntrack_tools.daemon.ctnl import CtnlSocket
from conntrack_tools.daemon.sync.external import Injector
from conntrack_tools.daemon.sync.wire import FlowTuple, SyncFlow

SEEN, ASSURED, CONFIRMED, EXPECTED = 2, 4, 8, 1
master = FlowTuple(A("10.0.0.1"), A("10.9.0.1"), 6, 40000, 21)
data = FlowTuple(A("10.0.0.1"), A("10.9.0.1"), 6, 40001, 30000)
plain = FlowTuple(A("10.0.0.2"), A("10.9.0.1"), 6, 40002, 7777)
ESTABLISHED, FIN_WAIT = 3, 4
inj = Injector(CtnlSocket())
step = sys.argv[1]
if step == "create":
    inj.new(SyncFlow(master, status=SEEN | ASSURED | CONFIRMED, tcp_state=ESTABLISHED, timeout=300))
    inj.flush()
    inj.new(SyncFlow(data, status=SEEN | ASSURED | CONFIRMED | EXPECTED, tcp_state=ESTABLISHED, timeout=300,
                     master=master))
    inj.new(SyncFlow(plain, status=SEEN | ASSURED | CONFIRMED, tcp_state=ESTABLISHED, timeout=300))
else:  # the peer's bulk: NEW for the expected flow, an UPD from before ASSURED for the plain one
    inj.new(SyncFlow(data, status=SEEN | ASSURED | CONFIRMED | EXPECTED, tcp_state=FIN_WAIT, timeout=200,
                     master=master))
    inj.upd(SyncFlow(plain, status=CONFIRMED, tcp_state=FIN_WAIT, timeout=200))
inj.flush()
print(json.dumps({**inj.stats, "replaced": inj.replaced, "kept_status": inj.kept_status}))
"""


def entries(ns: Netns) -> dict[int, tuple[str, str]]:
    """dport -> (conntrack id, TCP state) of the namespace's TCP entries."""
    out = ns.run(["conntrack", "-L", "-p", "tcp", "-o", "id"])
    assert out.returncode == 0, out.stderr
    got = {}
    for line in out.stdout.splitlines():
        f = line.split()
        dport = int(next(x for x in f if x.startswith("dport=")).split("=")[1])
        got[dport] = (next(x for x in f if x.startswith("id=")), f[3])
    return got


def inject(ns: Netns, step: str) -> dict:
    r = ns.run([sys.executable, "-c", SCRIPT, step], cwd=REPO)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_updates_keep_expected_and_assured_entries_in_place():
    require_root()
    ns = Netns("injkeep")
    try:
        created = inject(ns, "create")
        assert created["add_ok"] == 3 and created["add_fail"] == 0, created
        before = entries(ns)
        assert set(before) == {21, 30000, 7777}
        updated = inject(ns, "update")
        assert updated["add_ok"] == 1 and updated["upd_ok"] == 1, updated
        assert updated["replaced"] == 0, updated  # nothing deleted and re-created
        assert updated["kept_status"] == 1, updated  # the plain flow's older status was left out
        after = entries(ns)
        for dport in (30000, 7777):
            assert after[dport][0] == before[dport][0], f"dport {dport} was re-created: {before} -> {after}"
            assert after[dport][1] == "FIN_WAIT", after
    finally:
        ns.close()
