"""A quick round of bench/sync_latency.py (the full run is `make bench`'s neighbour, by hand): every probe flow
created in the sender's kernel reaches the receiver's kernel, C's pair and ours, with direct injection.

Latency figures are the benchmark's business (docs/benchmarks.md); here only completeness and the table's shape,
so the script that measures the failover race window keeps working."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.root]


def test_every_probe_reaches_the_receivers_kernel():
    r = subprocess.run([sys.executable, "bench/sync_latency.py", "--probes", "50", "--load", "0",
                        "--pairs", "c-c,py-py", "--timeout", "2"],
                       cwd=REPO, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = re.findall(r"^\| (C|ours) → (C|ours) \| 0 \| (\d+)/(\d+) \| ([\d.]+) \|", r.stdout, re.M)
    assert [(s, d, seen, sent) for s, d, seen, sent, _p50 in rows] == [
        ("C", "C", "50", "50"), ("ours", "ours", "50", "50")], r.stdout
    assert all(float(p50) > 0 for *_rest, p50 in rows), r.stdout
