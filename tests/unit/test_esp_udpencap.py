"""RFC 3948 UDP encapsulation on port 4500: demultiplexing and the NAT-keepalive timer."""

from __future__ import annotations

import pytest

from natt.esp import (
    DEFAULT_KEEPALIVE_INTERVAL,
    KEEPALIVE_PAYLOAD,
    DatagramKind,
    KeepaliveTimer,
    add_non_esp_marker,
    classify_4500,
)

pytestmark = pytest.mark.unit

IKE_HEADER = bytes(range(1, 29))  # any 28 bytes: the IKE decoder judges them, not the demux


def test_keepalive() -> None:
    """RFC 3948 2.3: a NAT-keepalive is the single byte 0xFF."""
    assert KEEPALIVE_PAYLOAD == b"\xff"
    kind, data = classify_4500(b"\xff")
    assert kind is DatagramKind.KEEPALIVE
    assert data == b"\xff"


def test_ike_behind_non_esp_marker() -> None:
    """RFC 3948 2.2: four zero bytes (where an SPI would be) mark IKE; they are stripped."""
    datagram = add_non_esp_marker(IKE_HEADER)
    assert datagram == b"\x00\x00\x00\x00" + IKE_HEADER
    kind, data = classify_4500(datagram)
    assert kind is DatagramKind.IKE
    assert isinstance(data, memoryview)
    assert bytes(data) == IKE_HEADER


def test_marker_alone_is_ike_for_the_decoder_to_refuse() -> None:
    """A bare marker (or a short IKE message) goes to the IKE decoder, which checks lengths."""
    kind, data = classify_4500(b"\x00\x00\x00\x00")
    assert kind is DatagramKind.IKE
    assert bytes(data) == b""


def test_esp() -> None:
    """RFC 3948 2.1: anything else with a nonzero SPI and a sequence number is ESP, untouched."""
    datagram = bytes.fromhex("00004321 00000001 e96e8c08".replace(" ", ""))
    kind, data = classify_4500(datagram)
    assert kind is DatagramKind.ESP
    assert data is datagram
    kind, _ = classify_4500(b"\x00\x00\x00\x01" + bytes(4))  # SPI 1: nonzero, so ESP
    assert kind is DatagramKind.ESP


@pytest.mark.parametrize(
    "datagram", [b"", b"\x00", b"\x00\x00\x00", b"\xfe", b"\xff\xff", b"\x01\x02\x03\x04\x05\x06\x07"]
)
def test_invalid(datagram: bytes) -> None:
    """Too short for ESP, not the marker, not exactly 0xFF: nothing to hand to anyone."""
    assert classify_4500(datagram)[0] is DatagramKind.INVALID


def test_timer_fires_after_an_idle_interval() -> None:
    """RFC 3948 4: with nothing sent for `interval` seconds, a keepalive is due."""
    timer = KeepaliveTimer(9.0, start=100.0)
    assert timer.next_deadline() == 109.0
    assert not timer.due(108.9)
    assert timer.due(109.0)
    timer.sent(109.5)
    assert timer.next_deadline() == 118.5
    assert not timer.due(118.0)


def test_traffic_postpones_the_keepalive() -> None:
    """RFC 3948 4: a keepalive is only needed when no other packet was sent in the interval."""
    timer = KeepaliveTimer(20.0)
    for now in (5.0, 15.0, 30.0):
        timer.traffic_seen(now)
        assert not timer.due(now + 19.9)
    assert timer.due(50.0)
    timer.traffic_seen(10.0)  # a late report of older traffic does not pull the deadline back
    assert timer.next_deadline() == 50.0


def test_timer_interval_is_a_parameter() -> None:
    """20 s is the RFC 3948 / Cisco default; the lab's concentrator uses about 9 s."""
    assert DEFAULT_KEEPALIVE_INTERVAL == 20.0
    assert KeepaliveTimer(DEFAULT_KEEPALIVE_INTERVAL).next_deadline() == 20.0
    with pytest.raises(ValueError):
        KeepaliveTimer(0)
