"""TCP receive coalescing for a vnet-header TUN (natt.esp.gro): which segments merge, and the GSO
packet built from them. The kernel's side of it is tested in tests/lab/test_tun_offload.py."""

from __future__ import annotations

import struct

import pytest

from natt.esp.gro import VNET_PLAIN, TcpCoalescer, ip_checksum
from tests.tcpseg import datagram, rfc1071, segment, stream

pytestmark = pytest.mark.unit

VNET = struct.Struct("=BBHHHH")


def run_all(packets: list[bytes], coalescer: TcpCoalescer | None = None) -> list[list[bytes]]:
    c = coalescer or TcpCoalescer()
    writes = [w for p in packets for w in c.push(p)] + c.flush()
    return [[bytes(b) for b in w] for w in writes]


def payload(pkt: bytes) -> bytes:
    return pkt[20 + (pkt[32] >> 4) * 4 :]


def test_a_run_becomes_one_gso_packet() -> None:
    segs = stream(8, 1348, last=500)
    (write,) = run_all(segs)
    vnet, ip, tcp, *parts = write
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = VNET.unpack(vnet)
    assert (flags, gso_type) == (1, 1)  # NEEDS_CSUM, GSO_TCPV4
    assert (hdr_len, gso_size, csum_start, csum_offset) == (52, 1348, 20, 16)
    first = segs[0]
    assert len(ip) == 20 and rfc1071(ip) == 0  # a valid header checksum
    assert struct.unpack(">H", ip[2:4])[0] == 52 + 8 * 1348 + 500
    assert ip[4:6] == first[4:6] and ip[12:20] == first[12:20]
    assert tcp[:13] == first[20:33] and tcp[14:16] == first[34:36] and tcp[18:] == first[38:52]
    assert tcp[13] == 0x18  # the last segment's PSH
    # NEEDS_CSUM: the pseudo-header sum (not complemented) over the merged TCP length.
    tcp_len = 32 + 8 * 1348 + 500
    pseudo = first[12:20] + struct.pack(">BBH", 0, 6, tcp_len)
    assert struct.unpack(">H", tcp[16:18])[0] == ~rfc1071(pseudo) & 0xFFFF
    assert b"".join(parts) == b"".join(payload(s) for s in segs)


def test_ip_checksum_matches_rfc1071() -> None:
    for ident in (0, 1, 0xFFFF, 12345):
        header = segment(5, b"x", ident=ident)[:20]
        zeroed = header[:10] + b"\0\0" + header[10 + 2 : 20]
        assert ip_checksum(zeroed) == rfc1071(zeroed)


def test_single_packets_pass_unchanged() -> None:
    lone = segment(1, b"a" * 100, flags=0x18)  # PSH and nothing before it
    udp = datagram(b"b" * 100)
    ack_only = segment(1, b"", flags=0x10)
    syn = segment(1, b"", flags=0x02)
    for pkt in (lone, udp, ack_only, syn):
        assert run_all([pkt]) == [[VNET_PLAIN, pkt]]


def test_what_does_not_merge() -> None:
    base = stream(2, 1000, psh_last=False)
    # a gap in the sequence, another flow, other options (timestamps moved), a fragment, no DF, IP options
    gap = segment(1000 + 2000 + 1, b"z" * 1000)
    other_flow = segment(3000, b"z" * 1000, sport=40001)
    other_ts = segment(3000, b"z" * 1000, options=b"\x01\x01\x08\x0a" + struct.pack(">II", 1, 2))
    no_df = segment(3000, b"z" * 1000, df=False)
    for odd in (gap, other_flow, other_ts, no_df):
        writes = run_all([*base, odd])
        assert len(writes) == 2, odd
        assert VNET.unpack(writes[0][0])[1] == 1  # the run before it went out first
        assert b"".join(writes[0][3:]) == b"".join(payload(s) for s in base)
        assert writes[1][1] == odd  # then the odd one: as it came, or as the start of its own run


def test_short_segment_and_psh_end_a_run() -> None:
    segs = stream(3, 1000, last=10, psh_last=False) + stream(3, 1000, seq=1000 + 3010, psh_last=False)
    writes = run_all(segs)
    assert len(writes) == 2
    assert VNET.unpack(writes[0][0])[3] == 1000 and len(writes[0]) == 3 + 4
    # a bigger segment after the run started cannot join it either
    big_after = [*stream(2, 500, psh_last=False), segment(2000, b"q" * 800)]
    assert len(run_all(big_after)) == 2


def test_order_within_a_flow_is_kept() -> None:
    """A pure ACK of the same flow between two runs goes out between them."""
    a = stream(3, 1000, psh_last=False)
    ack = segment(4000, b"", flags=0x10)
    b = stream(3, 1000, seq=4000, psh_last=False)
    writes = run_all([*a, ack, *b])
    assert [len(w) for w in writes] == [3 + 3, 2, 3 + 3]
    assert writes[1] == [VNET_PLAIN, ack]


def test_segment_cap_and_counters() -> None:
    c = TcpCoalescer(max_segments=4)
    writes = run_all(stream(10, 100, psh_last=False), c)
    assert [len(w) - 3 for w in writes] == [4, 4, 2]
    assert (c.merged_writes, c.merged_segments) == (3, 10)


def test_sequence_wraps() -> None:
    segs = stream(3, 1000, seq=0xFFFFFFFF - 1500, psh_last=False)
    (write,) = run_all(segs)
    assert len(write) == 3 + 3


@pytest.mark.parametrize("cut", [0, 19, 39])
def test_truncated_packets_are_written_alone(cut: int) -> None:
    pkt = segment(1, b"a" * 100)[:cut]
    assert run_all([pkt]) == [[VNET_PLAIN, pkt]]
