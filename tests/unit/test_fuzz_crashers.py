"""Replay every input the fuzzers ever crashed on (tests/data/fuzz-crashers/<target>/*).

Each file once made a parser raise something else than its own error type (or hang). The
target of fuzz/targets.py named by the directory must now accept or reject it cleanly, fast.
New crashers from ``scripts/fuzz.sh`` (build/fuzz/artifacts/<target>/crash-*) are dropped
into the matching directory; nothing else needs changing.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from fuzz.targets import TARGETS, Crash, run
from tests.unit.steps import Hang, StepBudgetExceeded, count_steps, hang_guard

# lines of conntrack_tools one input may execute: ~7x the slowest recorded crasher (134k lines)
STEP_BUDGET = 1_000_000

CRASHERS = Path(__file__).resolve().parents[1] / "data" / "fuzz-crashers"
FILES = sorted(p for p in CRASHERS.glob("*/*") if p.is_file() and not p.name.startswith("README"))


def test_corpus_layout() -> None:
    assert FILES, "no crashers recorded"
    for p in FILES:
        assert p.parent.name in TARGETS, f"{p}: directory must be a target name ({', '.join(TARGETS)})"


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name[:24]}" for p in FILES])
def test_crasher_replays_cleanly(path: Path) -> None:
    try:
        with hang_guard(30):  # work inside C code (`re`) is not counted in lines
            outcome, _steps = count_steps(run, path.parent.name, path.read_bytes(), budget=STEP_BUDGET)
    except Crash as exc:
        raise AssertionError(f"{path.name} still crashes: {exc}") from exc.__cause__
    except (StepBudgetExceeded, Hang) as exc:
        raise AssertionError(f"{path.name}: hang regression: {exc}") from None
    assert outcome in ("ok", "rejected")
