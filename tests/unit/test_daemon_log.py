"""Log line formats of C src/log.c."""

from __future__ import annotations

import os
import time

from conntrack_tools.daemon.log import Logger, ctime, format_flow_line, format_line


def test_ctime_and_line_format(monkeypatch) -> None:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        t = 1795684981  # Thu Nov 26 2026
        assert ctime(t) == "Thu Nov 26 09:23:01 2026"
        assert ctime(1796000000) == "Mon Nov 30 00:53:20 2026"
        assert ctime(1767225600) == "Thu Jan  1 00:00:00 2026"  # day padded with a space, like ctime(3)
        assert format_line(t, 3618, "notice", "Committed 7 new entries") == (
            "[Thu Nov 26 09:23:01 2026] (pid=3618) [notice] Committed 7 new entries")
        assert format_flow_line(t, "udp      17 src=1.1.1.1") == "Thu Nov 26 09:23:01 2026\tudp      17 src=1.1.1.1"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_console_routing_and_file(tmp_path, capsys) -> None:
    log = Logger()
    log.clock = lambda: 0
    log.pid = lambda: 42
    log("ERROR", "before setup")  # goes to the console even before setup, like C
    log.setup(str(tmp_path / "d.log"), None, str(tmp_path / "s.log"), None, console=True)
    log("notice", "hello")
    log("warning", "careful")
    log.flow("tcp      6 x")
    log.close()
    out, err = capsys.readouterr()
    assert out.endswith("(pid=42) [notice] hello\n")
    assert err.count("\n") == 2 and "[ERROR] before setup" in err and "[warning] careful" in err
    lines = (tmp_path / "d.log").read_text().splitlines()
    assert [x.split("] ", 2)[-1] for x in lines] == ["hello", "careful"]
    assert (tmp_path / "s.log").read_text().endswith("\ttcp      6 x\n")


def test_daemon_mode_is_silent_on_console(tmp_path, capsys) -> None:
    log = Logger()
    log.setup(str(tmp_path / "d.log"), None, console=False)
    log("ERROR", "to file only")
    log.close()
    assert capsys.readouterr() == ("", "")
    assert "to file only" in (tmp_path / "d.log").read_text()
    assert oct(os.stat(tmp_path / "d.log").st_mode)[-3:] in ("600", "644")  # mode comes from the umask
