"""Key rotation (beyond C): the keyring file parser, its watcher, the opener per key id, config checks."""

from __future__ import annotations

import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conntrack_tools.daemon.config import HostFacts, check_config, parse_config
from conntrack_tools.daemon.control import parse_argv
from conntrack_tools.daemon.main import key_test
from conntrack_tools.daemon.sync.auth import AuthFailure, Opener, Sealer, load_key, load_ring
from conntrack_tools.daemon.sync.keyring import (
    KEY_FILE_MAX,
    KeyFileError,
    KeyFileWatcher,
    KeyRing,
    parse_key_file,
)
from conntrack_tools.daemon.sync.wire import encode_ctl

A, B, C = "aa" * 16, "bb" * 32, "cc" * 20
T0 = 1_700_000_000


def ring(text: str) -> KeyRing:
    return parse_key_file(text.encode())


def test_first_key_line_sends_all_are_accepted() -> None:
    r = ring(f"# managed\n\nkey 7 {A}   # old\n  key 8 {B}\n")
    assert r.keyring and r.send_id == 7 and r.ids == [7, 8]
    assert r.keys == {7: bytes.fromhex(A), 8: bytes.fromhex(B)}
    assert r.describe() == "sending key 7, also accepting 8"
    assert ring(f"key 0 {C}").describe() == "sending key 0"
    assert ring(f"key 255 {A.upper()}").send_key == bytes.fromhex(A)


@pytest.mark.parametrize(("text", "message"), [
    ("", "key shorter than 16 bytes"),  # empty: the single-key form, too short
    ("# only a comment\n", "no 'key <id> <hex>' line"),
    (f"key 1 {A}\nkye 2 {B}\n", ":2: expected 'key <id> <hex>'"),
    (f"key 1 {A} extra\n", ":1: expected 'key <id> <hex>'"),
    ("key 1\n", ":1: expected"),
    (f"key 256 {A}\n", "0 to 255"),
    (f"key -1 {A}\n", "0 to 255"),
    (f"key 0x1 {A}\n", "0 to 255"),
    (f"key 1 {A}\nkey 01 {B}\n", "key id 1 listed twice"),
    ("key 1 " + "a" * 33 + "\n", "even number of hex digits"),
    ("key 1 zz" + A + "\n", "even number of hex digits"),
    ("key 1 " + "ab" * 15 + "\n", "32 to 128 hex digits"),
    ("key 1 " + "ab" * 65 + "\n", "32 to 128 hex digits"),
    ("".join(f"key {i} {A}\n" for i in range(17)), "more than 16 keys"),
])
def test_malformed_keyring_is_refused_with_the_line(text: str, message: str) -> None:
    with pytest.raises(KeyFileError, match=message.replace("(", r"\(")) as ei:
        parse_key_file(text.encode(), "/etc/k")
    assert str(ei.value).startswith("/etc/k")


def test_single_key_forms_still_work_as_key_id_0(tmp_path) -> None:
    legacy = parse_key_file(b"0011 2233 4455 6677\n8899 aabb ccdd eeff\n")
    assert not legacy.keyring and legacy.ids == [0]
    assert legacy.send_key == bytes.fromhex("00112233445566778899aabbccddeeff")
    raw = b"\xff" * 3 + os.urandom(29)
    assert parse_key_file(raw).send_key == raw
    inline = load_ring("00" * 16)
    assert inline.ids == [0] and not inline.keyring and load_key("00" * 16) == bytes(16)
    f = tmp_path / "k"
    f.write_text(f"key 4 {A}\nkey 5 {B}\n")
    assert load_ring(str(f)).ids == [4, 5] and load_key(str(f)) == bytes.fromhex(A)


LINE = st.one_of(
    st.builds(lambda i, h: f"key {i} {h}", st.integers(-3, 300), st.sampled_from([A, B, C, "ab", "zz" * 16, ""])),
    st.sampled_from(["#", "# c", "", "   ", "key", "key 1", "\t", "kye 1 " + A, "0011", "\x00", "key 1 " + A + " x"]),
    st.text(max_size=40),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(LINE, max_size=20), st.sampled_from(["\n", "\r\n", "\r"]))
def test_fuzz_keyring_lines_only_key_file_error(lines: list[str], nl: str) -> None:
    """Any line soup: a KeyRing whose sending key is one of its keys, or KeyFileError."""
    try:
        r = parse_key_file(nl.join(lines).encode("utf-8", "surrogatepass"), "k")
    except KeyFileError as exc:
        assert str(exc).startswith("k")
        return
    assert r.send_id in r.keys and all(16 <= len(k) for k in r.keys.values())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=KEY_FILE_MAX // 64))
def test_fuzz_key_file_bytes_only_key_file_error(raw: bytes) -> None:
    try:
        r = parse_key_file(raw)
    except KeyFileError:
        return
    assert r.send_id in r.keys


def seal(key: bytes | KeyRing) -> bytes:
    return Sealer(key, boot_id=7, clock=lambda: T0).seal(encode_ctl(0x10, 1))


def test_receiver_selects_the_key_by_id_and_counts_per_key() -> None:
    old, both, new = ring(f"key 1 {A}"), ring(f"key 1 {A}\nkey 2 {B}"), ring(f"key 2 {B}\nkey 1 {A}")
    o = Opener(old, clock=lambda: T0)
    assert seal(both)[8] == 1 and seal(new)[8] == 2  # key_id byte of the envelope
    o.open(seal(both))
    with pytest.raises(AuthFailure) as ei:
        o.open(seal(new))
    assert ei.value.kind == "unknown_key"
    o.set_ring(both)  # step 1: new key accepted, old one still sent
    assert o.open(Sealer(both, boot_id=8, clock=lambda: T0).seal(encode_ctl(0x10, 2)))
    o.open(Sealer(new, boot_id=9, clock=lambda: T0).seal(encode_ctl(0x10, 3)))
    forged = bytearray(seal(new))
    forged[-1] ^= 1
    with pytest.raises(AuthFailure) as ei:
        o.open(bytes(forged))
    assert ei.value.kind == "bad_mac"
    assert o.by_key == {1: [2, 0], 2: [1, 1]}
    o.set_ring(ring(f"key 2 {B}"))  # step 3: the old key's counters go with it
    assert o.by_key == {2: [1, 1]} and o.stats["unknown_key"] == 1 and o.stats["accepted"] == 3


def test_sealer_switches_key_mid_incarnation() -> None:
    s = Sealer(ring(f"key 1 {A}\nkey 2 {B}"), boot_id=5, clock=lambda: T0)
    o = Opener(ring(f"key 1 {A}\nkey 2 {B}"), clock=lambda: T0)
    o.open(s.seal(b""))
    s.set_ring(ring(f"key 2 {B}\nkey 1 {A}"))
    d = s.seal(b"")
    assert d[8] == 2 and s.seq == 2 and o.open(d) == b""  # same boot_id, same replay window
    assert o.by_key == {1: [1, 0], 2: [1, 0]}


def test_watcher_reloads_refuses_and_keeps_the_old_keys(tmp_path) -> None:
    f = tmp_path / "sync.key"
    f.write_text(f"key 1 {A}\n")
    w = KeyFileWatcher(str(f), load_ring(str(f)))
    assert w.poll() == (None, None)  # unchanged
    f.write_text(f"key 1 {A}\nkey 2 {B}\n")
    new, err = w.poll()
    assert err is None and new is not None and new.ids == [1, 2] and w.reloads == 1
    assert w.poll() == (None, None)
    f.write_text(f"key 1 {A}\nkey 2 zz\n")
    new, err = w.poll()
    assert new is None and err is not None and ":2: key must be an even number" in err
    assert w.poll() == (None, None)  # refused once per change, not every second
    assert w.ring.ids == [1, 2] and w.refused == 1 and w.last_error
    f.write_text(f"key 1 {A}\nkey 2 {B}\n")  # the bad file put back as it was: same keys, error cleared
    assert w.poll() == (None, None) and w.last_error == "" and w.reloads == 1
    f.write_text("00" * 16)  # a keyring may not silently become a single raw/hex key
    assert "no longer a keyring" in (w.poll()[1] or "")
    f.unlink()
    assert "No such file" in (w.poll()[1] or "")
    f.write_text(f"key 2 {B}\n")
    new, err = w.poll()
    assert err is None and new is not None and new.ids == [2] and w.last_error == ""
    os.utime(f, (1, 1))  # touched, same keys: no reload
    assert w.poll() == (None, None) and w.reloads == 2


BASE = "General {\n LockFile /run/ct.lock\n UNIX { Path /run/ct.ctl }\n}\n"
SYNC = ("Sync {\n Mode FTFW { }\n AuthKey /k\n UDP {\n  IPv4_address 10.0.0.1\n  IPv4_Destination_Address 10.0.0.2\n"
        "  Port 3780\n  Interface eth1\n }\n}\n")


def auth_findings(content: bytes | None) -> list[tuple[str, str]]:
    host = HostFacts(file_stat=lambda p: (0o100600, 0), read_file=lambda p: content)
    return [(f.severity, f.message) for f in check_config(parse_config(BASE + SYNC), host) if f.code == "auth"]


def test_config_test_checks_the_key_file_content() -> None:
    assert [s for s, _ in auth_findings(f"key 1 {A}\n".encode())] == ["warning"]
    assert [s for s, _ in auth_findings(None)] == ["warning"]  # unreadable: unknown
    got = auth_findings(b"key 1 abc\n")
    assert got[1][0] == "error" and "/k:1: key must be an even number" in got[1][1]
    assert auth_findings(b"#" * (KEY_FILE_MAX + 1))[1][0] == "error"


def test_key_test_command_line(tmp_path, capsys) -> None:
    inv = parse_argv(["--key-test", "/etc/conntrackd/sync.key"])
    assert inv.mode == "key-test" and inv.key_file == "/etc/conntrackd/sync.key" and inv.exit_code is None
    f = tmp_path / "k"
    f.write_text(f"key 1 {A}\nkey 2 {B}\n")
    assert key_test(str(f)) == 0
    out = capsys.readouterr().out
    assert "key file OK (keyring: sending key 1, also accepting 2)" in out and A not in out
    f.write_text("key 1\n")
    assert key_test(str(f)) == 1
    assert "NOT valid" in capsys.readouterr().err
