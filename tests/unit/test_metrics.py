"""The `stats` snapshot and the Prometheus collectors, on real parts.

The concentrator's: a real Concentrator object (not started) whose core is a simulated login's (tests/protocol/sim:
two real IkeEndpoints through a PAT), whose data path is a real Datapath on loopback sockets and a socketpair for
its TUN. ESP the client side encrypted goes in by UDP, a packet written to the "TUN" goes out encrypted; the
snapshot and the metrics must show exactly that traffic, and keep it after the pairs are removed. The HTTP
endpoint is served and fetched for real; the text is read back with prometheus-client's own parser.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import socket
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.core import CounterMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics_families
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from natt.ike.events import ChildSaUp, ModeConfigDone
from natt_daemons.common import metrics
from natt_daemons.common.config import ConfigError, ListenAddress
from natt_daemons.common.datapath import Datapath
from natt_daemons.common.ikeio import IkeDriver
from natt_daemons.common.sockets import bind_udp
from natt_daemons.common.statstext import stats_text
from natt_daemons.concentrator import config as conc_config
from natt_daemons.concentrator.daemon import Concentrator
from natt_daemons.lab.scenario import CONFIGS_DIR, _set
from natt_daemons.pat import config as pat_config
from natt_daemons.pat.conntrack import Translation
from natt_daemons.pat.daemon import PatDaemon
from tests.protocol.conftest import CONCENTRATOR, make_policy, make_profile
from tests.protocol.sim import Network, Pat, ipv4_packet

pytestmark = pytest.mark.unit

SERVER = "192.168.2.10"


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) → value, as a scraper reads the text."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


async def _until(check: Callable[[], bool], timeout: float = 2.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout
    while not check():
        assert loop.time() < end, "timed out"
        await asyncio.sleep(0.01)


@pytest.fixture
def tun() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A socketpair in place of the TUN: one packet per datagram, as a TUN reads and writes them."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    a.setblocking(False)
    yield a, b
    a.close()
    b.close()


async def test_concentrator_stats_and_metrics_follow_real_traffic(tun: tuple[socket.socket, socket.socket]) -> None:
    # A login in memory: client1 behind the PAT, NAT-T, XAUTH, Mode Config, two Quick Modes.
    net = Network(make_policy(), CONCENTRATOR, Pat(ipaddress.IPv4Network("10.10.10.0/24"), "203.0.113.78"))
    client = net.add_client("client1", "10.10.10.2")
    net.connect("client1", make_profile("vpnclient1"))
    net.pump()
    conc = net.concentrator
    address = client.of(ModeConfigDone)[-1].address

    daemon = Concentrator(conc_config.load(CONFIGS_DIR / "concentrator.toml"))
    daemon.endpoint = conc.endpoint
    daemon.driver = IkeDriver(conc.endpoint, daemon._on_event)
    loop = asyncio.get_running_loop()
    udp = bind_udp("127.0.0.1", 0)
    peer = bind_udp("127.0.0.1", 0)  # the client's end of UDP 4500, on loopback
    dp = daemon.datapath = Datapath(tun[0].fileno(), udp, None, on_ike=lambda *_: None)
    dp.start(loop)
    try:
        for e in conc.events:
            daemon.counters.note(e)
            if isinstance(e, ChildSaUp):
                assert dp.admit(dataclasses.replace(e, local_port=dp.udp_port), conc.endpoint.sas[e.sa_id].peer)
        sa_id = next(iter(conc.endpoint.sas))
        dp.update_remote(sa_id, peer.getsockname())

        # In: ESP from the client's SA table, by UDP to the data path; out: a reply through the "TUN".
        inner = ipv4_packet(address, SERVER, b"ping" * 10)
        out = client.table.route(inner)
        assert out is not None
        transform = out.esp.transform.name
        peer.sendto(out.esp.encrypt(inner), udp.getsockname())
        await _until(lambda: _readable(tun[1]))
        assert tun[1].recv(4096) == inner
        reply = ipv4_packet(SERVER, address, b"pong" * 20)
        tun[1].send(reply)
        await _until(lambda: _readable(peer))
        esp, _ = peer.recvfrom(4096)
        entry = client.table.inbound[int.from_bytes(esp[:4], "big")]
        assert entry.esp.decrypt(esp)[1] == reply
        forged = bytearray(out.esp.encrypt(inner))
        forged[-1] ^= 1
        peer.sendto(bytes(forged), udp.getsockname())
        await _until(lambda: dp.stats.drops["auth_failed"] == 1)

        s = daemon.stats()
        assert s["sessions"]["active"] == 1 and s["sessions"]["total"] == 1
        assert s["sessions"]["by"] == {"IPSec": {"ciscovpn": 0}, "IPsec/NAT-T": {"ciscovpn": 1},
                                       "IPsec/UDP": {"ciscovpn": 0}}
        assert s["natt"]["sessions"] == 1 and s["natt"]["enabled"] is True
        assert s["ike"]["setups"] == 1 and s["ike"]["failures"] == {} and s["ike"]["half_open"] == 0
        t = s["transforms"][transform]
        assert (t["in_packets"], t["in_bytes"], t["out_packets"], t["out_bytes"], t["drops"]) == \
            (1, len(inner), 1, len(reply), 1)
        assert s["ipsec"]["in_bytes"] == len(inner) and s["ipsec"]["sas"] == 2
        assert s["datapath"]["tun_packets"] == 1
        assert "IPsec/NAT-T [ciscovpn]" in stats_text(s)

        found = samples(generate_latest(metrics.registry(metrics.ConcentratorCollector(daemon.stats))).decode())
        assert value(found, "natt_concentrator_sessions", protocol="IPsec/NAT-T", group="ciscovpn") == 1
        assert value(found, "natt_concentrator_sessions", protocol="IPSec", group="ciscovpn") == 0
        assert value(found, "natt_ike_setups_total") == 1
        assert value(found, "natt_esp_bytes_total", direction="in", transform=transform) == len(inner)
        assert value(found, "natt_esp_packets_total", direction="out", transform=transform) == 1
        assert value(found, "natt_esp_drops_total", reason="auth_failed") == 1
        assert value(found, "natt_esp_sa_drops_total", transform=transform) == 1
        assert value(found, "natt_ike_half_open") == 0
        assert value(found, "natt_nat_traversal_negotiated_total") == 1
        assert value(found, "natt_ipsec_sas") == 2
        assert ("process_start_time_seconds", ()) in found

        # The pairs go (a rekey, a logout): what they carried stays counted, the counters do not go back.
        for spi in list(dp.inbound):
            dp.remove(spi)
        again = daemon.stats()
        assert again["transforms"][transform] == t and again["ipsec"]["sas"] == 0
        assert again["ipsec"]["in_bytes"] == len(inner)
    finally:
        dp.stop(loop)
        udp.close()
        peer.close()
        daemon._xauth_pool.shutdown(wait=False)


def _readable(sock: socket.socket) -> bool:
    try:
        sock.recv(65535, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    except BlockingIOError:
        return False
    return True


async def test_the_endpoint_serves_metrics_and_refreshes_first() -> None:
    calls = []

    async def refresh() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("netlink went away")

    state = {"n": 0}

    class Counting(Collector):
        def collect(self) -> Iterator[CounterMetricFamily]:
            yield CounterMetricFamily("natt_test_scrapes", "scrapes seen", value=state["n"])

    server = await metrics.serve(Counting(), ListenAddress("127.0.0.1", 0), metrics.log, before=refresh)
    assert server is not None
    try:
        (host, port), *_ = server.addresses
        async with aiohttp.ClientSession() as http:
            for n in (3, 4):  # the second refresh fails: the scrape is still answered
                state["n"] = n
                async with http.get(f"http://{host}:{port}/metrics") as r:
                    assert r.status == 200
                    assert r.headers["Content-Type"].startswith("text/plain; version=")
                    assert value(samples(await r.text()), "natt_test_scrapes_total") == n
            async with http.get(f"http://{host}:{port}/metrics",
                                headers={"Accept": "application/openmetrics-text; version=1.0.0"}) as r:
                assert r.headers["Content-Type"].startswith("application/openmetrics-text")
                (family, *_) = openmetrics_families(await r.text())
                assert family.name == "natt_test_scrapes" and family.samples[0].value == 4
            async with http.get(f"http://{host}:{port}/nothing") as r:
                assert r.status == 404
            async with http.post(f"http://{host}:{port}/metrics") as r:
                assert r.status == 405
        assert len(calls) == 3
    finally:
        await server.close()


async def test_a_taken_port_is_logged_and_the_daemon_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        where = ListenAddress("127.0.0.1", taken.getsockname()[1])
        assert await metrics.serve(metrics.PatCollector(dict), where, metrics.log) is None
        assert "cannot listen on" in caplog.text
        assert await metrics.serve(metrics.PatCollector(dict), None, metrics.log) is None
    finally:
        taken.close()


def test_pat_collector_reads_the_gateway_state() -> None:
    settings = pat_config.load(CONFIGS_DIR / "pat.toml")
    daemon = PatDaemon(settings)
    t = Translation(1, "udp", "10.10.10.2", 4500, "203.0.113.78", 1025, "198.51.100.50", 4500, 120,
                    packets_out=10, bytes_out=1000, packets_in=8, bytes_in=800)
    daemon.tracker.update([t])
    daemon._counters = {"masquerade": (2, 120), "esp-drop": (5, 500)}
    daemon.tracker.update([])  # the connection expired: its counts stay in the totals
    found = samples(generate_latest(metrics.registry(metrics.PatCollector(daemon.stats))).decode())
    assert value(found, "natt_pat_translations") == 0
    assert value(found, "natt_pat_translations_peak") == 1
    assert value(found, "natt_pat_translations_seen_total") == 1
    assert value(found, "natt_pat_translated_bytes_total", direction="out") == 1000
    assert value(found, "natt_pat_translated_packets_total", direction="in") == 8
    assert value(found, "natt_pat_nft_packets_total", rule="esp-drop") == 5
    assert value(found, "natt_pat_nft_bytes_total", rule="masquerade") == 120
    assert value(found, "natt_pat_nft_packets_total", rule="esp-pass") == 0
    assert value(found, "natt_pat_esp_passthrough") == 0 and value(found, "natt_pat_table_present") == 1


@pytest.mark.parametrize(("text", "expect"), [
    ('"127.0.0.1:9101"', ListenAddress("127.0.0.1", 9101)),
    ('"0.0.0.0:9101"', ListenAddress("0.0.0.0", 9101)),
    ('"[::1]:9101"', ListenAddress("::1", 9101)),
    ('"localhost:9101"', "not an IP address"),
    ('"127.0.0.1"', "ADDRESS:PORT"),
    ('"127.0.0.1:0"', "1..65535"),
    ('"127.0.0.1:70000"', "1..65535"),
    ('"::1:9101"', "in brackets"),
    ('"224.0.0.1:9101"', "not an address a host can listen on"),
    ("9101", "must be str"),
])
@pytest.mark.parametrize("daemon", ["concentrator", "client1", "pat"])
def test_metrics_listen_is_checked_in_every_daemon(daemon: str, text: str, expect: object) -> None:
    from natt_daemons.client import config as client_config

    loader = {"concentrator": conc_config.load, "client1": client_config.load, "pat": pat_config.load}[daemon]
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / f"{daemon}.toml"
        path.write_text(_set((CONFIGS_DIR / f"{daemon}.toml").read_text(), "metrics_listen", text))
        path.chmod(0o600)
        if isinstance(expect, ListenAddress):
            assert loader(path).metrics_listen == expect
            return
        with pytest.raises(ConfigError, match="metrics_listen") as err:
            loader(path)
        assert str(expect) in str(err.value)
    assert loader(CONFIGS_DIR / f"{daemon}.toml").metrics_listen is None, "the examples leave it commented out"
