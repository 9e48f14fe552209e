"""The sockets the ESP data path uses: non-blocking UDP on a fixed port, raw IP protocol 50."""

from __future__ import annotations

import socket

IPPROTO_ESP = 50


def bind_udp(address: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to (address, port); OSError (closed) if the port is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def raw_esp(address: str | None = None) -> socket.socket:
    """A non-blocking raw socket for ESP as IP protocol 50 (when no NAT is in the way)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_ESP)
    sock.setblocking(False)
    if address is not None:
        sock.bind((address, 0))
    return sock
