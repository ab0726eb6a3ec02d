"""conntrackd entry point: C's texts and exit codes, and ``--config-test`` over the config corpora."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from conntrack_tools.daemon import main as main_mod
from conntrack_tools.daemon.main import main
from tests.conftest import REFERENCE

REF = REFERENCE
BEHAVIOUR = REF / "c-tools-behaviour"
BAD = Path(__file__).resolve().parents[1] / "data" / "configs" / "bad"
LOGLINE = re.compile(r"^\[\w{3} \w{3} [ \d]\d \d\d:\d\d:\d\d \d{4}\] \(pid=\d+\) \[(\w+)\] (.*)$")


def run(argv: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    monkeypatch.setattr(main_mod.sys, "argv", ["conntrackd", *argv])
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not available (set CT_SHARED)")
    return path


def test_help_text_is_c_bytes(capsys, monkeypatch) -> None:
    rc, out, err = run(["-h"], capsys, monkeypatch)
    assert rc == 0 and err == ""
    expected = need(BEHAVIOUR / "help_conntrackd_h.txt").read_text()
    assert out == expected.removesuffix("rc=0\n")


def test_long_help_quirk(capsys, monkeypatch) -> None:
    rc, out, err = run(["--help"], capsys, monkeypatch)
    ref = need(BEHAVIOUR / "help_conntrackd.txt").read_text().splitlines(keepends=True)
    assert rc == 0
    assert LOGLINE.match(err.strip()).groups() == ("ERROR", "Unknown option: --help")
    assert LOGLINE.match(ref[0].strip()).groups() == ("ERROR", "Unknown option: --help")
    assert out == "".join(ref[1:]).removesuffix("rc=0\n")


def test_version(capsys, monkeypatch) -> None:
    rc, out, _ = run(["-v"], capsys, monkeypatch)
    assert rc == 0 and out == ("Connection tracking userspace daemon v1.4.7. Licensed under GPLv2.\n"
                               "(C) 2006-2009 Pablo Neira Ayuso <pablo@netfilter.org>\n")


def test_missing_config_file(capsys, monkeypatch, tmp_path) -> None:  # t3/cmds/no_daemon_client
    path = tmp_path / "nope.conf"
    rc, out, err = run(["-C", str(path), "-s"], capsys, monkeypatch)
    assert (rc, out) == (1, "")
    assert LOGLINE.match(err.strip()).groups() == ("ERROR", f"can't open config file `{path}'")


def test_client_cannot_connect(capsys, monkeypatch, tmp_path) -> None:  # t3/cmds/client_wrong_socket
    conf = tmp_path / "c.conf"
    conf.write_text(f"General {{\n UNIX {{ Path {tmp_path}/none.ctl }}\n LockFile {tmp_path}/l\n}}\nStats {{\n}}\n")
    rc, out, err = run(["-C", str(conf), "-s"], capsys, monkeypatch)
    ref = need(BEHAVIOUR / "t3" / "cmds" / "client_wrong_socket.err").read_text()
    assert (rc, out) == (1, "")
    assert LOGLINE.match(err.strip()).groups() == LOGLINE.match(ref.strip()).groups()


def test_parse_error_exits_1_with_position(capsys, monkeypatch, tmp_path) -> None:  # t3/cmds/bad_config_syntax
    conf = tmp_path / "bad.conf"
    conf.write_text("General {\n  Bogus 1\n}\n")
    rc, out, err = run(["-C", str(conf), "-s"], capsys, monkeypatch)
    assert (rc, out) == (1, "")
    level, msg = LOGLINE.match(err.strip()).groups()
    assert level == "ERROR" and f"{conf}:2:" in msg


def test_daemon_refuses_config_with_errors(capsys, monkeypatch, tmp_path) -> None:
    conf = tmp_path / "c.conf"
    conf.write_text(f"General {{\n LockFile {tmp_path}/l\n}}\nStats {{\n}}\n")  # no UNIX path
    rc, _, err = run(["-C", str(conf)], capsys, monkeypatch)
    assert rc == 1 and "conntrackd cannot start, please review your configuration" in err
    assert not (tmp_path / "l").exists()


def reference_configs() -> list[Path]:
    found = [
        *(REF / "upstream-examples" / "doc").rglob("*.conf"),
        *(REF / "upstream-tests" / "conntrackd").glob("*.conf"),
        *(REF / "c-tools-behaviour" / "t3" / "configs").glob("*.conf"),
    ]
    return sorted(p for p in found if "keepalived" not in p.name)


@pytest.mark.parametrize("path", reference_configs(), ids=lambda p: p.name)
def test_config_test_accepts_reference_configs(path: Path, capsys, monkeypatch) -> None:
    rc, out, err = run(["--config-test", "-C", str(path)], capsys, monkeypatch)
    assert rc == 0, err
    assert out == f"{path}: configuration OK ({len([x for x in err.splitlines() if x])} warning(s))\n"


@pytest.mark.parametrize("path", sorted(BAD.glob("*.conf")), ids=lambda p: p.stem)
def test_config_test_rejects_bad_configs(path: Path, capsys, monkeypatch) -> None:
    line = int(re.search(r"expect-line: (\d+)", path.read_text())[1])
    rc, out, err = run(["--config-test", "-C", str(path)], capsys, monkeypatch)
    assert rc == 1 and out == ""
    where = rf"{re.escape(str(path))}:{line}:\d+" if line else re.escape(str(path))
    assert re.search(rf"^{where}: error: ", err, re.M), err


def test_config_test_missing_file(capsys, monkeypatch, tmp_path) -> None:
    rc, _, err = run(["--config-test", "-C", str(tmp_path / "x.conf")], capsys, monkeypatch)
    assert rc == 1 and "x.conf:0:0: error: can't open config file" in err
