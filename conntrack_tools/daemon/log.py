"""conntrackd's logging (C src/log.c): ``[<ctime>] (pid=N) [level] message``.

Routing as C's ``dlog``: outside daemon mode (or before the log is set up) every line also
goes to the console, notice/info on stdout and warning/ERROR on stderr; once set up, lines go
to the LogFile (line-buffered, appended) and to syslog when configured.  The stats-mode flow
log (``dlog_ct``) writes ``<ctime>\\t<flow line>`` to the Stats LogFile and syslog LOG_INFO.
"""

from __future__ import annotations

import os
import sys
import syslog
import time
from typing import IO, Literal

__all__ = ["FACILITIES", "Logger", "ctime", "format_line", "format_flow_line"]

Level = Literal["notice", "warning", "ERROR", "info"]

# level -> (syslog priority, console stream name)
LEVELS: dict[str, tuple[int, str]] = {
    "info": (syslog.LOG_INFO, "stdout"),
    "notice": (syslog.LOG_NOTICE, "stdout"),
    "warning": (syslog.LOG_WARNING, "stderr"),
    "ERROR": (syslog.LOG_ERR, "stderr"),
}
FACILITIES: dict[str, int] = {
    "daemon": syslog.LOG_DAEMON,
    **{f"local{i}": getattr(syslog, f"LOG_LOCAL{i}") for i in range(8)},
}


def ctime(t: float) -> str:
    """C's ctime() without the newline: ``Thu Nov 26 09:23:01 2026`` (day padded with a space)."""
    return time.strftime("%a %b %e %H:%M:%S %Y", time.localtime(t))


def format_line(t: float, pid: int, level: str, msg: str) -> str:
    """One log line (without newline) as C's logline_put."""
    return f"[{ctime(t)}] (pid={pid}) [{level}] {msg}"


def format_flow_line(t: float, flow_text: str) -> str:
    """One stats-mode flow log line (without newline): ctime, a TAB, the flow."""
    return f"{ctime(t)}\t{flow_text}"


class Logger:
    """The process-wide dlog().  ``console`` False = daemon mode (no console output once set up)."""

    def __init__(self) -> None:
        self.console = True
        self.ready = False
        self.file: IO[str] | None = None
        self.stats_file: IO[str] | None = None
        self.syslog_on = False
        self.stats_syslog_on = False
        self.clock = time.time
        self.pid = os.getpid

    def setup(
        self,
        logfile: str | None,
        syslog_facility: str | None,
        stats_logfile: str | None = None,
        stats_syslog: str | None = None,
        console: bool = True,
    ) -> None:
        """Open the files as C's init_log(); raises OSError with C's message text."""
        for path, attr in ((logfile, "file"), (stats_logfile, "stats_file")):
            if path:
                try:
                    setattr(self, attr, open(path, "a+", buffering=1))
                except OSError as exc:
                    raise OSError(exc.errno, f"ERROR: can't open logfile `{path}'.Reason: {exc.strerror}") from None
        self.syslog_on = syslog_facility is not None
        self.stats_syslog_on = stats_syslog is not None
        if self.syslog_on or self.stats_syslog_on:
            fac = FACILITIES.get(syslog_facility or stats_syslog or "daemon", syslog.LOG_DAEMON)
            syslog.openlog("conntrackd", syslog.LOG_PID, fac)
        self.console = console
        self.ready = True

    def __call__(self, level: Level, msg: str) -> None:
        prio, stream = LEVELS.get(level, (syslog.LOG_ERR, "stderr"))
        line = None
        if self.console or not self.ready:
            line = format_line(self.clock(), self.pid(), level, msg)
            out = sys.stdout if stream == "stdout" else sys.stderr
            try:
                out.write(line + "\n")
                out.flush()
            except (OSError, ValueError):
                pass
        if not self.ready:
            return
        if self.file is not None:
            try:
                self.file.write((line or format_line(self.clock(), self.pid(), level, msg)) + "\n")
            except OSError:
                pass
        if self.syslog_on:
            syslog.syslog(prio, msg)

    def flow(self, flow_text: str) -> None:
        """dlog_ct(STATE(stats_log), ct, NFCT_O_PLAIN): the flow log of stats mode."""
        if self.stats_file is not None:
            try:
                self.stats_file.write(format_flow_line(self.clock(), flow_text) + "\n")
            except OSError:
                pass
        if self.stats_syslog_on:
            syslog.syslog(syslog.LOG_INFO, flow_text)

    def close(self) -> None:
        self.ready = False
        for f in (self.file, self.stats_file):
            if f is not None:
                f.close()
        self.file = self.stats_file = None
        if self.syslog_on or self.stats_syslog_on:
            syslog.closelog()


dlog = Logger()
