"""The ESP fast path shared by the concentrator and the client.

TUN → (SA table: flow cache → outbound EspSA) → UDP 4500, a Cisco IPsec-over-UDP port, or raw IP protocol 50;
UDP 4500 / IPsec-over-UDP / raw ESP → (SPI → inbound EspSA) → selector check → TUN.
The SA table itself (routing, selectors, one owner per inner address) is natt.esp.table, shared with the
protocol simulation; this module only moves packets through it.
Each readable descriptor is drained in a loop; IKE datagrams found on 4500 go to a callback.
No IKE work happens here, and nothing per packet allocates more than the crypto needs.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import socket
import struct
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from natt.errors import EspError, SelectorConflict
from natt.esp.gro import VNET_HDR_LEN, TcpCoalescer
from natt.esp.sa import peek_spi
from natt.esp.table import Inbound, Outbound, SaTable
from natt.esp.udpencap import DatagramKind, classify_4500, classify_cisco_udp
from natt.ike.events import ChildSaUp
from natt_daemons.common.sockets import bind_udp

log = logging.getLogger(__name__)
MAX_BATCH = 256  # datagrams per wake-up, so one busy descriptor cannot starve the others
# Read sizes: the TUN's MTU is 1400 (tun.open_tun) and ESP adds < 100 bytes; asking the kernel for 64 KiB
# would make Python allocate (and shrink) 64 KiB per packet. A larger packet is truncated, fails its ICV and
# is counted as a drop.
READ_SIZE = 4096
# UDP generic segmentation offload (Linux 4.18+): one sendmsg carries several datagrams of one size.
SOL_UDP, UDP_SEGMENT = 17, 103
GSO_MAX_SEGMENTS = 64  # the kernel's UDP_MAX_SEGMENTS
GSO_MAX_BYTES = 60000  # below the 64 KiB an IP datagram can hold
_U16 = struct.Struct("=H")
# ... and its receiving half: UDP_GRO hands us such a run in one read, with the segment size in a cmsg.
UDP_GRO = 104
GRO_READ_SIZE = 65535
_I32 = struct.Struct("=i")
_GRO_CMSG_SPACE = socket.CMSG_SPACE(4)


class _GsoBatch:
    """ESP packets for one peer, all `size` bytes but possibly a shorter last one (UDP_SEGMENT's rule)."""

    __slots__ = ("bytes", "out", "packets", "size")

    def __init__(self, out: Outbound, first: bytes) -> None:
        self.out, self.packets, self.size, self.bytes = out, [first], len(first), len(first)

    def takes(self, out: Outbound, esp: bytes) -> bool:
        last = self.packets[-1]
        if out is not self.out or len(last) != self.size or len(esp) > self.size:
            return False
        if self.bytes + len(esp) > GSO_MAX_BYTES:
            return False
        self.packets.append(esp)
        self.bytes += len(esp)
        return True

    @property
    def full(self) -> bool:
        return len(self.packets) >= GSO_MAX_SEGMENTS or len(self.packets[-1]) != self.size


@dataclass(slots=True)
class SessionTotals:
    """What a session's child SAs already removed carried (a rekey or a re-authentication replaces them): the
    session's counters are these plus its live children's, so they do not restart at each rekey."""

    bytes_rx: int = 0
    packets_rx: int = 0
    bytes_tx: int = 0
    packets_tx: int = 0

    def add(self, entry: Inbound) -> None:
        """Count a removed pair: its inbound SA's and its outbound SA's traffic."""
        self.bytes_rx += entry.esp.bytes
        self.packets_rx += entry.esp.packets
        self.bytes_tx += entry.outbound.esp.bytes
        self.packets_tx += entry.outbound.esp.packets


@dataclass(slots=True)
class TransformTotals:
    """The traffic of one ESP transform's pairs (the stats command, the metrics): `drops` are the packets its SAs
    refused (ESP errors of either direction)."""

    in_bytes: int = 0
    out_bytes: int = 0
    in_packets: int = 0
    out_packets: int = 0
    drops: int = 0

    def add(self, entry: Inbound) -> None:
        self.in_bytes += entry.esp.bytes
        self.in_packets += entry.esp.packets
        self.out_bytes += entry.outbound.esp.bytes
        self.out_packets += entry.outbound.esp.packets
        self.drops += sum(entry.esp.errors.values()) + sum(entry.outbound.esp.errors.values())


@dataclass
class DatapathStats:
    drops: Counter[str] = field(default_factory=Counter)
    tun_packets: int = 0
    gso_sends: int = 0
    gro_reads: int = 0


class Datapath:
    def __init__(
        self,
        tun_fd: int,
        udp: socket.socket,
        raw_esp: socket.socket | None,
        on_ike: Callable[[list[tuple[bytes, tuple[str, int]]], int], None],
        on_first_data: Callable[[Inbound], None] | None = None,
        on_inbound: Callable[[int], None] | None = None,
        cisco_udp: dict[int, socket.socket] | None = None,
        vnet_hdr: bool = False,
        on_peer_moved: Callable[[int, tuple[str, int]], None] | None = None,
        on_unknown_spi: Callable[[int, tuple[str, int], int, bytes], bool] | None = None,
    ) -> None:
        self.tun_fd = tun_fd
        # A vnet-header TUN (tun.open_tun(vnet_hdr=True)): TCP segments decrypted back to back go to the
        # kernel as one GSO packet (natt.esp.gro); every read and write carries the 10-byte header.
        self._gro: TcpCoalescer | None = TcpCoalescer() if vnet_hdr else None
        self.udp = udp
        self.udp_port = udp.getsockname()[1]
        self.cisco_udp: dict[int, socket.socket] = dict(cisco_udp or {})
        self.raw = raw_esp
        # IKE read from the UDP socket (4500, shared with ESP), handed over in one batch at the end of each read:
        # the ESP of the batch is served first, and IKE decides how much of a flood it takes (IkeDriver.feed_batch).
        self.on_ike = on_ike
        self._ike: list[tuple[bytes, tuple[str, int]]] = []
        self.on_first_data = on_first_data
        self.on_inbound = on_inbound
        # Authenticated NAT-T ESP from a new address: the IKE core decides whether the peer moved; its
        # PortFloated comes back as update_remote. The data path never moves a NAT-T peer on its own.
        self.on_peer_moved = on_peer_moved
        # ESP for an SPI we do not know: (spi, source, local port (0: raw ESP), the packet), at most one per source
        # and batch, for IKE: the SPI may be a Quick Mode's whose HASH(3) was lost (authenticated ESP on it completes
        # the exchange, and True says the packet can go through now), or gone (after a restart, say: on UDP 4500
        # IKE may then tell the peer, INVALID-SPI).
        self.on_unknown_spi = on_unknown_spi
        self._unknown: dict[tuple[str, int], tuple[int, bytes, socket.socket | None]] = {}
        self.table = SaTable()
        self.inbound: dict[int, Inbound] = self.table.inbound  # the same dict, one attribute away per packet
        self._alive: set[int] = set()  # sessions that sent ESP in this batch (one DPD note per batch)
        self._moved: dict[int, tuple[str, int]] = {}  # NAT-T sessions heard from a new address in this batch
        self.gso_enabled = True  # off after the kernel refuses UDP_SEGMENT once
        try:
            udp.setsockopt(SOL_UDP, UDP_GRO, 1)
            self.gro = True
        except OSError:
            self.gro = False
        self.stats = DatapathStats()
        # Session id (Outbound.owner) → the counters of its pairs removed so far: from its first admitted pair until
        # end_session, so a pair removed after its session ended does not bring the entry back.
        self.session_totals: dict[int, SessionTotals] = {}
        # Transform name → what its pairs removed so far carried: with the live pairs, counters that never go back.
        self.retired: dict[str, TransformTotals] = {}

    # -- SA table ------------------------------------------------------------------------

    def install(self, up: ChildSaUp, peer: str) -> Outbound:
        """Install a child SA pair; SelectorConflict if its remote selector belongs to another session."""
        sock: socket.socket | None = None
        if up.udp_encap:
            sock = self.udp if up.local_port == self.udp_port else self.cisco_udp.get(up.local_port)
            if sock is None:
                raise ValueError(f"no UDP socket on port {up.local_port} for SA 0x{up.inbound_spi:08x}")
        # NAT-T ESP shares 4500 with IKE and goes where IKE goes; IPsec over UDP learns its port from ESP.
        return self.table.install(up, peer, sock, follows_ike=sock is self.udp)

    def admit(self, up: ChildSaUp, peer: str) -> bool:
        """install, for the daemons' event handlers: a child whose inner address another session owns is refused,
        logged and counted here (False); the caller then ends that session."""
        try:
            out = self.install(up, peer)
        except SelectorConflict as e:
            log.error("SA %d: child SA for %s refused: %s", up.sa_id, up.remote_selector, e)
            self.stats.drops["selector_conflict"] += 1
            return False
        if out.owner not in self.session_totals:
            self.session_totals[out.owner] = SessionTotals()
        return True

    def remove(self, inbound_spi: int) -> Inbound | None:
        """Forget a pair; what it carried stays in its session's totals and its transform's."""
        entry = self.table.remove(inbound_spi)
        if entry is not None:
            name = entry.esp.transform.name
            self.retired.setdefault(name, TransformTotals()).add(entry)
            totals = self.session_totals.get(entry.outbound.owner)
            if totals is not None:
                totals.add(entry)
        return entry

    def end_session(self, session_id: int) -> None:
        """The session's last IKE SA went: its totals go too."""
        self.session_totals.pop(session_id, None)

    def by_transform(self) -> dict[str, TransformTotals]:
        """Every transform's traffic since the start: its removed pairs' and its live ones'."""
        out = {name: TransformTotals(t.in_bytes, t.out_bytes, t.in_packets, t.out_packets, t.drops)
               for name, t in self.retired.items()}
        for entry in self.table.inbound.values():
            name = entry.esp.transform.name
            if name not in out:
                out[name] = TransformTotals()
            out[name].add(entry)
        return out

    @property
    def outbound(self) -> list[Outbound]:
        """Every routed outbound SA (a view for status pages; the data path uses the table's indexes)."""
        return self.table.outbound

    def children(self, sa_id: int) -> list[Inbound]:
        return self.table.children(sa_id)

    def update_remote(self, sa_id: int, remote: tuple[str, int]) -> None:
        """IKE floated or was rebound: NAT-T ESP follows it (IPsec over UDP learns its own port)."""
        self.table.update_remote(sa_id, remote)

    def open_cisco_udp(self, address: str, port: int, loop: asyncio.AbstractEventLoop) -> socket.socket | None:
        """Bind an IPsec-over-UDP port and read ESP from it; None if it is open already. OSError if the bind fails."""
        if port in self.cisco_udp:
            return None
        sock = self.cisco_udp[port] = bind_udp(address, port)
        loop.add_reader(sock.fileno(), self._cisco_readable, sock)
        return sock

    def counters(self) -> dict[str, int]:
        """How the data path moved packets: TUN reads, UDP GSO sends, UDP GRO reads (several datagrams each)."""
        s, tun_gro = self.stats, self._gro
        return {"tun_packets": s.tun_packets, "gso_sends": s.gso_sends, "gro_reads": s.gro_reads,
                "gso": int(self.gso_enabled), "gro": int(self.gro), "tun_offload": int(tun_gro is not None),
                "tun_gso_writes": tun_gro.merged_writes if tun_gro else 0,
                "tun_gso_segments": tun_gro.merged_segments if tun_gro else 0}

    # -- wiring -----------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        loop.add_reader(self.tun_fd, self._tun_readable)
        loop.add_reader(self.udp.fileno(), self._udp_readable)
        if self.raw is not None:
            loop.add_reader(self.raw.fileno(), self._raw_readable)
        for sock in self.cisco_udp.values():
            loop.add_reader(sock.fileno(), self._cisco_readable, sock)

    def stop(self, loop: asyncio.AbstractEventLoop) -> None:
        fds = [self.tun_fd, self.udp.fileno(), self.raw.fileno() if self.raw else -1]
        fds += [s.fileno() for s in self.cisco_udp.values()]
        for fd in fds:
            if fd >= 0:
                loop.remove_reader(fd)

    # -- outbound: TUN → ESP -------------------------------------------------------------------

    def _tun_readable(self) -> None:
        """TUN → ESP. Consecutive ESP packets of one size for one peer leave in one UDP GSO send (UDP_SEGMENT):
        the kernel then carries them through its stack (and any NAT) as one buffer and cuts them apart at
        the end, which costs much less than one send per packet."""
        read, fd, route = os.read, self.tun_fd, self.table.route
        vnet = self._gro is not None
        gso: _GsoBatch | None = None
        try:
            for _ in range(MAX_BATCH):
                try:
                    pkt = read(fd, READ_SIZE)
                except BlockingIOError:
                    return
                except OSError as e:
                    log.warning("TUN read failed: %s", e)
                    return
                if vnet:
                    # No read offloads were asked for, so the header says "plain packet"; anything else is
                    # not something we can encrypt as it stands.
                    if len(pkt) < VNET_HDR_LEN or pkt[1]:
                        self.stats.drops["tun-offloaded-read"] += 1
                        continue
                    pkt = pkt[VNET_HDR_LEN:]
                if len(pkt) < 20 or pkt[0] >> 4 != 4:
                    self.stats.drops["not-ipv4"] += 1
                    continue
                self.stats.tun_packets += 1
                out = route(pkt)
                if out is None:
                    self.stats.drops["no-sa-for-flow"] += 1
                    continue
                try:
                    esp = out.esp.encrypt(pkt)
                except EspError as e:
                    self.stats.drops[e.kind] += 1
                    continue
                if out.sock is None:
                    self._send_raw(out, esp)
                elif not out.remote[1]:
                    self.stats.drops["peer-port-unknown"] += 1
                elif not self.gso_enabled:
                    self._send(out.sock, [esp], out.remote)
                elif gso is not None and gso.takes(out, esp):
                    if gso.full:
                        self._send_gso(gso)
                        gso = None
                else:
                    if gso is not None:
                        self._send_gso(gso)
                    gso = _GsoBatch(out, esp)
        finally:
            if gso is not None:
                self._send_gso(gso)

    def _send_raw(self, out: Outbound, esp: bytes) -> None:
        if self.raw is None:
            self.stats.drops["no-raw-esp-socket"] += 1
            return
        try:
            self.raw.sendto(esp, (out.remote[0], 0))
        except OSError as e:
            self.stats.drops["send-failed"] += 1
            log.debug("ESP send to %s failed: %s", out.remote[0], e)

    def _send(self, sock: socket.socket, packets: list[bytes], remote: tuple[str, int]) -> None:
        for esp in packets:
            try:
                sock.sendto(esp, remote)
            except OSError as e:
                self.stats.drops["send-failed"] += 1
                log.debug("ESP send to %s failed: %s", remote, e)

    def _send_gso(self, batch: _GsoBatch) -> None:
        out = batch.out
        assert out.sock is not None
        if len(batch.packets) == 1:
            self._send(out.sock, batch.packets, out.remote)
            return
        try:
            out.sock.sendmsg([b"".join(batch.packets)], [(SOL_UDP, UDP_SEGMENT, _U16.pack(batch.size))], 0,
                             out.remote)
            self.stats.gso_sends += 1
        except OSError as e:
            if e.errno in (errno.EINVAL, errno.EIO, errno.ENOPROTOOPT, errno.EOPNOTSUPP):
                log.warning("UDP GSO refused (%s): sending one packet at a time from now on", e)
                self.gso_enabled = False
            self._send(out.sock, batch.packets, out.remote)

    # -- inbound: ESP → TUN ----------------------------------------------------------------------

    def _drain(self, sock: socket.socket, handle: Callable[[bytes, tuple[str, int]], None]) -> None:
        recv = sock.recvfrom
        try:
            for _ in range(MAX_BATCH):
                try:
                    data, addr = recv(READ_SIZE)
                except BlockingIOError:
                    return
                except OSError as e:
                    log.debug("UDP receive error: %s", e)
                    return
                handle(data, addr)
        finally:
            self._end_batch()

    def _end_batch(self) -> None:
        """After each drained batch: what the TUN coalescer holds goes out, DPD hears who was alive, IKE hears
        which NAT-T peers spoke from a new address (once per session, the last address seen)."""
        if self._unknown:
            # First: a packet that completed its Quick Mode is delivered with the rest of the batch.
            unknown, self._unknown = self._unknown, {}
            if self.on_unknown_spi is not None:
                for addr, (spi, data, via) in unknown.items():
                    port = self.udp_port if via is self.udp else 0 if via is None else via.getsockname()[1]
                    if self.on_unknown_spi(spi, addr, port, data) and spi in self.inbound:
                        self._esp_in(data, addr, via)
        if self._gro is not None:
            for bufs in self._gro.flush():
                self._tun_write(bufs)
        if self._ike:
            batch, self._ike = self._ike, []
            self.on_ike(batch, self.udp_port)
        if self._alive and self.on_inbound is not None:
            for sa_id in self._alive:
                self.on_inbound(sa_id)
        self._alive.clear()
        if self._moved:
            moved, self._moved = self._moved, {}
            if self.on_peer_moved is not None:
                for sa_id, addr in moved.items():
                    self.on_peer_moved(sa_id, addr)

    def _udp_readable(self) -> None:
        if self.gro:
            self._drain_gro(self.udp, self._natt_datagram)
        else:
            self._drain(self.udp, self._natt_datagram)

    def _drain_gro(self, sock: socket.socket, handle: Callable[[bytes, tuple[str, int]], None]) -> None:
        """With UDP_GRO on, one read may hold several datagrams of `gso_size` bytes back to back (a peer's GSO
        send arrives whole): each is handled on its own, as if read one by one."""
        recvmsg = sock.recvmsg
        try:
            for _ in range(MAX_BATCH):
                try:
                    data, ancdata, _flags, addr = recvmsg(GRO_READ_SIZE, _GRO_CMSG_SPACE)
                except BlockingIOError:
                    return
                except OSError as e:
                    log.debug("UDP receive error: %s", e)
                    return
                size = 0
                for level, kind, value in ancdata:
                    if level == SOL_UDP and kind == UDP_GRO and len(value) >= 4:
                        size = _I32.unpack_from(value)[0]
                if 0 < size < len(data):
                    self.stats.gro_reads += 1
                    for at in range(0, len(data), size):
                        handle(data[at : at + size], addr)
                else:
                    handle(data, addr)
        finally:
            self._end_batch()

    def _natt_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        kind, _ = classify_4500(data)
        if kind is DatagramKind.ESP:
            self._esp_in(data, addr, self.udp)
        elif kind is DatagramKind.INVALID:
            self.stats.drops["invalid-udp"] += 1
        else:
            self._ike.append((data, addr))

    def _cisco_readable(self, sock: socket.socket) -> None:
        def handle(data: bytes, addr: tuple[str, int]) -> None:
            kind = classify_cisco_udp(data)
            if kind is DatagramKind.ESP:
                self._esp_in(data, addr, sock)
            elif kind is DatagramKind.KEEPALIVE:
                self._keepalive_in(sock, addr)
            else:
                self.stats.drops["invalid-udp"] += 1

        self._drain(sock, handle)

    def _keepalive_in(self, sock: socket.socket, addr: tuple[str, int]) -> None:
        """A keepalive tells the client's translated port before any ESP, if only one session could have sent it."""
        waiting = {o.sa_id for o in self.table.outbound if o.sock is sock and o.remote == (addr[0], 0)}
        if len(waiting) == 1:
            self.table.learn_remote(waiting.pop(), sock, addr)

    def _raw_readable(self) -> None:
        assert self.raw is not None
        self._drain(self.raw, self._raw_datagram)

    def _raw_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        ihl = (data[0] & 0x0F) * 4 if data else 0  # a raw socket hands us the IP header too
        self._esp_in(data[ihl:], (addr[0], 0), None)

    def _esp_in(self, data: bytes, addr: tuple[str, int], via: socket.socket | None) -> None:
        """One ESP packet from `addr`, read from `via` (None: raw IP protocol 50)."""
        try:
            spi = peek_spi(data)
            entry = self.inbound.get(spi)
            if entry is None:
                self.stats.drops["unknown-spi"] += 1
                if len(self._unknown) < MAX_BATCH:
                    self._unknown[addr] = (spi, data, via)
                return
            _, inner = entry.esp.decrypt(data)
        except EspError as e:
            self.stats.drops[e.kind] += 1
            return
        if not entry.admits(inner):  # RFC 4301 5.2: a decrypted packet must match the SA's selectors
            self.stats.drops["selector-mismatch"] += 1
            return
        out = entry.outbound
        if addr != out.remote and via is not None and via is out.sock:
            # Authenticated ESP from somewhere new. NAT-T: a NAT rebinding (RFC 3948) is IKE's to confirm, and
            # its PortFloated moves the SA (update_remote). IPsec over UDP learns the peer's port right here.
            if out.follows_ike:
                self._moved[out.sa_id] = addr
            else:
                self.table.learn_remote(out.sa_id, via, addr)
        if not entry.seen_data:
            entry.seen_data = True
            if self.on_first_data is not None:
                self.on_first_data(entry)
        self._alive.add(entry.sa_id)
        gro = self._gro
        if gro is None:
            try:
                os.write(self.tun_fd, inner)
            except OSError as e:
                self.stats.drops["tun-write-failed"] += 1
                log.debug("TUN write failed: %s", e)
            return
        for bufs in gro.push(inner):
            self._tun_write(bufs)

    def _tun_write(self, bufs: list[bytes | memoryview]) -> None:
        try:
            os.writev(self.tun_fd, bufs)
        except OSError as e:
            self.stats.drops["tun-write-failed"] += 1
            log.debug("TUN write failed: %s", e)
