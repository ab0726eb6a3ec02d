"""CI fuzz budget: every parser target of fuzz/targets.py under hypothesis, ~40 s in total.

0 crashes: only the target's own error type may escape (fuzz.targets.ALLOWED).
0 hangs: every single input must finish within PER_INPUT_S (SIGALRM interrupts a hang).
Malformed inputs are counted (``rejected``); the per-target figures are printed at the end of
the module (pytest -s). The long run is ``scripts/fuzz.sh`` (atheris, >= 1M inputs a target).

Two input families per target: raw bytes, and seed inputs with random byte edits (flips,
insertions, deletions, truncation), which get past the framing checks far more often.
Structure-aware families are added where raw bytes rarely reach the interesting code
(netlink attribute trees, sync TLV messages, config token soup).
"""

from __future__ import annotations

import struct
import time
from collections import Counter

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fuzz.targets import ALLOWED, TARGETS, Crash, run, seeds
from tests.unit.steps import Hang, hang_guard
from tests.unit.test_config_fuzz import ATOMS

PER_INPUT_S = 2.0
SEEDS = seeds()
FIGURES: dict[str, Counter] = {name: Counter() for name in TARGETS}
SLOWEST: dict[str, float] = dict.fromkeys(TARGETS, 0.0)


def check(name: str, data: bytes) -> None:
    t0 = time.perf_counter()
    try:
        with hang_guard(PER_INPUT_S):
            outcome = run(name, data)
    except Crash as exc:
        raise AssertionError(f"{exc}\ninput={data!r}") from exc.__cause__
    except Hang as exc:
        raise AssertionError(f"{name}: hang: {exc}\ninput={data!r}") from None
    SLOWEST[name] = max(SLOWEST[name], time.perf_counter() - t0)
    FIGURES[name][outcome] += 1


@pytest.fixture(scope="module", autouse=True)
def print_figures():
    yield
    print("\nfuzz budget (hypothesis): target inputs ok rejected slowest-input")
    for name, c in FIGURES.items():
        n = c["ok"] + c["rejected"]
        if n:
            print(f"  {name:8} {n:6} {c['ok']:6} {c['rejected']:6} {SLOWEST[name] * 1000:8.1f} ms")


# ------------------------------------------------------------------------------------ strategies


@st.composite
def mutated(draw, name: str):
    """A seed of the target with a few random edits."""
    buf = bytearray(draw(st.sampled_from(SEEDS[name])))
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.integers(0, 4))
        pos = draw(st.integers(0, len(buf)))
        if op == 0 and pos < len(buf):
            buf[pos] = draw(st.integers(0, 255))
        elif op == 1:
            buf[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == 2:
            del buf[pos:pos + draw(st.integers(1, 8))]
        elif op == 3:
            del buf[pos:]
        elif op == 4 and pos + 4 <= len(buf):  # an interesting 16/32-bit value (lengths, types)
            buf[pos:pos + 2] = struct.pack("=H", draw(st.sampled_from([0, 1, 3, 4, 5, 8, 16, 20, 0xFFFF])))
    return bytes(buf)


def nla_tree(depth: int = 0):
    """Netlink attributes: random type/length, nested children or raw payloads."""
    leaf = st.builds(lambda t, v: struct.pack("=HH", 4 + len(v), t) + v + bytes(-len(v) % 4),
                     st.integers(0, 40), st.binary(max_size=20))
    if depth >= 3:
        return leaf
    nest = st.builds(lambda t, kids: struct.pack("=HH", 4 + len(b"".join(kids)), t | 0x8000) + b"".join(kids),
                     st.integers(0, 40), st.lists(nla_tree(depth + 1), max_size=4))
    return st.one_of(leaf, nest)


@st.composite
def netlink_buffers(draw):
    msgs = []
    for _ in range(draw(st.integers(1, 4))):
        body = bytes([draw(st.sampled_from([2, 10, 0, 7]))]) + bytes(3) + b"".join(draw(st.lists(nla_tree(),
                                                                                                  max_size=6)))
        mtype = draw(st.sampled_from([0x100, 0x102, 0x101, 2, 3, 0x200]))
        length = 16 + len(body)
        if draw(st.booleans()):
            length = draw(st.integers(0, length + 8))
        msgs.append(struct.pack("=IHHII", length & 0xFFFFFFFF, mtype, draw(st.integers(0, 0x0F00)), 0, 0) + body)
    return b"".join(msgs)


@st.composite
def wire_datagrams(draw):
    out = []
    for _ in range(draw(st.integers(1, 4))):
        tlvs = b"".join(struct.pack("!HH", 4 + len(v), t) + v + bytes(-len(v) % 4)
                        for t, v in draw(st.lists(st.tuples(st.integers(0, 32), st.binary(max_size=24)), max_size=8)))
        vt = draw(st.sampled_from([0x10, 0x11, 0x12, 0x13, 0x15, 0x1A, 0x16, 0x20])) | 0
        flags = draw(st.sampled_from([0, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x81]))
        body = tlvs if vt & 0x0F != 10 else struct.pack("!II", draw(st.integers(0, 9)), draw(st.integers(0, 9)))
        length = 8 + len(body)
        if draw(st.integers(0, 4)) == 0:
            length = draw(st.integers(0, 0xFFFF))
        out.append(struct.pack("!BBHI", vt, flags, length, draw(st.integers(0, 2**32 - 1))) + body)
    return b"".join(out)


config_soup = st.builds(lambda atoms, sep: sep.join(atoms).encode("utf-8", "surrogateescape"),
                        st.lists(st.sampled_from(ATOMS), max_size=60), st.sampled_from([" ", "\n"]))
argv_bytes = st.lists(st.one_of(st.sampled_from(["-s", "-i", "-x", "-C", "-c", "-f", "-k", "-R", "-F", "--json",
                                                 "-o", "json", "ct", "expect", "net", "internal", "primary",
                                                 "backup", "--restart", "--timeout", "--conntrackd", "-p",
                                                 "tcp", "-L", "-D", "--dport", "nan", "1e9", ""]),
                                st.text(max_size=8)), max_size=10).map(
    lambda xs: b"\0".join(x.encode("utf-8", "surrogateescape") for x in xs))

keyring_lines = st.lists(st.one_of(
    st.builds(lambda i, h: f"key {i} {h}", st.integers(-2, 300), st.sampled_from(["ab" * 16, "cd" * 64, "ef" * 65, "0",
                                                                                  "zz" * 16, ""])),
    st.sampled_from(["#", "# c", "", " ", "key", "key 1", "kye 1 " + "ab" * 16, "\t"]),
    st.text(max_size=30)), max_size=20).map(lambda xs: "\n".join(xs).encode("utf-8", "surrogateescape"))

FAMILIES = {
    "wire": (2000, st.one_of(st.binary(max_size=600), mutated("wire"), wire_datagrams())),
    "netlink": (1200, st.one_of(st.binary(max_size=400), mutated("netlink"), netlink_buffers())),
    "events": (700, st.one_of(st.binary(max_size=400), mutated("events"),
                              st.builds(lambda c, b: c + b, st.binary(min_size=2, max_size=2), netlink_buffers()))),
    "config": (500, st.one_of(st.binary(max_size=400), mutated("config"), config_soup)),
    "control": (2000, st.one_of(st.binary(max_size=64), mutated("control"),
                                st.builds(lambda s, c: bytes([s]) + struct.pack("=i", c), st.integers(0, 255),
                                          st.integers(-2**31, 2**31 - 1)),
                                st.builds(lambda s, a: bytes([s]) + a, st.integers(0, 255), argv_bytes))),
    "notify": (500, st.one_of(st.binary(max_size=80), mutated("notify"), argv_bytes)),
    "cli": (800, st.one_of(st.binary(max_size=200), mutated("cli"),
                           st.builds(lambda a: b"\0" + a, argv_bytes))),
    "keyring": (600, st.one_of(st.binary(max_size=300), mutated("keyring"), keyring_lines)),
}


def _make(name: str):
    budget, strategy = FAMILIES[name]

    @settings(max_examples=budget, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.filter_too_much])
    @given(strategy)
    def test(data: bytes) -> None:
        check(name, data)

    test.__name__ = f"test_fuzz_{name}"
    test.__doc__ = f"{name}: arbitrary inputs; only {', '.join(e.__name__ for e in ALLOWED[name]) or 'nothing'} " \
                   f"may escape, each input within {PER_INPUT_S}s"
    return test


for _name in FAMILIES:
    globals()[f"test_fuzz_{_name}"] = _make(_name)


def test_seeds_are_accepted() -> None:
    """The seeds are valid inputs (so mutations start from inside the parsers).

    (The netlink target also reads each whole buffer as one payload, which a dump buffer is
    not, so its seeds count as "rejected" by design.)
    """
    for name in ("wire", "events", "config", "control", "keyring"):
        assert run(name, SEEDS[name][0]) == "ok", name


def test_every_target_is_budgeted() -> None:
    assert set(FAMILIES) == set(TARGETS) == set(ALLOWED)
