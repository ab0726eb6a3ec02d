"""Sync channels: UDP unicast, Multicast (IPv4/IPv6) and TCP, up to 4 with failover
(C src/channel*.c, src/multichannel.c, src/mcast.c, src/udp.c, src/tcp.c).

Each channel has a receive socket (always read) and a send socket; only the
*current* channel sends.  Messages are batched per datagram up to ``MTU - 28``
(``MTU - 40`` for TCP) like C.  Beyond C, a multicast receiver binds the group
address and the interface (SO_BINDTODEVICE) and sets IP_MULTICAST_ALL=0 (IPv6:
IPV6_MULTICAST_ALL=0), so the kernel delivers only its configured group on its
configured interface; then every datagram's IP_PKTINFO/IPV6_PKTINFO is checked again
in userspace and a datagram is dropped and counted (``ChannelStats.drop_*``) when it
arrived on another interface, was not sent to the group, comes from one of our own
addresses, or comes from a source outside the prefixes of the configured interface
(``mcast_verdict``; docs/sync.md "Multicast receive filter").
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from ...netlink.socket import socket_drops
from ..config.model import Channel as ChannelCfg
from ..config.model import Transport
from .wire import Batcher

__all__ = ["ChannelStats", "LinkAddresses", "MultiChannel", "SyncChannel", "channel_block", "link_block",
           "mcast_verdict"]

SO_RCVBUFFORCE = 33
SO_SNDBUFFORCE = 32
SO_NO_CHECK = 11
IP_MULTICAST_ALL = 49
IP_PKTINFO = 8  # not in Python's socket module
IPV6_MULTICAST_ALL = 29  # Linux >= 4.20
_IN_PKTINFO = struct.Struct("=i4s4s")  # ipi_ifindex, ipi_spec_dst, ipi_addr (header destination)
_IN6_PKTINFO = struct.Struct("=16si")  # ipi6_addr (destination), ipi6_ifindex
_ANCBUF = socket.CMSG_SPACE(_IN6_PKTINFO.size) + 64
IFF_UP, IFF_RUNNING = 0x1, 0x40
MAX_DGRAM = 65536
# Receive buffer of a UDP/Multicast channel without RcvSocketBuffer (beyond C, which keeps the
# system default, 208 KiB here).  A sender (C's or ours) writes a burst faster than a Python
# receiver decodes it (~70 us per 1400-byte datagram of ~17 messages): with 208 KiB a 20k-flow
# burst lost 10-80 % of its datagrams on this 2-vCPU VM; 2 MiB kept all of 20k and lost half of a
# 200k burst from C; 16 MiB kept all of 200k (docs/sync.md, "Receive path").  It is a limit, not
# an allocation: memory is used only while datagrams wait.
DEFAULT_RCVBUF = 16 << 20
#: Beyond C: a UDP/Multicast receive socket on which the kernel dropped datagrams doubles its buffer, up to
#: this (or RcvSocketBuffer when larger). Why: a C sender answers a resync request with its whole cache at
#: full speed; a receiver that lost part of one answer to a full buffer lost part of the next one too (the
#: cascade measured in docs/benchmarks.md, session 5), while a grown buffer takes the next answer whole.
RCVBUF_GROWTH_MAX = 64 << 20


@dataclass(slots=True)
class ChannelStats:
    bytes_sent: int = 0
    bytes_recv: int = 0
    pkts_sent: int = 0
    pkts_recv: int = 0
    err_send: int = 0
    err_recv: int = 0
    # beyond C, multicast receive filter (mcast_verdict): datagrams dropped, and why
    drop_recv: int = 0
    drop_iface: int = 0  # arrived on another interface than the configured one
    drop_group: int = 0  # destination is not the configured group
    drop_own: int = 0  # source is one of this host's addresses (our own datagram looped back)
    drop_source: int = 0  # source outside every prefix of the configured interface
    drop_kernel: int = 0  # beyond C: datagrams the kernel dropped on a full receive buffer (SO_MEMINFO)
    rcvbuf: int = 0  # beyond C: the receive buffer asked for (RcvSocketBuffer, grown after drops), bytes
    rcvbuf_grown: int = 0  # beyond C: times a receive buffer was doubled after the kernel dropped datagrams


def _ifindex(name: str | None) -> int:
    if not name:
        return 0
    try:
        return socket.if_nametoindex(name)
    except OSError:
        return 0


def if_flags(name: str | None) -> int | None:
    if not name:
        return None
    try:
        with open(f"/sys/class/net/{name}/flags") as f:
            return int(f.read().strip(), 16)
    except (OSError, ValueError):
        return None


def if_mtu(name: str | None, default: int = 1500) -> int:
    if not name:
        return default
    try:
        with open(f"/sys/class/net/{name}/mtu") as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return default


def _dgram(fam: int, cfg: ChannelCfg, recv: bool) -> socket.socket:
    """A UDP socket of a UDP or Multicast channel: the receiver (SO_REUSEADDR, RcvSocketBuffer) or the
    sender (SndSocketBuffer); Checksum on both."""
    s = socket.socket(fam, socket.SOCK_DGRAM)
    if recv:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _set_rcvbuf(s, cfg.rcvbuf or DEFAULT_RCVBUF)
    else:
        _set_sndbuf(s, cfg.sndbuf)
    if not cfg.checksum and fam == socket.AF_INET:
        try:
            s.setsockopt(socket.SOL_SOCKET, SO_NO_CHECK, 1)
        except OSError:
            pass
    return s


def _setbuf(s: socket.socket, force: int, plain: int, size: int | None) -> None:
    """A socket buffer of ``size`` bytes (none given: the kernel's default): the FORCE option (root, beyond the
    sysctl maximum), else the plain one (capped by it)."""
    if not size:
        return
    try:
        s.setsockopt(socket.SOL_SOCKET, force, size)
    except OSError:
        s.setsockopt(socket.SOL_SOCKET, plain, size)


def _set_rcvbuf(s: socket.socket, size: int | None) -> None:
    _setbuf(s, SO_RCVBUFFORCE, socket.SO_RCVBUF, size)


def _set_sndbuf(s: socket.socket, size: int | None) -> None:
    _setbuf(s, SO_SNDBUFFORCE, socket.SO_SNDBUF, size)


# ---------------------------------------------------------------------- multicast receive filter

RTM_NEWADDR, RTM_GETADDR = 20, 22
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFA_ADDRESS, IFA_LOCAL = 1, 2
_NLMSGHDR = struct.Struct("=IHHII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTATTR = struct.Struct("=HH")


def dump_addresses() -> list[tuple[int, int, int, bytes, bytes]] | None:
    """Every address of this network namespace (rtnetlink RTM_GETADDR dump):
    ``[(family, ifindex, prefixlen, address, local)]`` (``local`` = IFA_LOCAL, else IFA_ADDRESS;
    they differ only on point-to-point links, where IFA_ADDRESS is the peer).  None on error."""
    out: list[tuple[int, int, int, bytes, bytes]] = []
    try:
        s = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
    except OSError:
        return None
    try:
        s.settimeout(2.0)
        s.send(_NLMSGHDR.pack(_NLMSGHDR.size + _IFADDRMSG.size, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
               + _IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0))
        while True:
            buf = s.recv(1 << 17)
            off = 0
            while off + _NLMSGHDR.size <= len(buf):
                length, mtype, _flags, _seq, _pid = _NLMSGHDR.unpack_from(buf, off)
                if length < _NLMSGHDR.size or off + length > len(buf):
                    return None
                if mtype == NLMSG_DONE:
                    return out
                if mtype == NLMSG_ERROR:
                    return None
                if mtype == RTM_NEWADDR and length >= _NLMSGHDR.size + _IFADDRMSG.size:
                    fam, plen, _fl, _scope, idx = _IFADDRMSG.unpack_from(buf, off + _NLMSGHDR.size)
                    attrs: dict[int, bytes] = {}
                    a, end = off + _NLMSGHDR.size + _IFADDRMSG.size, off + length
                    while a + 4 <= end:
                        alen, atype = _RTATTR.unpack_from(buf, a)
                        if alen < 4 or a + alen > end:
                            break
                        attrs[atype] = bytes(buf[a + 4:a + alen])
                        a += (alen + 3) & ~3
                    addr = attrs.get(IFA_ADDRESS) or attrs.get(IFA_LOCAL)
                    if addr is not None and fam in (socket.AF_INET, socket.AF_INET6):
                        out.append((fam, idx, plen, addr, attrs.get(IFA_LOCAL) or addr))
                off += (length + 3) & ~3
    except OSError:
        return None
    finally:
        s.close()


def _prefix(addr: bytes, plen: int) -> tuple[int, int]:
    """(network, mask) as integers of the address width."""
    width = len(addr) * 8
    plen = max(0, min(plen, width))
    mask = ((1 << plen) - 1) << (width - plen)
    return int.from_bytes(addr, "big") & mask, mask


class LinkAddresses:
    """What the source check needs, read from the kernel: the prefixes of the configured
    interface (the link the peers share) and every local address (our own datagrams).

    Re-read at most every ``min_age`` seconds when a source fails the check (an address added
    after start), and every ``max_age`` seconds anyway (an address removed)."""

    def __init__(self, family: int, ifindex: int, dump: Callable[[], list | None] = dump_addresses,
                 min_age: float = 1.0, max_age: float = 30.0) -> None:
        self.family, self.ifindex, self.dump = family, ifindex, dump
        self.min_age, self.max_age = min_age, max_age
        self.nets: list[tuple[int, int]] = []
        self.own: set[bytes] = set()
        self.loaded_at = -1e9
        self.known = False  # False: never read successfully -> no source check
        self.refresh()

    def refresh(self) -> None:
        self.loaded_at = time.monotonic()
        got = self.dump()
        if got is None:
            return
        nets, own = [], set()
        for fam, idx, plen, addr, local in got:
            if fam != self.family:
                continue
            own.add(local)
            if idx == self.ifindex:
                nets.append(_prefix(addr, plen))
                if local != addr:  # point-to-point: our end
                    nets.append(_prefix(local, 8 * len(local)))
        self.nets, self.own, self.known = nets, own, True

    def stale(self, now: float) -> bool:
        return now - self.loaded_at >= self.max_age

    def may_refresh(self, now: float) -> bool:
        """A source failed: re-read once, if the last read is older than min_age."""
        if now - self.loaded_at < self.min_age:
            return False
        self.refresh()
        return True


def mcast_verdict(want_ifindex: int, group: bytes, arrived_ifindex: int, dst: bytes, src: bytes,
                  link: LinkAddresses | None) -> str | None:
    """Why a multicast datagram must be dropped ("iface", "group", "own", "source"), or None.

    ``want_ifindex`` 0 (neither Interface nor an IPv4_interface address on some interface):
    no interface or source check.  ``link`` None or never read: no own/source check.  The
    source check needs the datagram to come from an address inside a prefix of the configured
    interface: a peer on the dedicated link always does; a datagram from elsewhere was routed
    onto the link or forged.
    """
    if want_ifindex and arrived_ifindex != want_ifindex:
        return "iface"
    if dst != group:
        return "group"
    if link is None or not link.known:
        return None
    if src in link.own:
        return "own"
    if not want_ifindex or not link.nets:
        return None
    n = int.from_bytes(src, "big")
    for net, mask in link.nets:
        if n & mask == net:
            return None
    return "source"


def _ifindex_of_address(family: int, addr: bytes) -> int:
    for fam, idx, _plen, _a, local in dump_addresses() or ():
        if fam == family and local == addr:
            return idx
    return 0


class SyncChannel:
    """One dedicated link: ``recv_socks`` are read by the loop, ``send`` goes to the peer(s)."""

    kind = ""

    def __init__(self, cfg: ChannelCfg) -> None:
        self.cfg = cfg
        self.ifname = cfg.interface or ""
        self.ifindex = _ifindex(cfg.interface)
        self.stats = ChannelStats()
        self.recv_socks: list[socket.socket] = []
        self._kernel_drops: dict[int, int] = {}  # fd -> the socket's drop counter when last read
        if cfg.transport != Transport.TCP:
            self.stats.rcvbuf = cfg.rcvbuf or DEFAULT_RCVBUF
        mtu = if_mtu(cfg.interface)
        self.batcher = Batcher(mtu - (40 if cfg.transport == Transport.TCP else 28))

    # -------------------------------------------------------------- helpers
    def family(self) -> int:
        c = self.cfg
        return socket.AF_INET6 if (c.ipv6_address or c.ipv6_destination) and not c.ipv4_address else socket.AF_INET

    def status(self) -> str:
        """RUNNING / NO-CARRIER / DOWN as C's -s link (IFF_UP from flags, carrier from operstate)."""
        fl = if_flags(self.ifname)
        if fl is None:
            return "DOWN" if self.ifname else "RUNNING"
        if not fl & IFF_UP:
            return "DOWN"
        try:
            with open(f"/sys/class/net/{self.ifname}/operstate") as f:
                oper = f.read().strip()
        except OSError:
            oper = "unknown"
        return "RUNNING" if oper in ("up", "unknown") else "NO-CARRIER"

    def is_up(self) -> bool:
        return self.status() == "RUNNING"

    # -------------------------------------------------------------- I/O
    sealer = None  # auth.Sealer when AuthKey is set: every datagram leaves as one v2 envelope

    def set_sealer(self, sealer) -> None:
        from .auth import ENVELOPE_OVERHEAD

        self.sealer = sealer
        self.batcher = Batcher(self.batcher.budget - ENVELOPE_OVERHEAD)

    def queue(self, msg: bytes) -> None:
        for dgram in self.batcher.add(msg):
            self._send(dgram if self.sealer is None else self.sealer.seal(dgram))

    def queue_all(self, msgs: list[bytes]) -> None:
        for dgram in self.batcher.add_all(msgs):
            self._send(dgram if self.sealer is None else self.sealer.seal(dgram))

    def flush(self) -> None:
        d = self.batcher.flush()
        if d is not None:
            self._send(d if self.sealer is None else self.sealer.seal(d))

    def _send(self, data: bytes) -> None:
        raise NotImplementedError

    def kernel_drops(self, sock: socket.socket) -> int:
        """Datagrams the kernel dropped on ``sock`` since the last call (counted in the stats)."""
        total = socket_drops(sock)
        new = (total - self._kernel_drops.get(sock.fileno(), 0)) & 0xFFFFFFFF
        if new:
            self._kernel_drops[sock.fileno()] = total
            self.stats.drop_kernel += new
        return new

    def grow_rcvbuf(self, sock: socket.socket) -> int | None:
        """Double ``sock``'s receive buffer after drops (RCVBUF_GROWTH_MAX); the new size, None at the cap."""
        start = self.cfg.rcvbuf or DEFAULT_RCVBUF
        cur = self.stats.rcvbuf or start
        new = min(cur * 2, max(start, RCVBUF_GROWTH_MAX))
        if new <= cur:
            return None
        _set_rcvbuf(sock, new)
        self.stats.rcvbuf = new
        self.stats.rcvbuf_grown += 1
        return new

    def recv(self, sock: socket.socket) -> list[tuple[bytes, object]]:
        """Drain one socket: [(datagram, peer address)]."""
        out = []
        while True:
            try:
                data, addr = sock.recvfrom(MAX_DGRAM)
            except BlockingIOError:
                return out
            except OSError:
                self.stats.err_recv += 1
                return out
            self.stats.bytes_recv += len(data)
            self.stats.pkts_recv += 1
            out.append((data, addr[0]))
            if len(out) >= 64:
                return out

    def close(self) -> None:
        for s in self.recv_socks:
            s.close()
        self.recv_socks = []


class UdpChannel(SyncChannel):
    kind = "UDP"

    def __init__(self, cfg: ChannelCfg) -> None:
        super().__init__(cfg)
        fam = self.family()
        port = cfg.port or 3780
        r = _dgram(fam, cfg, recv=True)
        if fam == socket.AF_INET6:
            r.bind((cfg.ipv6_address or "::", port, 0, self.ifindex))
            self.dest = (cfg.ipv6_destination, port, 0, self.ifindex)
        else:
            r.bind((cfg.ipv4_address or "0.0.0.0", port))
            self.dest = (cfg.ipv4_destination, port)
        r.setblocking(False)
        self.recv_socks.append(r)
        s = _dgram(fam, cfg, recv=False)
        s.setblocking(False)
        self.sock = s

    def _send(self, data: bytes) -> None:
        try:
            n = self.sock.sendto(data, self.dest)
        except OSError:
            self.stats.err_send += 1
            return
        self.stats.bytes_sent += n
        self.stats.pkts_sent += 1

    def close(self) -> None:
        super().close()
        self.sock.close()


class McastChannel(SyncChannel):
    kind = "multicast"

    def __init__(self, cfg: ChannelCfg) -> None:
        super().__init__(cfg)
        fam = self.family()
        port = cfg.port or 3780
        r = _dgram(fam, cfg, recv=True)
        if self.ifname:
            r.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.ifname.encode())
        s = _dgram(fam, cfg, recv=False)
        if fam == socket.AF_INET6:
            group = cfg.ipv6_address
            r.bind((group, port, 0, self.ifindex))
            mreq = socket.inet_pton(socket.AF_INET6, group) + struct.pack("@I", self.ifindex)
            r.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, mreq)
            try:
                r.setsockopt(socket.IPPROTO_IPV6, IPV6_MULTICAST_ALL, 0)
            except OSError:
                pass
            r.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
            self.group = socket.inet_pton(socket.AF_INET6, group)
            self.want_ifindex = self.ifindex
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.ifindex)
            self.dest = (group, port, 0, self.ifindex)
        else:
            group = cfg.ipv4_address
            ifaddr = cfg.ipv4_interface or "0.0.0.0"
            r.bind((group, port))
            mreq = socket.inet_aton(group) + socket.inet_aton(ifaddr)
            r.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
            try:
                r.setsockopt(socket.IPPROTO_IP, IP_MULTICAST_ALL, 0)
            except OSError:
                pass
            r.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
            self.group = socket.inet_aton(group)
            # no Interface: the link is the interface holding IPv4_interface (C joins there)
            self.want_ifindex = self.ifindex or (
                _ifindex_of_address(socket.AF_INET, socket.inet_aton(ifaddr)) if ifaddr != "0.0.0.0" else 0)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
            s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(ifaddr))
            if self.ifname:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.ifname.encode())
            self.dest = (group, port)
        r.setblocking(False)
        s.setblocking(False)
        self.recv_socks.append(r)
        self.sock = s
        self.fam = fam
        self.link = LinkAddresses(fam, self.want_ifindex) if self.want_ifindex else None
        self.accepted: set[bytes] = set()  # sources that passed (the peers: few)

    _send = UdpChannel._send

    def recv(self, sock: socket.socket) -> list[tuple[bytes, object]]:
        """Drain one socket like SyncChannel.recv, dropping what ``mcast_verdict`` refuses."""
        out: list[tuple[bytes, object]] = []
        st = self.stats
        link = self.link
        if link is not None and link.stale(time.monotonic()):
            link.refresh()
            self.accepted.clear()
        v6 = self.fam == socket.AF_INET6
        level, ctype = (socket.IPPROTO_IPV6, socket.IPV6_PKTINFO) if v6 else (socket.IPPROTO_IP, IP_PKTINFO)
        while True:
            try:
                data, anc, _flags, addr = sock.recvmsg(MAX_DGRAM, _ANCBUF)
            except BlockingIOError:
                return out
            except OSError:
                st.err_recv += 1
                return out
            st.bytes_recv += len(data)
            st.pkts_recv += 1
            ifindex, dst = 0, b""
            for lvl, typ, cdata in anc:
                if lvl == level and typ == ctype:
                    if v6 and len(cdata) >= _IN6_PKTINFO.size:
                        dst, ifindex = _IN6_PKTINFO.unpack_from(cdata)
                    elif not v6 and len(cdata) >= _IN_PKTINFO.size:
                        ifindex, _spec, dst = _IN_PKTINFO.unpack_from(cdata)
            host = addr[0]
            why = self._verdict(ifindex, dst, host)
            if why is not None:
                st.drop_recv += 1
                if why == "iface":
                    st.drop_iface += 1
                elif why == "group":
                    st.drop_group += 1
                elif why == "own":
                    st.drop_own += 1
                else:
                    st.drop_source += 1
                continue
            out.append((data, host))
            if len(out) >= 64:
                return out

    def _verdict(self, ifindex: int, dst: bytes, host: str) -> str | None:
        if self.want_ifindex and ifindex != self.want_ifindex:
            return "iface"
        if dst != self.group:
            return "group"
        try:
            src = socket.inet_pton(self.fam, host.partition("%")[0])
        except (OSError, ValueError):
            return "source"
        if src in self.accepted:
            return None
        # a refused source is checked again every time (a prefix scan), and may trigger a re-read
        # of the addresses (at most once a second): an address added at runtime is picked up
        why = mcast_verdict(self.want_ifindex, self.group, ifindex, dst, src, self.link)
        if why is not None and self.link is not None and self.link.may_refresh(time.monotonic()):
            self.accepted.clear()
            why = mcast_verdict(self.want_ifindex, self.group, ifindex, dst, src, self.link)
        if why is None:
            if len(self.accepted) >= 1024:  # bounded whatever the link carries
                self.accepted.clear()
            self.accepted.add(src)
        return why

    def close(self) -> None:
        super().close()
        self.sock.close()


class TcpChannel(SyncChannel):
    """Listen + connect to the peer; a new inbound connection replaces the previous one."""

    kind = "TCP"

    def __init__(self, cfg: ChannelCfg, on_change: Callable[[], None] | None = None) -> None:
        super().__init__(cfg)
        from .wire import StreamDecoder

        self.decoder_cls = StreamDecoder
        fam = self.family()
        port = cfg.port or 3780
        self.fam = fam
        if fam == socket.AF_INET6:
            self.local = (cfg.ipv6_address or "::", port, 0, self.ifindex)
            self.dest = (cfg.ipv6_destination, port, 0, self.ifindex)
        else:
            self.local = (cfg.ipv4_address or "0.0.0.0", port)
            self.dest = (cfg.ipv4_destination, port)
        lsn = socket.socket(fam, socket.SOCK_STREAM)
        lsn.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _set_rcvbuf(lsn, cfg.rcvbuf)
        lsn.bind(self.local)
        lsn.listen(1)
        lsn.setblocking(False)
        self.listener = lsn
        self.server: socket.socket | None = None  # accepted
        self.client: socket.socket | None = None  # outgoing
        self.client_ok = False
        self.errorq: list[bytes] = []
        self.errorq_max = cfg.error_queue_length or 128
        self.on_change = on_change
        self.decoders: dict[int, object] = {}

    def connect(self) -> None:
        if self.client is not None:
            return
        c = socket.socket(self.fam, socket.SOCK_STREAM)
        _set_sndbuf(c, self.cfg.sndbuf)
        c.setblocking(False)
        try:
            c.connect(self.dest)
            self.client_ok = True
        except BlockingIOError:
            self.client_ok = False
        except OSError:
            c.close()
            return
        self.client = c

    def check_client(self) -> None:
        c = self.client
        if c is None:
            self.connect()
            return
        if not self.client_ok:
            err = c.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err == 0:
                try:
                    c.getpeername()
                    self.client_ok = True
                except OSError:
                    return
            else:
                c.close()
                self.client = None
                self.connect()
        if self.client_ok and self.errorq:
            q, self.errorq = self.errorq, []
            for d in q:
                self._send(d)

    def _send(self, data: bytes) -> None:
        c = self.client
        if c is None or not self.client_ok:
            self._errq(data)
            return
        try:
            c.sendall(data)
        except OSError:
            self.stats.err_send += 1
            c.close()
            self.client = None
            self.client_ok = False
            self._errq(data)
            return
        self.stats.bytes_sent += len(data)
        self.stats.pkts_sent += 1

    def _errq(self, data: bytes) -> None:
        self.errorq.append(data)
        if len(self.errorq) > self.errorq_max:
            del self.errorq[0]

    def state_text(self) -> str:
        return (f"server={'connected' if self.server is not None else 'disconnected'} "
                f"client={'connected' if self.client_ok else 'disconnected'}")

    def close(self) -> None:
        for s in (self.listener, self.server, self.client):
            if s is not None:
                s.close()
        self.server = self.client = None


def open_channel(cfg: ChannelCfg) -> SyncChannel:
    if cfg.transport == Transport.MULTICAST:
        return McastChannel(cfg)
    if cfg.transport == Transport.UDP:
        return UdpChannel(cfg)
    return TcpChannel(cfg)


def _counters(st: ChannelStats) -> str:
    # the drop line is beyond C: only shown once something was dropped, so the block stays C's
    drops = (f"{st.drop_recv:20} Dropped recv (wrong interface {st.drop_iface}, group {st.drop_group}, "
             f"source {st.drop_source}, own {st.drop_own})\n") if st.drop_recv else ""
    if st.drop_kernel:
        drops += f"{st.drop_kernel:20} Dropped by kernel (receive buffer full)\n"
    return (f"{st.bytes_sent:20} Bytes sent {st.bytes_recv:20} Bytes recv\n"
            f"{st.pkts_sent:20} Pckts sent {st.pkts_recv:20} Pckts recv\n"
            f"{st.err_send:20} Error send {st.err_recv:20} Error recv\n{drops}\n")


def channel_block(ch: SyncChannel) -> str:
    """The ``-s`` / ``-s network`` block of the current channel."""
    extra = f" {ch.state_text()}" if isinstance(ch, TcpChannel) else ""
    return f"{ch.kind} traffic (active device={ch.ifname}){extra}:\n" + _counters(ch.stats)


def link_block(ch: SyncChannel, active: bool) -> str:
    """One ``-s link`` block."""
    return (f"{ch.kind} traffic device={ch.ifname} status={ch.status()} role={'ACTIVE' if active else 'BACKUP'}:\n"
            + _counters(ch.stats))


class MultiChannel:
    """Up to 4 channels; only the current one sends (C src/multichannel.c)."""

    def __init__(self, channels: list[SyncChannel], current: int, log: Callable[[str, str], None]) -> None:
        self.channels = channels
        self.current = current if 0 <= current < len(channels) else 0
        self.log = log

    @property
    def cur(self) -> SyncChannel:
        return self.channels[self.current]

    def queue(self, msg: bytes) -> None:
        self.cur.queue(msg)

    def queue_all(self, msgs: list[bytes]) -> None:
        self.cur.queue_all(msgs)

    def flush(self) -> None:
        self.cur.flush()

    def set_current(self, idx: int) -> None:
        if idx != self.current:
            self.cur.flush()
            self.current = idx

    def check_links(self) -> None:
        """interface_handler: the current link went down -> first other channel whose link is up."""
        if len(self.channels) < 2 or self.cur.is_up():
            return
        for i, ch in enumerate(self.channels):
            if i != self.current and ch.is_up():
                self.set_current(i)
                self.log("notice", f"device `{ch.ifname}' becomes dedicated link")
                return
        self.log("ERROR", "no dedicated links available!")

    def close(self) -> None:
        for ch in self.channels:
            ch.close()
