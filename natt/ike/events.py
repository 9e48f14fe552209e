"""What happened inside the IKE core: small frozen dataclasses the daemons and logs consume."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class IkeEvent:
    sa_id: int  # the endpoint's handle for the IKE SA
    peer: str  # peer IP address as seen on the wire


@dataclass(frozen=True)
class MessageSent(IkeEvent):
    exchange: int
    payloads: tuple[int, ...]
    encrypted: bool
    message_id: int
    port: int  # remote UDP port
    notifies: tuple[int, ...] = ()
    retransmit: bool = False


@dataclass(frozen=True)
class MessageReceived(IkeEvent):
    exchange: int
    payloads: tuple[int, ...]
    encrypted: bool
    message_id: int
    icookie: bytes
    rcookie: bytes
    flags: int
    length: int
    notifies: tuple[int, ...] = ()


@dataclass(frozen=True)
class VendorIdSeen(IkeEvent):
    data: bytes
    name: str | None


@dataclass(frozen=True)
class NatDetection(IkeEvent):
    local_behind_nat: bool
    remote_behind_nat: bool
    natt_negotiated: bool
    draft: str  # "RFC 3947", "draft-02", ...


@dataclass(frozen=True)
class PortFloated(IkeEvent):
    local_port: int
    remote_port: int


@dataclass(frozen=True)
class WeakAlgorithm(IkeEvent):
    what: str


@dataclass(frozen=True)
class NattRefused(IkeEvent):
    """The peer offered NAT-T but this concentrator's NAT transparency is off."""


@dataclass(frozen=True)
class Phase1Established(IkeEvent):
    mode: str
    group: str
    cipher: str
    hash: str
    dh_group: str
    lifetime: int
    identity: str


@dataclass(frozen=True)
class XauthRequested(IkeEvent):
    pass


@dataclass(frozen=True)
class XauthResult(IkeEvent):
    user: str
    ok: bool
    final: bool
    reason: str = ""


@dataclass(frozen=True)
class ModeConfigDone(IkeEvent):
    """Address and settings assigned (responder) or received (initiator)."""

    address: str
    netmask: str | None
    dns: tuple[str, ...] = ()
    nbns: tuple[str, ...] = ()
    domain: str = ""
    banner: str = ""
    split_networks: tuple[str, ...] = ()
    natt_port: int | None = None
    app_version: str = ""
    save_password: bool | None = None
    pfs: bool | None = None


@dataclass(frozen=True)
class ChildSaUp(IkeEvent):
    """A phase 2 SA pair is ready: the daemon builds its ESP SAs from this."""

    message_id: int
    inbound_spi: int
    outbound_spi: int
    transform: int
    key_bits: int | None
    auth: int | None
    keymat_in: bytes = field(repr=False)
    keymat_out: bytes = field(repr=False)
    udp_encap: bool  # ESP in UDP: NAT-T (RFC 3948) or Cisco IPsec over UDP
    local_port: int  # the ESP transport's ports (UDP); remote_port 0 = learn it from the peer's first ESP
    remote_port: int
    local_selector: str
    remote_selector: str
    lifetime: int
    rekey_of: int | None = None  # inbound SPI of the SA this one replaces


@dataclass(frozen=True)
class ChildSaDown(IkeEvent):
    inbound_spi: int
    outbound_spi: int
    reason: str


@dataclass(frozen=True)
class NotifyReceived(IkeEvent):
    notify_type: int
    protocol_id: int
    spi: bytes
    data: bytes


@dataclass(frozen=True)
class DpdEvent(IkeEvent):
    kind: str  # "request-sent", "request-received", "ack-sent", "ack-received", "heartbeat-received"
    seq: int


@dataclass(frozen=True)
class KeepaliveReceived(IkeEvent):
    pass


@dataclass(frozen=True)
class ExchangeFailed(IkeEvent):
    """A message was refused or an exchange could not go on."""

    reason: str
    notify: int | None
    fatal: bool


@dataclass(frozen=True)
class IkeSaDown(IkeEvent):
    reason: str


@dataclass(frozen=True)
class KeepaliveSent(IkeEvent):
    """A NAT keepalive (RFC 3948 4) went out."""
