"""The userspace ESP data path: transforms, SAs, anti-replay, RFC 3948 UDP encapsulation."""

from natt.esp.backend import backend_info
from natt.esp.replay import ReplayWindow
from natt.esp.sa import ESP_HEADER_LEN, EspSA, peek_spi
from natt.esp.transforms import SUPPORTED_TRANSFORMS, EspTransform, make_transform
from natt.esp.udpencap import (
    DEFAULT_KEEPALIVE_INTERVAL,
    KEEPALIVE_PAYLOAD,
    DatagramKind,
    KeepaliveTimer,
    add_non_esp_marker,
    classify_4500,
)

__all__ = [
    "DEFAULT_KEEPALIVE_INTERVAL",
    "ESP_HEADER_LEN",
    "KEEPALIVE_PAYLOAD",
    "SUPPORTED_TRANSFORMS",
    "DatagramKind",
    "EspSA",
    "EspTransform",
    "KeepaliveTimer",
    "ReplayWindow",
    "add_non_esp_marker",
    "backend_info",
    "classify_4500",
    "make_transform",
    "peek_spi",
]
