"""IPv4/TCP segments for the TUN offload tests, with checksums by the textbook RFC 1071 loop
(written independently of natt.esp.gro, which uses a modular-arithmetic shortcut)."""

from __future__ import annotations

import struct

SRC, DST = "10.99.1.2", "10.99.2.2"
TS_OPTION = b"\x01\x01\x08\x0a" + struct.pack(">II", 123456, 654321)  # NOP NOP timestamps


def rfc1071(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = 0
    for (word,) in struct.iter_unpack(">H", data):
        total += word
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def addr(text: str) -> bytes:
    return bytes(int(x) for x in text.split("."))


def tcp_checksum(ip_header: bytes, tcp: bytes) -> int:
    """The checksum a TCP segment must carry (its own checksum field zeroed first)."""
    pseudo = ip_header[12:20] + struct.pack(">BBH", 0, 6, len(tcp))
    return rfc1071(pseudo + tcp[:16] + b"\0\0" + tcp[18:])


def segment(
    seq: int,
    payload: bytes,
    *,
    ident: int = 1,
    flags: int = 0x10,
    src: str = SRC,
    dst: str = DST,
    sport: int = 40000,
    dport: int = 5201,
    ack: int = 7,
    window: int = 502,
    options: bytes = TS_OPTION,
    ttl: int = 64,
    df: bool = True,
) -> bytes:
    """An IPv4 TCP segment with correct IP and TCP checksums."""
    doff = (20 + len(options)) // 4
    tcp = struct.pack(">HHIIBBHHH", sport, dport, seq, ack, doff << 4, flags, window, 0, 0) + options + payload
    total = 20 + len(tcp)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, total, ident, 0x4000 if df else 0, ttl, 6, 0, addr(src), addr(dst))
    ip = ip[:10] + struct.pack(">H", rfc1071(ip)) + ip[12:]
    tcp = tcp[:16] + struct.pack(">H", tcp_checksum(ip, tcp)) + tcp[18:]
    return ip + tcp


def stream(count: int, size: int, *, seq: int = 1000, last: int | None = None, psh_last: bool = True) -> list[bytes]:
    """`count` full segments of one flow, then (if `last`) a shorter one, PSH on the final segment."""
    sizes = [size] * count + ([last] if last else [])
    out = []
    for i, n in enumerate(sizes):
        flags = 0x18 if psh_last and i == len(sizes) - 1 else 0x10
        out.append(segment(seq, bytes((seq + j) & 0xFF for j in range(n)), ident=100 + i, flags=flags))
        seq = (seq + n) & 0xFFFFFFFF
    return out


def datagram(payload: bytes, *, src: str = SRC, dst: str = DST, sport: int = 40000, dport: int = 5201) -> bytes:
    """An IPv4 UDP datagram with a correct header checksum (UDP checksum 0: none, allowed over IPv4)."""
    udp = struct.pack(">HHHH", sport, dport, 8 + len(payload), 0) + payload
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 9, 0x4000, 64, 17, 0, addr(src), addr(dst))
    return ip[:10] + struct.pack(">H", rfc1071(ip)) + ip[12:] + udp
