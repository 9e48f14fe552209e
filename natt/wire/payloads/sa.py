"""SA, Proposal and Transform payloads with their data attributes (RFC 2408 3.3-3.6)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Self

from natt.errors import BadProposalSyntax, DoiNotSupported, LengthError, SituationNotSupported
from natt.wire.buffer import Reader, Writer
from natt.wire.constants import DOI_IPSEC, SIT_IDENTITY_ONLY, PayloadType
from natt.wire.payloads.base import Payload

AF_TV = 0x8000


@dataclass(frozen=True)
class DataAttribute:
    """One data attribute: TV (16-bit value, AF bit set) or TLV (variable bytes)."""

    type: int
    value: int | bytes

    @property
    def is_tv(self) -> bool:
        return isinstance(self.value, int)

    def as_int(self) -> int:
        if isinstance(self.value, int):
            return self.value
        if not 1 <= len(self.value) <= 8:
            raise LengthError(f"attribute {self.type}: {len(self.value)}-byte value is not an integer")
        return int.from_bytes(self.value, "big")

    @classmethod
    def integer(cls, type_: int, value: int) -> DataAttribute:
        """TV when it fits 16 bits, else a 4-byte TLV (as Cisco sends 86400 s)."""
        if 0 <= value <= 0xFFFF:
            return cls(type_, value)
        return cls(type_, value.to_bytes(max(4, (value.bit_length() + 7) // 8), "big"))

    def encode(self, w: Writer) -> None:
        if self.type & AF_TV or not 0 <= self.type <= 0x7FFF:
            raise LengthError(f"attribute type {self.type} does not fit 15 bits")
        if isinstance(self.value, int):
            w.u16(AF_TV | self.type).u16(self.value)
        else:
            w.u16(self.type).u16(len(self.value)).bytes(self.value)

    @classmethod
    def decode(cls, r: Reader) -> DataAttribute:
        t = r.u16("attribute type")
        if t & AF_TV:
            return cls(t & 0x7FFF, r.u16("attribute value"))
        n = r.u16("attribute length")
        return cls(t, r.bytes(n, "attribute value"))


def encode_attributes(w: Writer, attrs: list[DataAttribute]) -> None:
    for a in attrs:
        a.encode(w)


def decode_attributes(r: Reader) -> list[DataAttribute]:
    out = []
    while not r.eof():
        out.append(DataAttribute.decode(r))
    return out


def find_attr(attrs: list[DataAttribute], type_: int) -> DataAttribute | None:
    for a in attrs:
        if a.type == type_:
            return a
    return None


@dataclass
class Transform:
    number: int
    transform_id: int
    attributes: list[DataAttribute] = field(default_factory=list)

    def attr(self, type_: int) -> int | None:
        a = find_attr(self.attributes, type_)
        return None if a is None else a.as_int()

    def encode(self, w: Writer, last: bool) -> None:
        start = len(w)
        w.u8(PayloadType.NONE if last else PayloadType.TRANSFORM).u8(0).u16(0)
        w.u8(self.number).u8(self.transform_id).u16(0)
        encode_attributes(w, self.attributes)
        w.patch_u16(start + 2, len(w) - start)

    @classmethod
    def decode(cls, r: Reader) -> tuple[Transform, int]:
        nxt = r.u8("transform next payload")
        r.u8("transform reserved")
        length = r.u16("transform length")
        if length < 8:
            raise LengthError(f"transform length {length} < 8")
        body = r.sub(length - 4, "transform body")
        number = body.u8()
        tid = body.u8()
        body.u16()
        return cls(number, tid, decode_attributes(body)), nxt


@dataclass
class Proposal:
    number: int
    protocol_id: int
    spi: bytes = b""
    transforms: list[Transform] = field(default_factory=list)

    def encode(self, w: Writer, last: bool) -> None:
        start = len(w)
        w.u8(PayloadType.NONE if last else PayloadType.PROPOSAL).u8(0).u16(0)
        w.u8(self.number).u8(self.protocol_id).u8(len(self.spi)).u8(len(self.transforms))
        w.bytes(self.spi)
        for i, t in enumerate(self.transforms):
            t.encode(w, last=i == len(self.transforms) - 1)
        w.patch_u16(start + 2, len(w) - start)

    @classmethod
    def decode(cls, r: Reader) -> tuple[Proposal, int]:
        nxt = r.u8("proposal next payload")
        r.u8("proposal reserved")
        length = r.u16("proposal length")
        if length < 8:
            raise LengthError(f"proposal length {length} < 8")
        body = r.sub(length - 4, "proposal body")
        number = body.u8()
        proto = body.u8()
        spi_size = body.u8()
        count = body.u8()
        spi = body.bytes(spi_size, "proposal SPI")
        transforms: list[Transform] = []
        more = count > 0
        while more:
            t, t_next = Transform.decode(body)
            transforms.append(t)
            if t_next not in (PayloadType.NONE, PayloadType.TRANSFORM):
                raise BadProposalSyntax(f"transform followed by payload type {t_next}")
            more = t_next == PayloadType.TRANSFORM
        if len(transforms) != count or not body.eof():
            raise BadProposalSyntax(f"proposal says {count} transforms, found {len(transforms)}")
        return cls(number, proto, spi, transforms), nxt


@dataclass
class SecurityAssociation(Payload):
    TYPE: ClassVar[int] = PayloadType.SA
    proposals: list[Proposal] = field(default_factory=list)
    doi: int = DOI_IPSEC
    situation: int = SIT_IDENTITY_ONLY

    def encode_body(self, w: Writer) -> None:
        w.u32(self.doi).u32(self.situation)
        for i, p in enumerate(self.proposals):
            p.encode(w, last=i == len(self.proposals) - 1)

    @classmethod
    def decode_body(cls, r: Reader, payload_type: int) -> Self:
        doi = r.u32("SA DOI")
        if doi != DOI_IPSEC:
            raise DoiNotSupported(f"DOI {doi}")
        situation = r.u32("SA situation")
        if situation != SIT_IDENTITY_ONLY:
            raise SituationNotSupported(f"situation {situation:#x}")
        proposals: list[Proposal] = []
        more = True
        while more:
            p, nxt = Proposal.decode(r)
            proposals.append(p)
            if nxt not in (PayloadType.NONE, PayloadType.PROPOSAL):
                raise BadProposalSyntax(f"proposal followed by payload type {nxt}")
            more = nxt == PayloadType.PROPOSAL
        if not r.eof():
            raise BadProposalSyntax(f"{r.remaining} bytes after the last proposal")
        return cls(proposals=proposals, doi=doi, situation=situation)
