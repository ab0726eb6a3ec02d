"""Sync codec against captures between two C 1.4.7 daemons (the test vectors).

Every UDP datagram of every capture must decode and re-encode byte for byte,
every conntrack message must re-encode identically from its ``SyncFlow``
view, and decoded values must agree with the independent text dumps shipped
next to the captures.  The captures are read in place (``CT_SHARED``).
"""

from __future__ import annotations

import re
import struct
from ipaddress import ip_address
from pathlib import Path

import pytest

from conntrack_tools.daemon.sync.wire import (
    AckHeader,
    Message,
    MsgFlag,
    MsgType,
    decode_datagram,
    encode_datagram,
    encode_flow_message,
    encode_message,
    pack_datagrams,
)
from conntrack_tools.daemon.sync.wire_attrs import CT_ATTRS, CtAttr
from tests.conftest import REFERENCE
from tests.unit.pcap import read_udp

REF = REFERENCE
WIRE = REF / "wire-captures"
SYNC_PCAP = REF / "c-tools-behaviour" / "sync.pcap"
SYNC_DUMP = REF / "c-tools-behaviour" / "sync_decoded.txt"

# capture -> (datagrams, messages) counted independently from the dumps
EXPECTED_COUNTS = {
    "alarm-udp.pcap": (120, 265),
    "ftfw-udp-basic.pcap": (36, 36),
    "ftfw-udp-resync-bulk.pcap": (66, 146),
    "notrack-udp.pcap": (19, 19),
    "sync.pcap": (300, 355),
}

pytestmark = pytest.mark.skipif(not WIRE.is_dir() or not SYNC_PCAP.is_file(), reason="reference captures absent")


def _captures() -> list[Path]:
    return sorted(WIRE.glob("*.pcap")) + [SYNC_PCAP]


_cache: dict[Path, list[tuple[bytes, list[Message]]]] = {}


def _decoded(path: Path) -> list[tuple[bytes, list[Message]]]:
    if path not in _cache:
        _cache[path] = [(p.payload, decode_datagram(p.payload)) for p in read_udp(path) if p.dport == 3780]
    return _cache[path]


@pytest.mark.parametrize("path", _captures(), ids=lambda p: p.name)
def test_every_datagram_round_trips(path: Path) -> None:
    dgrams = _decoded(path)
    assert (len(dgrams), sum(len(m) for _, m in dgrams)) == EXPECTED_COUNTS[path.name]
    for payload, msgs in dgrams:
        assert encode_datagram(msgs) == payload
        for m in msgs:
            if m.is_ct:  # the object view re-creates C's exact attribute order and sizes
                assert encode_flow_message(m.type, m.flow(), m.seq, m.flags) == encode_message(m)


def test_total_vector_counts() -> None:
    dgrams = sum(len(_decoded(p)) for p in _captures())
    msgs = sum(len(m) for p in _captures() for _, m in _decoded(p))
    assert (dgrams, msgs) == (541, 821)


# --------------------------------------------------------------------------- dump format of decode_ctd.py

_TYPES = {0: "CT_NEW", 1: "CT_UPD", 2: "CT_DEL", 3: "EXP_NEW", 4: "EXP_UPD", 5: "EXP_DEL", 10: "CTL"}
_FLAG_ORDER = (MsgFlag.RESYNC, MsgFlag.NACK, MsgFlag.ACK, MsgFlag.ALIVE, MsgFlag.HELLO, MsgFlag.HELLO_BACK)


def _ctd_value(attr: int, v: object) -> str:
    """Render a decoded value the way wire-captures/decode_ctd.py prints it."""
    if attr in (CtAttr.IPV4, CtAttr.IPV6, CtAttr.MASTER_IPV4, CtAttr.MASTER_IPV6):
        return f"{v[0]} -> {v[1]}"
    if attr in (CtAttr.PORT, CtAttr.MASTER_PORT):
        return f"sport={v[0]} dport={v[1]} (big-endian)"
    if attr in (CtAttr.SNAT_IPV4, CtAttr.DNAT_IPV4, CtAttr.SNAT_IPV6, CtAttr.DNAT_IPV6):
        return str(v)
    if attr in (CtAttr.SPAT_PORT, CtAttr.DPAT_PORT, CtAttr.ICMP_ID):
        return f"raw={struct.pack('<H', v).hex()} -> value {v} (bytes are LITTLE-endian on x86 peers!)"
    if attr == CtAttr.ZONE:
        return str(v)
    if attr in (CtAttr.STATUS, CtAttr.TIMEOUT, CtAttr.MARK, CtAttr.SCTP_VTAG_ORIG, CtAttr.SCTP_VTAG_REPL):
        return f"{v:#x}"
    if attr == CtAttr.SYNPROXY:
        return struct.pack("!3I", *v).hex()
    return str(v)


def _ctd_lines(msgs: list[Message]) -> list[str]:
    out = []
    for m in msgs:
        fl = "|".join(f.name for f in _FLAG_ORDER if m.flags & f) or "0"
        s = f"  msg v{m.header.version} type={_TYPES[m.type]} flags={fl} len={m.header.len} seq={m.seq}"
        if isinstance(m.header, AckHeader):
            s += f" from={m.header.from_} to={m.header.to}"
        out.append(s)
        for attr, v in m.attrs:
            spec = CT_ATTRS[attr]
            out.append(f"      attr {spec.name:<14} nta_len={spec.nta_len or 0:<3d} {_ctd_value(attr, v)}")
    return out


@pytest.mark.parametrize("path", sorted(WIRE.glob("*.pcap")), ids=lambda p: p.name)
def test_matches_decode_ctd_dump(path: Path) -> None:
    """Every line of the *.decoded.txt dump, regenerated from our decode."""
    dump = path.with_suffix(".decoded.txt").read_text().splitlines()
    blocks: list[tuple[str, list[str]]] = []
    for line in dump:
        if " datagram " in line:
            blocks.append((line, []))
        else:
            blocks[-1][1].append(line)
    dgrams = _decoded(path)
    assert len(blocks) == len(dgrams)
    for (head, lines), (payload, msgs) in zip(blocks, dgrams, strict=True):
        hexdump = head.split("bytes: ", 1)[1]
        assert f"datagram {len(payload)} bytes" in head
        assert payload.hex().startswith(hexdump.removesuffix("..."))
        assert _ctd_lines(msgs) == lines


# --------------------------------------------------------------------------- dump format of sync_decoded.txt

_FRAME = re.compile(r"^frame (\d+) .* udp_payload=(\d+)B raw=([0-9a-f]+)$")
_NETHDR = re.compile(
    r"^  nethdr ver=(\d+) type=(\d+)\((\w+)\) flags=0x([0-9a-f]+)\(([\w|]+)\) len=(\d+) seq=(\d+)"
    r"(?: from=(\d+) to=(\d+))?$"
)
_ATTR = re.compile(r"^    attr +(\d+) (\w+) +len= *(\d+) (.*)$")
_TCP_STATES = {3: "ESTABLISHED", 4: "FIN_WAIT", 7: "TIME_WAIT"}


def _sync_dump() -> list[tuple[bytes, list[tuple[tuple[str, ...], list[tuple[str, ...]]]]]]:
    frames: list = []
    for line in SYNC_DUMP.read_text().splitlines():
        if m := _FRAME.match(line):
            frames.append((bytes.fromhex(m[3]), []))
            assert int(m[2]) == len(frames[-1][0])
        elif m := _NETHDR.match(line):
            frames[-1][1].append((m.groups(), []))
        elif m := _ATTR.match(line):
            frames[-1][1][-1][1].append(m.groups())
        else:
            raise AssertionError(f"unparsed dump line {line!r}")
    return frames


def _sync_value(attr: int, v: object) -> str:
    if attr == CtAttr.IPV4:
        return f"{v[0]} -> {v[1]}"
    if attr == CtAttr.PORT:
        return f"{v[0]} -> {v[1]}"
    if attr == CtAttr.TCP_STATE:
        return f"{v} ({_TCP_STATES[v]})"
    if attr == CtAttr.STATUS:
        return f"{v:#x}"
    if attr == CtAttr.ICMP_ID:
        # That dump reads ICMP_ID big-endian; the truth is little-endian (see test below).
        return str(struct.unpack("!H", struct.pack("<H", v))[0])
    if attr == CtAttr.SYNPROXY:
        return struct.pack("!3I", *v).hex()
    return str(v)


def test_matches_sync_decoded_dump() -> None:
    frames = _sync_dump()
    dgrams = _decoded(SYNC_PCAP)
    assert len(frames) == len(dgrams) == 300
    checked_attrs = 0
    for (raw, dmsgs), (payload, msgs) in zip(frames, dgrams, strict=True):
        assert raw == payload  # our pcap reader extracts the same bytes as tshark
        assert len(dmsgs) == len(msgs)
        for (hdr, dattrs), m in zip(dmsgs, msgs, strict=True):
            ver, typ, tname, flags, _fnames, mlen, seq, frm, to = hdr
            assert (int(ver), int(typ), tname) == (m.header.version, m.type, m.type.name)
            assert (int(flags, 16), int(mlen), int(seq)) == (m.flags, m.header.len, m.seq)
            if frm is not None:
                assert (int(frm), int(to)) == (m.header.from_, m.header.to)
            else:
                assert not isinstance(m.header, AckHeader)
            assert len(dattrs) == len(m.attrs)
            for (aid, name, nta_len, text), (attr, v) in zip(dattrs, m.attrs, strict=True):
                spec = CT_ATTRS[attr]
                assert (int(aid), name, int(nta_len)) == (attr, spec.name, spec.nta_len)
                assert text == _sync_value(attr, v)
                checked_attrs += 1
    assert checked_attrs == 528  # = attr lines in the dump


def test_icmp_id_is_little_endian_per_conntrack_listing() -> None:
    """sync.pcap's ping had id=5326 (conntrack -L in t3/); the wire holds ce 14."""
    listing = (REF / "c-tools-behaviour" / "t3").rglob("*.out")
    ids = {int(i) for f in listing for i in re.findall(r"type=8 code=0 id=(\d+)", f.read_text())}
    assert ids == {5326}
    icmp = [m.flow() for _, ms in _decoded(SYNC_PCAP) for m in ms if m.is_ct and m.flow().orig.l4proto == 1]
    assert icmp and {f.icmp_id for f in icmp} == {5326}


# --------------------------------------------------------------------------- spot checks, field by field


def _msg(path: str, seq: int) -> Message:
    for _, msgs in _decoded(WIRE / path if path != "sync.pcap" else SYNC_PCAP):
        for m in msgs:
            if m.seq == seq and m.type != MsgType.CTL:
                return m
    raise LookupError(seq)


def test_spot_tcp_zone_synproxy() -> None:
    f = _msg("ftfw-udp-basic.pcap", 1795684541).flow()
    assert (f.orig.src, f.orig.dst) == (ip_address("192.168.1.10"), ip_address("8.8.8.8"))
    assert (f.orig.l4proto, f.orig.sport, f.orig.dport) == (6, 40000, 443)
    assert (f.status, f.tcp_state, f.timeout, f.mark, f.zone) == (0x0E, 3, 300, 7, 3)
    assert f.synproxy == (0, 0, 0) and f.snat is None and f.labels is None


def test_spot_udp_snat_little_endian_port() -> None:
    """conntrack -L: src=1.1.1.1 dst=203.0.113.5 sport=53 dport=61000 in the reply."""
    f = _msg("ftfw-udp-basic.pcap", 1795684542).flow()
    assert (f.status, f.orig.l4proto, f.orig.sport, f.orig.dport) == (0x19A, 17, 5353, 53)
    assert (f.snat, f.spat, f.timeout) == (ip_address("203.0.113.5"), 61000, 100)
    r = f.reply
    assert (str(r.src), str(r.dst), r.sport, r.dport) == ("1.1.1.1", "203.0.113.5", 53, 61000)
    listing = (WIRE / "conntrackd-client-outputs.txt").read_text()
    assert "src=1.1.1.1 dst=203.0.113.5 sport=53 dport=61000" in listing


def test_spot_icmp_and_ipv6() -> None:
    f = _msg("ftfw-udp-basic.pcap", 1795684543).flow()
    assert (f.orig.l4proto, f.icmp_type, f.icmp_code, f.icmp_id, f.orig.sport) == (1, 8, 0, 0x1234, None)
    f6 = _msg("ftfw-udp-basic.pcap", 1795684544).flow()
    o = f6.orig
    assert (str(o.src), str(o.dst), o.sport, o.dport) == ("2001:db8::1", "2001:db8::2", 1234, 80)
    assert f6.timeout == 200


def test_spot_control_messages() -> None:
    first = [ms for _, ms in _decoded(WIRE / "ftfw-udp-basic.pcap")][:4]
    assert [m.flags for [m] in first] == [0x30, 0x68, 0x48, 0x08]
    assert first[0][0].header.is_alive and first[0][0].header.is_hello
    ack = first[1][0].header
    assert isinstance(ack, AckHeader) and ack.is_ack and ack.is_hello_back
    assert (ack.seq, ack.from_, ack.to) == (1795684539, 1795684538, 1795684538)
    resync = [m for _, ms in _decoded(WIRE / "ftfw-udp-resync-bulk.pcap") for m in ms if m.header.is_resync]
    assert [(m.seq, m.header.from_, m.header.to) for m in resync] == [(1795684583, 0, 0)]


def test_bulk_batching_matches_c_sender() -> None:
    """The 17/17/9-message resync bulk re-batches identically with MTU 1500 - 28."""
    dgrams = _decoded(WIRE / "ftfw-udp-resync-bulk.pcap")
    big = [i for i, (p, _) in enumerate(dgrams) if len(p) > 700]
    for start in (big[0], big[3]):
        run = dgrams[start : start + 3]
        assert [len(ms) for _, ms in run] == [17, 17, 9]
        msgs = [m for _, ms in run for m in ms]
        assert pack_datagrams(msgs, 1500 - 28) == [p for p, _ in run]


# --------------------------------------------------------------------------- the pcap helper itself (synthetic)


def _udp_seg(payload: bytes, sport: int = 1111, dport: int = 3780) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def _ipv4(seg: bytes) -> bytes:
    return (
        struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(seg), 0, 0, 64, 17, 0, bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
        )
        + seg
    )


def _ipv6_hbh(seg: bytes) -> bytes:
    hbh = bytes([17, 0]) + bytes(6)  # hop-by-hop header, next = UDP
    return (
        struct.pack("!IHBB", 6 << 28, len(hbh) + len(seg), 0, 64)
        + ip_address("2001:db8::1").packed
        + ip_address("2001:db8::2").packed
        + hbh
        + seg
    )


def _pcap(linktype: int, frames: list[bytes]) -> bytes:
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)
    for i, fr in enumerate(frames):
        out += struct.pack("<IIII", 1000 + i, 5, len(fr), len(fr)) + fr
    return out


def _pcapng(linktype: int, frames: list[bytes]) -> bytes:
    def block(btype: int, body: bytes) -> bytes:
        body += bytes(-len(body) % 4)
        return struct.pack("<II", btype, 12 + len(body)) + body + struct.pack("<I", 12 + len(body))

    out = block(0x0A0D0D0A, struct.pack("<IHHq", 0x1A2B3C4D, 1, 0, -1))
    out += block(1, struct.pack("<HHI", linktype, 0, 0))
    for fr in frames:
        out += block(6, struct.pack("<IIIII", 0, 0, 1_000_000, len(fr), len(fr)) + fr)
    return out


def test_pcap_reader_link_types_and_formats(tmp_path: Path) -> None:
    pay = bytes.fromhex("1a1000086b07f8fd")
    v4, v6 = _ipv4(_udp_seg(pay)), _ipv6_hbh(_udp_seg(pay))
    eth = bytes(12) + b"\x81\x00\x00\x05" + b"\x08\x00" + v4 + bytes(10)  # VLAN tag + trailer padding
    sll = bytes(14) + b"\x86\xdd" + v6
    cases = {
        "eth.pcap": _pcap(1, [eth]),
        "sll.pcap": _pcap(113, [sll]),
        "raw6.pcap": _pcap(101, [v6]),
        "eth.pcapng": _pcapng(1, [eth, b"\xff" * 20]),
        "raw4.pcapng": _pcapng(101, [v4]),
    }
    for name, blob in cases.items():
        p = tmp_path / name
        p.write_bytes(blob)
        pkts = read_udp(p)
        assert [(x.payload, x.dport) for x in pkts] == [(pay, 3780)], name
        assert decode_datagram(pkts[0].payload)[0].header.is_alive
