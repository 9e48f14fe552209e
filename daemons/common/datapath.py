"""The ESP fast path shared by the concentrator and the client.

TUN → (flow cache → outbound EspSA) → UDP 4500 or raw IP protocol 50;
UDP 4500 / raw ESP → (SPI → inbound EspSA) → selector check → TUN.
Each readable descriptor is drained in a loop; IKE datagrams found on 4500 go to a callback.
No IKE work happens here, and nothing per packet allocates more than the crypto needs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from natt.errors import EspError
from natt.esp.sa import EspSA, peek_spi
from natt.esp.transforms import make_transform
from natt.esp.udpencap import DatagramKind, classify_4500
from natt.ike.events import ChildSaUp

log = logging.getLogger(__name__)
MAX_BATCH = 256  # datagrams per wake-up, so one busy descriptor cannot starve the others
IPPROTO_ESP = 50


@dataclass
class Outbound:
    esp: EspSA
    sa_id: int
    inbound_spi: int
    remote: tuple[str, int]
    udp: bool
    local_net: ipaddress.IPv4Network
    remote_net: ipaddress.IPv4Network


@dataclass
class Inbound:
    esp: EspSA
    sa_id: int
    outbound: Outbound
    seen_data: bool = False


@dataclass
class DatapathStats:
    drops: Counter[str] = field(default_factory=Counter)
    tun_packets: int = 0


class Datapath:
    def __init__(
        self,
        tun_fd: int,
        udp: socket.socket,
        raw_esp: socket.socket | None,
        on_ike: Callable[[bytes, tuple[str, int], int], None],
        on_first_data: Callable[[Inbound], None] | None = None,
        on_inbound: Callable[[int], None] | None = None,
    ) -> None:
        self.tun_fd = tun_fd
        self.udp = udp
        self.udp_port = udp.getsockname()[1]
        self.raw = raw_esp
        self.on_ike = on_ike
        self.on_first_data = on_first_data
        self.on_inbound = on_inbound
        self.inbound: dict[int, Inbound] = {}
        self.outbound: list[Outbound] = []
        self._flows: dict[bytes, Outbound | None] = {}
        self.stats = DatapathStats()

    # -- SA table ------------------------------------------------------------------------

    def install(self, up: ChildSaUp, remote: tuple[str, int]) -> Outbound:
        t = make_transform(up.transform, up.key_bits, up.auth)
        out = Outbound(EspSA(up.outbound_spi, t, up.keymat_out, outbound=True), up.sa_id, up.inbound_spi,
                       remote, up.udp_encap, ipaddress.IPv4Network(up.local_selector),
                       ipaddress.IPv4Network(up.remote_selector))
        # The newest SA for a selector pair wins (a rekey); the old one stays for inbound until deleted.
        self.outbound = [o for o in self.outbound
                         if (o.local_net, o.remote_net, o.sa_id) != (out.local_net, out.remote_net, out.sa_id)]
        self.outbound.append(out)
        self.outbound.sort(key=lambda o: (o.remote_net.prefixlen, o.local_net.prefixlen), reverse=True)
        self.inbound[up.inbound_spi] = Inbound(EspSA(up.inbound_spi, t, up.keymat_in, outbound=False), up.sa_id, out)
        self._flows.clear()
        return out

    def remove(self, inbound_spi: int) -> Inbound | None:
        entry = self.inbound.pop(inbound_spi, None)
        if entry is not None:
            self.outbound = [o for o in self.outbound if o is not entry.outbound]
            self._flows.clear()
        return entry

    def update_remote(self, sa_id: int, remote: tuple[str, int]) -> None:
        for o in self.outbound:
            if o.sa_id == sa_id:
                o.remote = remote

    def children(self, sa_id: int) -> list[Inbound]:
        return [i for i in self.inbound.values() if i.sa_id == sa_id]

    # -- wiring -----------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_reader(self.tun_fd, self._tun_readable)
        loop.add_reader(self.udp.fileno(), self._udp_readable)
        if self.raw is not None:
            loop.add_reader(self.raw.fileno(), self._raw_readable)

    def stop(self, loop: asyncio.AbstractEventLoop) -> None:
        for fd in (self.tun_fd, self.udp.fileno(), self.raw.fileno() if self.raw else -1):
            if fd >= 0:
                loop.remove_reader(fd)

    # -- outbound: TUN → ESP -------------------------------------------------------------------

    def _route(self, pkt: bytes) -> Outbound | None:
        key = pkt[12:20]
        try:
            return self._flows[key]
        except KeyError:
            pass
        src = ipaddress.IPv4Address(key[:4])
        dst = ipaddress.IPv4Address(key[4:])
        found = next((o for o in self.outbound if dst in o.remote_net and src in o.local_net), None)
        if len(self._flows) > 65536:
            self._flows.clear()
        self._flows[key] = found
        return found

    def _tun_readable(self) -> None:
        read, fd = os.read, self.tun_fd
        for _ in range(MAX_BATCH):
            try:
                pkt = read(fd, 65535)
            except BlockingIOError:
                return
            except OSError as e:
                log.warning("TUN read failed: %s", e)
                return
            if len(pkt) < 20 or pkt[0] >> 4 != 4:
                self.stats.drops["not-ipv4"] += 1
                continue
            self.stats.tun_packets += 1
            out = self._route(pkt)
            if out is None:
                self.stats.drops["no-sa-for-flow"] += 1
                continue
            try:
                esp = out.esp.encrypt(pkt)
                if out.udp:
                    self.udp.sendto(esp, out.remote)
                elif self.raw is not None:
                    self.raw.sendto(esp, (out.remote[0], 0))
                else:
                    self.stats.drops["no-raw-esp-socket"] += 1
            except EspError as e:
                self.stats.drops[e.kind] += 1
            except OSError as e:
                self.stats.drops["send-failed"] += 1
                log.debug("ESP send to %s failed: %s", out.remote, e)

    # -- inbound: ESP → TUN ----------------------------------------------------------------------

    def _udp_readable(self) -> None:
        recv = self.udp.recvfrom
        for _ in range(MAX_BATCH):
            try:
                data, addr = recv(65535)
            except BlockingIOError:
                return
            except OSError as e:
                log.debug("UDP receive error: %s", e)
                return
            kind, _ = classify_4500(data)
            if kind is DatagramKind.ESP:
                self._esp_in(data, addr)
            elif kind is DatagramKind.INVALID:
                self.stats.drops["invalid-udp"] += 1
            else:
                self.on_ike(data, addr, self.udp_port)

    def _raw_readable(self) -> None:
        assert self.raw is not None
        recv = self.raw.recvfrom
        for _ in range(MAX_BATCH):
            try:
                data, addr = recv(65535)
            except BlockingIOError:
                return
            except OSError:
                return
            ihl = (data[0] & 0x0F) * 4 if data else 0
            self._esp_in(data[ihl:], (addr[0], 0))

    def _esp_in(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            entry = self.inbound.get(peek_spi(data))
            if entry is None:
                self.stats.drops["unknown-spi"] += 1
                return
            _, inner = entry.esp.decrypt(data)
        except EspError as e:
            self.stats.drops[e.kind] += 1
            return
        out = entry.outbound
        if len(inner) < 20 or (ipaddress.IPv4Address(inner[12:16]) not in out.remote_net
                               or ipaddress.IPv4Address(inner[16:20]) not in out.local_net):
            # RFC 4301 5.2: a decrypted packet must match the SA's selectors.
            self.stats.drops["selector-mismatch"] += 1
            return
        if out.udp and addr[1] and addr != out.remote:
            out.remote = addr  # NAT rebinding: follow the peer's new translated port (RFC 3948)
        if not entry.seen_data:
            entry.seen_data = True
            if self.on_first_data is not None:
                self.on_first_data(entry)
        if self.on_inbound is not None:
            self.on_inbound(entry.sa_id)
        try:
            os.write(self.tun_fd, inner)
        except OSError as e:
            self.stats.drops["tun-write-failed"] += 1
            log.debug("TUN write failed: %s", e)
