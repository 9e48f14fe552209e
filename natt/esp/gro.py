"""Receive offload for decrypted traffic: back-to-back TCP segments of one flow become one TUN write.

Each packet the kernel takes from a TUN costs it a trip through its whole stack (routing, forwarding,
the next device, the receiving socket). A TUN opened with IFF_VNET_HDR accepts a `virtio_net_hdr` in
front of each packet, and with it a "GSO" packet: one IPv4/TCP header, up to 64 KiB of payload and a
segment size. The kernel carries that as one packet as far as it can and cuts it into segments only
where it must (or never, when it ends at a local socket) — what GRO does for a NIC, done here in
userspace for what ESP decrypted, the way wireguard-go does it for its TUN.

The coalescer is sans-IO: `push(packet)` takes each decrypted IPv4 packet in arrival order and returns
the writes (each a list of buffers for one `os.writev`) that are due; `flush()` returns the rest at the
end of a batch. Only segments a receiver's own GRO would merge are merged (Linux `tcp_gro_receive`):
IPv4 without options and not fragmented, DF set, TCP with ACK and nothing but PSH besides it, the
same addresses, ports, ack number, window, options, TOS and TTL, each one starting where the previous
ended, all of the first one's size but a shorter last one, and PSH only on the last. Anything else is
written as it came, after the run it would have followed, so the order within a flow is kept.

The merged packet carries a correct IPv4 header checksum and, in the TCP checksum field, the
pseudo-header sum that VIRTIO_NET_HDR_F_NEEDS_CSUM asks for (the kernel adds the rest, per segment,
when it segments); single packets keep the checksums they arrived with.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

__all__ = ["VNET_HDR_LEN", "VNET_PLAIN", "TcpCoalescer", "ip_checksum"]

# struct virtio_net_hdr (linux/virtio_net.h), in the host's byte order (a TUN's default vnet endianness).
_VNET = struct.Struct("=BBHHHH")
VNET_HDR_LEN = _VNET.size  # 10
VIRTIO_NET_HDR_F_NEEDS_CSUM = 1
VIRTIO_NET_HDR_GSO_NONE = 0
VIRTIO_NET_HDR_GSO_TCPV4 = 1
VNET_PLAIN = bytes(VNET_HDR_LEN)  # no offload: the packet is complete as it stands

_IP_HLEN = 20  # only option-less IPv4 headers are merged
_TCP_CSUM_OFFSET = 16
_TCP = 6
_ACK, _PSH = 0x10, 0x08
MAX_SEGMENTS = 64  # the kernel's own GRO stops at 64 segments (MAX_GRO_SKBS)
MAX_TOTAL = 65535  # an IPv4 total length


def _fold(value: int) -> int:
    """The ones' complement sum of a big-endian integer's 16-bit words: 2**16 = 1 mod 0xFFFF."""
    return value % 0xFFFF or (0xFFFF if value else 0)


def ip_checksum(header: bytes) -> int:
    """RFC 1071 checksum of an IPv4 header whose checksum field is zero."""
    return ~_fold(int.from_bytes(header, "big")) & 0xFFFF


class _Run:
    __slots__ = ("hlen", "key", "last_flags", "next_seq", "payload", "segments", "size")

    def __init__(self, pkt: bytes, hlen: int, key: bytes, seq: int, size: int, flags: int) -> None:
        self.hlen, self.key, self.size, self.last_flags = hlen, key, size, flags
        self.next_seq = (seq + size) & 0xFFFFFFFF
        self.segments: list[bytes] = [pkt]
        self.payload = size


class TcpCoalescer:
    """Decrypted IPv4 packets in; writes for a vnet-header TUN out (see the module docstring)."""

    def __init__(self, max_segments: int = MAX_SEGMENTS) -> None:
        self.max_segments = max_segments
        self._run: _Run | None = None
        self.merged_writes = 0  # GSO packets written
        self.merged_segments = 0  # segments they carried

    def push(self, pkt: bytes) -> Sequence[list[bytes | memoryview]]:
        """The writes due now that `pkt` arrived (often none: it joined the run in progress)."""
        run = self._run
        n = len(pkt)
        # Mergeable? IPv4, IHL 5, TCP, total length = what we hold, DF and no fragment, ACK (+PSH) only.
        if (
            n < 40
            or pkt[0] != 0x45
            or pkt[9] != _TCP
            or pkt[6] != 0x40  # DF set, MF clear, offset 0 (with DF the IP IDs need not run on)
            or pkt[7]
            or (pkt[2] << 8 | pkt[3]) != n
            or (pkt[33] & ~_PSH) != _ACK
        ):
            return self._alone(pkt)
        hlen = _IP_HLEN + (pkt[32] >> 4) * 4
        size = n - hlen
        if size <= 0 or hlen < 40:
            return self._alone(pkt)
        seq = int.from_bytes(pkt[24:28], "big")
        # Everything that must match for two segments to be one stream's neighbours.
        key = pkt[1:2] + pkt[8:10] + pkt[12:24] + pkt[28:33] + pkt[34:36] + pkt[38:hlen]
        flags = pkt[33]
        if run is not None:
            # The run holds only full segments, none with PSH (either ends it at once), fewer than the maximum.
            if (
                key == run.key
                and hlen == run.hlen
                and seq == run.next_seq
                and size <= run.size
                and hlen + run.payload + size <= MAX_TOTAL
            ):
                run.segments.append(pkt)
                run.payload += size
                run.next_seq = (seq + size) & 0xFFFFFFFF
                run.last_flags = flags
                if size < run.size or flags & _PSH or len(run.segments) >= self.max_segments:
                    return [self._emit()]
                return ()
            writes = [self._emit()]
            if flags & _PSH:
                writes.append([VNET_PLAIN, pkt])
            else:
                self._run = _Run(pkt, hlen, key, seq, size, flags)
            return writes
        if flags & _PSH:
            return ([VNET_PLAIN, pkt],)
        self._run = _Run(pkt, hlen, key, seq, size, flags)
        return ()

    def flush(self) -> list[list[bytes | memoryview]]:
        """The run in progress, written now (end of a batch)."""
        return [self._emit()] if self._run is not None else []

    def _alone(self, pkt: bytes) -> Sequence[list[bytes | memoryview]]:
        if self._run is None:
            return ([VNET_PLAIN, pkt],)
        return [self._emit(), [VNET_PLAIN, pkt]]

    def _emit(self) -> list[bytes | memoryview]:
        run = self._run
        assert run is not None
        self._run = None
        segments = run.segments
        first, hlen = segments[0], run.hlen
        if len(segments) == 1:
            return [VNET_PLAIN, first]
        total = hlen + run.payload
        ip = first[:2] + total.to_bytes(2, "big") + first[4:10] + b"\0\0" + first[12:20]
        ip = ip[:10] + ip_checksum(ip).to_bytes(2, "big") + ip[12:]
        # NEEDS_CSUM: the TCP checksum field holds the pseudo-header sum (addresses, protocol, TCP length).
        pseudo = _fold(int.from_bytes(first[12:20], "big") + _TCP + total - _IP_HLEN)
        tcp = first[20:33] + bytes((run.last_flags,)) + first[34:36] + pseudo.to_bytes(2, "big") + first[38:hlen]
        vnet = _VNET.pack(
            VIRTIO_NET_HDR_F_NEEDS_CSUM, VIRTIO_NET_HDR_GSO_TCPV4, hlen, run.size, _IP_HLEN, _TCP_CSUM_OFFSET
        )
        self.merged_writes += 1
        self.merged_segments += len(segments)
        return [vnet, ip, tcp, *(memoryview(s)[hlen:] for s in segments)]
