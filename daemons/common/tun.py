"""TUN devices: open one, give it an address, route through it (pyroute2 netlink).

pyroute2's synchronous IPRoute runs an event loop of its own, so these functions must not be
called on a thread whose asyncio loop is running: daemons call them through `asyncio.to_thread`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
from dataclasses import dataclass

from pyroute2 import IPRoute

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFF_VNET_HDR = 0x4000  # every read and write starts with a struct virtio_net_hdr (natt.esp.gro)


class TunError(OSError):
    """The TUN device could not be created or configured."""


@dataclass
class Tun:
    name: str
    fd: int
    vnet_hdr: bool = False  # reads and writes carry a virtio_net_hdr in front of the packet

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


TXQUEUELEN = 2000  # packets the kernel holds for us while we encrypt (TUN's default, 500, drops under bursts)


def open_tun(name: str, *, mtu: int = 1400, vnet_hdr: bool = False) -> Tun:
    """A non-blocking layer-3 TUN device without packet information headers, link up.

    With `vnet_hdr`, a virtio_net_hdr leads every packet both ways, so that a write may hand the kernel
    one TCP packet of up to 64 KiB to be segmented later (natt.esp.gro). Offloads for reads are left off
    (no TUNSETOFFLOAD): the kernel still gives us whole, checksummed packets of at most the MTU."""
    if len(name.encode()) > 15:
        raise TunError(f"interface name {name!r} longer than 15 bytes")
    try:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as e:
        raise TunError(f"cannot open /dev/net/tun: {e}") from e
    try:
        flags = IFF_TUN | IFF_NO_PI | (IFF_VNET_HDR if vnet_hdr else 0)
        ifr = struct.pack("16sH", name.encode(), flags)
        fcntl.ioctl(fd, TUNSETIFF, ifr)
    except OSError as e:
        os.close(fd)
        raise TunError(f"TUNSETIFF {name}: {e}") from e
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=name)[0]
        ipr.link("set", index=idx, mtu=mtu, txqlen=TXQUEUELEN, state="up")
    return Tun(name, fd, vnet_hdr)


def add_address(name: str, address: str, prefixlen: int) -> None:
    with IPRoute() as ipr:
        idx = ipr.link_lookup(ifname=name)[0]
        ipr.addr("replace", index=idx, address=address, prefixlen=prefixlen)


def add_route(dst: str, *, dev: str | None = None, gateway: str | None = None) -> None:
    with IPRoute() as ipr:
        kw: dict[str, object] = {"dst": dst}
        if dev is not None:
            kw["oif"] = ipr.link_lookup(ifname=dev)[0]
        if gateway is not None:
            kw["gateway"] = gateway
        ipr.route("replace", **kw)


def del_route(dst: str, *, dev: str | None = None) -> None:
    with IPRoute() as ipr:
        kw: dict[str, object] = {"dst": dst}
        if dev is not None:
            links = ipr.link_lookup(ifname=dev)
            if not links:
                return
            kw["oif"] = links[0]
        with contextlib.suppress(Exception):  # already gone: removing it is the goal
            ipr.route("del", **kw)


def default_gateway() -> tuple[str, str] | None:
    """(gateway, interface) of the main table's default route, if any."""
    with IPRoute() as ipr:
        for r in ipr.get_default_routes(family=2):
            gw = r.get_attr("RTA_GATEWAY")
            oif = r.get_attr("RTA_OIF")
            if gw and oif:
                name = ipr.get_links(oif)[0].get_attr("IFLA_IFNAME")
                return gw, name
    return None


def source_address_for(dst: str) -> str:
    """The local address the kernel would use to reach dst (route lookup, nothing sent)."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.connect((dst, 9))
        return s.getsockname()[0]
