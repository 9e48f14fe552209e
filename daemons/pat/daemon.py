"""The PAT gateway daemon: interfaces, forwarding, one nftables table, and the operator's views.

Start: configure the inside and outside interfaces (addresses from the config, links up, default
route), install the table (nft.py), then turn on IPv4 forwarding and conntrack accounting in this
network namespace, serve the control socket, and tell systemd we are ready. The table goes in before
forwarding, so no inside packet is ever forwarded untranslated or with its ESP unfiltered.

Stop (SIGTERM/SIGINT): delete exactly our table, put ip_forward back as we found it, exit 0.
Addresses and the route stay: they belong to the interfaces, as on a router that is switched off.
SIGHUP: read the config again and replace the table in one transaction (old name removed in the same
transaction when the name changed); a bad config is logged and the running table kept.

A table of the configured name that exists at start is replaced when its comment says natt-pat made
it (a left-over of a daemon that was killed) and refused otherwise (exit 2): we never take over a
table someone else wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl.ndmsg import NUD_NOARP, NUD_PERMANENT, states

from natt_daemons.common import sdnotify
from natt_daemons.common.config import ConfigError
from natt_daemons.common.control import ControlError, ControlServer
from natt_daemons.pat import nft
from natt_daemons.pat.config import PatSettings, load
from natt_daemons.pat.conntrack import XlateTracker, dump_translations

if TYPE_CHECKING:
    from natt_daemons.common.metrics import MetricsServer

log = logging.getLogger("natt.pat")

IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
CT_ACCT = Path("/proc/sys/net/netfilter/nf_conntrack_acct")  # packets and bytes per connection
CT_TIMESTAMP = Path("/proc/sys/net/netfilter/nf_conntrack_timestamp")  # start time: xlate lists newest first
USER_HZ = 100  # neighbour cache ages come in clock ticks
ESP_HINT = ("a PAT device cannot translate plain ESP (IP protocol 50): the VPN clients behind it must use NAT-T "
            "(ESP in UDP 4500). Turn on NAT Transparency on the concentrator (nat_traversal = true) and "
            "Transparent Tunneling on the client; or set esp_passthrough = true here, which lets ESP through "
            "for one inside client at a time")
ESP_WARN_EVERY = 30.0  # seconds between two warnings about dropped ESP
_STATE_NAMES = {v: k for k, v in states.items() if v}


class TableConflict(ConfigError):
    """The configured table exists and natt-pat did not make it."""


class StartupError(Exception):
    """The kernel refused part of the set-up; the message says which."""


def table_spec(s: PatSettings) -> nft.TableSpec:
    return nft.TableSpec(name=s.table, inside_network=s.inside_network, outside_interface=s.outside.name,
                         port_range=s.port_range, esp_passthrough=s.esp_passthrough,
                         comment=f"{nft.OWNER_MARK} pid={os.getpid()}")


def running_natt_pat(comment: str) -> int | None:
    """The pid in a table comment "natt-pat pid=N" when that process is a natt-pat still running."""
    _, _, pid_text = comment.partition("pid=")
    if not pid_text.isdigit() or int(pid_text) == os.getpid():
        return None
    try:
        cmdline = Path(f"/proc/{pid_text}/cmdline").read_bytes()
    except OSError:
        return None
    return int(pid_text) if b"natt-pat" in cmdline or b"natt_daemons.pat" in cmdline else None


# -- blocking helpers (run in worker threads) ---------------------------------------------------


def write_sysctl(path: Path, value: str) -> str:
    """Set a sysctl of this network namespace; returns the old value. OSError when it cannot be read or set."""
    old = path.read_text().strip()
    if old != value:
        path.write_text(value)
    return old


def configure_interfaces(s: PatSettings) -> None:
    with IPRoute() as ipr:
        for role, iface in (("inside", s.inside), ("outside", s.outside)):
            found = ipr.link_lookup(ifname=iface.name)
            if not found:
                raise ConfigError(f"{s.path} [{role}]: interface {iface.name!r} does not exist in this network "
                                  "namespace")
            idx = found[0]
            have = {(a.get_attr("IFA_LOCAL") or a.get_attr("IFA_ADDRESS"), a["prefixlen"])
                    for a in ipr.get_addr(family=socket.AF_INET, index=idx)}
            if (iface.address, iface.prefixlen) not in have:
                ipr.addr("add", index=idx, address=iface.address, prefixlen=iface.prefixlen)
                log.info("%s: added %s", iface.name, iface.cidr)
            ipr.link("set", index=idx, state="up")
        if s.gateway:
            ipr.route("replace", dst="0.0.0.0/0", gateway=s.gateway)


def neighbours(ifnames: list[str]) -> list[dict[str, Any]]:
    """The kernel's IPv4 neighbour table (ARP) for the given interfaces."""
    out = []
    with IPRoute() as ipr:
        for name in ifnames:
            found = ipr.link_lookup(ifname=name)
            if not found:
                continue
            for n in ipr.get_neighbours(family=socket.AF_INET, ifindex=found[0]):
                if n["ifindex"] != found[0] or n["state"] & NUD_NOARP:
                    continue
                info = n.get_attr("NDA_CACHEINFO")
                out.append({
                    "interface": name,
                    "address": n.get_attr("NDA_DST"),
                    "mac": n.get_attr("NDA_LLADDR"),
                    "state": _STATE_NAMES.get(n["state"], hex(n["state"])),
                    "age": None if info is None or n["state"] & NUD_PERMANENT else info["ndm_updated"] // USER_HZ,
                })
    return out


# -- the daemon ---------------------------------------------------------------------------------


class PatDaemon:
    def __init__(self, settings: PatSettings) -> None:
        self.settings = settings
        self.control = ControlServer(settings.control_socket)
        self.tracker = XlateTracker()
        self.started = time.monotonic()
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()  # conntrack/counter reads, reloads and the table are one at a time
        self._installed: str | None = None  # the name of the table we put in
        self._forward_was: str | None = None
        self._counter_base: dict[str, list[int]] = {}  # counters of replaced tables, by rule comment
        self._counters: dict[str, tuple[int, int]] = {}
        self._esp_warned = (0, -ESP_WARN_EVERY)  # (packets at the last warning, when)
        self._table_missing = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._serving = False  # the control socket is ours to remove only once we made it
        self.metrics: MetricsServer | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self._stop.set)
        loop.add_signal_handler(signal.SIGINT, self._stop.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self.reload()))
        try:
            await self.start()
            poller = asyncio.create_task(self._poll())
            await self._stop.wait()
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller
        finally:
            ok = await self.shutdown()
        return 0 if ok else 1

    async def start(self) -> None:
        s = self.settings
        await self._check_owner(s.table)
        try:
            await asyncio.to_thread(configure_interfaces, s)
        except nft.NETLINK_ERRORS as e:  # the kernel refused an address, a link or the route
            raise StartupError(f"configuring the interfaces: {e}") from e
        try:
            await asyncio.to_thread(nft.install, table_spec(s))
        except nft.NftError as e:
            raise StartupError(str(e)) from e
        self._installed = s.table
        try:
            self._forward_was = await asyncio.to_thread(write_sysctl, IP_FORWARD, "1")
        except OSError as e:
            raise StartupError(f"cannot turn on IPv4 forwarding ({IP_FORWARD}): {e}") from e
        for path, lost in ((CT_ACCT, "packet and byte counts"), (CT_TIMESTAMP, "xlate's newest-first order")):
            try:
                await asyncio.to_thread(write_sysctl, path, "1")
            except OSError as e:  # e.g. a read-only /proc/sys under systemd's ProtectKernelTunables
                log.warning("cannot set %s (%s): no %s per translation", path, e, lost)
        self._register_commands()
        await self.control.start()
        self._serving = True
        await self._start_metrics()
        try:
            await self.refresh()
        except nft.NETLINK_ERRORS as e:  # the gateway works without its views; the poll tries again
            log.warning("first look at conntrack failed: %s", e)
        log.info("table ip %s installed: %s", s.table, nft.describe(table_spec(s)))
        log.info("translating %s to %s on %s; esp_passthrough=%s", s.inside_network, s.outside_address,
                 s.outside.name, s.esp_passthrough)
        if not s.esp_passthrough:
            log.info("ESP from the inside is dropped: %s", ESP_HINT)
        sdnotify.ready(f"translating {s.inside_network} to {s.outside_address}")

    async def shutdown(self) -> bool:
        sdnotify.stopping()
        if self._tasks:  # a reload under way finishes first: its install must not land after our delete
            await asyncio.wait(list(self._tasks), timeout=15)
        started = self._serving
        if self._serving:
            self._serving = False
            await self.control.close()
        if self.metrics is not None:
            await self.metrics.close()
        ok = True
        async with self._lock:
            if self._installed is not None:
                try:
                    removed = await asyncio.to_thread(nft.remove, self._installed)
                    log.info("table ip %s %s", self._installed, "removed" if removed else "was already gone")
                except (nft.NftError, *nft.NETLINK_ERRORS) as e:
                    log.error("could not remove table ip %s: %s", self._installed, e)
                    ok = False
                self._installed = None
            if self._forward_was is not None and self._forward_was != "1":
                try:
                    await asyncio.to_thread(write_sysctl, IP_FORWARD, self._forward_was)
                except OSError as e:
                    log.error("could not put %s back to %s: %s", IP_FORWARD, self._forward_was, e)
        if started:
            log.info("stopped")
        return ok

    async def _check_owner(self, table: str) -> None:
        try:
            owner = await asyncio.to_thread(nft.owner, table)
        except nft.NETLINK_ERRORS as e:  # e.g. EPERM without CAP_NET_ADMIN
            raise StartupError(f"cannot list the nftables tables: {e}") from e
        if owner is None:
            return
        where = f"{self.settings.path} [pat]: nftables table ip {table} exists already"
        if not owner.startswith(nft.OWNER_MARK):
            raise TableConflict(f"{where} and was not made by natt-pat (comment {owner!r}); set another 'table' "
                                "or remove that one")
        pid = running_natt_pat(owner)
        if pid is not None:
            raise TableConflict(f"{where} and belongs to natt-pat pid {pid}, which is running; stop it first or set "
                                "another 'table'")
        log.warning("table ip %s was left by a natt-pat that is gone (%s); replacing it", table, owner)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def reload(self) -> None:
        """SIGHUP: the new config's interfaces and table; on any error the running set-up stays."""
        if not self._serving:
            log.warning("SIGHUP ignored: still starting (or stopping)")
            return
        old = self.settings
        try:
            new = await asyncio.to_thread(load, old.path)
        except ConfigError as e:
            log.error("reload failed, keeping the running configuration: %s", e)
            return
        async with self._lock:
            try:
                if new.table != old.table:
                    await self._check_owner(new.table)
                await asyncio.to_thread(configure_interfaces, new)
                await self._read_counters()
                also = [old.table] if old.table != new.table and self._installed else []
                await asyncio.to_thread(nft.install, table_spec(new), also)
            except (ConfigError, StartupError, nft.NftError, *nft.NETLINK_ERRORS) as e:
                log.error("reload failed, keeping the running table: %s", e)
                return
            for name, (packets, nbytes) in self._counters.items():  # the new table counts from 0
                base = self._counter_base.setdefault(name, [0, 0])
                base[0] += packets
                base[1] += nbytes
            self._counters = {}
            self._installed = new.table
            self._table_missing = False
            if new.control_socket != old.control_socket:
                log.warning("control_socket changes only on restart; still serving %s", old.control_socket)
                new = replace(new, control_socket=old.control_socket)
            self.settings = new
        log.info("configuration reloaded; table ip %s: %s", new.table, nft.describe(table_spec(new)))
        if new.esp_passthrough != old.esp_passthrough:
            log.info("esp_passthrough is now %s", new.esp_passthrough)

    # -- the periodic look at conntrack and the counters ----------------------------------------

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self.settings.poll_interval)
            try:
                await self.refresh()
            except Exception as e:  # a failed look must not stop the gateway
                log.warning("conntrack/counter poll failed: %s", e)

    async def refresh(self) -> None:
        s = self.settings
        async with self._lock:
            snapshot = await asyncio.to_thread(dump_translations, s.inside_network, s.outside_address)
            self.tracker.update(snapshot)
            await self._read_counters()
        self._warn_esp()
        sdnotify.status(f"{self.tracker.in_use} in use, {self.tracker.most_used} most used")

    async def _read_counters(self) -> None:
        if self._installed is None:
            return
        counters = await asyncio.to_thread(nft.counters, self._installed)
        if not counters:
            if not self._table_missing:
                log.error("table ip %s is gone (deleted by someone else?): no translation, no ESP filter; "
                          "send SIGHUP to put it back", self._installed)
            self._table_missing = True
            return
        self._table_missing = False
        self._counters = counters

    def counter(self, name: str) -> tuple[int, int]:
        base = self._counter_base.get(name, [0, 0])
        packets, nbytes = self._counters.get(name, (0, 0))
        return base[0] + packets, base[1] + nbytes

    def _warn_esp(self) -> None:
        dropped = self.counter(nft.RULE_ESP_DROP)[0]
        last_count, last_time = self._esp_warned
        now = time.monotonic()
        if dropped > last_count and now - last_time >= ESP_WARN_EVERY:
            log.warning("dropped %d ESP packet(s) from the inside (%d in all): %s", dropped - last_count, dropped,
                        ESP_HINT)
            self._esp_warned = (dropped, now)

    # -- control commands -------------------------------------------------------------------------

    def _register_commands(self) -> None:
        self.control.command("xlate", self._cmd_xlate)
        self.control.command("arp", self._cmd_arp)
        self.control.command("stats", self._cmd_stats)
        self.control.command("status", self._cmd_status)

    async def _fresh(self) -> None:
        try:
            await self.refresh()
        except nft.NETLINK_ERRORS as e:
            raise ControlError(f"reading conntrack and the table's counters: {e}") from e

    async def _cmd_xlate(self, args: dict[str, Any]) -> Any:
        await self._fresh()
        return {
            "in_use": self.tracker.in_use,
            "most_used": self.tracker.most_used,
            "entries": [t.as_dict() for t in self.tracker.translations()],
        }

    async def _cmd_arp(self, args: dict[str, Any]) -> Any:
        s = self.settings
        try:
            return await asyncio.to_thread(neighbours, [s.outside.name, s.inside.name])
        except nft.NETLINK_ERRORS as e:
            raise ControlError(f"reading the neighbour table: {e}") from e

    async def _cmd_stats(self, args: dict[str, Any]) -> Any:
        await self._fresh()
        return self.stats()

    def stats(self) -> dict[str, Any]:
        """Translations and counters as of the last look at conntrack and the table (`refresh`): the `stats` command
        and the metrics endpoint."""
        esp_drop = self.counter(nft.RULE_ESP_DROP)
        esp_pass = self.counter(nft.RULE_ESP_PASS)
        rules = {name: self.counter(name) for name in (nft.RULE_MASQ, nft.RULE_ESP_DROP, nft.RULE_ESP_PASS)}
        return {
            "translations_created": self.counter(nft.RULE_MASQ)[0],
            "translations_seen": self.tracker.seen,
            "in_use": self.tracker.in_use,
            "most_used": self.tracker.most_used,
            **self.tracker.totals(),
            "esp_dropped_packets": esp_drop[0],
            "esp_dropped_bytes": esp_drop[1],
            "esp_forwarded_packets": esp_pass[0],
            "esp_forwarded_bytes": esp_pass[1],
            "table_present": not self._table_missing,
            "esp_passthrough": self.settings.esp_passthrough,
            "rules": {name: {"packets": c[0], "bytes": c[1]} for name, c in rules.items()},
        }

    async def _start_metrics(self) -> None:
        if self.settings.metrics_listen is None:
            return
        # prometheus-client and aiohttp are loaded only by a daemon that serves metrics.
        from natt_daemons.common import metrics

        # Each scrape reads conntrack and the rule counters afresh, as `natt-pat stats` does.
        self.metrics = await metrics.serve(metrics.PatCollector(self.stats), self.settings.metrics_listen, log,
                                           before=self.refresh)

    async def _cmd_status(self, args: dict[str, Any]) -> Any:
        s = self.settings
        dropped = self.counter(nft.RULE_ESP_DROP)[0]
        return {
            "table": s.table,
            "family": "ip",
            "table_present": not self._table_missing,
            "interfaces": {
                "inside": {"name": s.inside.name, "address": s.inside.cidr},
                "outside": {"name": s.outside.name, "address": s.outside.cidr},
            },
            "inside_network": s.inside_network,
            "outside_address": s.outside_address,
            "gateway": s.gateway,
            "esp_passthrough": s.esp_passthrough,
            "esp_dropped_packets": dropped,
            "esp_note": None if s.esp_passthrough else f"ESP from the inside is dropped ({dropped} so far): {ESP_HINT}",
            "port_range": list(s.port_range) if s.port_range else None,
            "ruleset": nft.describe(table_spec(s)),
            "uptime": int(time.monotonic() - self.started),
        }


def serve(config: str) -> int:
    settings = load(config)
    daemon = PatDaemon(settings)
    try:
        return asyncio.run(daemon.run())
    except KeyboardInterrupt:
        return 0
    except (StartupError, nft.NftError) as e:
        log.error("cannot start: %s", e)
        return 1
