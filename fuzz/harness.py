"""atheris driver for one target of fuzz/targets.py.

    python fuzz/harness.py TARGET [libFuzzer options] [CORPUS_DIR ...]

Coverage-guided over conntrack_tools (only our package is instrumented). A crash is any
exception the target's contract does not allow (targets.ALLOWED); libFuzzer then writes the
input as ``crash-<sha1>`` under -artifact_prefix and exits non-zero. Hangs are caught by
libFuzzer's -timeout (seconds per input). Malformed inputs the target rejected cleanly are
counted and printed at exit, with the number of inputs run.

``--write-seeds DIR`` writes the built-in seed inputs of every target into DIR/<target>/.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def write_seeds(root: Path) -> None:
    from fuzz.targets import seeds

    for name, items in seeds().items():
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        for i, data in enumerate(items):
            (d / f"seed-{i}").write_bytes(data)


def main() -> None:
    if len(sys.argv) >= 3 and sys.argv[1] == "--write-seeds":
        write_seeds(Path(sys.argv[2]))
        return
    name = sys.argv.pop(1)
    import atheris

    with atheris.instrument_imports(include=["conntrack_tools"]):
        from fuzz import targets
    if name not in targets.TARGETS:
        sys.exit(f"unknown target {name!r}; one of {', '.join(targets.TARGETS)}")
    fn, allowed = targets.TARGETS[name], targets.ALLOWED[name]
    counts = {"ok": 0, "rejected": 0}
    t0 = time.monotonic()

    runs = next((int(a.split("=", 1)[1]) for a in sys.argv if a.startswith("-runs=")), 0)

    def report() -> None:
        n = counts["ok"] + counts["rejected"]
        print(f"FUZZ-SUMMARY target={name} inputs={n} ok={counts['ok']} rejected={counts['rejected']} "
              f"wall={time.monotonic() - t0:.1f}s", file=sys.stderr, flush=True)

    def one(data: bytes) -> None:
        try:
            fn(data)
        except allowed:
            counts["rejected"] += 1
        else:
            counts["ok"] += 1
        n = counts["ok"] + counts["rejected"]
        if n % 100000 == 0 or n == runs:  # libFuzzer leaves with _exit: report on the way
            report()

    atheris.Setup(sys.argv, one)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
