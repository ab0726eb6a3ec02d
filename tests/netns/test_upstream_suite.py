"""The upstream CLI testsuite (286 cases) against our `conntrack`, in a fresh network namespace."""

from __future__ import annotations

import pytest

from tests.conftest import C_CONNTRACK, PY_CONNTRACK, REFERENCE, require_c_tools, require_root
from tests.netns.upstream_suite import run_suite

SUITE = REFERENCE / "upstream-tests" / "conntrack-testsuite"

pytestmark = pytest.mark.root


def _run(netns, binary):
    if not SUITE.is_dir():
        pytest.fail(f"upstream testsuite not found at {SUITE} (set CT_SHARED)")
    results = run_suite(SUITE, binary, netns.prefix())
    failed = [r for r in results if not r.passed]
    report = "\n".join(f"{r.file}:{r.lineno}: rc={r.rc} expected {'OK' if r.expect_ok else 'BAD'}: {r.args}"
                       for r in failed)
    return results, failed, report


def test_upstream_suite_ours(netns):
    require_root()
    results, failed, report = _run(netns, PY_CONNTRACK)
    assert len(results) == 286
    assert not failed, f"{len(failed)}/{len(results)} failed:\n{report}"


def test_upstream_suite_c_baseline(netns):
    """The same runner passes the C tool: proves the runner, not just our binary."""
    require_c_tools()
    results, failed, report = _run(netns, C_CONNTRACK)
    assert len(results) == 286
    assert not failed, report
