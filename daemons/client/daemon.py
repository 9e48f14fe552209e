"""The VPN client: IKE initiator, a TUN virtual adapter with the assigned address, routes, status.

One *session* is one login (phase 1 + XAUTH + Mode Config). The core keeps it across phase 2 rekeys and across
phase 1 re-authentication (a new IKE SA takes over and the old one goes, cause REKEYED): the client follows the
current IKE SA (`sa_id`), keeps its address, routes, counters and time up, and stays "connected".
When the session really ends (DPD, a peer DELETE, an expiry) and the client reconnects, the tunnel's routes stay
on the TUN (`fail_closed`, the default): traffic meant for the tunnel is dropped there ("no-sa-for-flow"), never
sent in the clear on the physical path, until the new session is up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from natt.esp.transforms import make_transform
from natt.events.ikelog import IkeLogger
from natt.ike.endpoint import IkeEndpoint
from natt.ike.events import (
    Cause,
    ChildSaDown,
    ChildSaUp,
    IkeEvent,
    IkeSaDown,
    ModeConfigDone,
    Reauthenticated,
)
from natt.ike.ikesa import IkeSA, State
from natt_daemons.client.config import ClientSettings, load
from natt_daemons.common import sdnotify
from natt_daemons.common.control import ControlError, ControlServer
from natt_daemons.common.datapath import Datapath
from natt_daemons.common.ikeio import IkeDriver
from natt_daemons.common.ikestats import IkeCounters
from natt_daemons.common.keyexport import export_keys
from natt_daemons.common.lifecycle import serve_until_stopped
from natt_daemons.common.logstream import follow, mirror_to_stderr
from natt_daemons.common.loopwatch import LoopWatch
from natt_daemons.common.sockets import bind_udp, raw_esp
from natt_daemons.common.stats import datapath_sections
from natt_daemons.common.tun import (
    Tun,
    add_address,
    add_route,
    default_gateway,
    del_route,
    open_tun,
    source_address_for,
)

if TYPE_CHECKING:
    from natt_daemons.common.metrics import MetricsServer

log = logging.getLogger("natt.client")
NO_ANSWER_THRESHOLD = 5  # packets encrypted with none decrypted before we call it a black hole
NETLINK_TRIES = 3  # a change to the address or a route is tried this many times before it is reported
NO_RECONNECT = (Cause.XAUTH_FAILED, Cause.XAUTH_THROTTLED)  # retrying would only fail again (or lock us out)
# Automatic reconnects back off: 1 s after a session ends, then 2, 4, ... up to 60 s while attempts keep failing
# (a gateway that is down is not hammered), each ±20 % at random (clients behind one PAT do not return in step).
RECONNECT_FIRST = 1.0
RECONNECT_MAX = 60.0
RECONNECT_JITTER = 0.2
LOG_RATE_LIMIT = 20.0  # event-log entries a second per event; repeats past it are summed up (RPT)
DEFAULT_NETWORKS = ("0.0.0.0/1", "128.0.0.0/1")  # everything, without replacing the default route
COUNTERS = ("packets_encrypted", "packets_decrypted", "bytes_encrypted", "bytes_decrypted")


def reconnect_delay(attempt: int, unit_random: float) -> float:
    """Seconds before automatic reconnect number `attempt` (0 = the first after a session ended)."""
    base = min(RECONNECT_MAX, RECONNECT_FIRST * 2 ** min(attempt, 16))
    return base * (1 - RECONNECT_JITTER + 2 * RECONNECT_JITTER * unit_random)


def reconnect_refusal(cause: Cause, peer_said: str) -> str | None:
    """Why an ended session must not be reconnected automatically (None: reconnect).

    - XAUTH failures: the same password would fail again, and keep failing until the gateway locks the user out.
    - The gateway replaced this session with another login of the same user (its DELETE-REASON starts with
      "replaced"): reconnecting would replace that one in turn, and the two machines would kick each other out
      for ever (ping-pong). The user decides, with `natt-client connect`."""
    if cause in NO_RECONNECT:
        return f"not reconnecting: {cause.value} (retrying would fail again); check the credentials, then connect"
    if cause is Cause.REPLACED or (cause is Cause.PEER_DELETED and peer_said.strip().lower().startswith("replaced")):
        return ("not reconnecting: the gateway replaced this session with another login of the same user "
                "(reconnecting would log that one out in turn); run `natt-client connect` to take it back")
    return None


@dataclass
class NetState:
    """What this client put on the system for a session: the TUN's address, the tunnel's networks (routes through
    the TUN) and the peer's host route via the physical gateway. `routes` fills as the netlink worker adds them."""

    address: str
    networks: tuple[str, ...]
    routes: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    @classmethod
    def of(cls, cfg: ModeConfigDone) -> NetState:
        return cls(cfg.address, tuple(cfg.split_networks) or DEFAULT_NETWORKS)

    def same(self, other: NetState) -> bool:
        return self.address == other.address and set(self.networks) == set(other.networks)

    def missing(self) -> list[str]:
        """The tunnel's networks that have no route made yet."""
        made = {dst for dst, _ in self.routes}
        return [n for n in self.networks if n not in made]


class Client:
    def __init__(self, settings: ClientSettings) -> None:
        self.settings = settings
        self.events = IkeLogger(role="client", capacity=settings.log_capacity, reveal_secrets=settings.log_secrets,
                                rate_limit=LOG_RATE_LIMIT)
        # The loop's lateness (status: loop_lag_ms) and, each tick, the event log's held repeat summaries.
        self.loopwatch = LoopWatch([lambda: self.events.log.flush(time.time())])
        self.local = source_address_for(settings.profile.peer)
        self.ike_port = settings.ike_port
        self._net_tasks: set[asyncio.Future[None]] = set()
        self.network_errors: list[str] = []  # address and route changes that did not take (the last few)
        self._net_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="netlink")
        self.endpoint = IkeEndpoint(self.local)
        self.driver: IkeDriver | None = None
        self.datapath: Datapath | None = None
        self.tun: Tun | None = None
        self.control = ControlServer(settings.control_socket)
        self.events.log.subscribe(mirror_to_stderr(log))
        self.sa_id: int | None = None  # the session's current IKE SA (a re-authentication moves it)
        self._sa_obj: IkeSA | None = None  # the same, kept after the core forgets it (what the gateway said)
        self.state = "disconnected"
        self.connected_at: float | None = None  # the session's start (wall clock); kept across rekeys
        self.assigned: ModeConfigDone | None = None
        self.net: NetState | None = None  # address and routes on the system (kept across a reconnect: fail closed)
        self._net_made: NetState | None = None  # the last of those whose set-up the worker finished
        self.want_connected = False
        self.last_error = ""
        self.not_reconnecting = ""  # why an ended session is not being reconnected
        self.diagnosis: list[str] = []
        self._reconnect: asyncio.TimerHandle | None = None
        self._ready_sent = False
        # The session (login) the tunnels belong to: its counters are the data path's totals of its removed child SAs
        # (Datapath.session_totals) plus its live ones, so rekeys and re-authentications do not reset them.
        self.session_id: int | None = None
        self.reauths = 0
        self.rekeys_phase2 = 0
        self.reauth_failures = 0
        self.reconnects = 0
        self.reconnect_attempt = 0  # failed attempts in a row (the backoff's exponent); 0 once connected
        self._ending: set[int] = set()  # IKE SAs this client is deleting itself (their IkeSaDown says nothing new)
        # What the core's events add up to since the start (never reset, unlike the session's counters above).
        self.ike_counters = IkeCounters()
        self.metrics: MetricsServer | None = None

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.tun = await asyncio.to_thread(open_tun, self.settings.tun, vnet_hdr=self.settings.tun_offload)
        self.driver = IkeDriver(self.endpoint, self._on_event)
        self.ike_port = await self.driver.listen(self.local, self.settings.ike_port)
        udp = bind_udp(self.local, self.endpoint.natt_port)
        self.driver.attach(self.endpoint.natt_port, udp)
        raw = raw_esp()
        self.datapath = Datapath(self.tun.fd, udp, raw, on_ike=self.driver.feed_batch,
                                 on_inbound=lambda sa_id: self.endpoint.note_inbound_traffic(sa_id, loop.time()),
                                 vnet_hdr=self.tun.vnet_hdr, on_unknown_spi=self.driver.unknown_esp)
        self.datapath.start(loop)
        self.loopwatch.start()
        self.register_commands()
        await self.control.start()
        await self._start_metrics()
        loop.call_later(2.0, self._diagnose_tick)
        if self.settings.autoconnect:
            self.connect()

    def register_commands(self) -> None:
        for name, handler in (("connect", self._cmd_connect), ("disconnect", self._cmd_disconnect),
                              ("status", self._cmd_status), ("log", self._cmd_log), ("rekey", self._cmd_rekey)):
            self.control.command(name, handler)
        self.control.command("stats", self._cmd_stats, access="view")
        self.control.command("keys", self._cmd_keys, access="root")
        self.control.stream("log-follow", self._stream_log)

    async def run(self) -> None:
        await serve_until_stopped(self.start, self.shutdown, self.reload)

    async def shutdown(self) -> None:
        sdnotify.stopping()
        self.loopwatch.stop()
        self.disconnect("client shutting down")
        if self._net_tasks:
            await asyncio.wait(self._net_tasks, timeout=5.0)
        loop = asyncio.get_running_loop()
        if self.datapath is not None:
            self.datapath.stop(loop)
        await self.control.close()
        if self.metrics is not None:
            await self.metrics.close()
        if self.driver is not None:
            self.driver.close()
        if self.tun is not None:
            self.tun.close()
        self._net_pool.shutdown(wait=False)

    def reload(self) -> None:
        try:
            new = load(self.settings.path, self.settings.profile.password)
            new.secrets.enforce(log)
        except Exception as e:
            log.error("reload failed, keeping the old profile: %s", e)
            return
        self.settings = new
        log.info("profile reloaded; it applies from the next connect (fail_closed at once)")

    # -- connect / disconnect -----------------------------------------------------------------------

    def now(self) -> float:
        """The core's clock (the event loop's): SA deadlines are on it."""
        return self.driver.now() if self.driver is not None else asyncio.get_running_loop().time()

    def connect(self, *, automatic: bool = False) -> None:
        """Start a new session (a login). A re-authentication is the core's, not this."""
        if self.sa_id is not None and self.sa_id in self.endpoint.sas:
            return
        assert self.driver
        self._cancel_reconnect()
        self.want_connected = True
        self.state = "reconnecting" if automatic else "connecting"
        self.diagnosis = []
        self.not_reconnecting = ""
        if not automatic:
            self.last_error = ""
        self._new_session_counters()
        self.sa_id = self.endpoint.connect(self.settings.profile, self.driver.now(), local_port=self.ike_port)
        self._sa_obj = self.endpoint.sas.get(self.sa_id)
        self.session_id = self._sa_obj.session_id if self._sa_obj is not None else self.sa_id
        log.info("%s to %s as %s", "reconnecting" if automatic else "connecting", self.settings.profile.peer,
                 self.settings.profile.username)
        self.driver.flush()

    def disconnect(self, reason: str = "user request") -> None:
        """The user's (or shutdown's) disconnect: the session ends, and its address and routes go with it."""
        self.want_connected = False
        self._cancel_reconnect()
        ids = [*self._reauths_of(self.sa_id), *([self.sa_id] if self.sa_id is not None else [])]
        self.sa_id = None
        self._sa_obj = None
        self._end_sas(ids, reason)
        self._release_network()
        self._new_session_counters()
        self.not_reconnecting = ""
        self.state = "disconnected"

    def _end_sas(self, ids: list[int], reason: str, *, flush: bool = True) -> None:
        """Delete IKE SAs of ours (telling the gateway); their IkeSaDown events are expected, not news. From an event
        handler, `flush=False`: the driver's flush that called it sends what this queued."""
        if self.driver is None:
            return
        now = self.driver.now()
        for sa_id in ids:
            if sa_id in self.endpoint.sas:
                self._ending.add(sa_id)
                self.endpoint.delete_sa(sa_id, now, reason)
        if flush:
            self.driver.flush()

    def _new_session_counters(self) -> None:
        if self.session_id is not None and self.datapath is not None:
            self.datapath.end_session(self.session_id)  # the previous session's totals were shown until now
        self.session_id = None
        self.reauths = self.rekeys_phase2 = self.reauth_failures = 0
        self.connected_at = None

    def _reauths_of(self, sa_id: int | None) -> list[int]:
        """IKE SAs under way that re-authenticate `sa_id`."""
        if sa_id is None:
            return []
        return [s.id for s in self.endpoint.sas.values()
                if s.initiator is not None and s.initiator.reauth_of == sa_id]

    def _cancel_reconnect(self) -> None:
        if self._reconnect is not None:
            self._reconnect.cancel()
            self._reconnect = None

    # -- core events ------------------------------------------------------------------------------

    def _sa(self) -> IkeSA | None:
        return self.endpoint.sas.get(self.sa_id) if self.sa_id is not None else None

    def _on_event(self, event: IkeEvent) -> None:
        sa = self.endpoint.sas.get(event.sa_id)
        self.events.record(event, time.time(), sa)
        self.ike_counters.note(event)
        if isinstance(event, ModeConfigDone):
            self._mode_config(event, sa)
        elif isinstance(event, ChildSaUp) and sa is not None:
            self._child_up(event, sa)
        elif isinstance(event, ChildSaDown):
            self._child_down(event)
        elif isinstance(event, Reauthenticated):
            self._reauthenticated(event)
        elif isinstance(event, IkeSaDown):
            self._ike_down(event)

    def _mode_config(self, event: ModeConfigDone, sa: IkeSA | None) -> None:
        """The session's address and networks, from its first IKE SA, a re-authentication's, or a reconnect's."""
        if sa is not None and sa.cisco_udp_port is not None:
            self._open_ipsec_over_udp(sa.cisco_udp_port)
        self.assigned = event
        want = NetState.of(event)
        if self.net is not None and self.net.same(want):
            log.debug("Mode Config (IKE SA %d): address %s and networks as before; the network stays",
                      event.sa_id, event.address)
            return
        old, self.net = self.net, want
        if old is not None:
            log.warning("Mode Config (IKE SA %d) gave %s %s, not %s %s: moving the address and routes",
                        event.sa_id, want.address, ",".join(want.networks), old.address, ",".join(old.networks))
            made = self._in_background(self._move_network, old, want)
        else:
            made = self._in_background(self._setup_network, want)
        made.add_done_callback(lambda _: self._network_made(want))

    def _network_made(self, net: NetState) -> None:
        """The worker finished a session's set-up (what failed is in `network_errors`): it may now be connected."""
        if net is self.net:
            self._net_made = net
            self._maybe_connected()

    def _child_up(self, event: ChildSaUp, sa: IkeSA) -> None:
        dp = self.datapath
        assert dp is not None
        if not dp.admit(event, sa.peer):
            # The SA table refuses a child whose inner address another session owns: this session ends.
            self.endpoint.delete_sa(sa.id, self.now(), "selector conflict", Cause.SELECTOR_REFUSED)
            return
        if event.sa_id == self.sa_id and self._is_rekey(event, sa):
            self.rekeys_phase2 += 1
            log.info("IPsec SA %s <-> %s rekeyed: in 0x%08x out 0x%08x", event.local_selector,
                     event.remote_selector, event.inbound_spi, event.outbound_spi)
        self._maybe_connected()

    def _maybe_connected(self) -> None:
        """"connected" (status, systemd's READY, the log) once traffic can pass: every tunnel the session set up has
        its pair, and the address and routes are on the system. Before, the first pair was enough: a connect on
        a lossy link or a busy machine was "connected" while its 0.0.0.0/0 pair or its routes were still on their
        way, and what an application sent at once left in the clear by the default route (the lossy-link lab test
        saw its ping answered by an ICMP error from outside)."""
        sa = self._sa()
        if self.state == "connected" or sa is None or not sa.children:
            return
        if any(qm.ours and qm.rekey_of is None for qm in sa.quick_modes.values()):
            return  # a tunnel still being set up
        if self.net is None or self._net_made is not self.net:
            return  # the address and routes are still being made
        self.state = "connected"
        self.reconnect_attempt = 0
        if self.connected_at is None:
            self.connected_at = time.time()
        log.info("%s to %s: address %s, %d IPsec SA pairs, routes %s", "connected again" if self.reconnects or
                 self.last_error else "connected", self.settings.profile.peer, self.net.address, len(sa.children),
                 ", ".join(dst for dst, _ in self.net.routes) or "none")
        if not self._ready_sent:
            self._ready_sent = sdnotify.ready(f"connected to {self.settings.profile.peer}") or True

    @staticmethod
    def _is_rekey(event: ChildSaUp, sa: IkeSA) -> bool:
        """A new pair for selectors this IKE SA already had (our rekey, or the gateway's: those carry no rekey_of
        here, but the pair they replace is marked rekeyed)."""
        if event.rekey_of is not None:
            return True
        return any(c.rekeyed and c.inbound_spi != event.inbound_spi and
                   (c.local_selector, c.remote_selector) == (event.local_selector, event.remote_selector)
                   for c in sa.children.values())

    def _child_down(self, event: ChildSaDown) -> None:
        assert self.datapath is not None
        self.datapath.remove(event.inbound_spi)  # what it carried stays in its session's totals

    def _reauthenticated(self, event: Reauthenticated) -> None:
        if event.old_sa_id != self.sa_id:
            log.warning("re-authentication of IKE SA %d by %d, which is not this session's (current: %s): "
                        "ending it", event.old_sa_id, event.sa_id, self.sa_id)
            self.endpoint.delete_sa(event.sa_id, self.now(), "not this client's session")
            return
        self.sa_id = event.sa_id
        self._sa_obj = self.endpoint.sas.get(event.sa_id)
        self.reauths += 1
        self.state = "connected"
        log.info("re-authenticated (phase 1 rekey): IKE SA %d replaces %d, session %d, address %s",
                 event.sa_id, event.old_sa_id, event.session_id, self.assigned.address if self.assigned else "?")

    def _ike_down(self, event: IkeSaDown) -> None:
        if event.sa_id in self._ending:
            self._ending.discard(event.sa_id)
            return
        if event.sa_id != self.sa_id:
            if event.cause is not Cause.REKEYED:
                # A re-authentication that failed: the session goes on with its current IKE SA (the core tries
                # again while that one lives), or a leftover of a session that already ended.
                self.reauth_failures += 1
                self.last_error = f"re-authentication failed (the session goes on): {event.reason}"
                log.warning("IKE SA %d ended (%s); the session goes on with IKE SA %s", event.sa_id, event.reason,
                            self.sa_id)
            return
        if event.cause is Cause.REKEYED:
            return  # replaced by a re-authentication whose Reauthenticated already moved us (never user-visible)
        self._session_ended(event)

    def _session_ended(self, event: IkeSaDown) -> None:
        # A re-authentication of a session that ended goes too.
        self._end_sas(self._reauths_of(event.sa_id), "the session it re-authenticated ended", flush=False)
        said = self._sa_obj.initiator.peer_reason if self._sa_obj is not None and self._sa_obj.initiator else ""
        self.last_error = event.reason
        log.warning("disconnected from %s: %s", self.settings.profile.peer, event.reason)
        self.sa_id = None
        self._sa_obj = None
        refusal = reconnect_refusal(event.cause, said or _peer_text(event.reason))
        reconnect = self.want_connected and self.settings.reconnect and refusal is None
        if reconnect:
            self._schedule_reconnect()
        else:
            self.state = "disconnected"
            self.not_reconnecting = refusal or ("" if self.settings.reconnect or not self.want_connected
                                                else "not reconnecting: reconnect = false in the profile")
            if self.not_reconnecting:
                log.warning("%s", self.not_reconnecting)
        if self.settings.fail_closed and self.net is not None:
            log.warning("fail closed: traffic for the tunnel (%s) is dropped until %s", ", ".join(self.net.networks),
                        "the tunnel is back" if reconnect else "`natt-client connect` or `disconnect`")
        else:
            self._release_network()

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

    def _in_background(self, fn: Callable[..., None], *args: object) -> asyncio.Future[None]:
        """Netlink work runs off the loop's thread (see tun.py), on ONE worker so that it happens in the order
        it was asked for: a reconnect's set-up never runs before (or under) the previous tear-down."""
        fut = asyncio.get_running_loop().run_in_executor(self._net_pool, fn, *args)
        self._net_tasks.add(fut)
        fut.add_done_callback(self._net_done)
        return fut

    def _net_done(self, fut: asyncio.Future[None]) -> None:
        self._net_tasks.discard(fut)
        if not fut.cancelled() and fut.exception() is not None:
            log.error("network set-up failed: %s", fut.exception())

    def _release_network(self) -> None:
        """Hand the session's address and routes to a tear-down; the next connection starts afresh."""
        net, self.net, self.assigned = self.net, None, None
        if net is not None:
            self._in_background(self._teardown_network, net)

    def _schedule_reconnect(self) -> None:
        loop = asyncio.get_running_loop()
        self.state = "reconnecting"
        self._cancel_reconnect()
        delay = reconnect_delay(self.reconnect_attempt, random.random())
        self.reconnect_attempt += 1
        log.info("reconnecting in %.1f s (attempt %d)", delay, self.reconnect_attempt)
        self._reconnect = loop.call_later(delay, self._do_reconnect)

    def _do_reconnect(self) -> None:
        self._reconnect = None
        if self.want_connected:
            self.reconnects += 1
            self.connect(automatic=True)

    # -- the virtual adapter and routes ---------------------------------------------------------------

    def _setup_network(self, net: NetState) -> None:
        """The session's address and routes, each step on its own: one that fails (after NETLINK_TRIES) is logged
        and shown in `status` (`network_errors`), and the others are still made; the diagnose tick tries a
        missing route again. In a CI run a connect was "connected" with the peer's host route but neither tunnel
        route, and sent everything in the clear (the lossy-link lab test)."""
        assert self.tun
        tun = self.tun.name
        peer = self.settings.profile.peer
        started = time.monotonic()
        self._netlink(f"address {net.address} on {tun}", lambda: add_address(tun, net.address, 32))
        found: list[tuple[str, str] | None] = [None]
        self._netlink("reading the default gateway", lambda: found.__setitem__(0, default_gateway()))
        gw = found[0]
        # Keep IKE and ESP to the concentrator on the physical path once everything else is tunnelled.
        if gw and self._netlink(f"route {peer}/32 via {gw[0]}",
                                lambda: add_route(f"{peer}/32", gateway=gw[0], dev=gw[1])):
            net.routes.append((f"{peer}/32", {"dev": gw[1]}))
        self._tunnel_routes(net, tun)
        log.info("network set-up: address %s on %s and %d of %d routes made in %.0f ms", net.address, tun,
                 len(net.routes), len(net.networks) + (1 if gw else 0), (time.monotonic() - started) * 1000)

    def _netlink(self, what: str, change: Callable[[], object]) -> bool:
        """One netlink call in the worker, tried NETLINK_TRIES times; False (logged, and kept for `status`) if it
        never took."""
        for attempt in range(1, NETLINK_TRIES + 1):
            try:
                change()
                return True
            except Exception as e:  # pyroute2's NetlinkError and OSError alike: reported, never the worker's end
                if attempt == NETLINK_TRIES:
                    log.error("network set-up: %s failed %d times: %s", what, attempt, e)
                    self.network_errors.append(f"{what}: {e}")
                    del self.network_errors[:-8]
                    return False
                log.warning("network set-up: %s failed (%s); trying again", what, e)
                time.sleep(0.2 * attempt)
        return False

    def _tunnel_routes(self, net: NetState, tun: str) -> list[str]:
        """The routes of the tunnel's networks that `net` does not have yet, each on its own: those made."""
        made = []
        for dst in net.missing():
            if self._netlink(f"route {dst} via {tun}", lambda dst=dst: add_route(dst, dev=tun)):
                net.routes.append((dst, {"dev": tun}))
                made.append(dst)
        return made

    def _repair_network(self, net: NetState) -> None:
        """Routes of the session that the set-up could not make: tried again (the diagnose tick asks)."""
        if net is not self.net or self.tun is None:
            return
        for dst in self._tunnel_routes(net, self.tun.name):
            log.warning("network set-up: route %s via %s made on a second try", dst, self.tun.name)

    def _move_network(self, old: NetState, new: NetState) -> None:
        """A new address or new networks: the new ones first (a route both have is replaced in place), then what
        only the old one had goes; so the tunnel's traffic never finds no route to the TUN in between."""
        self._setup_network(new)
        keep = {dst for dst, _ in new.routes}
        self._teardown_network(NetState(old.address, old.networks, [r for r in old.routes if r[0] not in keep]),
                               address=old.address != new.address)

    def _teardown_network(self, net: NetState, *, address: bool = True) -> None:
        for dst, kw in reversed(net.routes):
            del_route(dst, **kw)
        if self.tun is not None and address:
            with contextlib.suppress(Exception):
                from pyroute2 import IPRoute

                with IPRoute() as ipr:
                    idx = ipr.link_lookup(ifname=self.tun.name)[0]
                    ipr.addr("del", index=idx, address=net.address, prefixlen=32)

    # -- status and diagnosis ---------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        """The session's traffic: child SAs removed (rekeyed, re-authenticated) plus the live ones."""
        dp = self.datapath
        assert dp
        t = dp.session_totals.get(self.session_id) if self.session_id is not None else None
        c = {"packets_encrypted": t.packets_tx, "packets_decrypted": t.packets_rx, "bytes_encrypted": t.bytes_tx,
             "bytes_decrypted": t.bytes_rx} if t is not None else dict.fromkeys(COUNTERS, 0)
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
        net = self.net
        if net is not None and not self._net_tasks and net.missing():
            self._in_background(self._repair_network, net)  # a route the set-up could not make
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

    def traffic_text(self) -> str:
        """What happens to traffic for the tunnel while it is not up ("" while it is)."""
        if self.state == "connected":
            return ""
        if self.net is not None:
            return (f"dropped: the tunnel is down and its routes ({', '.join(self.net.networks)}) stay on "
                    f"{self.settings.tun} (fail_closed); nothing goes in the clear"
                    + ("" if self.state == "reconnecting" else "; `natt-client disconnect` releases them"))
        if self.state == "reconnecting":
            return "sent in the clear on the physical path while reconnecting (fail_closed = false)"
        return ""

    async def _cmd_connect(self, args: dict[str, Any]) -> Any:
        self.connect()
        return {"state": self.state}

    async def _cmd_disconnect(self, args: dict[str, Any]) -> Any:
        if self.sa_id is None and self.state == "disconnected" and self.net is None:
            raise ControlError("not connected")
        self.disconnect()
        return {"state": self.state}

    async def _cmd_rekey(self, args: dict[str, Any]) -> Any:
        """Phase 2: new pairs for every IPsec SA now (make-before-break). Phase 1: re-authenticate now (a new IKE SA
        for the same session, XAUTH again, same address), as the core does before phase 1 expires."""
        phase = args.get("phase", 2)
        if phase not in (1, 2):
            raise ControlError(f"phase must be 1 or 2, not {phase!r}")
        sa = self._sa()
        if sa is None or sa.state is not State.ESTABLISHED or self.driver is None:
            raise ControlError(f"not connected (state {self.state})")
        now = self.driver.now()
        if phase == 2:
            started = self.endpoint.rekey_children(sa.id, now)
            self.driver.flush()
            if not started:
                raise ControlError("nothing to rekey: every IPsec SA is being rekeyed (or replaced) already")
            log.info("phase 2 rekey asked for: %d Quick Mode(s) started", started)
            return {"phase": 2, "started": started, "sa_id": sa.id}
        if sa.initiator is not None and sa.initiator.reauth_by is not None:
            raise ControlError(f"a re-authentication is under way already (IKE SA {sa.initiator.reauth_by})")
        new = self.endpoint.reauthenticate(sa.id, now)
        self.driver.flush()
        if new is None:
            raise ControlError("the IKE SA cannot be re-authenticated now")
        log.info("phase 1 rekey asked for: re-authenticating IKE SA %d as %d", sa.id, new)
        return {"phase": 1, "started": 1, "sa_id": sa.id, "new_sa_id": new}

    async def _cmd_keys(self, args: dict[str, Any]) -> Any:
        """Wireshark's IKEv1 and ESP decryption tables for the live SAs, written into args["wireshark"] (root only;
        only the counts are logged and returned)."""
        if self.datapath is None:
            raise ControlError("not started")
        done = await export_keys(args, self.endpoint.sas, self.datapath.table)
        log.warning("Wireshark key tables written to %s: %d IKE SA(s), %d ESP SA(s)", done["directory"],
                    done["ike_sas"], done["esp_sas"])
        return done

    @staticmethod
    def _remaining(when: float | None, now: float) -> int | None:
        return None if when is None else max(0, int(when - now))

    def _ike_status(self, sa: IkeSA, now: float) -> dict[str, Any]:
        reauth_by = sa.initiator.reauth_by if sa.initiator is not None else None
        return {"mode": sa.mode, "encryption": sa.cipher.name if sa.cipher else "",
                "hashing": sa.hash.name if sa.hash else "", "state": sa.state.value, "sa_id": sa.id,
                "session_id": sa.session_id,
                "lifetime": sa.proposal.lifetime if sa.proposal else None,
                "expires_in": self._remaining(sa.expires_at, now),
                "reauth_in": None if reauth_by is not None else self._remaining(sa.rekey_at, now),
                "reauthenticating": reauth_by}

    def _ipsec_status(self, sa: IkeSA, now: float) -> list[dict[str, Any]]:
        assert self.datapath is not None
        rows = []
        for c in sa.children.values():
            entry = self.datapath.inbound.get(c.inbound_spi)
            rows.append({
                "local": c.local_selector, "remote": c.remote_selector,
                "transform": make_transform(c.proposal.transform, c.proposal.key_bits, c.proposal.auth).name,
                "inbound_spi": f"0x{c.inbound_spi:08x}", "outbound_spi": f"0x{c.outbound_spi:08x}",
                "lifetime": int(c.expires_at - c.established_at),
                "expires_in": self._remaining(c.expires_at, now),
                "rekey_in": None if c.rekeyed else self._remaining(c.rekey_at, now),
                "rekeyed": c.rekeyed,
                "delete_in": self._remaining(c.delete_at, now),
                "bytes_encrypted": entry.outbound.esp.bytes if entry else 0,
                "bytes_decrypted": entry.esp.bytes if entry else 0,
                "packets_encrypted": entry.outbound.esp.packets if entry else 0,
                "packets_decrypted": entry.esp.packets if entry else 0,
            })
        return rows

    async def _cmd_status(self, args: dict[str, Any]) -> Any:
        sa = self._sa()
        now = self.now()
        reconnect_in = (max(0, int(self._reconnect.when() - asyncio.get_running_loop().time()))
                        if self._reconnect is not None else None)
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
            "fail_closed": self.settings.fail_closed,
            "traffic": self.traffic_text(),
            "reconnect_in": reconnect_in,
            "reconnects": self.reconnects,
            "reconnect_attempt": self.reconnect_attempt,
            "loop_lag_ms": self.loopwatch.status(),
            "retransmissions": {"sent": self.ike_counters.retransmissions,
                                "answered": self.ike_counters.retransmits_answered},
            "not_reconnecting": self.not_reconnecting,
            "rekeys": {"phase1": self.reauths, "phase2": self.rekeys_phase2,
                       "phase1_failed": self.reauth_failures},
            "last_error": self.last_error,
            "diagnosis": self.diagnosis,
            "datapath": self.datapath.counters() if self.datapath else {},
            "datapath_drops": dict(self.datapath.stats.drops) if self.datapath else {},
            **self.counters(),
        }
        if sa is not None:
            status["tunnel_port"] = sa.remote[1] if sa.udp_encap else sa.cisco_udp_port or 0
            status["transport"] = ("NAT-T" if sa.udp_encap else
                                   "IPsec over UDP" if sa.cisco_udp_port is not None else "ESP")
            # Without NAT-D payloads (NAT-T not negotiated) nothing says whether a NAT is in the way: None, unknown.
            status["nat"] = {"this_end_behind_nat": sa.nat.local_behind_nat if sa.nat else None,
                             "remote_end_behind_nat": sa.nat.remote_behind_nat if sa.nat else None,
                             "natd_exchanged": sa.nat is not None,
                             "natt": sa.natt.name if sa.natt else None}
            status["ike"] = self._ike_status(sa, now)
            status["ipsec"] = self._ipsec_status(sa, now)
            reauth = self.endpoint.sas.get(sa.initiator.reauth_by) if sa.initiator and sa.initiator.reauth_by \
                else None
            if reauth is not None:  # the new IKE SA's tunnels, while it takes over
                status["ipsec_next"] = self._ipsec_status(reauth, now)
        if self.net is not None:
            status["routes"] = [r[0] for r in self.net.routes]
            missing = self.net.missing()
            if missing:
                status["routes_missing"] = missing
        if self.network_errors:
            status["network_errors"] = list(self.network_errors)
        return status

    async def _cmd_log(self, args: dict[str, Any]) -> Any:
        return self.events.query(args)

    def stats(self) -> dict[str, Any]:
        """Counters since the daemon started (they go on across sessions), for the `stats` command and the metrics:
        the tunnel's state, IKE, NAT-T, IPsec per transform, the data path's batching."""
        assert self.datapath is not None and self.driver is not None
        connected = self.state == "connected"
        return {
            "client": {"state": self.state, "tunnel_up": connected, "reconnects": self.reconnects,
                       "connected_since": self.connected_at if connected else None},
            "ike": {**self.ike_counters.ike(), "send_errors": self.driver.send_errors,
                    "refusals": dict(self.endpoint.stats)},  # the IKE core's counters, as the concentrator's
            "natt": self.ike_counters.natt(),
            **datapath_sections(self.datapath),
        }

    async def _cmd_stats(self, args: dict[str, Any]) -> Any:
        return self.stats()

    async def _start_metrics(self) -> None:
        if self.settings.metrics_listen is None:
            return
        # prometheus-client and aiohttp are loaded only by a daemon that serves metrics.
        from natt_daemons.common import metrics

        self.metrics = await metrics.serve(metrics.ClientCollector(self.stats), self.settings.metrics_listen, log)

    def _stream_log(self, args: dict[str, Any]) -> AsyncIterator[Any]:
        return follow(self.events, args)


def _peer_text(reason: str) -> str:
    """What the gateway said, from an IkeSaDown reason "peer deleted the IKE SA: <its DELETE-REASON>"."""
    head, sep, said = reason.partition(": ")
    return said if sep and head.startswith("peer deleted") else ""


def serve(config: str, password: str | None = None) -> int:
    settings = load(config, password)
    client = Client(settings)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(client.run())
    return 0
