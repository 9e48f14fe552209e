"""Prometheus metrics for the three daemons: one collector each, served over HTTP inside the daemon's event loop.

A collector keeps no counter of its own. At each scrape it asks its daemon for the same `stats` snapshot the control
socket answers (the concentrator's `stats`, the client's, the PAT gateway's) and turns it into metric families, so a
page, the CLI and Prometheus never disagree. Names follow Prometheus' conventions: `natt_` first, base units
(bytes, seconds), `_total` on counters, labels for what a dashboard splits by (cause, direction, transform, ...).

The endpoint (`metrics_listen = "ADDR:PORT"` in each daemon's file; absent = none) is aiohttp on the daemon's own
loop: a scrape runs between two batches of packets, reads the live state without locks, and costs a few
milliseconds. It answers GET /metrics (the text format, or OpenMetrics when asked) and nothing that changes the
daemon; no secret and no user name is in it. It has no authentication, as usual for Prometheus: listen on a
loopback or private address.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Any

from aiohttp import web
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from natt_daemons.common.config import ListenAddress

log = logging.getLogger(__name__)

Stats = Callable[[], Mapping[str, Any]]


def _counter(name: str, doc: str, value: float | None = None, labels: Iterable[str] = (),
             samples: Iterable[tuple[Iterable[str], float]] = ()) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, value=value, labels=None if value is not None else list(labels))
    for label_values, v in samples:
        family.add_metric(list(label_values), v)
    return family


def _gauge(name: str, doc: str, value: float | None = None, labels: Iterable[str] = (),
           samples: Iterable[tuple[Iterable[str], float]] = ()) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, value=value, labels=None if value is not None else list(labels))
    for label_values, v in samples:
        family.add_metric(list(label_values), v)
    return family


# -- the sections the concentrator and the client share -------------------------------------------------------


def ike_families(ike: Mapping[str, Any]) -> Iterator[Metric]:
    """IKE: set-ups, failures and ends by cause, rekeys, DPD, messages (ikestats.IkeCounters.ike())."""
    yield _counter("natt_ike_setups", "IKE SAs that completed phase 1 and XAUTH (re-authentications included)",
                   ike["setups"])
    yield _counter("natt_ike_failures", "IKE SAs that ended before completing phase 1 and XAUTH, by cause",
                   labels=["cause"], samples=(([c], n) for c, n in sorted(ike["failures"].items())))
    yield _counter("natt_ike_sa_ends", "IKE SAs that had been set up and then ended, by cause",
                   labels=["cause"], samples=(([c], n) for c, n in sorted(ike["ends"].items())))
    rekeys = ike["rekeys"]
    yield _counter("natt_ipsec_rekeys", "Rekeys: phase 1 by re-authentication, phase 2 by a new IPsec SA pair",
                   labels=["phase"], samples=((["1"], rekeys["phase1"]), (["2"], rekeys["phase2"])))
    yield _counter("natt_ipsec_sa_setups", "IPsec SA pairs set up (Quick Mode), rekeys included", ike["child_sas"])
    dpd = ike["dpd"]
    for key, doc in (("requests_sent", "DPD R-U-THERE requests sent"),
                     ("requests_received", "DPD R-U-THERE requests received"),
                     ("acks_sent", "DPD R-U-THERE-ACKs sent"), ("acks_received", "DPD R-U-THERE-ACKs received"),
                     ("heartbeats_received", "Cisco heartbeats received"),
                     ("timeouts", "IKE SAs ended because DPD got no answer")):
        yield _counter(f"natt_dpd_{key}", doc, dpd.get(key, 0))
    yield _counter("natt_ike_messages", "IKE messages, retransmissions included", labels=["direction"],
                   samples=((["sent"], ike["messages_sent"]), (["received"], ike["messages_received"])))
    yield _counter("natt_ike_retransmissions", "IKE messages sent again for want of an answer",
                   ike["retransmissions"])
    yield _counter("natt_ike_peer_retransmits_answered", "Requests the peer sent again, answered from the reply cache",
                   ike["retransmits_answered"])
    yield _counter("natt_xauth_failures", "XAUTH answers refused (each try)", ike["xauth_failures"])
    if "send_errors" in ike:
        yield _counter("natt_ike_send_errors", "IKE datagrams the kernel refused to send", ike["send_errors"])


def natt_families(natt: Mapping[str, Any]) -> Iterator[Metric]:
    """NAT traversal: keepalives, floats and rebinds, NAT-T negotiated or refused."""
    yield _counter("natt_nat_keepalives", "NAT keepalives (RFC 3948; Cisco IPsec over UDP's too)",
                   labels=["direction"],
                   samples=((["sent"], natt["keepalives_sent"]), (["received"], natt["keepalives_received"])))
    yield _counter("natt_nat_port_floats", "A peer's IKE/NAT-T endpoint moved: the float to 4500, or a NAT rebinding",
                   labels=["kind"], samples=((["float"], natt["port_floats"]), (["rebind"], natt["rebinds"])))
    yield _counter("natt_nat_traversal_negotiated", "IKE SAs that negotiated NAT-T", natt["negotiated"])
    yield _counter("natt_nat_traversal_refused", "Peers that offered NAT-T while NAT transparency was off",
                   natt["refused"])


def esp_families(ipsec: Mapping[str, Any], transforms: Mapping[str, Mapping[str, int]]) -> Iterator[Metric]:
    """ESP traffic per direction and transform (inner bytes), drops by reason and by transform, live SA pairs."""
    yield _counter("natt_esp_bytes", "Bytes carried by ESP (inner packets), per direction and transform",
                   labels=["direction", "transform"],
                   samples=(([d, name], t[f"{d}_bytes"])
                            for name, t in sorted(transforms.items()) for d in ("in", "out")))
    yield _counter("natt_esp_packets", "Packets carried by ESP, per direction and transform",
                   labels=["direction", "transform"],
                   samples=(([d, name], t[f"{d}_packets"]) for name, t in sorted(transforms.items())
                            for d in ("in", "out")))
    yield _counter("natt_esp_sa_drops", "Packets an ESP SA refused (replay, ICV, padding, ...), per transform",
                   labels=["transform"], samples=(([name], t["drops"]) for name, t in sorted(transforms.items())))
    yield _counter("natt_esp_drops", "Packets the data path dropped, by reason", labels=["reason"],
                   samples=(([r], n) for r, n in sorted(ipsec["drops"].items())))
    yield _gauge("natt_ipsec_sas", "IPsec SA pairs installed now", ipsec["sas"])


def datapath_families(dp: Mapping[str, int]) -> Iterator[Metric]:
    """How the data path batched its work (Datapath.counters())."""
    yield _counter("natt_datapath_tun_packets", "Packets read from the TUN device", dp["tun_packets"])
    yield _counter("natt_datapath_batches", "Batched system calls: UDP GSO sends, UDP GRO reads, TUN GSO writes",
                   labels=["kind"], samples=((["udp_gso_send"], dp["gso_sends"]), (["udp_gro_read"], dp["gro_reads"]),
                                             (["tun_gso_write"], dp["tun_gso_writes"])))
    yield _counter("natt_datapath_tun_gso_segments", "TCP segments merged into TUN GSO writes",
                   dp["tun_gso_segments"])
    yield _gauge("natt_datapath_offload", "Offloads in use (1) or not (0)", labels=["feature"],
                 samples=((["udp_gso"], dp["gso"]), (["udp_gro"], dp["gro"]), (["tun_gso"], dp["tun_offload"])))


def _shared(s: Mapping[str, Any]) -> Iterator[Metric]:
    yield from ike_families(s["ike"])
    yield from natt_families(s["natt"])
    yield from esp_families(s["ipsec"], s["transforms"])
    yield from datapath_families(s["datapath"])


# -- one collector per daemon ---------------------------------------------------------------------------------


class ConcentratorCollector(Collector):
    """The concentrator's `stats` (Concentrator.stats) as metrics."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self.stats()
        sessions, ike = s["sessions"], s["ike"]
        yield _gauge("natt_concentrator_sessions", "Remote access sessions now, by protocol and group",
                     labels=["protocol", "group"],
                     samples=(([protocol, group], n) for protocol, groups in sorted(sessions["by"].items())
                              for group, n in sorted(groups.items())))
        yield _gauge("natt_concentrator_sessions_peak", "The most sessions at once since the start", sessions["peak"])
        yield _gauge("natt_concentrator_session_limit", "Sessions allowed at once (session_limit)", sessions["limit"])
        yield _counter("natt_concentrator_logins", "Sessions (logins) since the start", sessions["total"])
        yield _gauge("natt_concentrator_nat_traversal_enabled", "NAT transparency (NAT-T) on (1) or off (0)",
                     int(s["natt"]["enabled"]))
        yield _gauge("natt_ike_half_open", "Phase 1 negotiations under way", ike["half_open"])
        yield _counter("natt_ike_core_events", "What the IKE core counts itself (IkeEndpoint.stats): messages refused "
                       "or dropped, admission limits, timeouts, hints sent, peers moved, by event", labels=["event"],
                       samples=(([r], n) for r, n in sorted(ike["refusals"].items())))
        yield _gauge("natt_xauth_lockouts", "Users and source addresses locked out after failed XAUTH logins",
                     ike["xauth_lockouts"])
        yield from _shared(s)


class ClientCollector(Collector):
    """The client's `stats` (Client.stats) as metrics."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self.stats()
        c = s["client"]
        yield _gauge("natt_client_tunnel_up", "The tunnel is up (1) or not (0)", int(c["tunnel_up"]))
        yield _counter("natt_client_reconnects", "Automatic reconnections after the session ended", c["reconnects"])
        if c["connected_since"] is not None:
            yield _gauge("natt_client_session_start_time_seconds", "When the session now up logged in (Unix time)",
                         c["connected_since"])
        yield from _shared(s)


class PatCollector(Collector):
    """The PAT gateway's `stats` (PatDaemon.stats) as metrics: its translations (conntrack) and rule counters."""

    def __init__(self, stats: Stats) -> None:
        self.stats = stats

    def collect(self) -> Iterator[Metric]:
        s = self.stats()
        yield _gauge("natt_pat_translations", "Connections translated now (conntrack entries of the masquerade)",
                     s["in_use"])
        yield _gauge("natt_pat_translations_peak", "The most translations at once since the start", s["most_used"])
        yield _counter("natt_pat_translations_seen", "Translated connections seen in conntrack since the start",
                       s["translations_seen"])
        yield _counter("natt_pat_translated_packets", "Packets of translated connections (conntrack accounting)",
                       labels=["direction"], samples=((["out"], s["packets_out"]), (["in"], s["packets_in"])))
        yield _counter("natt_pat_translated_bytes", "Bytes of translated connections (conntrack accounting)",
                       labels=["direction"], samples=((["out"], s["bytes_out"]), (["in"], s["bytes_in"])))
        rules = s["rules"]
        yield _counter("natt_pat_nft_packets", "Packets counted by the gateway's nftables rules", labels=["rule"],
                       samples=(([r], c["packets"]) for r, c in sorted(rules.items())))
        yield _counter("natt_pat_nft_bytes", "Bytes counted by the gateway's nftables rules", labels=["rule"],
                       samples=(([r], c["bytes"]) for r, c in sorted(rules.items())))
        yield _gauge("natt_pat_table_present", "The gateway's nftables table is in place (1) or gone (0)",
                     int(s["table_present"]))
        yield _gauge("natt_pat_esp_passthrough", "Plain ESP from the inside is forwarded (1) or dropped (0)",
                     int(s["esp_passthrough"]))


def registry(collector: Collector) -> CollectorRegistry:
    """A private registry: the daemon's collector and the process' own (CPU, memory, open files, start time)."""
    reg = CollectorRegistry()
    reg.register(collector)
    ProcessCollector(registry=reg)
    return reg


# -- the endpoint ------------------------------------------------------------------------------------------------


class MetricsServer:
    """GET /metrics on `listen`, served by aiohttp on the running loop. `before` runs first at each scrape (the PAT
    gateway reads conntrack and its counters afresh); its failure is logged and the last state served."""

    def __init__(self, reg: CollectorRegistry, listen: ListenAddress,
                 before: Callable[[], Awaitable[None]] | None = None) -> None:
        self.registry = reg
        self.listen = listen
        self.before = before
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen; OSError if the address cannot be bound."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", self._index)
        runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await runner.setup()
        try:
            await web.TCPSite(runner, self.listen.host, self.listen.port, reuse_address=True).start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """Where it listens (host, port): the port the kernel chose when the config's is taken as given."""
        return [(a[0], a[1]) for a in self._runner.addresses] if self._runner is not None else []

    async def close(self) -> None:
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        if self.before is not None:
            try:
                await self.before()
            except Exception as e:  # a failed refresh must not cost the scrape: the last state is still true
                log.warning("metrics: refreshing before the scrape failed: %s", e)
        # The text format, or OpenMetrics for a scraper that asks for it (Accept), as prometheus-client's own
        # handlers choose.
        encode, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encode(self.registry), headers={"Content-Type": content_type})

    async def _index(self, request: web.Request) -> web.Response:
        return web.Response(text="natt metrics: GET /metrics\n")


async def serve(collector: Collector, listen: ListenAddress | None, daemon_log: logging.Logger,
                before: Callable[[], Awaitable[None]] | None = None) -> MetricsServer | None:
    """Start the daemon's endpoint if its config names one. A port that cannot be bound is logged, not fatal: the
    daemon's real work goes on without its metrics."""
    if listen is None:
        return None
    server = MetricsServer(registry(collector), listen, before)
    try:
        await server.start()
    except OSError as e:
        daemon_log.error("metrics: cannot listen on %s: %s; no metrics endpoint", listen, e)
        return None
    daemon_log.info("metrics on http://%s/metrics", listen)
    return server
