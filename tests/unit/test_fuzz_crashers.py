"""Replay every input the fuzzers ever crashed on (tests/data/fuzz-crashers/<target>/*).

Each file once made a parser raise something else than its own error type (or hang). The
target of fuzz/targets.py named by the directory must now accept or reject it cleanly, fast.
New crashers from ``scripts/fuzz.sh`` (build/fuzz/artifacts/<target>/crash-*) are dropped
into the matching directory; nothing else needs changing.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from fuzz.targets import TARGETS, Crash, run

CRASHERS = Path(__file__).resolve().parents[1] / "data" / "fuzz-crashers"
FILES = sorted(p for p in CRASHERS.glob("*/*") if p.is_file() and not p.name.startswith("README"))


def test_corpus_layout() -> None:
    assert FILES, "no crashers recorded"
    for p in FILES:
        assert p.parent.name in TARGETS, f"{p}: directory must be a target name ({', '.join(TARGETS)})"


@pytest.mark.parametrize("path", FILES, ids=[f"{p.parent.name}/{p.name[:24]}" for p in FILES])
def test_crasher_replays_cleanly(path: Path) -> None:
    t0 = time.perf_counter()
    try:
        outcome = run(path.parent.name, path.read_bytes())
    except Crash as exc:
        raise AssertionError(f"{path.name} still crashes: {exc}") from exc.__cause__
    assert outcome in ("ok", "rejected")
    assert time.perf_counter() - t0 < 2.0, "took too long (hang regression)"
