"""Shared fixtures: where ../shared is, root detection, throwaway network namespaces."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CT_SHARED", REPO.parent / "shared"))
REFERENCE = SHARED / "reference"
C_CONNTRACK = "/usr/sbin/conntrack"
PY_CONNTRACK = str(Path(sys.executable).with_name("conntrack"))
IS_ROOT = os.geteuid() == 0
IN_CI = os.environ.get("CI") == "true"


def require_root() -> None:
    """Root tests always run in CI (as root); elsewhere they skip with the reason."""
    if not IS_ROOT:
        if IN_CI:
            pytest.fail("CI must run as root: netns tests cannot be skipped there")
        pytest.skip("needs root for network namespaces and ctnetlink")


def require_c_tools() -> None:
    if not shutil.which(C_CONNTRACK):
        if IN_CI:
            pytest.fail(f"{C_CONNTRACK} missing: .ci/run must install the conntrack package")
        pytest.skip(f"{C_CONNTRACK} not installed (apt-get install conntrack)")


def stop_process(proc: subprocess.Popen | None, timeout: float = 5, sig: int = signal.SIGTERM) -> None:
    """Signal a daemon we started (SIGTERM, or ``sig``), SIGKILL it if it does not exit in time, and reap it."""
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class Netns:
    """A throwaway network namespace named ctpy-<purpose>-<id>, deleted on close."""

    def __init__(self, purpose: str):
        self.name = f"ctpy-{purpose}-{uuid.uuid4().hex[:6]}"
        subprocess.run(["ip", "netns", "add", self.name], check=True)
        subprocess.run(["ip", "-n", self.name, "link", "set", "lo", "up"], check=True)

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def run(self, argv: list[str], **kw) -> subprocess.CompletedProcess:
        kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        return subprocess.run(self.prefix() + argv, **kw)

    def sh(self, script: str, **kw) -> subprocess.CompletedProcess:
        return self.run(["bash", "-c", script], **kw)

    def close(self) -> None:
        subprocess.run(["ip", "netns", "delete", self.name], check=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI a skip is a failure: every skip condition here (root, C tools, keepalived, nft, the shared
    reference data) is something .ci/run provides, so a skip there means a missing install step.  An xfail
    too: it would pass CI without proving anything (docs/testing.md lists every skip and why)."""
    outcome = yield
    report = outcome.get_result()
    if IN_CI and report.skipped:
        if hasattr(report, "wasxfail"):
            what, reason = "xfailed", report.wasxfail
            del report.wasxfail
        else:
            what = "skipped"
            reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.outcome = "failed"
        report.longrepr = f"{what} in CI (CI=true), which must run every test: {reason}"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Every skipped test with its reason, so a local run (where skips stay skips) shows what did not run."""
    skipped = [r for r in terminalreporter.stats.get("skipped", []) if not hasattr(r, "wasxfail")]
    if not skipped:
        return
    terminalreporter.write_sep("=", f"{len(skipped)} skipped: not run here (CI=true fails them)", yellow=True)
    for report in skipped:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        terminalreporter.write_line(f"SKIPPED {report.nodeid}: {reason.removeprefix('Skipped: ')}")


@pytest.fixture
def netns(request):
    require_root()
    ns = Netns(request.node.name[:8].strip("_[").lower().replace("_", "") or "t")
    yield ns
    ns.close()
