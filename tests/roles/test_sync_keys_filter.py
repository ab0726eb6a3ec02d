"""playbooks/rotate_sync_key.yml's pure part: the filters of plugins/filter/sync_keys.py, without Ansible."""

from __future__ import annotations

import importlib.util
import itertools

import pytest

from conntrack_tools import render
from conntrack_tools.daemon.sync.keyring import parse_key_file

from .helpers import ROOT, context

_spec = importlib.util.spec_from_file_location("sync_keys", ROOT / "plugins" / "filter" / "sync_keys.py")
assert _spec and _spec.loader
sk = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(sk)

OLD = {"id": 1, "key": "aa" * 16}
NEW = {"id": 2, "key": "BB" * 32}


def ids(keys: list[dict]) -> list[int]:
    return [k["id"] for k in keys]


def test_parse_reads_what_the_role_writes_as_the_daemon_does() -> None:
    keys = [NEW, OLD, {"id": 0, "key": "0123456789abcdef" * 8}]
    text = render.render("conntrackd-sync.key.j2", context("fw-edge-a", conntrackd_auth_keys=keys))
    parsed = sk.sync_keyring_parse(text)
    ring = parse_key_file(text.encode())
    assert ids(parsed) == ring.ids == [2, 1, 0] and parsed[0]["key"] == "bb" * 32
    assert [bytes.fromhex(k["key"]) for k in parsed] == list(ring.keys.values())
    assert sk.sync_keyring_parse("") == [] and sk.sync_keyring_parse("00" * 16) == []  # absent / single-key form


def test_three_steps_never_leave_a_sender_without_a_receiver() -> None:
    accept, send, drop = sk.sync_key_steps([OLD], [NEW])
    assert (ids(accept), ids(send), ids(drop)) == ([1, 2], [2, 1], [2])
    assert drop[0]["key"] == "bb" * 32  # normalised as the template writes it
    # the property behind "no reject window": at every moment of the run, whatever either node may still be
    # sending (its file before or after the current step) is accepted by the other node's file
    files = [[OLD], accept, send, drop]
    for before, after in itertools.pairwise(files):
        for sender, receiver in itertools.product((before, after), repeat=2):
            assert sender[0]["id"] in ids(receiver), (sender, receiver)
    assert sk.sync_key_steps([OLD], [OLD]) == [[OLD], [OLD], [OLD]]  # nothing to rotate: three no-ops
    # several keys at once, the old sending key kept as an accepted one
    accept, send, drop = sk.sync_key_steps([OLD], [NEW, OLD])
    assert (ids(accept), ids(send), ids(drop)) == ([1, 2], [2, 1], [2, 1])


def test_an_id_reused_for_another_key_is_refused() -> None:
    other = {"id": 1, "key": "cc" * 16}
    assert sk.sync_key_reused([OLD], [other, NEW]) == [1] and sk.sync_key_reused([OLD], [NEW]) == []
    with pytest.raises(Exception, match="key id.s. 1 already in use"):  # AnsibleFilterError under Ansible
        sk.sync_key_steps([OLD], [other])


def node(name: str, master: bool = False, **kw: object) -> dict:
    base = {"name": name, "master": master, "running": True, "peer_silence": 0.4, "file_ids": [1],
            "file_digest": "d1", "auth": {"enabled": True, "key_ids": [1], "send_key_id": 1}}
    return {**base, **kw}


@pytest.mark.parametrize(("nodes", "why"), [
    ([node("a", True), node("b")], ""),
    ([node("a"), node("b")], "not exactly one node holds the VIPs (masters: none)"),
    ([node("a", True), node("b", True)], "masters: a, b"),
    ([node("a", True)], "exactly two nodes"),
    ([node("a", True), node("b", running=False)], "our conntrackd does not answer on b"),
    ([node("a", True), node("b", auth={"enabled": False})], "sync authentication is off on b"),
    ([node("a", True, file_ids=[]), node("b")], "no keyring written by the conntrackd role on a"),
    ([node("a", True), node("b", file_digest="d2")], "the two nodes' key files differ"),
    ([node("a", True), node("b", auth={"enabled": True, "key_ids": [1, 2], "send_key_id": 1})],
     "conntrackd on b runs keys [1, 2] (sending 1) but its key file holds [1]"),
    ([node("a", True), node("b", peer_silence=-1)], "the sync peer of b has not been heard in the last 10 s"),
    ([node("a", True, peer_silence=11), node("b")], "the sync peer of a"),
])
def test_precheck_says_why_a_pair_is_not_ready(nodes: list[dict], why: str) -> None:
    got = sk.sync_key_precheck(nodes, 10)
    assert (got == "") if not why else (why in got), got


def test_loaded_compares_ids_in_order_and_the_sender() -> None:
    auth = {"enabled": True, "key_ids": [2, 1], "send_key_id": 2}
    assert sk.sync_key_loaded(auth, [NEW, OLD])
    assert not sk.sync_key_loaded(auth, [OLD, NEW]) and not sk.sync_key_loaded(auth, [NEW])
    assert not sk.sync_key_loaded({}, [NEW]) and not sk.sync_key_loaded({"enabled": False}, [NEW])
    assert set(sk.FilterModule().filters()) == {"sync_keyring_parse", "sync_key_steps", "sync_key_reused",
                                                "sync_key_precheck", "sync_key_loaded"}
