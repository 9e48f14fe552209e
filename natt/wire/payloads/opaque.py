"""Payloads whose body is one opaque byte string: KE, HASH, SIG, NONCE, VID, NAT-D, CERT, CR."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Self

from natt.errors import LengthError
from natt.wire.buffer import Reader, Writer
from natt.wire.constants import PayloadType, vendor_id_name
from natt.wire.payloads.base import Payload


@dataclass
class _Opaque(Payload):
    data: bytes = b""
    MIN_LEN: ClassVar[int] = 0
    MAX_LEN: ClassVar[int] = 0xFFFF - 4

    def encode_body(self, w: Writer) -> None:
        w.bytes(self.data)

    @classmethod
    def decode_body(cls, r: Reader, payload_type: int) -> Self:
        data = r.rest()
        if not cls.MIN_LEN <= len(data) <= cls.MAX_LEN:
            raise LengthError(f"{cls.__name__} body of {len(data)} bytes, allowed {cls.MIN_LEN}..{cls.MAX_LEN}")
        return cls(data=data)


@dataclass
class KeyExchange(_Opaque):
    TYPE: ClassVar[int] = PayloadType.KE
    MIN_LEN: ClassVar[int] = 1


@dataclass
class Hash(_Opaque):
    TYPE: ClassVar[int] = PayloadType.HASH
    MIN_LEN: ClassVar[int] = 1


@dataclass
class Signature(_Opaque):
    TYPE: ClassVar[int] = PayloadType.SIG
    MIN_LEN: ClassVar[int] = 1


@dataclass
class Nonce(_Opaque):
    TYPE: ClassVar[int] = PayloadType.NONCE
    # RFC 2409 5: "the length of nonce payload MUST be between 8 and 256 bytes inclusive".
    MIN_LEN: ClassVar[int] = 8
    MAX_LEN: ClassVar[int] = 256


@dataclass
class VendorIdPayload(_Opaque):
    TYPE: ClassVar[int] = PayloadType.VENDOR_ID
    MIN_LEN: ClassVar[int] = 1

    @property
    def name(self) -> str | None:
        return vendor_id_name(self.data)


@dataclass
class Certificate(_Opaque):
    """CERT and CR: encoding octet then data; kept opaque (PSK only here)."""

    TYPE: ClassVar[int] = PayloadType.CERT
    MIN_LEN: ClassVar[int] = 1


@dataclass
class CertificateRequest(_Opaque):
    TYPE: ClassVar[int] = PayloadType.CR
    MIN_LEN: ClassVar[int] = 1


@dataclass
class NatD(_Opaque):
    """NAT discovery hash (RFC 3947 type 20; the drafts used 130)."""

    TYPE: ClassVar[int] = PayloadType.NAT_D
    MIN_LEN: ClassVar[int] = 1
    draft: bool = False

    @property
    def payload_type(self) -> int:
        return PayloadType.NAT_D_DRAFT if self.draft else PayloadType.NAT_D

    @classmethod
    def decode_body(cls, r: Reader, payload_type: int) -> Self:
        p = super().decode_body(r, payload_type)
        p.draft = payload_type == PayloadType.NAT_D_DRAFT
        return p
