"""Fuzz targets over the datagram entry points of the concentrator and the client.

One world: the seed's two clients behind a PAT, connected to a concentrator (the protocol simulation), so that
live cookies, message IDs and SPIs exist. Each input is routed by its first byte:

    0  the concentrator's UDP 500 (IKE, no marker)
    1  the concentrator's UDP 4500 behind the non-ESP marker (IKE)
    2  the concentrator's UDP 4500 without a marker (ESP, NAT keepalive, or junk), through its SA table
    3  the client's UDP 4500 with the marker, 4 the client's UDP 500
    5  as 1, but the input's body follows a live IKE SA's cookies (reaches decryption and the table)
    6  as 2, but the input's body follows a live inbound SPI (reaches the ESP ICV and replay checks)

Nothing may raise out of an entry point: the core turns every bad input into a typed error, a counter and an
event. The world is rebuilt now and then, so that state the inputs pile up (half-open SAs) stays bounded.
"""

from __future__ import annotations

import ipaddress

from natt.errors import EspError
from natt.esp.sa import peek_spi
from natt.esp.udpencap import DatagramKind, classify_4500
from natt.ike.ikesa import IkeSA
from natt.wire.constants import NON_ESP_MARKER
from tests.protocol.conftest import CONCENTRATOR, make_policy, make_profile
from tests.protocol.sim import Network, Node, Pat

REBUILD_EVERY = 5000
SOURCES = [("203.0.113.78", 1025), ("203.0.113.99", 500), ("198.51.100.7", 4500)]


class World:
    def __init__(self) -> None:
        self.inputs = 0
        self.net = self._build()

    @staticmethod
    def _build() -> Network:
        net = Network(make_policy(), CONCENTRATOR, Pat(ipaddress.IPv4Network("10.10.10.0/24"), "203.0.113.78"))
        for name, user, address in (("client1", "vpnclient1", "10.10.10.2"), ("client2", "vpnclient2", "10.10.10.3")):
            net.add_client(name, address)
            net.connect(name, make_profile(user))
            net.pump()
        return net

    def _live_sa(self, node: Node, pick: int) -> IkeSA | None:
        sas = list(node.endpoint.sas.values())
        return sas[pick % len(sas)] if sas else None

    def one(self, data: bytes) -> None:
        self.inputs += 1
        if self.inputs % REBUILD_EVERY == 0:
            self.net = self._build()
        if len(data) < 2:
            return
        net, route, pick, body = self.net, data[0] % 7, data[1], data[2:]
        conc, client = net.concentrator, net.clients["client1"]
        src = SOURCES[pick % len(SOURCES)]
        now = net.now
        if route == 0:
            conc.endpoint.receive_datagram(body, src, 500, now)
        elif route == 1:
            conc.endpoint.receive_datagram(NON_ESP_MARKER + body, src, 4500, now)
        elif route in (2, 6):
            if route == 6 and conc.table.inbound:
                spis = list(conc.table.inbound)
                body = spis[pick % len(spis)].to_bytes(4, "big") + body
            self._udp_4500(conc, body, src)
        elif route in (3, 4):
            client.endpoint.receive_datagram(NON_ESP_MARKER + body if route == 3 else body, (CONCENTRATOR, 4500),
                                             4500 if route == 3 else 500, now)
        else:
            sa = self._live_sa(conc, pick)
            if sa is not None:
                conc.endpoint.receive_datagram(NON_ESP_MARKER + sa.icookie + sa.rcookie + body, src, 4500, now)
        # What the entry points queued is taken, as a daemon would (and events rendered nowhere).
        for node in (conc, client):
            node.endpoint.datagrams_to_send()
            node.take_events()
        if pick == 0xFF:
            net.advance(1.0)  # timers run too, now and then

    @staticmethod
    def _udp_4500(node: Node, data: bytes, src: tuple[str, int]) -> None:
        """The daemon's demux on 4500 and its ESP path (natt.esp.udpencap, the SA table, EspSA)."""
        kind, body = classify_4500(data)
        if kind is DatagramKind.IKE:
            node.endpoint.receive_datagram(bytes(body), src, 4500, node.endpoint.now)
            return
        if kind is not DatagramKind.ESP:
            return
        esp = bytes(body)
        try:
            entry = node.table.inbound.get(peek_spi(esp))
            if entry is None:
                return
            _, inner = entry.esp.decrypt(esp)
        except EspError:
            return
        entry.admits(inner)
