"""Identification payload (RFC 2407 4.6.2) and NAT-OA (RFC 3947 5.2)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import ClassVar, Self

from natt.errors import InvalidIdInformation, LengthError
from natt.wire.buffer import Reader, Writer
from natt.wire.constants import IdType, PayloadType
from natt.wire.payloads.base import Payload

# Exact data lengths for the address-shaped ID types; the others are free-form but not empty.
_FIXED_LEN = {
    IdType.IPV4_ADDR: 4,
    IdType.IPV4_ADDR_SUBNET: 8,
    IdType.IPV4_ADDR_RANGE: 8,
    IdType.IPV6_ADDR: 16,
    IdType.IPV6_ADDR_SUBNET: 32,
    IdType.IPV6_ADDR_RANGE: 32,
}
_KNOWN = {int(t) for t in IdType}


@dataclass
class Identification(Payload):
    TYPE: ClassVar[int] = PayloadType.ID
    id_type: int = IdType.IPV4_ADDR
    data: bytes = b""
    protocol: int = 0
    port: int = 0

    # -- constructors for the shapes IKE uses ---------------------------------------------

    @classmethod
    def ipv4(cls, addr: str, protocol: int = 0, port: int = 0) -> Identification:
        return cls(IdType.IPV4_ADDR, ipaddress.IPv4Address(addr).packed, protocol, port)

    @classmethod
    def ipv4_subnet(cls, network: str, protocol: int = 0, port: int = 0) -> Identification:
        net = ipaddress.IPv4Network(network, strict=False)
        return cls(IdType.IPV4_ADDR_SUBNET, net.network_address.packed + net.netmask.packed, protocol, port)

    @classmethod
    def ipv4_range(cls, first: str, last: str, protocol: int = 0, port: int = 0) -> Identification:
        data = ipaddress.IPv4Address(first).packed + ipaddress.IPv4Address(last).packed
        return cls(IdType.IPV4_ADDR_RANGE, data, protocol, port)

    @classmethod
    def text(cls, id_type: int, value: str, protocol: int = 0, port: int = 0) -> Identification:
        return cls(id_type, value.encode(), protocol, port)

    # -- views -----------------------------------------------------------------------------

    def network(self) -> ipaddress.IPv4Network:
        """The IPv4 traffic selector this ID names (host, subnet; ranges must be CIDR-shaped)."""
        if self.id_type == IdType.IPV4_ADDR:
            return ipaddress.IPv4Network(ipaddress.IPv4Address(self.data))
        if self.id_type == IdType.IPV4_ADDR_SUBNET:
            addr, mask = ipaddress.IPv4Address(self.data[:4]), ipaddress.IPv4Address(self.data[4:])
            try:
                return ipaddress.IPv4Network(f"{addr}/{mask}", strict=False)
            except ValueError as e:
                raise InvalidIdInformation(f"non-contiguous netmask {mask}") from e
        if self.id_type == IdType.IPV4_ADDR_RANGE:
            first, last = ipaddress.IPv4Address(self.data[:4]), ipaddress.IPv4Address(self.data[4:])
            nets = list(ipaddress.summarize_address_range(first, last)) if first <= last else []
            if len(nets) != 1:
                raise InvalidIdInformation(f"range {first}-{last} is not one subnet")
            return nets[0]
        raise InvalidIdInformation(f"ID type {self.id_type} is not an IPv4 selector")

    def display(self) -> str:
        t = self.id_type
        if t in (IdType.IPV4_ADDR, IdType.IPV6_ADDR):
            return str(ipaddress.ip_address(self.data))
        if t == IdType.IPV4_ADDR_SUBNET:
            return f"{ipaddress.IPv4Address(self.data[:4])}/{ipaddress.IPv4Address(self.data[4:])}"
        if t == IdType.IPV4_ADDR_RANGE:
            return f"{ipaddress.IPv4Address(self.data[:4])}-{ipaddress.IPv4Address(self.data[4:])}"
        if t in (IdType.FQDN, IdType.USER_FQDN, IdType.KEY_ID):
            return self.data.decode("utf-8", "replace")
        return self.data.hex()

    def encode_body(self, w: Writer) -> None:
        w.u8(self.id_type).u8(self.protocol).u16(self.port).bytes(self.data)

    @classmethod
    def decode_body(cls, r: Reader, payload_type: int) -> Self:
        id_type = r.u8("ID type")
        protocol = r.u8("ID protocol")
        port = r.u16("ID port")
        data = r.rest()
        if id_type not in _KNOWN:
            raise InvalidIdInformation(f"unknown ID type {id_type}")
        want = _FIXED_LEN.get(IdType(id_type))
        if want is not None and len(data) != want:
            raise LengthError(f"ID type {id_type} needs {want} bytes of data, has {len(data)}")
        if want is None and not data:
            raise LengthError(f"empty ID data for type {id_type}")
        return cls(id_type, data, protocol, port)


@dataclass
class NatOA(Payload):
    """NAT original address: ID type, 3 reserved bytes, the address."""

    TYPE: ClassVar[int] = PayloadType.NAT_OA
    address: str = "0.0.0.0"
    draft: bool = False

    @property
    def payload_type(self) -> int:
        return PayloadType.NAT_OA_DRAFT if self.draft else PayloadType.NAT_OA

    def encode_body(self, w: Writer) -> None:
        ip = ipaddress.ip_address(self.address)
        w.u8(IdType.IPV4_ADDR if ip.version == 4 else IdType.IPV6_ADDR).u8(0).u16(0).bytes(ip.packed)

    @classmethod
    def decode_body(cls, r: Reader, payload_type: int) -> Self:
        id_type = r.u8("NAT-OA ID type")
        r.u8("NAT-OA reserved")
        r.u16("NAT-OA reserved")
        data = r.rest()
        want = {IdType.IPV4_ADDR: 4, IdType.IPV6_ADDR: 16}.get(id_type)  # type: ignore[call-overload]
        if want is None:
            raise InvalidIdInformation(f"NAT-OA ID type {id_type}")
        if len(data) != want:
            raise LengthError(f"NAT-OA address of {len(data)} bytes")
        return cls(str(ipaddress.ip_address(data)), payload_type == PayloadType.NAT_OA_DRAFT)
