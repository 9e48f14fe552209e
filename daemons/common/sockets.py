"""The sockets the ESP data path uses: non-blocking UDP on a fixed port, raw IP protocol 50."""

from __future__ import annotations

import socket

IPPROTO_ESP = 50
# Socket buffers for the data path: a burst of ESP (a TCP window's worth) must wait while the loop encrypts
# rather than be dropped. The *FORCE options need CAP_NET_ADMIN (the daemons have it); else the plain ones,
# capped by net.core.rmem_max / wmem_max.
BUFFER_BYTES = 4 * 1024 * 1024


def big_buffers(sock: socket.socket) -> None:
    for force, plain in ((33, socket.SO_RCVBUF), (32, socket.SO_SNDBUF)):  # SO_RCVBUFFORCE, SO_SNDBUFFORCE
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, BUFFER_BYTES)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, plain, BUFFER_BYTES)


def bind_udp(address: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to (address, port); OSError (closed) if the port is taken."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        big_buffers(sock)
        sock.bind((address, port))
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


def raw_esp(address: str | None = None) -> socket.socket:
    """A non-blocking raw socket for ESP as IP protocol 50 (when no NAT is in the way)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, IPPROTO_ESP)
    big_buffers(sock)
    sock.setblocking(False)
    if address is not None:
        sock.bind((address, 0))
    return sock
