"""Beyond C: the readiness file (keepalived track_file) says 0 only once the resync is in.

Node A (ours or C 1.4.7) holds N flows; node B (ours, ``General { Readiness { File  Weight -100 } }``)
starts afterwards. B's file must hold -100 from its start until its external cache holds all N of
A's flows, then 0, and -100 again after B stops. A ready B that asks again as a backup (``-n``:
keepalived restarted, the daemon did not) holds -100 until that bulk is in; as the primary it stays
ready. Two nodes on one multicast segment (tests/netns/sync_mesh.py), FTFW and NOTRACK, ours and C as
the peer that answers the resync.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.netns.sync_mesh import Mesh, Node, ns, wait_for
from tests.netns.test_sync_resync import burst_keys

pytestmark = [pytest.mark.root]

N = int(os.environ.get("CTPY_READINESS_N", "20000"))


@contextmanager
def _pair(tmp_path, peer: str, mode: str = "ftfw") -> Iterator[tuple[Node, Node, Path]]:
    """A (``peer``: ours or C) and B (ours, with a readiness file) on one segment; neither started."""
    with Mesh() as mesh:
        nodes = []
        try:
            for i in (1, 2):
                mesh.add(i)
            ready = tmp_path / "ready"
            a = Node(tmp_path, 1, impl=peer, mode=mode)
            b = Node(tmp_path, 2, mode=mode, extra_general=f" Readiness {{\n  File {ready}\n  Weight -100\n }}\n")
            nodes = [a, b]
            yield a, b, ready
        finally:
            for n in nodes:
                n.stop()


def _values(path, until: str, seconds: float) -> list[str]:
    """The file's successive values, until it holds ``until`` or ``seconds`` passed."""
    seen, t0 = [], time.monotonic()
    while time.monotonic() - t0 < seconds:
        value = path.read_text().strip() if path.exists() else None
        if value is not None and (not seen or seen[-1] != value):
            seen.append(value)
        if value == until:
            break
        time.sleep(0.01)
    return seen


@pytest.mark.parametrize("peer", ["py", "c"])
@pytest.mark.parametrize("mode", ["ftfw", "notrack"])
def test_ready_only_once_the_peers_state_is_in(tmp_path, mode, peer):
    with _pair(tmp_path, peer, mode) as (a, b, ready):
        a.start()
        r = ns(a.ns, sys.executable, "bench/populate.py", str(N), "udp", timeout=60)
        assert r.returncode == 0, r.stderr
        wait_for(lambda: a.count("-i") >= N, 60, f"{N} flows in A's internal cache")
        b.start(wait=False)
        t0 = time.monotonic()
        seen = _values(ready, "0", 60)
        got = b.external()
        secs = time.monotonic() - t0
        print(f"\n{mode}, peer {peer}: file {seen} after {secs:.1f} s; B holds {len(got)} of {N}")
        assert seen and seen[0] == "-100" and seen[-1] == "0", seen
        assert len(burst_keys(N) - got) == 0, f"ready with {len(burst_keys(N) - got)} flows missing"
        b.stop()
        assert ready.read_text() == "-100\n"


@pytest.mark.parametrize("peer", ["py", "c"])
def test_a_backup_asking_again_is_not_ready_until_that_bulk_is_in(tmp_path, peer):
    with _pair(tmp_path, peer) as (a, b, ready):
        a.start()
        b.start()
        assert _values(ready, "0", 30)[-1] == "0"
        n = N // 4
        r = ns(a.ns, sys.executable, "bench/populate.py", str(n), "udp", timeout=60)
        assert r.returncode == 0, r.stderr
        assert b.client("-t").returncode == 0  # the backup hook: -t, then -n
        assert b.client("-n").returncode == 0
        seen = _values(ready, "0", 30)
        print(f"\npeer {peer}: after -n the file went {seen}")
        assert seen[0] == "-100" and seen[-1] == "0", seen
        assert "waiting for the resync asked for" in b.logs()
        assert len(burst_keys(n) - b.external()) == 0  # ready again only with A's state in
        assert b.client("-c").returncode == 0  # the primary hook starts with the commit
        assert b.client("-n").returncode == 0  # a manual -n on the primary must not move the VIPs
        time.sleep(0.5)
        assert ready.read_text() == "0\n"


def test_the_transition_record_says_what_readiness_waits_on(tmp_path):
    with _pair(tmp_path, "py") as (a, b, ready):
        b.start()  # its peer is not there yet

        def waiting_on() -> list[str]:
            return json.loads(b.client("-s", "network", "-o", "json").stdout)["transition"]["waiting_on"]

        wait_for(lambda: waiting_on() == ["no peer heard since the request", "resync request not through"], 10,
                 "B waiting on its absent peer", show=waiting_on)
        assert ready.read_text() == "-100\n"
        a.start()
        assert _values(ready, "0", 30)[-1] == "0"
        assert waiting_on() == []
