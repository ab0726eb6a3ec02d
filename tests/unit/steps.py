"""Work counted in executed lines of conntrack_tools, not seconds: a deterministic stand-in for "is fast".

``count_steps(fn, *args)`` runs ``fn`` under ``sys.settrace`` and returns (result, lines executed in
the package).  A quadratic (backtracking) regression multiplies the count whatever the machine's load,
so the unit tests bound counts instead of wall-clock time.
"""

from __future__ import annotations

import signal
import sys
from contextlib import contextmanager
from pathlib import Path

PKG = str(Path(__file__).resolve().parents[2] / "conntrack_tools")


class StepBudgetExceeded(Exception):
    pass


def count_steps(fn, *args, budget: int | None = None):
    """(fn(*args), number of package lines executed); StepBudgetExceeded past ``budget`` lines."""
    count = 0

    def local(_frame, event, _arg):
        nonlocal count
        if event == "line":
            count += 1
            if budget is not None and count > budget:
                raise StepBudgetExceeded(f"more than {budget} lines executed")
        return local

    def call(frame, _event, _arg):
        return local if frame.f_code.co_filename.startswith(PKG) else None

    old = sys.gettrace()
    sys.settrace(call)
    try:
        result = fn(*args)
    finally:
        sys.settrace(old)
    return result, count


class Hang(Exception):
    pass


@contextmanager
def hang_guard(seconds: float):
    """Stop a run that never ends (SIGALRM): a generous guard for work done in C (``re``), not a speed bound."""

    def fire(_sig, _frm):
        raise Hang(f"still running after {seconds}s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
