"""Expectation sync (``Options { ExpectationSync on }``): C src/build.c ``exp2msg``, src/parse.c
``msg2exp``, src/external_cache.c / external_inject.c (exp part), src/cache-exp.c commit.

Expectations are few (one per helper-tracked session, e.g. an FTP data connection announced
but not yet open), so everything here is the plain reference path: ``Expect`` objects kept
whole, one kernel round trip per create/delete.  What matters is the order: the kernel accepts
an expectation only when its master conntrack exists, so a commit does conntracks first.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv4Address, IPv6Address

from ...flow import AF_INET, AF_INET6, Expect, Tuple
from ...netlink.attrs import NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, ExpMsg, exp_type
from ...netlink.codec import encode_expect, nlmsg
from ...netlink.socket import CtnlSocket, NetlinkError
from ..cache import ExpCache, ExpEntry
from .wire import FlowTuple, SyncExpect
from .wire_attrs import NTA_PORT_PROTOS

__all__ = ["ExpInjector", "commit_expectations", "expect_to_sync", "external_exp_apply", "sync_to_expect"]



def _ftuple(t: Tuple, ports: bool) -> FlowTuple | None:
    if t.src is None or t.dst is None or t.family not in (AF_INET, AF_INET6):
        return None
    cls = IPv4Address if t.family == AF_INET else IPv6Address
    if ports:
        return FlowTuple(cls(t.src), cls(t.dst), t.proto or 0, t.sport or 0, t.dport or 0)
    return FlowTuple(cls(t.src), cls(t.dst), t.proto or 0)


def expect_to_sync(exp: Expect, *, timeout: bool = True) -> SyncExpect | None:
    """exp2msg: what a C 1.4.7 sender transmits for a kernel expectation (None: not sendable)."""
    if exp.master is None or exp.tuple is None or exp.mask is None:
        return None
    # exp_l4proto_fcn: the master's protocol decides for all three tuples
    ports = (exp.master.proto or 0) in NTA_PORT_PROTOS
    master, expected, mask = (_ftuple(t, ports) for t in (exp.master, exp.tuple, exp.mask))
    if master is None or expected is None or mask is None:
        return None
    nat = None
    n = exp.nat_tuple
    if n is not None and n.family == AF_INET:  # there is no NTA_EXP_NAT_IPV6
        nat = _ftuple(n, ports)
    return SyncExpect(
        master=master, expected=expected, mask=mask,
        timeout=exp.timeout if timeout else None,
        flags=exp.flags or 0,
        klass=exp.klass,
        nat=nat,
        nat_dir=(exp.nat_dir or 0) if nat is not None else 0,
        helper=exp.helper,
        fn=exp.fn,
    )


def _tuple(t: FlowTuple) -> Tuple:
    fam = AF_INET6 if isinstance(t.src, IPv6Address) else AF_INET
    out = Tuple(fam, t.src.packed, t.dst.packed, t.l4proto)
    if t.ports is not None:
        out.sport, out.dport = t.ports
    return out


def sync_to_expect(se: SyncExpect) -> Expect:
    """msg2exp: the expectation a received message describes, ready for the kernel."""
    master = _tuple(se.master)
    return Expect(
        master.family, master=master, tuple=_tuple(se.expected), mask=_tuple(se.mask),
        timeout=se.timeout, flags=se.flags, klass=se.klass, helper=se.helper, fn=se.fn,
        nat_dir=se.nat_dir if se.nat is not None else None,
        nat_tuple=_tuple(se.nat) if se.nat is not None else None,
    )


def external_exp_apply(cache: ExpCache, mtype_new: bool, mtype_del: bool, exp: Expect, now: int) -> None:
    """external_cache_exp_new/upd/del: NEW replaces, UPD creates or updates, DEL removes."""
    if mtype_del:
        e = cache.find(exp)  # type: ignore[arg-type]
        if e is not None:
            cache.delete(e)
        return
    if mtype_new:
        old = cache.find(exp)  # type: ignore[arg-type]
        if old is not None:
            cache.delete(old)
        cache.add(exp, now)  # type: ignore[arg-type]
        return
    cache.update_force(exp, now)  # type: ignore[arg-type]


def _create_msg(exp: Expect, seq: int, timeout: int | None) -> bytes:
    if timeout is not None and timeout > 0:
        exp = replace(exp, timeout=timeout)
    return nlmsg(exp_type(ExpMsg.NEW), NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK, seq, exp.family, encode_expect(exp))


def _delete_msg(exp: Expect, seq: int) -> bytes:
    key = Expect(exp.family, tuple=exp.tuple, zone=exp.zone)  # the kernel finds it by the expected tuple
    return nlmsg(exp_type(ExpMsg.DELETE), NLM_F_ACK, seq, exp.family, encode_expect(key))


def _call(sock: CtnlSocket, build: Callable[[int], bytes]) -> int:
    """One request; 0 or the errno the kernel answered."""
    seq = sock.next_seq()
    try:
        sock.request(build(seq), seq)
    except NetlinkError as exc:
        return exc.errno
    except OSError as exc:
        return exc.errno or errno.EIO
    return 0


def create_expect(sock: CtnlSocket, exp: Expect, timeout: int | None) -> int:
    """nl_create_expect with C's EEXIST handling: delete and create once more."""
    err = _call(sock, lambda seq: _create_msg(exp, seq, timeout))
    if err == errno.EEXIST:
        derr = _call(sock, lambda seq: _delete_msg(exp, seq))
        if derr in (0, errno.ENOENT):
            err = _call(sock, lambda seq: _create_msg(exp, seq, timeout))
    return err


def _commit_timeout(e: ExpEntry, commit_timeout: int | None, now: float) -> int:
    """cache_exp_commit_step: CommitTimeout, else the cached timeout minus the time since the update."""
    if commit_timeout:
        return commit_timeout
    age = int(now) - e.lastupdate
    if age < 0:
        age = 60
    left = ((e.exp.timeout if e.exp is not None else None) or 0) - age
    return left if left >= 0 else 60


def commit_expectations(cache: ExpCache, sock: CtnlSocket, commit_timeout: int | None,
                        log: Callable[[str, str], None], now: float | None = None) -> tuple[int, int]:
    """cache_exp_commit: every cached expectation into the kernel (its master must be there already)."""
    now = time.time() if now is None else now
    ok = fail = 0
    for e in cache.live():
        assert e.exp is not None
        err = create_expect(sock, e.exp, _commit_timeout(e, commit_timeout, now))
        if err:
            log("ERROR", f"commit-create: {os.strerror(err)}")
            fail += 1
        else:
            ok += 1
    return ok, fail


class ExpInjector:
    """external_inject.c for expectations (DisableExternalCache): NEW and UPD create, DEL deletes."""

    def __init__(self, sock: CtnlSocket, log: Callable[[str, str], None]) -> None:
        self.sock = sock
        self.log = log
        self.add_ok = self.add_fail = self.del_ok = self.del_fail = 0

    def apply(self, is_del: bool, exp: Expect) -> None:
        if is_del:
            err = _call(self.sock, lambda seq: _delete_msg(exp, seq))
            if err and err != errno.ENOENT:
                self.del_fail += 1
                self.log("ERROR", f"inject-del: {os.strerror(err)}")
            else:
                self.del_ok += 1
            return
        err = create_expect(self.sock, exp, None)
        if err:
            self.add_fail += 1
            self.log("ERROR", f"inject-add: {os.strerror(err)}")
        else:
            self.add_ok += 1
