"""Authenticated sync (beyond C): the v2 envelope from bytes, replay window, config keys."""

from __future__ import annotations

import hashlib
import hmac
import os
import struct

import pytest

from conntrack_tools.daemon.config import ConfigError, HostFacts, check_config, parse_config
from conntrack_tools.daemon.sync.auth import (
    ENVELOPE_OVERHEAD,
    REPLAY_WINDOW,
    AuthFailure,
    Opener,
    Sealer,
    load_key,
)
from conntrack_tools.daemon.sync.wire import WireErrorKind, encode_ctl, iter_datagram

KEY = bytes(range(32))
BOOT = 0x01020304
T0 = 1_700_000_000


def clock(t: float = T0):
    return lambda: t


def sealer(key: bytes = KEY, boot: int = BOOT, t: float = T0) -> Sealer:
    return Sealer(key, boot_id=boot, clock=clock(t))


def opener(t: float = T0) -> Opener:
    return Opener(KEY, clock=clock(t))


def test_envelope_layout_from_bytes() -> None:
    inner = encode_ctl(0x10, 7)  # an ALIVE, 8 bytes
    out = sealer().seal(inner)
    head = bytes.fromhex("2a00" "002c" "00000001" "00" "10" "0000" "01020304") + T0.to_bytes(4, "big")
    assert len(out) == ENVELOPE_OVERHEAD + len(inner) == 0x2C
    assert out[:20] == head
    assert out[20:28] == inner
    assert out[28:] == hmac.new(KEY, head + inner, hashlib.sha256).digest()[:16]
    assert len(out) % 4 == 0


def test_open_accepts_and_returns_inner() -> None:
    inner = encode_ctl(0x10, 7) + encode_ctl(0x08, 8, 1, 7)
    s, o = sealer(), opener()
    assert o.open(s.seal(inner), "10.0.0.1") == inner
    assert o.stats["accepted"] == 1


def kind(o: Opener, buf: bytes, peer: str = "p") -> str:
    with pytest.raises(AuthFailure) as ei:
        o.open(buf, peer)
    return ei.value.kind


def test_forged_wrong_key_unauthenticated_malformed() -> None:
    s, o = sealer(), opener()
    good = s.seal(encode_ctl(0x10, 1))
    forged = bytearray(good)
    forged[22] ^= 1  # flip a bit of the inner message
    assert kind(o, bytes(forged)) == "bad_mac"
    assert kind(o, sealer(b"\x01" * 32).seal(encode_ctl(0x10, 1))) == "bad_mac"
    assert kind(o, encode_ctl(0x10, 1)) == "unauthenticated"  # a v1 (C / key-less) datagram
    assert kind(o, good[:30]) == "malformed"
    assert kind(o, good + b"\0\0\0\0") == "malformed"  # len must cover the whole datagram
    assert kind(o, b"") == "unauthenticated"
    assert o.stats == {"accepted": 0, "unauthenticated": 2, "bad_mac": 2, "replayed": 0, "stale": 0,
                       "malformed": 2, "unknown_key": 0}
    # forged datagrams did not touch the replay state
    assert o.windows == {}
    assert o.open(good, "p")


def test_replay_window_is_per_incarnation_not_per_address() -> None:
    s, o = sealer(), opener()
    d = [s.seal(encode_ctl(0x10, i)) for i in range(REPLAY_WINDOW + 10)]
    o.open(d[5], "a")
    assert kind(o, d[5], "a") == "replayed"
    assert kind(o, d[5], "other-host") == "replayed"  # replayed from elsewhere: same boot_id window
    o.open(d[3], "a")  # older but inside the window, never seen: reordering is fine
    assert kind(o, d[3], "a") == "replayed"
    o.open(d[-1], "a")
    assert kind(o, d[6], "a") == "replayed"  # fell out of the window
    o.open(d[-5], "a")
    o.open(sealer(boot=BOOT + 1).seal(b""), "a")  # a restarted sender: a new window
    assert kind(o, d[-5], "a") == "replayed"  # the old incarnation's window is still there
    assert o.stats["replayed"] == 5 and o.stats["accepted"] == 5


def test_stale_timestamps_and_window_pruning() -> None:
    old = sealer(t=T0 - 121).seal(b"")
    assert kind(opener(), old) == "stale"
    assert kind(opener(), sealer(t=T0 + 121).seal(b"")) == "stale"
    assert opener().open(sealer(t=T0 - 120).seal(b"x" * 4)) == b"xxxx"
    # a window idle for 2 * MAX_SKEW is dropped: what it guarded is stale by then
    t = [float(T0)]
    o = Opener(KEY, clock=lambda: t[0])
    d = sealer().seal(b"")
    o.open(d)
    t[0] += 241
    o.open(sealer(boot=7, t=t[0]).seal(b""))
    assert BOOT not in o.windows and 7 in o.windows
    assert kind(o, d) == "stale"


def test_seq_exhaustion_moves_to_a_new_incarnation() -> None:
    s, o = sealer(), opener()
    o.open(s.seal(b""), "a")
    s.seq = 0xFFFFFFFF
    o.open(s.seal(b""), "a")
    assert s.boot_id != BOOT and s.seq == 1


def test_v1_receiver_skips_the_envelope_as_c_does() -> None:
    """C validates len, counts 'Wrong protocol version' and goes on with the next message."""
    env = sealer().seal(encode_ctl(0x08, 9, 1, 8))
    items = list(iter_datagram(env + encode_ctl(0x10, 3)))
    assert len(items) == 2
    assert items[0].kind is WireErrorKind.BAD_VERSION  # type: ignore[union-attr]
    assert items[1].seq == 3  # type: ignore[union-attr]
    # flags 0: framing needs only 8 bytes even though the type nibble is CTL
    assert struct.unpack_from("!BBH", env) == (0x2A, 0, len(env))


def test_load_key(tmp_path) -> None:
    assert load_key("00" * 16) == bytes(16)
    with pytest.raises(ValueError):
        load_key("00" * 15)
    with pytest.raises(ValueError):
        load_key("xyz")
    f = tmp_path / "k"
    f.write_text("0011 2233 4455 6677\n8899 aabb ccdd eeff\n")
    assert load_key(str(f)) == bytes.fromhex("00112233445566778899aabbccddeeff")
    f.write_bytes(os.urandom(3) + b"\xff" * 29)
    assert load_key(str(f)) == f.read_bytes()
    f.write_text("abcd")
    with pytest.raises(ValueError):
        load_key(str(f))


BASE = "General {\n LockFile /run/ct.lock\n UNIX { Path /run/ct.ctl }\n}\n"
SYNC = (
    "Sync {{\n Mode FTFW {{ }}\n {auth}\n UDP {{\n  IPv4_address 10.0.0.1\n  IPv4_Destination_Address 10.0.0.2\n"
    "  Port 3780\n  Interface eth1\n }}\n}}\n"
)
HEX = "0123456789abcdefABCDEF0123456789" + "00ff" * 4


def test_parse_authkey_hex_and_path() -> None:
    cfg = parse_config(BASE + SYNC.format(auth=f"AuthKey {HEX}"))
    assert cfg.sync is not None and cfg.sync.auth_key == HEX
    assert any(w.code == "c-incompatible" and "AuthKey" in w.message for w in cfg.warnings)
    cfg = parse_config(BASE + SYNC.format(auth="AuthKey /etc/conntrackd/sync.key"))
    assert cfg.sync is not None and cfg.sync.auth_key == "/etc/conntrackd/sync.key"
    assert parse_config(BASE + SYNC.format(auth="")).sync.auth_key is None  # type: ignore[union-attr]
    for bad in ("AuthKey 0123", "AuthKey zz" + HEX, "AuthKey ", f"AuthKey {HEX}0"):
        with pytest.raises(ConfigError):
            parse_config(BASE + SYNC.format(auth=bad))


def codes(text: str, host: HostFacts | None = None) -> list[tuple[str, str, str]]:
    return [(f.severity, f.code, f.message) for f in check_config(parse_config(BASE + text), host)
            if f.code == "auth"]


def test_checker_auth_findings() -> None:
    got = codes(SYNC.format(auth=f"AuthKey {HEX}"))
    assert len(got) == 1 and got[0][0] == "warning" and "every peer" in got[0][2] and "C conntrackd" in got[0][2]
    assert codes(SYNC.format(auth="")) == []
    key_file = SYNC.format(auth="AuthKey /k")
    host = HostFacts(file_stat=lambda p: (0o100644, 0))
    got = codes(key_file, host)
    assert [s for s, *_ in got] == ["warning", "warning"] and "group/world readable" in got[1][2]
    assert len(codes(key_file, HostFacts(file_stat=lambda p: (0o100600, 0)))) == 1
    assert "not owned by root" in codes(key_file, HostFacts(file_stat=lambda p: (0o100600, 1000)))[1][2]
    assert codes(key_file, HostFacts(file_stat=lambda p: (-1, -1)))[1][0] == "error"
    # inline key: the config file itself must be root-only
    seen: list[str] = []
    host = HostFacts(file_stat=lambda p: seen.append(p) or (0o100604, 0))
    got = codes(SYNC.format(auth=f"AuthKey {HEX}"), host)
    assert seen == ["conntrackd.conf"] and "holds the AuthKey" in got[1][2]
