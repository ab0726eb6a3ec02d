"""Tiny pure-Python pcap / pcapng reader yielding UDP payloads (test helper).

Why: the sync codec's test vectors are captures of two C daemons; reading
them must not need scapy/dpkt/tshark.  Supports classic pcap (both byte
orders, usec/nsec), pcapng (SHB/IDB/EPB/SPB/OPB, per-interface link type,
either byte order), link types Ethernet (incl. 802.1Q/QinQ), Linux cooked
v1/v2, raw IP and BSD loopback; IPv4 (options, non-fragmented) and IPv6
(extension headers).  UDP/IP length fields trim Ethernet padding.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LINUX_SLL = 113
LINKTYPE_LINUX_SLL2 = 276
_RAW_ALIASES = {12, 14, LINKTYPE_RAW, 228, 229}  # DLT_RAW variants, IPV4, IPV6

ETH_P_IP, ETH_P_IPV6, ETH_VLAN = 0x0800, 0x86DD, {0x8100, 0x88A8, 0x9100}
_IPV6_EXT = {0, 43, 60, 135, 139, 140}  # hop-by-hop, routing, dstopts, mobility, hip, shim6
IPPROTO_UDP, IPPROTO_FRAGMENT = 17, 44


@dataclass(frozen=True, slots=True)
class UdpPacket:
    index: int  # 0-based frame number in the file
    ts: float
    src: IPv4Address | IPv6Address
    dst: IPv4Address | IPv6Address
    sport: int
    dport: int
    payload: bytes


def _network_from_link(linktype: int, frame: bytes) -> tuple[int, bytes] | None:
    """Return (ethertype, L3 bytes) for the frame, or None if not IP."""
    if linktype == LINKTYPE_ETHERNET:
        if len(frame) < 14:
            return None
        (etype,) = struct.unpack_from("!H", frame, 12)
        off = 14
        while etype in ETH_VLAN and len(frame) >= off + 4:
            (etype,) = struct.unpack_from("!H", frame, off + 2)
            off += 4
        return etype, frame[off:]
    if linktype == LINKTYPE_LINUX_SLL:
        return (struct.unpack_from("!H", frame, 14)[0], frame[16:]) if len(frame) >= 16 else None
    if linktype == LINKTYPE_LINUX_SLL2:
        return (struct.unpack_from("!H", frame, 0)[0], frame[20:]) if len(frame) >= 20 else None
    if linktype in _RAW_ALIASES:
        if not frame:
            return None
        return (ETH_P_IP if frame[0] >> 4 == 4 else ETH_P_IPV6), frame
    if linktype == LINKTYPE_NULL and len(frame) >= 4:
        fam = struct.unpack_from("<I", frame)[0]
        if fam > 0xFFFF:
            fam = struct.unpack_from(">I", frame)[0]
        return (ETH_P_IP if fam == 2 else ETH_P_IPV6), frame[4:]
    return None


def _udp_from_ip(etype: int, pkt: bytes):
    if etype == ETH_P_IP and len(pkt) >= 20 and pkt[0] >> 4 == 4:
        ihl = (pkt[0] & 0x0F) * 4
        total, frag = struct.unpack_from("!H2xH", pkt, 2)
        if pkt[9] != IPPROTO_UDP or frag & 0x3FFF or ihl < 20:  # skip fragments
            return None
        return ip_address(pkt[12:16]), ip_address(pkt[16:20]), pkt[ihl:total]
    if etype == ETH_P_IPV6 and len(pkt) >= 40 and pkt[0] >> 4 == 6:
        (plen,) = struct.unpack_from("!H", pkt, 4)
        nxt, off, end = pkt[6], 40, 40 + plen
        while nxt in _IPV6_EXT and len(pkt) >= off + 8:
            nxt, off = pkt[off], off + (pkt[off + 1] + 1) * 8
        if nxt != IPPROTO_UDP:  # includes IPPROTO_FRAGMENT: not reassembled
            return None
        return ip_address(pkt[8:24]), ip_address(pkt[24:40]), pkt[off:end]
    return None


def _udp(index: int, ts: float, linktype: int, frame: bytes) -> UdpPacket | None:
    net = _network_from_link(linktype, frame)
    if net is None:
        return None
    ip = _udp_from_ip(*net)
    if ip is None or len(ip[2]) < 8:
        return None
    src, dst, seg = ip
    sport, dport, ulen = struct.unpack_from("!HHH", seg)
    return UdpPacket(index, ts, src, dst, sport, dport, bytes(seg[8:ulen]))


def _frames_pcap(data: bytes) -> Iterator[tuple[float, int, bytes]]:
    magic = data[:4]
    table = {
        b"\xd4\xc3\xb2\xa1": ("<", 1e-6),
        b"\xa1\xb2\xc3\xd4": (">", 1e-6),
        b"\x4d\x3c\xb2\xa1": ("<", 1e-9),
        b"\xa1\xb2\x3c\x4d": (">", 1e-9),
    }
    bo, unit = table[magic]
    (linktype,) = struct.unpack_from(bo + "I", data, 20)
    rec = struct.Struct(bo + "IIII")
    off = 24
    while off + rec.size <= len(data):
        sec, frac, incl, _orig = rec.unpack_from(data, off)
        off += rec.size
        yield sec + frac * unit, linktype & 0xFFFF, data[off : off + incl]
        off += incl


def _frames_pcapng(data: bytes) -> Iterator[tuple[float, int, bytes]]:
    off, bo = 0, "<"
    ifaces: list[tuple[int, float]] = []
    while off + 12 <= len(data):
        if data[off : off + 4] == b"\x0a\x0d\x0d\x0a":  # SHB: byte order per section
            bo = "<" if data[off + 8 : off + 12] == b"\x4d\x3c\x2b\x1a" else ">"
            ifaces = []
        btype, blen = struct.unpack_from(bo + "II", data, off)
        if blen < 12:
            break
        body = data[off + 8 : off + blen - 4]
        if btype == 1:  # IDB
            linktype = struct.unpack_from(bo + "H", body)[0]
            ifaces.append((linktype, _tsresol(body[8:], bo)))
        elif btype in (6, 3) and ifaces:  # Enhanced / Simple Packet Block
            if btype == 6:
                iface, hi, lo, cap = struct.unpack_from(bo + "IIII", body)
                lt, unit = ifaces[iface]
                yield ((hi << 32) | lo) * unit, lt, body[20 : 20 + cap]
            else:
                (orig,) = struct.unpack_from(bo + "I", body)
                yield 0.0, ifaces[0][0], body[4 : 4 + orig]
        elif btype == 2 and ifaces:  # obsolete Packet Block
            iface, _drops, hi, lo, cap = struct.unpack_from(bo + "HHIII", body)
            lt, unit = ifaces[iface]
            yield ((hi << 32) | lo) * unit, lt, body[20 : 20 + cap]
        off += blen


def _tsresol(opts: bytes, bo: str) -> float:
    off = 0
    while off + 4 <= len(opts):
        code, olen = struct.unpack_from(bo + "HH", opts, off)
        if code == 0:
            break
        if code == 9 and olen >= 1:
            v = opts[off + 4]
            return 2.0 ** -(v & 0x7F) if v & 0x80 else 10.0**-v
        off += 4 + ((olen + 3) & ~3)
    return 1e-6


def read_udp(path: str | Path) -> list[UdpPacket]:
    """All UDP datagrams of a pcap or pcapng file, in file order."""
    data = Path(path).read_bytes()
    frames = _frames_pcapng(data) if data[:4] == b"\x0a\x0d\x0d\x0a" else _frames_pcap(data)
    out = []
    for i, (ts, lt, frame) in enumerate(frames):
        pkt = _udp(i, ts, lt, frame)
        if pkt is not None:
            out.append(pkt)
    return out
