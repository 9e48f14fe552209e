"""The VPN client: IKE initiator, a TUN virtual adapter with the assigned address, routes, status."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from natt.esp.transforms import make_transform
from natt.events.ikelog import IkeLogger
from natt.ike.endpoint import IkeEndpoint
from natt.ike.events import Cause, ChildSaDown, ChildSaUp, IkeEvent, IkeSaDown, ModeConfigDone
from natt.ike.ikesa import IkeSA
from natt_daemons.client.config import ClientSettings, load
from natt_daemons.common import sdnotify
from natt_daemons.common.control import ControlError, ControlServer
from natt_daemons.common.datapath import Datapath
from natt_daemons.common.ikeio import IkeDriver
from natt_daemons.common.lifecycle import serve_until_stopped
from natt_daemons.common.logstream import follow, mirror_to_stderr
from natt_daemons.common.sockets import bind_udp, raw_esp
from natt_daemons.common.tun import (
    Tun,
    add_address,
    add_route,
    default_gateway,
    del_route,
    open_tun,
    source_address_for,
)

log = logging.getLogger("natt.client")
NO_ANSWER_THRESHOLD = 5  # packets encrypted with none decrypted before we call it a black hole
NO_RECONNECT = (Cause.XAUTH_FAILED, Cause.XAUTH_THROTTLED)  # retrying would only fail again (or lock us out)


class Client:
    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self.events = IkeLogger(role="client", capacity=settings.log_capacity, reveal_secrets=settings.log_secrets)
        self.local = source_address_for(settings.profile.peer)
        self.ike_port = settings.ike_port
        self._net_tasks: set[asyncio.Future[None]] = set()
        self._net_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netlink")
        self.endpoint = IkeEndpoint(self.local)
        self.driver: IkeDriver | None = None
        self.datapath: Datapath | None = None
        self.tun: Tun | None = None
        self.control = ControlServer(settings.control_socket)
        self.events.log.subscribe(mirror_to_stderr(log))
        self.sa_id: int | None = None
        self.state = "disconnected"
        self.connected_at: float | None = None
        self.assigned: ModeConfigDone | None = None
        self.routes: list[tuple[str, dict[str, str]]] = []
        self.want_connected = False
        self.last_error = ""
        self.diagnosis: list[str] = []
        self._reconnect: asyncio.TimerHandle | None = None
        self._ready_sent = False

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tun = await asyncio.to_thread(open_tun, self.settings.tun, vnet_hdr=self.settings.tun_offload)
        self.driver = IkeDriver(self.endpoint, self._on_event)
        self.ike_port = await self.driver.listen(self.local, self.settings.ike_port)
        udp = bind_udp(self.local, self.endpoint.natt_port)
        self.driver.attach(self.endpoint.natt_port, udp)
        raw = raw_esp()
        self.datapath = Datapath(self.tun.fd, udp, raw, on_ike=self.driver.feed,
                                 on_inbound=lambda sa_id: self.endpoint.note_inbound_traffic(sa_id, loop.time()),
                                 vnet_hdr=self.tun.vnet_hdr)
        self.datapath.start(loop)
        for name, handler in (("connect", self._cmd_connect), ("disconnect", self._cmd_disconnect),
                              ("status", self._cmd_status), ("log", self._cmd_log)):
            self.control.command(name, handler)
        self.control.stream("log-follow", self._stream_log)
        await self.control.start()
        loop.call_later(2.0, self._diagnose_tick)
        if self.settings.autoconnect:
            self.connect()

    async def run(self) -> None:
        await serve_until_stopped(self.start, self.shutdown, self.reload)

    async def shutdown(self) -> None:
        sdnotify.stopping()
        self.disconnect("client shutting down")
        if self._net_tasks:
            await asyncio.wait(self._net_tasks, timeout=5.0)
        loop = asyncio.get_running_loop()
        if self.datapath is not None:
            self.datapath.stop(loop)
        await self.control.close()
        if self.driver is not None:
            self.driver.close()
        if self.tun is not None:
            self.tun.close()
        self._net_pool.shutdown(wait=False)

    def reload(self) -> None:
        try:
            new = load(self.settings.path, self.settings.profile.password)
        except Exception as e:
            log.error("reload failed, keeping the old profile: %s", e)
            return
        self.settings = new
        log.info("profile reloaded; it applies from the next connect")

    # -- connect / disconnect -----------------------------------------------------------------------

    def connect(self) -> None:
        if self.sa_id is not None and self.sa_id in self.endpoint.sas:
            return
        assert self.driver
        self.want_connected = True
        self.state = "connecting"
        self.diagnosis = []
        self.last_error = ""
        self.sa_id = self.endpoint.connect(self.settings.profile, self.driver.now(), local_port=self.ike_port)
        log.info("connecting to %s as %s", self.settings.profile.peer, self.settings.profile.username)
        self.driver.flush()

    def disconnect(self, reason: str = "user request") -> None:
        self.want_connected = False
        if self._reconnect is not None:
            self._reconnect.cancel()
            self._reconnect = None
        if self.sa_id is not None and self.driver is not None:
            self.endpoint.delete_sa(self.sa_id, self.driver.now(), reason)
            self.driver.flush()
        self._release_network()
        self.sa_id = None
        self.state = "disconnected"

    # -- core events ------------------------------------------------------------------------------

    def _sa(self) -> IkeSA | None:
        return self.endpoint.sas.get(self.sa_id) if self.sa_id is not None else None

    def _on_event(self, event: IkeEvent) -> None:
        sa = self.endpoint.sas.get(event.sa_id)
        self.events.record(event, time.time(), sa)
        dp = self.datapath
        assert dp is not None
        if isinstance(event, ModeConfigDone):
            self.assigned = event
            if sa is not None and sa.cisco_udp_port is not None:
                self._open_ipsec_over_udp(sa.cisco_udp_port)
            self.routes = []
            self._in_background(self._setup_network, event, self.routes)
        elif isinstance(event, ChildSaUp) and sa is not None:
            if not dp.admit(event, sa.peer):
                # The SA table refuses a child whose inner address another session owns: this session ends.
                self.endpoint.delete_sa(sa.id, asyncio.get_running_loop().time(), "selector conflict",
                                        Cause.SELECTOR_REFUSED)
                return
            if self.state != "connected":
                self.state = "connected"
                self.connected_at = time.time()
            if not self._ready_sent:
                self._ready_sent = sdnotify.ready(f"connected to {self.settings.profile.peer}") or True
        elif isinstance(event, ChildSaDown):
            dp.remove(event.inbound_spi)
        elif isinstance(event, IkeSaDown) and event.sa_id == self.sa_id:
            self.last_error = event.reason
            self._release_network()
            self.sa_id = None
            self.state = "disconnected"
            if self.want_connected and self.settings.reconnect and event.cause not in NO_RECONNECT:
                self._schedule_reconnect()

    def _open_ipsec_over_udp(self, port: int) -> None:
        """Cisco IPsec over UDP: ESP leaves from the announced port (as vpnc does), kept for later connections."""
        assert self.datapath is not None and self.driver is not None
        try:
            sock = self.datapath.open_cisco_udp(self.local, port, asyncio.get_running_loop())
        except OSError as e:
            log.error("IPsec over UDP: cannot bind UDP %d: %s; no data will pass", port, e)
            return
        if sock is not None:
            self.driver.attach(port, sock)  # the core's keepalives for this port leave by it

    def _in_background(self, fn: Callable[..., None], *args: object) -> None:
        """Netlink work runs off the loop's thread (see tun.py), on ONE worker so that it happens in the order
        it was asked for: a reconnect's set-up never runs before (or under) the previous tear-down."""
        fut = asyncio.get_running_loop().run_in_executor(self._net_pool, fn, *args)
        self._net_tasks.add(fut)
        fut.add_done_callback(self._net_done)

    def _net_done(self, fut: asyncio.Future[None]) -> None:
        self._net_tasks.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            log.error("network set-up failed: %s", fut.exception())

    def _release_network(self) -> None:
        """Hand this connection's address and routes to a tear-down; the next connection starts afresh."""
        routes, assigned = self.routes, self.assigned
        self.routes, self.assigned = [], None
        if routes or assigned is not None:
            self._in_background(self._teardown_network, routes, assigned)

    def _schedule_reconnect(self) -> None:
        loop = asyncio.get_running_loop()
        self.state = "reconnecting"
        self._reconnect = loop.call_later(5.0, self._do_reconnect)

    def _do_reconnect(self) -> None:
        self._reconnect = None
        if self.want_connected:
            self.connect()

    # -- the virtual adapter and routes ---------------------------------------------------------------

    def _setup_network(self, cfg: ModeConfigDone, routes: list[tuple[str, dict[str, str]]]) -> None:
        assert self.tun
        peer = self.settings.profile.peer
        add_address(self.tun.name, cfg.address, 32)
        gw = default_gateway()
        if gw is not None:
            # Keep IKE and ESP to the concentrator on the physical path once everything else is tunnelled.
            add_route(f"{peer}/32", gateway=gw[0], dev=gw[1])
            routes.append((f"{peer}/32", {"dev": gw[1]}))
        nets = list(cfg.split_networks) or ["0.0.0.0/1", "128.0.0.0/1"]
        for net in nets:
            add_route(net, dev=self.tun.name)
            routes.append((net, {"dev": self.tun.name}))

    def _teardown_network(self, routes: list[tuple[str, dict[str, str]]], assigned: ModeConfigDone | None) -> None:
        for dst, kw in reversed(routes):
            del_route(dst, **kw)
        if self.tun is not None and assigned is not None:
            with contextlib.suppress(Exception):
                from pyroute2 import IPRoute

                with IPRoute() as ipr:
                    idx = ipr.link_lookup(ifname=self.tun.name)[0]
                    ipr.addr("del", index=idx, address=assigned.address, prefixlen=32)

    # -- status and diagnosis ---------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        dp = self.datapath
        assert dp
        c = {"packets_encrypted": 0, "packets_decrypted": 0, "bytes_encrypted": 0, "bytes_decrypted": 0}
        for entry in dp.inbound.values():
            c["packets_decrypted"] += entry.esp.packets
            c["bytes_decrypted"] += entry.esp.bytes
            c["packets_encrypted"] += entry.outbound.esp.packets
            c["bytes_encrypted"] += entry.outbound.esp.bytes
        esp_errors = sum(sum(e.esp.errors.values()) for e in dp.inbound.values())
        c["packets_dropped"] = sum(dp.stats.drops.values()) + esp_errors
        return c

    def _diagnose_tick(self) -> None:
        asyncio.get_running_loop().call_later(2.0, self._diagnose_tick)
        sa = self._sa()
        if sa is None or self.state != "connected" or self.diagnosis:
            return
        c = self.counters()
        if c["packets_encrypted"] >= NO_ANSWER_THRESHOLD and c["packets_decrypted"] == 0:
            text = (f"{c['packets_encrypted']} packets encrypted, none decrypted: the tunnel is up but nothing "
                    "comes back.")
            if self.settings.profile.nat_traversal and sa.natt is None:
                text += (" Transparent tunneling is on here, but the concentrator did not negotiate NAT-T, so ESP "
                         "travels as IP protocol 50, which a PAT device drops. Likely cause: NAT Transparency "
                         "(nat_traversal) is disabled on the concentrator; ask its administrator to enable it.")
            self.diagnosis.append(text)
            self.events.diagnosis(text, time.time(), sa)
            log.warning("%s", text)

    async def _cmd_connect(self, args: dict[str, Any]) -> Any:
        self.connect()
        return {"state": self.state}

    async def _cmd_disconnect(self, args: dict[str, Any]) -> Any:
        if self.sa_id is None and self.state == "disconnected":
            raise ControlError("not connected")
        self.disconnect()
        return {"state": self.state}

    async def _cmd_status(self, args: dict[str, Any]) -> Any:
        sa = self._sa()
        status: dict[str, Any] = {
            "state": self.state,
            "profile": self.settings.name,
            "concentrator": self.settings.profile.peer,
            "username": self.settings.profile.username,
            "local_address": self.local,
            "assigned_address": self.assigned.address if self.assigned else None,
            "tunnel_port": 0,
            "transparent_tunneling": self.settings.profile.nat_traversal,
            "time_up": int(time.time() - self.connected_at) if self.connected_at and self.state == "connected" else 0,
            "last_error": self.last_error,
            "diagnosis": self.diagnosis,
            "datapath": self.datapath.counters() if self.datapath else {},
            **self.counters(),
        }
        if sa is not None:
            status["tunnel_port"] = sa.remote[1] if sa.udp_encap else sa.cisco_udp_port or 0
            status["transport"] = ("NAT-T" if sa.udp_encap else
                                   "IPsec over UDP" if sa.cisco_udp_port is not None else "ESP")
            status["nat"] = {"this_end_behind_nat": sa.nat.local_behind_nat if sa.nat else False,
                             "remote_end_behind_nat": sa.nat.remote_behind_nat if sa.nat else False,
                             "natt": sa.natt.name if sa.natt else None}
            status["ike"] = {"mode": sa.mode, "encryption": sa.cipher.name if sa.cipher else "",
                             "hashing": sa.hash.name if sa.hash else "", "state": sa.state.value}
            status["ipsec"] = [
                {"local": c.local_selector, "remote": c.remote_selector,
                 "transform": make_transform(c.proposal.transform, c.proposal.key_bits, c.proposal.auth).name,
                 "inbound_spi": f"0x{c.inbound_spi:08x}", "outbound_spi": f"0x{c.outbound_spi:08x}"}
                for c in sa.children.values()]
            status["routes"] = [r[0] for r in self.routes]
        return status

    async def _cmd_log(self, args: dict[str, Any]) -> Any:
        return self.events.query(args)

    def _stream_log(self, args: dict[str, Any]) -> AsyncIterator[Any]:
        return follow(self.events, args)


def serve(config: str, password: str | None = None) -> int:
    settings = load(config, password)
    client = Client(settings)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(client.run())
    return 0
