"""An in-memory network for protocol tests: endpoints, a PAT device, a fake clock, userspace ESP.

Nothing here is a mock of natt: the real IkeEndpoint, SaTable and EspSA objects run, and only the wire
between them is simulated (the PAT rewrites addresses and ports the way a real one does). Each node keeps
its child SAs in the same SA table the daemons' data path uses, with the same rules: one owner per inner
address, selector checks on what decrypts, NAT-T peers moved only by IKE.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

from natt.errors import EspError, SelectorConflict
from natt.esp.sa import EspSA, peek_spi
from natt.esp.table import SaTable
from natt.esp.udpencap import DatagramKind, classify_4500
from natt.ike.config import ClientProfile, ConcentratorPolicy
from natt.ike.endpoint import IkeEndpoint
from natt.ike.events import ChildSaDown, ChildSaMoved, ChildSaUp, IkeEvent, PortFloated, XauthCheck
from natt.wire.constants import IKE_PORT, NATT_PORT

UDP, ESP = 17, 50


@dataclass
class Packet:
    proto: int
    src: tuple[str, int]
    dst: tuple[str, int]
    data: bytes


@dataclass
class Pat:
    """Many inside hosts behind one outside address; UDP ports translated, ESP dropped."""

    inside: ipaddress.IPv4Network
    outside: str
    next_port: int = 1025
    esp_passthrough: bool = False
    out_map: dict[tuple[str, int, str, int], int] = field(default_factory=dict)
    in_map: dict[int, tuple[str, int]] = field(default_factory=dict)
    dropped_esp: int = 0

    def outbound(self, p: Packet) -> Packet | None:
        if p.proto == ESP:
            if not self.esp_passthrough:
                self.dropped_esp += 1
                return None
            return Packet(p.proto, (self.outside, 0), p.dst, p.data)
        key = (p.src[0], p.src[1], p.dst[0], p.dst[1])
        port = self.out_map.get(key)
        if port is None:
            port = self.out_map[key] = self.next_port
            self.in_map[port] = p.src
            self.next_port += 1
        return Packet(p.proto, (self.outside, port), p.dst, p.data)

    def inbound(self, p: Packet) -> Packet | None:
        if p.proto != UDP or p.dst[1] not in self.in_map:
            return None
        return Packet(p.proto, p.src, self.in_map[p.dst[1]], p.data)

    def xlate(self) -> list[tuple[str, int, int]]:
        return [(src[0], src[1], port) for port, src in self.in_map.items()]


def ipv4_packet(src: str, dst: str, payload: bytes, proto: int = 1) -> bytes:
    """A minimal IPv4 packet (header checksum left zero: nothing here routes it)."""
    total = 20 + len(payload)
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 0, 0, 64, proto, 0,
                      ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return hdr + payload


@dataclass
class Node:
    name: str
    address: str
    endpoint: IkeEndpoint
    events: list[IkeEvent] = field(default_factory=list)
    table: SaTable = field(default_factory=SaTable)
    ups: dict[int, ChildSaUp] = field(default_factory=dict)  # inbound SPI → the event that installed it
    delivered: list[bytes] = field(default_factory=list)
    esp_errors: list[str] = field(default_factory=list)
    selector_conflicts: list[SelectorConflict] = field(default_factory=list)
    answer_xauth: bool = True  # answer XauthCheck events at once with the policy's verify_user

    @property
    def inbound(self) -> dict[int, EspSA]:
        """Inbound SPI → inbound EspSA, every installed child."""
        return {spi: entry.esp for spi, entry in self.table.inbound.items()}

    @property
    def outbound(self) -> dict[int, tuple[EspSA, ChildSaUp]]:
        """Inbound SPI → (outbound EspSA, ChildSaUp) of every installed child, oldest first."""
        return {spi: (entry.outbound.esp, self.ups[spi]) for spi, entry in self.table.inbound.items()}

    def of(self, cls: type) -> list:
        return [e for e in self.events if isinstance(e, cls)]

    def take_events(self) -> bool:
        """Events into the SA table, as the daemons' _on_event does (the transport handle is the local UDP
        port, so IPsec over UDP learns its peer's port in the data path and NAT-T follows IKE)."""
        answered = False
        while (e := self.endpoint.next_event()) is not None:
            self.events.append(e)
            sa = self.endpoint.sas.get(e.sa_id)
            if isinstance(e, ChildSaUp) and sa is not None:
                try:
                    self.table.install(e, sa.peer, e.local_port if e.udp_encap else None,
                                       follows_ike=e.udp_encap and e.local_port == self.endpoint.natt_port)
                except SelectorConflict as err:
                    self.selector_conflicts.append(err)
                    continue
                self.ups[e.inbound_spi] = e
            elif isinstance(e, ChildSaDown):
                self.table.remove(e.inbound_spi)
                self.ups.pop(e.inbound_spi, None)
            elif isinstance(e, ChildSaMoved):
                self.table.move(e.inbound_spi, e.sa_id)
            elif isinstance(e, PortFloated) and sa is not None:
                self.table.update_remote(sa.id, sa.remote)
            elif isinstance(e, XauthCheck) and self.endpoint.policy is not None and self.answer_xauth:
                # What the daemon does in its worker thread; here at once (or held, for tests of the wait).
                ok = self.endpoint.policy.verify_user(e.user, e.password)
                self.endpoint.xauth_verdict(e.ticket, ok, self.endpoint.now)
                answered = True
        return answered

    def child_for(self, remote_selector: str) -> tuple[EspSA, ChildSaUp]:
        """The newest installed child for a remote selector: (outbound EspSA, its ChildSaUp)."""
        for spi in reversed(self.table.inbound):
            up = self.ups[spi]
            if up.remote_selector == remote_selector:
                return self.table.inbound[spi].outbound.esp, up
        raise KeyError(remote_selector)


class Network:
    """Clients inside a PAT, a concentrator outside; step() moves every queued datagram once."""

    def __init__(self, policy: ConcentratorPolicy, concentrator_addr: str = "198.51.100.50",
                 pat: Pat | None = None) -> None:
        self.now = 1000.0
        self.pat = pat
        self.concentrator = Node("concentrator", concentrator_addr, IkeEndpoint(concentrator_addr, policy))
        self.clients: dict[str, Node] = {}
        self.wire: list[Packet] = []  # everything seen on the public side, for tshark tests

    def add_client(self, name: str, address: str) -> Node:
        node = Node(name, address, IkeEndpoint(address))
        self.clients[name] = node
        return node

    def connect(self, name: str, profile: ClientProfile) -> int:
        node = self.clients[name]
        sa_id = node.endpoint.connect(profile, self.now)
        return sa_id

    def _behind_pat(self, address: str) -> bool:
        return self.pat is not None and ipaddress.IPv4Address(address) in self.pat.inside

    def _node_at(self, address: str) -> Node | None:
        if address == self.concentrator.address:
            return self.concentrator
        return next((n for n in self.clients.values() if n.address == address), None)

    def send(self, p: Packet) -> None:
        if self._behind_pat(p.src[0]) and self.pat is not None:
            q = self.pat.outbound(p)
            if q is None:
                return
            p = q
        self.wire.append(p)
        if self.pat is not None and p.dst[0] == self.pat.outside:
            q = self.pat.inbound(p)
            if q is None:
                return
            p = q
        node = self._node_at(p.dst[0])
        if node is not None:
            self._deliver(node, p)

    def _deliver(self, node: Node, p: Packet) -> None:
        if p.proto == ESP:
            self._esp_in(node, p.data, p.src, None)
            return
        if p.dst[1] == NATT_PORT or p.dst[1] != IKE_PORT:
            kind, body = classify_4500(p.data)
            if kind is DatagramKind.ESP:
                self._esp_in(node, bytes(body), p.src, p.dst[1])
                return
        node.endpoint.receive_datagram(p.data, p.src, p.dst[1], self.now)

    def _esp_in(self, node: Node, data: bytes, src: tuple[str, int], via: int | None) -> None:
        """What the daemons' Datapath._esp_in does with one ESP packet that arrived on UDP port `via` (None: raw)."""
        try:
            entry = node.table.inbound.get(peek_spi(data))
            if entry is None:
                node.esp_errors.append("unknown_spi")
                # As the daemon's data path: IKE may complete a Quick Mode whose HASH(3) was lost (then the packet
                # goes through), or on 4500 hint the peer (INVALID-SPI).
                if node.endpoint.unknown_esp(peek_spi(data), src, via or 0, self.now, data):
                    node.take_events()
                    if peek_spi(data) in node.table.inbound:
                        self._esp_in(node, data, src, via)
                return
            _, inner = entry.esp.decrypt(data)
        except EspError as e:
            node.esp_errors.append(e.kind)
            return
        if not entry.admits(inner):
            node.esp_errors.append("selector-mismatch")
            return
        out = entry.outbound
        if src != out.remote and via is not None and via == out.sock:
            if out.follows_ike:  # NAT-T: IKE decides whether the peer moved; its PortFloated moves the SA
                moved = getattr(node.endpoint, "esp_peer_moved", None)
                if moved is not None:
                    moved(entry.sa_id, src, self.now)
                    node.take_events()
            else:  # IPsec over UDP learns the peer's port from its ESP
                node.table.learn_remote(entry.sa_id, via, src)
        node.delivered.append(inner)

    def pump(self, rounds: int = 50) -> None:
        """Move datagrams until everyone is quiet (bounded)."""
        for _ in range(rounds):
            moved = False
            for node in [self.concentrator, *self.clients.values()]:
                for d in node.endpoint.datagrams_to_send():
                    moved = True
                    self.send(Packet(UDP, (node.address, d.local_port), d.remote, d.data))
                if node.take_events():
                    moved = True  # an XAUTH verdict went back in: its reply is queued
            if not moved:
                return
        raise AssertionError("the exchange did not settle")

    def advance(self, seconds: float, step: float = 1.0) -> None:
        """Run the clock forward, firing every endpoint's timers on the way."""
        end = self.now + seconds
        while self.now < end:
            self.now = min(end, self.now + step)
            for node in [self.concentrator, *self.clients.values()]:
                t = node.endpoint.get_timer()
                if t is not None and t <= self.now:
                    node.endpoint.handle_timer(self.now)
            self.pump()

    def route_esp(self, node: Node, inner: bytes) -> bytes | None:
        """Route one inner packet through the node's SA table (as the daemons' TUN → ESP path does), encrypt and
        send it; None, with the reason in esp_errors, if nothing routes it."""
        out = node.table.route(inner) if len(inner) >= 20 else None
        if out is None:
            node.esp_errors.append("no-sa-for-flow")
            return None
        if out.udp and not out.remote[1]:
            node.esp_errors.append("peer-port-unknown")
            return None
        esp = out.esp.encrypt(inner)
        if out.udp:
            self.send(Packet(UDP, (node.address, out.sock), out.remote, esp))
        else:
            self.send(Packet(ESP, (node.address, 0), (out.remote[0], 0), esp))
        return esp

    def send_esp(self, node: Node, remote_selector: str, inner: bytes) -> bytes:
        """Encrypt and send one inner packet on the child SA for remote_selector."""
        sa, up = node.child_for(remote_selector)
        esp = sa.encrypt(inner)
        peer = node.endpoint.sas[up.sa_id].remote
        if up.udp_encap:
            self.send(Packet(UDP, (node.address, up.local_port), peer, esp))
        else:
            self.send(Packet(ESP, (node.address, 0), (peer[0], 0), esp))
        return esp
