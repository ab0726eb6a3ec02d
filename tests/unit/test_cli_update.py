"""-U and -m/-u semantics of C 1.4.7 without a kernel (differential cases: tests/compat/test_diff_modify.py)."""

from __future__ import annotations

from conntrack_tools.cli.execute import Runner
from conntrack_tools.cli.parse import parse_args
from conntrack_tools.cli.template import apply_protoinfo, make_filter
from conntrack_tools.flow import AF_INET, IPS_SEEN_REPLY, Flow, TcpInfo, Tuple

A, B = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])


def flow(mark: int = 0, status: int = 0, state: int = 3, zone: int | None = None) -> Flow:
    orig = Tuple(AF_INET, A, B, 6, 1000, 80, zone=zone)
    return Flow(AF_INET, orig, orig.reversed(), status=status, mark=mark, tcp=TcpInfo(state=state), zone=zone)


def update_of(argv: list[str], f: Flow) -> Flow | None:
    req = parse_args(argv)
    new_proto = Flow(AF_INET)
    apply_protoinfo(req, new_proto, update=True)
    return Runner._update_of(f, req, new_proto)


def test_mark_then_status_also_requires_mark_equal_status_bits() -> None:
    keep = make_filter(parse_args(["-L", "-m", "42", "-u", "SEEN_REPLY"]))
    assert not keep(flow(mark=42, status=IPS_SEEN_REPLY))  # 42 != SEEN_REPLY's bits (2)
    keep = make_filter(parse_args(["-L", "-m", "2", "-u", "SEEN_REPLY"]))
    assert keep(flow(mark=2, status=IPS_SEEN_REPLY))
    keep = make_filter(parse_args(["-D", "-u", "SEEN_REPLY", "-m", "42"]))  # -m last: a plain mark filter
    assert keep(flow(mark=42, status=IPS_SEEN_REPLY))


def test_update_state_is_a_new_value_not_a_filter() -> None:
    argv = ["-U", "-s", "10.0.0.1", "-p", "tcp", "--state", "TIME_WAIT"]
    req = parse_args(argv)
    assert make_filter(req, use_mark=False, use_status=False, use_protoinfo=False)(flow(state=3))
    upd = update_of(argv, flow(state=3))
    assert upd is not None and upd.tcp.state == 7
    assert update_of(argv, flow(state=7)) is None  # unchanged: not sent, not counted


def test_update_sends_the_tuple_without_zone() -> None:
    upd = update_of(["-U", "-s", "10.0.0.1", "-p", "tcp", "-m", "5"], flow(zone=7))
    assert upd is not None and upd.zone is None and upd.orig.zone is None and upd.mark == 5
