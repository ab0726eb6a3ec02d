"""Runner for the upstream conntrack CLI testsuite (format: catalog §4, test-conntrack.c).

Each line is `<conntrack args> ; <R>`. `R` starting with O expects exit 0, with B a
non-zero exit; an empty `R` appends the line to a stdin buffer that is fed to the next
command (`-R -`); `|<sed expr>` pipes this command's stdout through sed into that buffer.
Only exit statuses are compared, as upstream does.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass
class CaseResult:
    file: str
    lineno: int
    args: str
    expect_ok: bool
    rc: int

    @property
    def passed(self) -> bool:
        return (self.rc == 0) == self.expect_ok


def run_file(path: Path, binary: str, prefix: list[str]) -> list[CaseResult]:
    results = []
    stdin_buf = ""
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        if not raw or raw[0] in "# ":
            continue
        if ";" not in raw:
            continue
        args, _, verdict = raw.partition(";")
        verdict = verdict.strip()
        cmd = f"{binary} {args.strip()}"
        if not verdict:
            stdin_buf += args.strip() + "\n"
            continue
        if verdict.startswith("|"):
            proc = subprocess.run(prefix + ["bash", "-c", f"{cmd} | sed \"{verdict[1:]}\""],
                                  capture_output=True, text=True)
            stdin_buf += proc.stdout
            continue
        if stdin_buf:
            proc = subprocess.run(prefix + ["bash", "-c", cmd], input=stdin_buf, capture_output=True, text=True)
            stdin_buf = ""
        else:
            proc = subprocess.run(prefix + ["bash", "-c", cmd], capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL)
        results.append(CaseResult(path.name, lineno, args.strip(), verdict[0] == "O", proc.returncode))
    return results


def run_suite(suite_dir: Path, binary: str, prefix: list[str]) -> list[CaseResult]:
    results: list[CaseResult] = []
    for path in sorted(p for p in suite_dir.iterdir() if p.is_file()):
        results.extend(run_file(path, binary, prefix))
    return results
