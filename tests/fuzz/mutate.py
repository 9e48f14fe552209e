"""Mutations of real datagrams, for the live fuzz run (tests.fuzz.live): what a blind attacker on the internet side
can do with the seed flow's datagrams in hand. Pure functions over bytes and one random generator: no sockets.

Operators: bit flips, truncations, length-field lies (the ISAKMP header's length, a payload's generic header length
in a plaintext message, an ESP packet's length by cutting or padding), splices of two datagrams, header-field
rewrites (next payload, version, exchange, flags, message ID), "interesting" byte values, and random junk.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from natt.wire.constants import GENERIC_HEADER_LEN, HEADER_LEN, NAT_KEEPALIVE, NON_ESP_MARKER, Flag

INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)
LENGTH_LIES_32 = (0, 1, HEADER_LEN - 1, HEADER_LEN, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
LENGTH_LIES_16 = (0, 1, GENERIC_HEADER_LEN - 1, GENERIC_HEADER_LEN, 0x7FFF, 0xFFFF)
MAX_DATAGRAM = 1472  # what one Ethernet frame carries in UDP
MAX_PAYLOADS = 32  # a plaintext chain walked for length lies


@dataclass
class Corpus:
    """The material, split by what each datagram is (IKE without marker, UDP-encapsulated ESP)."""

    ike: list[bytes] = field(default_factory=list)
    esp: list[bytes] = field(default_factory=list)

    @classmethod
    def from_seed_inputs(cls, inputs: Iterable[bytes]) -> Corpus:
        """From tests.fuzz.seeds inputs (route byte, selector byte, datagram without its marker)."""
        c = cls()
        for raw in inputs:
            body = raw[2:]
            if body == NAT_KEEPALIVE or len(body) < 8:
                continue
            if is_ike(body):
                c.ike.append(body)
            else:
                c.esp.append(body)
        return c


def is_ike(data: bytes) -> bool:
    """An ISAKMP header's shape: long enough, version 1.0."""
    return len(data) >= HEADER_LEN and data[17] == 0x10


def payload_length_offsets(data: bytes) -> list[int]:
    """Where the 16-bit length of each payload of a plaintext ISAKMP message sits (empty when encrypted)."""
    if not is_ike(data) or data[19] & Flag.ENCRYPTION:
        return []
    out: list[int] = []
    at, nxt = HEADER_LEN, data[16]
    while nxt and at + GENERIC_HEADER_LEN <= len(data) and len(out) < MAX_PAYLOADS:
        out.append(at + 2)
        length = int.from_bytes(data[at + 2 : at + 4], "big")
        if length < GENERIC_HEADER_LEN:
            break
        nxt, at = data[at], at + length
    return out


class Mutator:
    """Draws mutations from one seeded generator (a run is reproducible from its seed and its corpus)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.ops: dict[str, Callable[[bytes, list[bytes]], bytes]] = {
            "bitflip": self.bitflip, "truncate": self.truncate, "length-lie": self.length_lie,
            "splice": self.splice, "field": self.header_field, "interesting": self.interesting,
        }

    def junk(self) -> bytes:
        r = self.rng
        n = r.choice((0, 1, 2, 3, 4, 5, 7, 8, 9, 12, 16, 27, 28, 29, 32, 64, r.randrange(MAX_DATAGRAM)))
        return r.randbytes(n)

    def bitflip(self, data: bytes, _: list[bytes]) -> bytes:
        if not data:
            return data
        b = bytearray(data)
        for _ in range(self.rng.choice((1, 1, 2, 3, 8))):
            i = self.rng.randrange(len(b) * 8)
            b[i >> 3] ^= 1 << (i & 7)
        return bytes(b)

    def truncate(self, data: bytes, _: list[bytes]) -> bytes:
        if not data:
            return data
        r = self.rng
        cut = r.choice((r.randrange(len(data)), len(data) - 1, HEADER_LEN, HEADER_LEN - 1, 8, 4, 1))
        return data[: max(0, min(cut, len(data) - 1))]

    def length_lie(self, data: bytes, _: list[bytes]) -> bytes:
        """The header's length or one payload's: off by one, zero, huge, or the real length of something else."""
        r = self.rng
        b = bytearray(data)
        offsets = payload_length_offsets(data)
        if offsets and r.random() < 0.6:
            at = r.choice(offsets)
            real = int.from_bytes(b[at : at + 2], "big")
            lie = r.choice((*LENGTH_LIES_16, real - 1, real + 1, real + 4, len(data), r.randrange(0x10000)))
            b[at : at + 2] = (lie & 0xFFFF).to_bytes(2, "big")
            return bytes(b)
        if len(b) >= HEADER_LEN:
            lie = r.choice((*LENGTH_LIES_32, len(b) - 1, len(b) + 1, len(b) + 1000, r.randrange(1 << 32)))
            b[24:28] = (lie & 0xFFFFFFFF).to_bytes(4, "big")
            return bytes(b)
        # Too short for a header: lie by padding instead (a datagram longer than any field says).
        return data + r.randbytes(r.randrange(1, 64))

    def splice(self, data: bytes, pool: list[bytes]) -> bytes:
        """This datagram's head with another's tail, or another's chunk dropped in the middle."""
        r = self.rng
        other = r.choice(pool) if pool else self.junk()
        i = r.randrange(len(data) + 1)
        if r.random() < 0.5 or not other:
            return data[:i] + other[r.randrange(len(other) + 1):]
        j = r.randrange(len(other))
        return data[:i] + other[j : j + r.randrange(1, 256)] + data[i:]

    def header_field(self, data: bytes, _: list[bytes]) -> bytes:
        """One ISAKMP header field rewritten: next payload, version, exchange type, flags, message ID."""
        if len(data) < HEADER_LEN:
            return self.interesting(data, _)
        r = self.rng
        b = bytearray(data)
        at = r.choice((16, 17, 18, 19, 20))
        if at == 20:
            b[20:24] = r.choice((b"\x00" * 4, b"\xff" * 4, r.randbytes(4)))
        else:
            b[at] = r.choice((*INTERESTING_BYTES, r.randrange(256)))
        return bytes(b)

    def interesting(self, data: bytes, _: list[bytes]) -> bytes:
        if not data:
            return data
        b = bytearray(data)
        for _ in range(self.rng.choice((1, 2, 4))):
            b[self.rng.randrange(len(b))] = self.rng.choice(INTERESTING_BYTES)
        return bytes(b)

    def mutate(self, data: bytes, pool: list[bytes]) -> tuple[bytes, str]:
        """One to three operators stacked; the datagram and the operators' names ("junk" when it is random)."""
        r = self.rng
        if r.random() < 0.08:
            return self.junk(), "junk"
        names = r.sample(sorted(self.ops), r.choice((1, 1, 1, 2, 3)))
        for name in names:
            data = self.ops[name](data, pool)
        return data[:MAX_DATAGRAM], "+".join(names)

    def esp_garbage(self, spi: int, known_seq: int | None) -> bytes:
        """A live SPI with a sequence number (zero, one, far ahead, the last, near what the SA has seen) and a body
        of random bytes of a random length (block-aligned or not): it must fail the replay check or the ICV and
        move nothing (the window advances only after the ICV)."""
        r = self.rng
        seqs = [0, 1, 2, 0x7FFFFFFF, 0xFFFFFFFF, r.randrange(1 << 32)]
        if known_seq is not None:
            seqs += [known_seq, known_seq + 1, known_seq + 64, known_seq + 1000, max(0, known_seq - 64)]
        seq = r.choice(seqs) & 0xFFFFFFFF
        n = r.choice((0, 1, 8, 12, 15, 16, 17, 24, 28, 32, 48, 64, 100, r.randrange(1400)))
        return spi.to_bytes(4, "big") + seq.to_bytes(4, "big") + r.randbytes(n)


def with_marker(ike: bytes) -> bytes:
    return NON_ESP_MARKER + ike


def esp_seq(packet: bytes) -> int:
    return int.from_bytes(packet[4:8], "big")
