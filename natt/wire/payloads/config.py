"""Attribute payload of the transaction exchange: XAUTH and Mode Config (draft-dukes-ike-mode-cfg)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import ClassVar, Self

from natt.wire.buffer import Reader, Writer
from natt.wire.constants import CONFIG_SHORT_ATTRS, ConfigType, PayloadType
from natt.wire.payloads.base import Payload
from natt.wire.payloads.sa import DataAttribute, decode_attributes, encode_attributes


@dataclass
class ConfigAttributes(Payload):
    TYPE: ClassVar[int] = PayloadType.ATTRIBUTE
    cfg_type: int = ConfigType.REQUEST
    identifier: int = 0
    attributes: list[DataAttribute] = field(default_factory=list)

    def get(self, type_: int) -> DataAttribute | None:
        for a in self.attributes:
            if a.type == type_:
                return a
        return None

    def all(self, type_: int) -> list[DataAttribute]:
        return [a for a in self.attributes if a.type == type_]

    def encode_body(self, w: Writer) -> None:
        w.u8(self.cfg_type).u8(0).u16(self.identifier)
        encode_attributes(w, self.attributes)

    @classmethod
    def decode_body(cls, r: Reader, payload_type: int) -> Self:
        cfg_type = r.u8("config type")
        r.u8("config reserved")
        ident = r.u16("config identifier")
        return cls(cfg_type, ident, decode_attributes(r))


def attr(type_: int, value: int | bytes | str | None = None) -> DataAttribute:
    """A config attribute in the form peers expect: TV for the short ones, TLV otherwise.

    Called with no value it is an empty request ("please send me this").
    """
    if value is None:
        return DataAttribute(type_, 0 if type_ in CONFIG_SHORT_ATTRS else b"")
    if isinstance(value, str):
        value = value.encode()
    if type_ in CONFIG_SHORT_ATTRS:
        return DataAttribute(type_, int(value) if isinstance(value, int) else int.from_bytes(value, "big"))
    if isinstance(value, int):
        return DataAttribute(type_, value.to_bytes(4, "big"))
    return DataAttribute(type_, value)


def ipv4_attr(type_: int, address: str) -> DataAttribute:
    return DataAttribute(type_, ipaddress.IPv4Address(address).packed)


def split_include_value(networks: list[str]) -> bytes:
    """Cisco Unity split-include: 14 bytes per network (addr, mask, proto, sport, dport)."""
    out = bytearray()
    for n in networks:
        net = ipaddress.IPv4Network(n, strict=False)
        out += net.network_address.packed + net.netmask.packed + bytes(6)
    return bytes(out)


def parse_split_include(value: bytes) -> list[ipaddress.IPv4Network]:
    from natt.errors import LengthError

    if len(value) % 14:
        raise LengthError(f"split-include of {len(value)} bytes is not a multiple of 14")
    nets = []
    for i in range(0, len(value), 14):
        addr = ipaddress.IPv4Address(value[i : i + 4])
        mask = ipaddress.IPv4Address(value[i + 4 : i + 8])
        nets.append(ipaddress.IPv4Network(f"{addr}/{mask}", strict=False))
    return nets
