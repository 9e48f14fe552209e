"""Write packets to a pcap file (LINKTYPE_RAW, IPv4) so tshark can judge them."""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path

LINKTYPE_RAW = 101


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def ip_packet(proto: int, src: str, dst: str, payload: bytes, ident: int = 0) -> bytes:
    hdr = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), ident & 0xFFFF, 0x4000, 64, proto, 0,
                                ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed))
    hdr[10:12] = _checksum(bytes(hdr)).to_bytes(2, "big")
    return bytes(hdr) + payload


def udp_packet(src: tuple[str, int], dst: tuple[str, int], payload: bytes, ident: int = 0) -> bytes:
    udp = struct.pack("!HHHH", src[1], dst[1], 8 + len(payload), 0) + payload
    pseudo = (ipaddress.IPv4Address(src[0]).packed + ipaddress.IPv4Address(dst[0]).packed
              + struct.pack("!BBH", 0, 17, len(udp)))
    csum = _checksum(pseudo + udp) or 0xFFFF
    udp = udp[:6] + csum.to_bytes(2, "big") + udp[8:]
    return ip_packet(17, src[0], dst[0], udp, ident)


def write_pcap(path: Path, packets: list[bytes], start: float = 1_000_000.0) -> None:
    with path.open("wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_RAW))
        for i, p in enumerate(packets):
            t = start + i * 0.001
            f.write(struct.pack("<IIII", int(t), int((t % 1) * 1e6), len(p), len(p)))
            f.write(p)
