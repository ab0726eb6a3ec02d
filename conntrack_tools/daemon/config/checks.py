"""Cross-field validation for ``conntrackd --config-test``.

Severity policy: **error** = conntrackd 1.4.7 refuses to start with this
configuration, or the setting cannot work as written (no peer address, port
outside 1..65535); **warning** = C starts but the configuration is suspicious,
deprecated, or depends on the host (interfaces, local addresses).  Host facts
are injected through :class:`HostFacts`, so a config can be checked off its node.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..sync.keyring import KEY_FILE_MAX, KeyFileError, parse_key_file
from .model import Channel, Config, Finding, Pos, Severity, SyncMode, Transport

__all__ = ["HostFacts", "check_config", "probe_host"]

MULTICHANNEL_MAX = 4
IFNAMSIZ = 16


@dataclass(frozen=True)
class HostFacts:
    """What the host can tell about itself.  A callable returning None means "unknown"."""

    has_interface: Callable[[str], bool | None] = lambda name: None
    has_address: Callable[[str], bool | None] = lambda addr: None
    #: (st_mode, st_uid) of a file, (-1, -1) when it does not exist, None when unknown
    file_stat: Callable[[str], tuple[int, int] | None] = lambda path: None
    #: the first bytes of a file (AuthKey key file), None when unknown or unreadable
    read_file: Callable[[str], bytes | None] = lambda path: None


def probe_host() -> HostFacts:
    """HostFacts for the running machine (interfaces and local IP addresses)."""
    import os
    import socket

    try:
        names = {name for _, name in socket.if_nameindex()}
    except OSError:
        names = None
    addrs: set[str] = set()
    try:  # IPv4 local addresses: "/32 host LOCAL" entries of the fib trie
        with open("/proc/net/fib_trie") as fh:
            prev = ""
            for line in fh:
                if "/32 host LOCAL" in line:
                    addrs.add(prev.split()[-1])
                prev = line
        with open("/proc/net/if_inet6") as fh:
            for line in fh:
                raw = line.split()[0]
                addrs.add(str(ipaddress.IPv6Address(int(raw, 16))))
    except (OSError, ValueError, IndexError):
        addrs = set()
    def file_stat(path: str) -> tuple[int, int] | None:
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return (-1, -1)
        except OSError:
            return None
        return (st.st_mode, st.st_uid)

    def read_file(path: str) -> bytes | None:
        try:
            with open(path, "rb") as fh:
                return fh.read(KEY_FILE_MAX + 1)
        except OSError:
            return None

    return HostFacts(
        has_interface=lambda n: None if names is None else n in names,
        has_address=lambda a: (a in addrs) if addrs else None,
        file_stat=file_stat,
        read_file=read_file,
    )


class _Checker:
    def __init__(self, config: Config, host: HostFacts) -> None:
        self.c = config
        self.host = host
        self.out: list[Finding] = []

    def add(self, severity: Severity, code: str, message: str, pos: Pos | tuple[int, int] | None = None) -> None:
        line, col = (pos.line, pos.column) if isinstance(pos, Pos) else (pos or (0, 0))
        self.out.append(Finding(severity, message, self.c.file, line, col, code))

    def at(self, key: str) -> Pos | None:
        return self.c.positions.get(key)

    def run(self) -> list[Finding]:
        self.out.extend(self.c.warnings)
        for rule in (self.sections, self.general, self.sync, self.channels, self.helper):
            rule()
        return self.out

    # -- rules ---------------------------------------------------------------------------
    def sections(self) -> None:
        c = self.c
        if c.sync is not None and c.stats is not None:
            later = next(p for name, p in reversed(c.sections) if name in ("Sync", "Stats"))
            self.add("error", "mode", "cannot use both `Stats' and `Sync' clauses in conntrackd.conf", later)
        if c.sync is None and c.stats is None:
            self.add("warning", "mode", "no Sync or Stats section: conntrackd defaults to statistics mode")
        g, s = c.general.syslog_facility, c.stats.syslog_facility if c.stats else None
        if g and s and g != s:
            self.add(
                "warning",
                "syslog",
                f"conflicting Syslog facilities ({g} vs {s}); General wins",
                self.at("stats.syslog_facility"),
            )

    def general(self) -> None:
        g = self.c.general
        if g.unix_path is None:
            self.add(
                "error",
                "unix",
                "no UNIX { Path ... } configured: conntrackd can't open its control socket and clients can't reach it",
            )
        if not g.lockfile_set:
            self.add(
                "warning",
                "lockfile",
                f"no LockFile configured; using {g.lockfile} (the manual wrongly says /var/lock/conntrack.lock)",
            )
        if g.netlink_buffer_size is not None and (
            g.netlink_buffer_size_max_growth is None or g.netlink_buffer_size > g.netlink_buffer_size_max_growth
        ):
            self.add(
                "warning",
                "netlink",
                "NetlinkBufferSize is ignored unless NetlinkBufferSizeMaxGrowth is set and at least as large",
                self.at("general.netlink_buffer_size"),
            )
        for key in (
            "hashsize",
            "hashlimit",
            "netlink_buffer_size",
            "netlink_buffer_size_max_growth",
            "event_iteration_limit",
        ):
            value = getattr(g, key)
            if value is not None and value < 0:
                self.add(
                    "error",
                    "range",
                    f"{key} is negative ({value}) after C integer conversion",
                    self.at(f"general.{key}"),
                )
        if g.netlink_events_reliable and g.netlink_overrun_resync > 0:
            self.add(
                "warning",
                "netlink",
                "NetlinkEventsReliable is on: consider NetlinkOverrunResync off",
                self.at("general.netlink_events_reliable"),
            )
        sched = g.scheduler
        if sched.type is None and self.at("general.sched_priority"):
            self.add(
                "warning",
                "scheduler",
                "Scheduler Priority without Type is ignored: conntrackd uses RR/99",
                self.at("general.sched_priority"),
            )
        elif sched.type is not None and sched.priority == 0:
            self.add(
                "warning",
                "scheduler",
                f"Priority 0 is invalid for {sched.type}: sched_setscheduler() fails"
                " and conntrackd stays on SCHED_OTHER",
                self.at("general.sched_type"),
            )
        f = g.filter
        if f and f.protocol and f.protocol.policy == "accept" and not f.protocol.protocols:
            self.add(
                "warning",
                "filter",
                "Protocol Accept with no known protocol drops every flow",
                self.at("general.filter"),
            )

    def sync(self) -> None:
        s = self.c.sync
        if s is None:
            return
        if not s.modes:
            self.add("warning", "mode", "no synchronization Mode given: defaulting to FTFW")
        elif len(set(s.modes)) > 1:
            self.add(
                "warning",
                "mode",
                f"several Mode blocks ({', '.join(s.modes)}): conntrackd runs {s.mode}",
                self.at("sync.mode[1]"),
            )
        if s.disable_external_cache and s.commit_timeout:
            self.add(
                "warning",
                "commit",
                "`CommitTimeout' can't be combined with `DisableExternalCache', ignoring this option",
                self.at("sync.commit_timeout"),
            )
        if s.disable_internal_cache and s.mode is not SyncMode.NOTRACK:
            self.add(
                "warning",
                "mode",
                f"DisableInternalCache is meant for NOTRACK but {s.mode} runs",
                self.at("sync.disable_internal_cache"),
            )
        if s.mode is SyncMode.ALARM and s.refresh_time >= s.cache_timeout:
            self.add(
                "warning",
                "alarm",
                f"RefreshTime {s.refresh_time} >= CacheTimeout {s.cache_timeout}:"
                " the peer expires entries before they are refreshed",
                self.at("sync.refresh_time"),
            )
        if s.auth_key:
            self.auth(s.auth_key)
        if s.expectation_helpers and not s.expectation_sync:
            self.add(
                "warning",
                "expect",
                "ExpectationSync helper list given but ExpectationSync is off",
                self.at("sync.expectation_sync"),
            )

    def auth(self, value: str) -> None:
        """Beyond C: AuthKey. Every peer must be this conntrackd; the key must be root-only."""
        pos = self.at("sync.auth_key")
        self.add(
            "warning",
            "auth",
            "AuthKey: authenticated sync (protocol version 2) requires every peer to be the Python conntrackd"
            " with the same key; C conntrackd 1.4.7 peers drop our datagrams (Wrong protocol version)"
            " and theirs are dropped here (unauthenticated)",
            pos,
        )
        in_file = value.startswith("/")
        path = value if in_file else self.c.file
        st = self.host.file_stat(path)
        if st is None:
            return
        mode, uid = st
        if mode == -1:
            if in_file:
                self.add("error", "auth", f"AuthKey file {path} does not exist", pos)
            return
        raw = self.host.read_file(path) if in_file else None
        if raw is not None:
            try:
                if len(raw) > KEY_FILE_MAX:
                    raise KeyFileError(f"{path}: larger than {KEY_FILE_MAX} bytes")
                parse_key_file(raw, path)
            except KeyFileError as exc:
                self.add("error", "auth", f"AuthKey file: {exc}", pos)
        if mode & 0o044 or uid != 0:
            what = f"AuthKey file {path}" if in_file else f"{path} holds the AuthKey and"
            self.add(
                "warning",
                "auth",
                f"{what} is {'group/world readable' if mode & 0o044 else 'not owned by root'}"
                f" (mode {mode & 0o777:04o}, uid {uid}): the key must be readable only by root (chmod 600)",
                pos,
            )

    def channels(self) -> None:
        s = self.c.sync
        if s is None:
            return
        chans = s.channels
        if not chans:
            self.add("error", "channel", "Sync needs one dedicated link: a Multicast, UDP or TCP block")
            return
        first = chans[0].transport
        for ch in chans[1:]:
            if ch.transport is not first:
                self.add(
                    "error",
                    "channel",
                    f"cannot use `{ch.transport}' with other dedicated link protocols! (first link is {first})",
                    (ch.line, ch.column),
                )
                break
        if len(chans) > MULTICHANNEL_MAX:
            ch = chans[MULTICHANNEL_MAX]
            self.add(
                "error",
                "channel",
                f"too many dedicated links in the configuration file (Maximum: {MULTICHANNEL_MAX})",
                (ch.line, ch.column),
            )
        defaults = [ch for ch in chans if ch.default]
        if len(defaults) > 1:
            self.add(
                "warning",
                "channel",
                "several Default links: conntrackd starts on the last one",
                (defaults[-1].line, defaults[-1].column),
            )
        seen: dict[tuple[object, ...], Channel] = {}
        for i, ch in enumerate(chans):
            for sev, code, msg, key in self.channel(ch):
                pos = self.at(f"sync.channels[{i}].{key}") if key else None
                self.add(sev, code, f"{ch.transport} link #{i + 1}: {msg}", pos or (ch.line, ch.column))
            ident = (ch.ipv4_address or ch.ipv6_address, ch.port)
            if ident in seen and ch.port is not None:
                self.add(
                    "warning",
                    "channel",
                    f"{ch.transport} link #{i + 1} repeats address and port of an earlier link",
                    (ch.line, ch.column),
                )
            seen[ident] = ch

    def channel(self, ch: Channel) -> Iterator[tuple[Severity, str, str, str]]:
        port_key = "Group" if ch.transport is Transport.MULTICAST else "Port"
        if ch.interface is None:
            yield "error", "channel", "Interface is required", ""
        else:
            if len(ch.interface) >= IFNAMSIZ:
                yield "error", "channel", f"interface name {ch.interface!r} is longer than 15 characters", "interface"
            if self.host.has_interface(ch.interface) is False:
                yield "warning", "host", f"{ch.interface} is an invalid interface on this host", "interface"
        if ch.port is None or ch.port == 0:
            yield "error", "channel", f"{port_key} (UDP port) is required", "port" if ch.port == 0 else ""
        elif not 1 <= ch.port <= 65535:
            yield "error", "range", f"{port_key} {ch.port} is not a port number (1..65535)", "port"
        for key in ("sndbuf", "rcvbuf"):
            if (getattr(ch, key) or 0) < 0:
                yield "error", "range", f"{key} is negative after C integer conversion", key
        if len(ch.families) > 1:
            yield "error", "family", "mixes IPv4 and IPv6 addresses", ""
        if ch.transport is Transport.MULTICAST:
            yield from self.multicast(ch)
        else:
            yield from self.unicast(ch)

    def multicast(self, ch: Channel) -> Iterator[tuple[Severity, str, str, str]]:
        group = ch.ipv4_address or ch.ipv6_address
        key = "ipv4_address" if ch.ipv4_address else "ipv6_address"
        if group is None:
            yield "error", "address", "a multicast group (IPv4_address or IPv6_address) is required", ""
        elif not ipaddress.ip_address(group).is_multicast:
            yield "error", "address", f"{group} is not a multicast address", key
        if ch.ipv4_address and ch.ipv4_interface is None:
            yield "warning", "address", "no IPv4_interface: the group is joined on the default interface", ""
        if ch.ipv4_interface and self.host.has_address(ch.ipv4_interface) is False:
            yield "warning", "host", f"{ch.ipv4_interface} is not configured on this host", "ipv4_interface"

    def unicast(self, ch: Channel) -> Iterator[tuple[Severity, str, str, str]]:
        local = ch.ipv4_address or ch.ipv6_address
        peer = ch.ipv4_destination or ch.ipv6_destination
        if local is None:
            yield "error", "address", "a local address (IPv4_address or IPv6_address) is required", ""
        elif self.host.has_address(local) is False:
            key = "ipv4_address" if ch.ipv4_address else "ipv6_address"
            yield "warning", "host", f"{local} is not configured on this host", key
        if peer is None:
            yield (
                "error",
                "address",
                ("a peer address (IPv4_Destination_Address or IPv6_Destination_Address) is required"),
                "",
            )
        elif local is not None and peer == local:
            yield "warning", "address", "destination equals the local address", ""

    def helper(self) -> None:
        h = self.c.helper
        if h is not None:
            self.add(
                "warning",
                "unsupported",
                "Helper section parsed but user-space helpers are not supported by this conntrackd; it is ignored",
                next((p for n, p in self.c.sections if n == "Helper"), None),
            )


def check_config(config: Config, host: HostFacts | None = None) -> list[Finding]:
    """All findings for ``--config-test``: the parser's warnings plus cross-field rules.

    ``host`` answers host-dependent questions; the default knows nothing, so
    the check is pure and works off the node.
    """
    return _Checker(config, host or HostFacts()).run()
