"""Notification and Delete payloads (RFC 2408 3.14, 3.15)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Self

from natt.errors import LengthError
from natt.wire.buffer import Reader, Writer
from natt.wire.constants import DOI_IPSEC, PayloadType, ProtocolId, notify_log_name, notify_name
from natt.wire.payloads.base import Payload


@dataclass
class Notify(Payload):
    TYPE: ClassVar[int] = PayloadType.NOTIFY
    notify_type: int = 0
    protocol_id: int = ProtocolId.ISAKMP
    spi: bytes = b""
    data: bytes = b""
    doi: int = DOI_IPSEC

    @property
    def name(self) -> str:
        return notify_name(self.notify_type)

    @property
    def log_name(self) -> str:
        return notify_log_name(self.notify_type)

    def encode_body(self, w: Writer) -> None:
        w.u32(self.doi).u8(self.protocol_id).u8(len(self.spi)).u16(self.notify_type)
        w.bytes(self.spi).bytes(self.data)

    @classmethod
    def decode_body(cls, r: Reader, payload_type: int) -> Self:
        doi = r.u32("notify DOI")
        proto = r.u8("notify protocol")
        spi_size = r.u8("notify SPI size")
        ntype = r.u16("notify type")
        spi = r.bytes(spi_size, "notify SPI")
        return cls(ntype, proto, spi, r.rest(), doi)


@dataclass
class Delete(Payload):
    TYPE: ClassVar[int] = PayloadType.DELETE
    protocol_id: int = ProtocolId.IPSEC_ESP
    spis: list[bytes] = field(default_factory=list)
    spi_size: int = 4
    doi: int = DOI_IPSEC

    def encode_body(self, w: Writer) -> None:
        w.u32(self.doi).u8(self.protocol_id).u8(self.spi_size).u16(len(self.spis))
        for spi in self.spis:
            if len(spi) != self.spi_size:
                raise LengthError(f"SPI of {len(spi)} bytes in a delete of size {self.spi_size}")
            w.bytes(spi)

    @classmethod
    def decode_body(cls, r: Reader, payload_type: int) -> Self:
        doi = r.u32("delete DOI")
        proto = r.u8("delete protocol")
        size = r.u8("delete SPI size")
        count = r.u16("delete SPI count")
        if size == 0 or r.remaining != size * count:
            raise LengthError(f"delete: {count} SPIs of {size} bytes in {r.remaining} bytes")
        return cls(proto, [r.bytes(size) for _ in range(count)], size, doi)
