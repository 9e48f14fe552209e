"""ISAKMP header and payload chain (RFC 2408 3.1-3.2): strict decode, exact encode."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from natt.errors import (
    InvalidExchangeType,
    InvalidFlags,
    InvalidMajorVersion,
    InvalidMinorVersion,
    InvalidPayloadType,
    LengthError,
    TruncatedError,
    UnequalPayloadLengths,
)
from natt.wire.buffer import Reader, Writer
from natt.wire.constants import (
    EXCHANGE_LOG_NAMES,
    GENERIC_HEADER_LEN,
    HEADER_LEN,
    ISAKMP_MAJOR,
    ISAKMP_MINOR,
    KNOWN_FLAGS,
    PAYLOAD_DECODE_NAMES,
    PAYLOAD_LOG_NAMES,
    ExchangeType,
    Flag,
    PayloadType,
)
from natt.wire.payloads import PAYLOAD_CLASSES, Notify, Payload

P = TypeVar("P", bound=Payload)
_KNOWN_EXCHANGES = {int(e) for e in ExchangeType} - {ExchangeType.NONE}


@dataclass
class Header:
    icookie: bytes
    rcookie: bytes
    next_payload: int
    exchange: int
    flags: int
    message_id: int
    length: int = 0
    major: int = ISAKMP_MAJOR
    minor: int = ISAKMP_MINOR

    @property
    def encrypted(self) -> bool:
        return bool(self.flags & Flag.ENCRYPTION)

    def encode(self, w: Writer) -> None:
        w.bytes(self.icookie).bytes(self.rcookie).u8(self.next_payload)
        w.u8((self.major << 4) | self.minor).u8(self.exchange).u8(self.flags)
        w.u32(self.message_id).u32(self.length)

    @classmethod
    def decode(cls, data: bytes) -> Header:
        r = Reader(data)
        icookie = r.bytes(8, "initiator cookie")
        rcookie = r.bytes(8, "responder cookie")
        nxt = r.u8("next payload")
        version = r.u8("version")
        exchange = r.u8("exchange type")
        flags = r.u8("flags")
        mid = r.u32("message id")
        length = r.u32("length")
        major, minor = version >> 4, version & 0x0F
        if major != ISAKMP_MAJOR:
            raise InvalidMajorVersion(f"major version {major}")
        if minor != ISAKMP_MINOR:
            raise InvalidMinorVersion(f"minor version {minor}")
        if exchange not in _KNOWN_EXCHANGES:
            raise InvalidExchangeType(f"exchange type {exchange}")
        if flags & ~KNOWN_FLAGS:
            raise InvalidFlags(f"flags {flags:#04x}")
        if length < HEADER_LEN:
            raise LengthError(f"header length {length} < {HEADER_LEN}")
        if length > len(data):
            raise TruncatedError(f"header says {length} bytes, datagram has {len(data)}")
        if length < len(data):
            raise UnequalPayloadLengths(f"header says {length} bytes, datagram has {len(data)}")
        return cls(icookie, rcookie, nxt, exchange, flags, mid, length, major, minor)


@dataclass
class Message:
    header: Header
    payloads: list[Payload] = field(default_factory=list)
    # The decoded payload chain (plaintext) and each payload's [start, end) in it, header included:
    # QM/Informational hashes cover "the message following the HASH payload" as received.
    body: bytes = b""
    spans: list[tuple[int, int]] = field(default_factory=list)

    def get(self, cls: type[P]) -> P | None:
        for p in self.payloads:
            if isinstance(p, cls):
                return p
        return None

    def get_all(self, cls: type[P]) -> list[P]:
        return [p for p in self.payloads if isinstance(p, cls)]

    def notifies(self) -> list[Notify]:
        return self.get_all(Notify)

    def bytes_after_first(self) -> bytes:
        """Everything after the first payload (the HASH), as received."""
        if len(self.spans) < 2:
            return b""
        return self.body[self.spans[1][0] : self.spans[-1][1]]

    def payload_types(self) -> list[int]:
        return [p.payload_type for p in self.payloads]


def encode_payloads(payloads: list[Payload]) -> tuple[int, bytes]:
    """Encode a payload chain; returns (first payload type, bytes)."""
    w = Writer()
    for i, p in enumerate(payloads):
        nxt = payloads[i + 1].payload_type if i + 1 < len(payloads) else PayloadType.NONE
        start = len(w)
        w.u8(nxt).u8(0).u16(0)
        p.encode_body(w)
        w.patch_u16(start + 2, len(w) - start)
    first = payloads[0].payload_type if payloads else PayloadType.NONE
    return first, w.getvalue()


def decode_payloads(first: int, data: bytes, allow_padding: bool) -> tuple[list[Payload], list[tuple[int, int]]]:
    """Decode a chain. Trailing bytes after the last payload are only allowed as cipher padding."""
    r = Reader(data)
    payloads: list[Payload] = []
    spans: list[tuple[int, int]] = []
    ptype = first
    while ptype != PayloadType.NONE:
        cls = PAYLOAD_CLASSES.get(ptype)
        if cls is None:
            raise InvalidPayloadType(f"payload type {ptype}")
        start = r.pos
        nxt = r.u8("next payload")
        r.u8("reserved")
        length = r.u16("payload length")
        if length < GENERIC_HEADER_LEN:
            raise LengthError(f"{PAYLOAD_DECODE_NAMES.get(ptype, ptype)} payload length {length}")
        body = r.sub(length - GENERIC_HEADER_LEN, f"{PAYLOAD_DECODE_NAMES.get(ptype, ptype)} payload")
        raw = data[body.pos : body.pos + body.remaining]
        p = cls.decode_body(body, ptype)
        if not body.eof():
            raise LengthError(f"{body.remaining} bytes left inside payload type {ptype}")
        p.raw = raw
        payloads.append(p)
        spans.append((start, r.pos))
        ptype = nxt
    if not r.eof() and not allow_padding:
        raise UnequalPayloadLengths(f"{r.remaining} bytes after the last payload")
    return payloads, spans


def encode_message(header: Header, payloads: list[Payload]) -> bytes:
    """A plaintext message; header.length and next_payload are filled in."""
    first, body = encode_payloads(payloads)
    header.next_payload = first
    header.length = HEADER_LEN + len(body)
    w = Writer()
    header.encode(w)
    return w.getvalue() + body


def decode_message(data: bytes) -> Message:
    """A plaintext message (the encrypted flag must be clear)."""
    header = Header.decode(data)
    if header.encrypted:
        raise InvalidFlags("encrypted message given to the plaintext decoder")
    body = data[HEADER_LEN : header.length]
    payloads, spans = decode_payloads(header.next_payload, body, allow_padding=False)
    return Message(header, payloads, body, spans)


def describe_payloads(types: list[int], style: str = "client") -> str:
    """'SA, KE, NON, ID, VID' (client log) or 'HDR + HASH (8) + NOTIFY (11) + NONE (0)' (concentrator)."""
    if style == "client":
        return ", ".join(PAYLOAD_LOG_NAMES.get(t, str(t)) for t in types)
    parts = ["HDR"] + [f"{PAYLOAD_DECODE_NAMES.get(t, 'UNKNOWN')} ({t})" for t in types] + ["NONE (0)"]
    return " + ".join(parts)


def exchange_log_name(exchange: int) -> str:
    return EXCHANGE_LOG_NAMES.get(exchange, f"OAK {exchange}")
