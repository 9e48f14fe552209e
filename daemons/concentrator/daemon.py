"""The concentrator: IKE responder on UDP 500/4500, userspace ESP, a TUN on the private side."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from natt.crypto.dh import get_group
from natt.events.ikelog import IkeLogger
from natt.ike.endpoint import IkeEndpoint
from natt.ike.events import (
    Cause,
    ChildSaDown,
    ChildSaMoved,
    ChildSaUp,
    IkeEvent,
    IkeSaDown,
    PortFloated,
    XauthCheck,
)
from natt.ike.ikesa import IkeSA, State
from natt_daemons.common import sdnotify
from natt_daemons.common.config import ConfigError
from natt_daemons.common.control import AuditRecord, ControlError, ControlServer
from natt_daemons.common.datapath import Datapath, Inbound
from natt_daemons.common.ikeio import IkeDriver
from natt_daemons.common.ikestats import IkeCounters
from natt_daemons.common.keyexport import export_keys
from natt_daemons.common.lifecycle import serve_until_stopped
from natt_daemons.common.logstream import follow, mirror_to_stderr
from natt_daemons.common.loopwatch import LoopWatch
from natt_daemons.common.sockets import bind_udp, raw_esp
from natt_daemons.common.stats import datapath_sections
from natt_daemons.common.tun import Tun, add_route, del_route, open_tun
from natt_daemons.concentrator import admin, views
from natt_daemons.concentrator.config import ConcentratorSettings, load

if TYPE_CHECKING:
    from natt_daemons.common.metrics import MetricsServer

log = logging.getLogger("natt.concentrator")


class Concentrator:
    def __init__(self, settings: ConcentratorSettings) -> None:
        self.settings = settings
        self.events = IkeLogger(role="concentrator", capacity=settings.log_capacity,
                                reveal_secrets=settings.log_secrets, max_severity=settings.log_severity,
                                rate_limit=settings.log_rate_limit)
        self.endpoint = IkeEndpoint(settings.address, settings.policy, ike_port=settings.ike_port,
                                    natt_port=settings.natt_port)
        self.driver: IkeDriver | None = None
        self.datapath: Datapath | None = None
        self.tun: Tun | None = None
        self.control = ControlServer(settings.control_socket, settings.control_access, audit=self._audit)
        self.events.log.subscribe(mirror_to_stderr(log))
        self.started_wall = time.time()
        # Session id → when it first logged in (wall clock): kept across phase 2 rekeys and re-authentications.
        self.login_wall: dict[int, float] = {}
        # IKE SA id → (session id, user), for SAs that installed a child SA: an IkeSaDown (the SA already gone
        # from the core) tells which session may have ended.
        self._sa_session: dict[int, tuple[int, str]] = {}
        self._routes: list[str] = []
        # XAUTH password checks (scrypt, tens of ms each) run here, off the event loop. Two workers: a burst of
        # logins queues rather than taking every core from the ESP path.
        self._xauth_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="xauth")
        self._xauth_checks: set[asyncio.Future[bool]] = set()
        self._stopping = False
        self.counters = IkeCounters()  # what the core's events add up to (the stats command, the metrics)
        self.metrics: MetricsServer | None = None
        # The loop's lateness (status: loop_lag_ms) and, each tick, the event log's held repeat summaries.
        self.loopwatch = LoopWatch([lambda: self.events.log.flush(time.time())])

    # -- lifecycle ------------------------------------------------------------------------

    async def start(self) -> None:
        s = self.settings
        loop = asyncio.get_running_loop()
        self.tun = await asyncio.to_thread(open_tun, s.tun, vnet_hdr=s.tun_offload)
        for dh_id in {p.group for g in s.policy.groups.values() for p in g.phase1}:
            get_group(dh_id).prepare()
        for group in s.policy.groups.values():
            await asyncio.to_thread(add_route, group.pool, dev=s.tun)
            self._routes.append(group.pool)
        self.driver = IkeDriver(self.endpoint, self._on_event)
        await self.driver.listen(s.address, s.ike_port)
        udp = bind_udp(s.address, s.natt_port)
        self.driver.attach(s.natt_port, udp)
        raw = raw_esp(s.address)
        self.datapath = Datapath(self.tun.fd, udp, raw, on_ike=self.driver.feed_batch, on_first_data=self._first_data,
                                 on_inbound=lambda sa_id: self.endpoint.note_inbound_traffic(sa_id, loop.time()),
                                 vnet_hdr=self.tun.vnet_hdr,
                                 on_peer_moved=self.driver.esp_peer_moved, on_unknown_spi=self.driver.unknown_esp)
        self.datapath.start(loop)
        self.loopwatch.start()
        self._open_ipsec_over_udp(loop)
        self._register_commands()
        try:
            await self.control.start()
        except ControlError as e:  # control_group the daemon's user cannot give the socket
            raise ConfigError(f"{s.path}: {e}") from e
        await self._start_metrics()
        if s.policy.nat_traversal is False:
            log.warning("NAT transparency (nat_traversal) is off: clients behind NAT/PAT will connect but pass "
                        "no data. Set nat_traversal = true to enable NAT-T.")
        log.info("listening on %s UDP %d/%d, private side via %s", s.address, s.ike_port, s.natt_port, s.tun)
        sdnotify.ready(f"listening on {s.address}")

    def _open_ipsec_over_udp(self, loop: asyncio.AbstractEventLoop) -> None:
        """One UDP socket per IPsec-over-UDP port a group enables (at start and on reload)."""
        assert self.datapath is not None
        s = self.settings
        for port in sorted({g.ipsec_over_udp_port for g in s.policy.groups.values() if g.ipsec_over_udp}):
            try:
                opened = self.datapath.open_cisco_udp(s.address, port, loop)
            except OSError as e:
                log.error("IPsec over UDP: cannot listen on UDP %d: %s", port, e)
                continue
            if opened is not None:
                log.info("IPsec over UDP listening on %s UDP %d", s.address, port)

    async def run(self) -> None:
        await serve_until_stopped(self.start, self.shutdown, self.reload)

    async def shutdown(self) -> None:
        sdnotify.stopping()
        # No verdict may reach the core once the SAs go: drop the queued checks (a running scrypt finishes alone).
        self._stopping = True
        for check in list(self._xauth_checks):
            check.cancel()
        self._xauth_pool.shutdown(wait=False, cancel_futures=True)
        self.loopwatch.stop()
        now = asyncio.get_running_loop().time()
        for sa in list(self.endpoint.sas.values()):
            self.endpoint.delete_sa(sa.id, now, "concentrator shutting down")
        if self.driver is not None:
            self.driver.flush()
        loop = asyncio.get_running_loop()
        if self.datapath is not None:
            self.datapath.stop(loop)
            for sock in self.datapath.cisco_udp.values():
                sock.close()
        await self.control.close()
        if self.metrics is not None:
            await self.metrics.close()
        if self.driver is not None:
            self.driver.close()
        for pool in self._routes:
            await asyncio.to_thread(del_route, pool, dev=self.settings.tun)
        if self.tun is not None:
            self.tun.close()
        log.info("stopped")

    def reload(self) -> None:
        """SIGHUP: new policy (groups, users, NAT transparency) for new sessions; live ones stay."""
        try:
            self.reload_or_fail()
        except Exception as e:
            log.error("reload failed, keeping the old configuration: %s", e)

    def reload_or_fail(self) -> None:
        """The reload SIGHUP does; a config that does not load raises (ConfigError) and changes nothing."""
        new = load(self.settings.path)
        new.secrets.enforce(log)  # a file made readable by others since the start is refused on reload too
        self.settings.policy = new.policy
        self.settings.users = new.users
        self.endpoint.policy = new.policy
        # New throttle limits apply at once; the failures and lockouts counted so far stay.
        self.endpoint.throttle.settings = new.policy.xauth_throttle
        self.endpoint.admission.settings = new.policy.admission  # buckets refill at the new rates from now on
        if self.datapath is not None:
            self._open_ipsec_over_udp(asyncio.get_running_loop())
        self.settings.control_access, self.settings.control_groups = new.control_access, new.control_groups
        try:
            self.control.set_access(new.control_access)
        except ControlError as e:
            log.error("control socket: %s", e)
        log.info("configuration reloaded (nat_traversal=%s)", new.policy.nat_traversal)

    # -- core events → datapath and log ------------------------------------------------------

    def _on_event(self, event: IkeEvent) -> None:
        sa = self.endpoint.sas.get(event.sa_id)
        self.events.record(event, time.time(), sa, core_now=asyncio.get_running_loop().time())
        self.counters.note(event)
        dp = self.datapath
        assert dp is not None
        if isinstance(event, ChildSaUp) and sa is not None:
            if not dp.admit(event, sa.peer):
                # The SA table refuses a child whose inner address another session owns: this session ends.
                self.endpoint.delete_sa(sa.id, asyncio.get_running_loop().time(), "selector conflict",
                                        Cause.SELECTOR_REFUSED)
                return
            session = event.session_id or sa.id
            self.login_wall.setdefault(session, time.time())
            self._sa_session[sa.id] = (session, sa.user)
        elif isinstance(event, ChildSaMoved):
            dp.table.move(event.inbound_spi, event.sa_id)
        elif isinstance(event, ChildSaDown):
            dp.remove(event.inbound_spi)
        elif isinstance(event, PortFloated) and sa is not None:
            dp.update_remote(sa.id, sa.remote)
        elif isinstance(event, IkeSaDown):
            self._ike_sa_down(event.sa_id, dp)
        elif isinstance(event, XauthCheck):
            self._check_xauth(event)

    def _ike_sa_down(self, sa_id: int, dp: Datapath) -> None:
        """An IKE SA went: its session ends with it unless another IKE SA of the session lives on (a
        re-authentication), which then carries the session's login time and totals."""
        known = self._sa_session.pop(sa_id, None)
        if known is None:
            return
        session, user = known
        heirs = [o for o in self.endpoint.sessions_of(user) if o.session_id == session and o.state is not State.DELETED]
        if heirs:
            for o in heirs:
                self._sa_session.setdefault(o.id, known)
            return
        self.login_wall.pop(session, None)
        dp.end_session(session)

    def _check_xauth(self, event: XauthCheck) -> None:
        """The password check runs on a worker; its verdict goes back to the core on the loop's thread."""
        loop = asyncio.get_running_loop()
        check = loop.run_in_executor(self._xauth_pool, self.settings.policy.verify_user, event.user, event.password)
        self._xauth_checks.add(check)
        check.add_done_callback(functools.partial(self._xauth_done, event.ticket))

    def _xauth_done(self, ticket: int, check: asyncio.Future[bool]) -> None:
        self._xauth_checks.discard(check)
        if check.cancelled() or self._stopping:
            return
        error = check.exception()
        if error is not None:
            # The type only: a message could quote what it was given, and that includes the password.
            log.error("XAUTH check (ticket %d) failed with %s; refusing the login", ticket, type(error).__name__)
        ok = error is None and check.result() is True
        assert self.driver is not None
        try:
            self.endpoint.xauth_verdict(ticket, ok, asyncio.get_running_loop().time())
        finally:
            self.driver.flush()

    def _first_data(self, entry: Inbound) -> None:
        self.events.first_data(entry.esp.spi, entry.sa_id, time.time())

    # -- control ------------------------------------------------------------------------------

    def _sessions(self) -> list[IkeSA]:
        return [sa for sa in self.endpoint.sas.values() if sa.state is not State.DELETED]

    def _user_sessions(self, user: str) -> list[views.Session]:
        found = views.user_sessions(self.endpoint, user)
        if not found:
            raise ControlError(f"no session for user {user!r}")
        return found

    def _register_commands(self) -> None:
        c = self.control
        c.command("sessions", self._cmd_sessions)
        c.command("session", self._cmd_session)
        c.command("logout", self._cmd_logout, access="admin")
        c.command("rekey", self._cmd_rekey, access="admin")
        c.command("log", self._cmd_log)
        c.stream("log-follow", self._stream_log)
        c.command("status", self._cmd_status)
        c.command("stats", self._cmd_stats, access="view")
        c.command("unlock", self._cmd_unlock, access="admin")
        c.command("ping", self._cmd_ping, access="admin")
        c.command("settings", self._cmd_settings)
        c.command("nat-transparency", self._cmd_nat_transparency, access="admin")
        c.command("keys", self._cmd_keys, access="root")

    def _audit(self, record: AuditRecord) -> None:
        """Every admin and root command, and every refused one, in the event log (class ADMIN)."""
        admin.audit(self.events, record, time.time())

    async def _cmd_ping(self, args: dict[str, Any]) -> Any:
        """ICMP echo through the user's tunnel to its assigned address (Administration > Sessions > Ping)."""
        user = str(args.get("user", ""))
        session = self._user_sessions(user)[0]
        return await admin.ping_session(user, session.current, args)

    async def _cmd_settings(self, args: dict[str, Any]) -> Any:
        return admin.settings_view(self.settings.policy)

    async def _cmd_nat_transparency(self, args: dict[str, Any]) -> Any:
        """Configuration > Tunneling > IPSec > NAT Transparency: the switches written into the config file (those
        lines only), then the reload SIGHUP does. New sessions get the new setting; live ones keep theirs."""
        outcome = admin.change_nat_transparency(
            self.settings.path, self.settings.policy, args, self.reload_or_fail,
            lambda: self._open_ipsec_over_udp(asyncio.get_running_loop()))
        return {**admin.settings_view(self.settings.policy), **outcome}

    async def _cmd_sessions(self, args: dict[str, Any]) -> Any:
        assert self.datapath
        dp = self.datapath
        return views.sessions(self.endpoint, dp.table, dp.session_totals, self.login_wall,
                              self.settings.policy.session_limit, time.time(), asyncio.get_running_loop().time())

    async def _cmd_session(self, args: dict[str, Any]) -> Any:
        assert self.datapath
        dp = self.datapath
        now, core_now = time.time(), asyncio.get_running_loop().time()
        return [views.session_detail(s, dp.table, dp.session_totals, self.login_wall, now, core_now)
                for s in self._user_sessions(str(args.get("user", "")))]

    async def _cmd_logout(self, args: dict[str, Any]) -> Any:
        """End every session of a user; the client is told why (DELETE-REASON, then the DELETEs)."""
        found = self._user_sessions(str(args.get("user", "")))
        now = asyncio.get_running_loop().time()
        for session in found:
            for sa in session.sas:
                self.endpoint.delete_sa(sa.id, now, "logged out by the administrator", Cause.ADMIN, tell=True)
        assert self.driver
        self.driver.flush()
        return {"logged_out": len(found)}

    async def _cmd_rekey(self, args: dict[str, Any]) -> Any:
        """Rekey a user's sessions now. Phase 2: new Quick Modes from this side for every child SA of each session's
        current IKE SA (make-before-break, as at a soft lifetime). Phase 1 cannot be started from here."""
        user = str(args.get("user", ""))
        phase = args.get("phase", 2)
        if phase not in (1, 2):
            raise ControlError(f"phase must be 1 or 2, not {phase!r}")
        found = self._user_sessions(user)
        core_now = asyncio.get_running_loop().time()
        if phase == 1:
            raise ControlError(_no_phase1_rekey(user, found, time.time(), core_now))
        started = sum(self.endpoint.rekey_children(s.current.id, core_now) for s in found)
        assert self.driver
        self.driver.flush()
        log.info("administrator rekey of phase 2 for user %s: %d Quick Mode(s) started", user, started)
        return {"quick_modes": started, "sessions": len(found)}

    async def _cmd_log(self, args: dict[str, Any]) -> Any:
        return self.events.query(args)

    def _stream_log(self, args: dict[str, Any]) -> AsyncIterator[Any]:
        return follow(self.events, args)

    async def _cmd_status(self, args: dict[str, Any]) -> Any:
        assert self.datapath
        core_now = asyncio.get_running_loop().time()
        return {
            "address": self.settings.address,
            "nat_traversal": self.settings.policy.nat_traversal,
            # Logins past phase 1 (a re-authenticating session counts once); half-open negotiations apart.
            "sessions": self.endpoint.established_count,
            "ike_sas": len(self._sessions()),
            "half_open": self.endpoint.half_open,
            "loop_lag_ms": self.loopwatch.status(),
            # IKE messages our timers resent (no answer yet), and peers' resent requests answered from the cache.
            "retransmissions": {"sent": self.counters.retransmissions, "answered": self.counters.retransmits_answered},
            "ike_reads": {"datagrams": self.driver.datagrams if self.driver else 0,
                          "budget_stops": self.driver.budget_stops if self.driver else 0,
                          "shared_4500": self.driver.datagrams_shared if self.driver else 0,
                          "shed_4500": self.driver.shed if self.driver else 0},
            "refusals": dict(self.endpoint.stats),
            "datapath_drops": dict(self.datapath.stats.drops),
            "datapath": self.datapath.counters(),
            "uptime": int(time.time() - self.started_wall),
            "xauth_backoff": self.endpoint.throttle.status(core_now)["backoff"],
            "xauth_lockouts": views.lockouts(self.endpoint.throttle, core_now, time.time()),
        }

    def stats(self) -> dict[str, Any]:
        """The statistics (Monitoring > Statistics): IKE, IPsec, NAT-T, per transform, the data path's batching.
        The one source of the `stats` command, the manager's page and the metrics endpoint."""
        assert self.datapath is not None and self.driver is not None
        ep, policy = self.endpoint, self.settings.policy
        by = views.session_counts(ep, policy.groups)
        active = sum(n for groups in by.values() for n in groups.values())
        return {
            "sessions": {"active": active, "peak": max(ep.peak_sessions, active), "total": ep.total_sessions,
                         "limit": policy.session_limit, "by": by},
            "ike": {
                **self.counters.ike(),
                "half_open": ep.half_open,
                "refusals": dict(ep.stats),
                "send_errors": self.driver.send_errors,
                "xauth_lockouts": len(ep.throttle.lockouts(asyncio.get_running_loop().time())),
            },
            "natt": {
                "enabled": bool(policy.nat_traversal),
                "sessions": sum(by.get("IPsec/NAT-T", {}).values()),
                **self.counters.natt(),
            },
            **datapath_sections(self.datapath),
            "uptime": int(time.time() - self.started_wall),
        }

    async def _cmd_stats(self, args: dict[str, Any]) -> Any:
        return self.stats()

    async def _start_metrics(self) -> None:
        if self.settings.metrics_listen is None:
            return
        # prometheus-client and aiohttp are loaded only by a daemon that serves metrics.
        from natt_daemons.common import metrics

        self.metrics = await metrics.serve(metrics.ConcentratorCollector(self.stats), self.settings.metrics_listen,
                                           log)

    async def _cmd_unlock(self, args: dict[str, Any]) -> Any:
        """Clear failed XAUTH logins and lockouts: of a user, a source address, both, or (all: true) everyone."""
        user = str(args["user"]) if args.get("user") else None
        source = _address(args["source"]) if args.get("source") else None
        everything = args.get("all") is True
        if everything == (user is not None or source is not None):
            raise ControlError("name a user and/or a source address, or ask for all")
        cleared = self.endpoint.throttle.clear(user, source)
        self.events.unlocked(time.time(), user, source, cleared)
        log.info("XAUTH unlock (user=%s, source=%s, all=%s): %d cleared", user, source, everything, cleared)
        return {"cleared": cleared}

    async def _cmd_keys(self, args: dict[str, Any]) -> Any:
        """Wireshark's IKEv1 and ESP decryption tables for the live SAs, written into args["wireshark"] (root only:
        the files hold every session's keys; only the counts are logged and returned)."""
        assert self.datapath
        done = await export_keys(args, self.endpoint.sas, self.datapath.table)
        log.warning("Wireshark key tables written to %s: %d IKE SA(s), %d ESP SA(s)", done["directory"],
                    done["ike_sas"], done["esp_sas"])
        return done


def _no_phase1_rekey(user: str, found: list[views.Session], now: float, core_now: float) -> str:
    """Why `rekey --phase1` cannot be done, and when the client's phase 1 will end instead (one line)."""
    ends = []
    for s in found:
        at = s.current.expires_at
        if at is not None:
            wall = time.strftime("%b %d %H:%M:%S", time.localtime(now + (at - core_now)))
            ends.append(f"{wall} (in {views.duration(at - core_now)})")
    when = f"; the phase 1 of {user} expires at {', '.join(ends)}" if ends else ""
    return ("phase 1 cannot be rekeyed from the concentrator: an IKEv1 remote-access client re-authenticates "
            "itself (vpnc and the Cisco VPN Client run no IKE responder to start phase 1 towards)" + when +
            "; use 'logout' to end the session now")


def _address(value: object) -> str:
    try:
        return str(ipaddress.ip_address(str(value)))
    except ValueError as e:
        raise ControlError(f"source {value!r} is not an IP address") from e


def serve(config: str) -> int:
    settings = load(config)
    daemon = Concentrator(settings)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(daemon.run())
    return 0
