"""Cisco IKE fragmentation payload (type 132), as Cisco and strongSwan/vpnc implement it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Self

from natt.errors import LengthError
from natt.wire.buffer import Reader, Writer
from natt.wire.constants import PayloadType
from natt.wire.payloads.base import Payload

FRAGMENT_LAST = 0x01


@dataclass
class CiscoFragment(Payload):
    TYPE: ClassVar[int] = PayloadType.CISCO_FRAGMENT
    fragment_id: int = 0
    number: int = 1
    flags: int = 0
    data: bytes = b""

    @property
    def last(self) -> bool:
        return bool(self.flags & FRAGMENT_LAST)

    def encode_body(self, w: Writer) -> None:
        w.u16(self.fragment_id).u8(self.number).u8(self.flags).bytes(self.data)

    @classmethod
    def decode_body(cls, r: Reader, payload_type: int) -> Self:
        fid = r.u16("fragment id")
        number = r.u8("fragment number")
        flags = r.u8("fragment flags")
        data = r.rest()
        if number == 0 or not data:
            raise LengthError(f"fragment number {number} with {len(data)} bytes")
        return cls(fid, number, flags, data)
