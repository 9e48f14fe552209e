"""UDP encapsulation of ESP on port 4500 (RFC 3948): demultiplexing and NAT keepalives.

One UDP port carries three things: IKE behind a 4-byte zero non-ESP marker (the marker
sits where an ESP SPI would be, and SPI 0 is reserved, so it cannot start ESP), ESP
packets as they are, and one-byte 0xFF NAT-keepalives (RFC 3948 2.2, 2.3).
"""

from __future__ import annotations

from enum import Enum

from natt.wire.constants import NAT_KEEPALIVE, NON_ESP_MARKER

__all__ = [
    "CISCO_UDP_KEEPALIVE",
    "DEFAULT_KEEPALIVE_INTERVAL",
    "KEEPALIVE_PAYLOAD",
    "DatagramKind",
    "KeepaliveTimer",
    "add_non_esp_marker",
    "classify_4500",
    "classify_cisco_udp",
]

KEEPALIVE_PAYLOAD = NAT_KEEPALIVE
# RFC 3948 4 suggests 20 s; Cisco clients default to 20 s, the lab's concentrator sends
# about every 9 s: the daemons pass their own.
DEFAULT_KEEPALIVE_INTERVAL = 20.0

_MARKER_LEN = len(NON_ESP_MARKER)
_ESP_MIN_LEN = 8  # SPI + sequence number


class DatagramKind(Enum):
    KEEPALIVE = "keepalive"
    IKE = "ike"
    ESP = "esp"
    INVALID = "invalid"


def classify_4500(datagram: bytes) -> tuple[DatagramKind, memoryview | bytes]:
    """What a port-4500 datagram carries, and that content (IKE without its marker).

    The IKE part is a memoryview (no copy); the IKE decoder does its own length checks.
    """
    if datagram == KEEPALIVE_PAYLOAD:
        return DatagramKind.KEEPALIVE, datagram
    if len(datagram) >= _MARKER_LEN and datagram[:_MARKER_LEN] == NON_ESP_MARKER:
        return DatagramKind.IKE, memoryview(datagram)[_MARKER_LEN:]
    # Not the marker, so the SPI is nonzero: ESP if the header fits.
    if len(datagram) >= _ESP_MIN_LEN:
        return DatagramKind.ESP, datagram
    return DatagramKind.INVALID, datagram


def add_non_esp_marker(ike: bytes) -> bytes:
    """An IKE message as sent on port 4500 (RFC 3948 2.2)."""
    return NON_ESP_MARKER + ike


class KeepaliveTimer:
    """When to send the next NAT-keepalive: sans-IO, the caller passes the clock.

    RFC 3948 4: a keepalive is only needed when nothing else was sent to the peer on the
    NAT binding for `interval` seconds, so every other packet sent (ESP or IKE) pushes the
    deadline back through `traffic_seen`.
    """

    __slots__ = ("_last", "interval")

    def __init__(self, interval: float, *, start: float = 0.0) -> None:
        if interval <= 0:
            raise ValueError(f"keepalive interval must be positive, not {interval}")
        self.interval = interval
        self._last = start  # when the peer last got a packet from us (start: SA setup)

    def next_deadline(self) -> float:
        return self._last + self.interval

    def due(self, now: float) -> bool:
        return now >= self._last + self.interval

    def sent(self, now: float) -> None:
        """A keepalive went out at `now`."""
        self._touch(now)

    def traffic_seen(self, now: float) -> None:
        """Another packet went to the peer at `now`: the binding is fresh without a keepalive."""
        self._touch(now)

    def _touch(self, now: float) -> None:
        # Events may be reported out of order: never move the deadline back.
        if now > self._last:
            self._last = now


# Cisco "IPsec over UDP" keepalives as vpnc sends them: four zero bytes (where an SPI would be) and 0xFF.
CISCO_UDP_KEEPALIVE = NON_ESP_MARKER + NAT_KEEPALIVE


def classify_cisco_udp(datagram: bytes) -> DatagramKind:
    """What a datagram on a Cisco IPsec-over-UDP port carries: ESP as it is (no marker, no IKE), or a keepalive.

    The port carries no IKE (that stays on UDP 500), so a zero SPI can only be a keepalive.
    """
    if datagram in (KEEPALIVE_PAYLOAD, CISCO_UDP_KEEPALIVE):
        return DatagramKind.KEEPALIVE
    if len(datagram) >= _ESP_MIN_LEN and datagram[:_MARKER_LEN] != NON_ESP_MARKER:
        return DatagramKind.ESP
    return DatagramKind.INVALID
