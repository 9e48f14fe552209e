"""Prometheus metrics from the three real daemons in the lab, scraped with curl the way a Prometheus would.

Each daemon serves `metrics_listen`: the concentrator on its private side (scraped from the server's namespace, as a
monitoring host on that LAN would), the PAT gateway and both clients on their loopback (scraped inside their own
namespaces). The text is read with prometheus-client's parser; real pings through the tunnel must move the ESP
byte and packet counters on every hop that carries them, and only there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from natt_daemons.lab import scenario
from natt_daemons.lab.scenario import Scenario, ScenarioConfig
from natt_daemons.lab.topology import ADDR, CLIENT1, CLIENT2, PAT, SERVER

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, TUN, nftables"),
]

CONC_METRICS = f"{ADDR.conc_private}:9101"
PAT_METRICS = "127.0.0.1:9102"
CLIENT_METRICS = "127.0.0.1:9103"
# Where each endpoint is scraped from: (namespace role, URL).
ENDPOINTS = {
    "concentrator": (SERVER, f"http://{CONC_METRICS}/metrics"),
    "pat": (PAT, f"http://{PAT_METRICS}/metrics"),
    "client1": (CLIENT1, f"http://{CLIENT_METRICS}/metrics"),
    "client2": (CLIENT2, f"http://{CLIENT_METRICS}/metrics"),
}
PINGS = 20

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture(scope="module")
def sc() -> Iterator[Scenario]:
    config = ScenarioConfig(concentrator_extra={"metrics_listen": f'"{CONC_METRICS}"'},
                            client_extra={"metrics_listen": f'"{CLIENT_METRICS}"'},
                            pat_extra={"metrics_listen": f'"{PAT_METRICS}"'})
    with scenario.seed_lab("mt", config=config) as s:
        yield s


def scrape(sc: Scenario, daemon: str) -> Samples:
    role, url = ENDPOINTS[daemon]
    r = sc.lab.run(role, ["curl", "-sS", "--fail", "--max-time", "5", url])
    assert r.returncode == 0, f"{daemon}: curl {url} from {role}: {r.stderr}"
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.stdout) for s in family.samples}


def get(found: Samples, name: str, **labels: str) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def total(found: Samples, name: str, **labels: str) -> float:
    """The sum over the samples of `name` whose labels include `labels` (e.g. every transform of one direction)."""
    return sum(v for (n, ls), v in found.items() if n == name and set(labels.items()) <= set(ls))


def test_every_daemon_serves_parseable_metrics(sc: Scenario) -> None:
    conc = scrape(sc, "concentrator")
    assert get(conc, "natt_concentrator_sessions", protocol="IPsec/NAT-T", group="ciscovpn") == 2
    assert get(conc, "natt_concentrator_sessions", protocol="IPSec", group="ciscovpn") == 0
    assert get(conc, "natt_concentrator_logins_total") == 2
    assert get(conc, "natt_ike_setups_total") == 2
    assert total(conc, "natt_ike_failures_total") == 0
    assert get(conc, "natt_nat_traversal_negotiated_total") == 2
    assert get(conc, "natt_concentrator_nat_traversal_enabled") == 1
    assert get(conc, "natt_ike_half_open") == 0
    assert get(conc, "natt_ipsec_sas") == 4, "two Quick Modes per client"
    assert ("process_resident_memory_bytes", ()) in conc
    for name in ("client1", "client2"):
        c = scrape(sc, name)
        assert get(c, "natt_client_tunnel_up") == 1
        assert get(c, "natt_ike_setups_total") == 1
        assert get(c, "natt_ipsec_sas") == 2
        assert get(c, "natt_client_session_start_time_seconds") > 1.6e9
    pat = scrape(sc, "pat")
    assert get(pat, "natt_pat_translations") >= 2, "both clients' IKE/NAT-T flows are translated"
    assert get(pat, "natt_pat_table_present") == 1
    assert get(pat, "natt_pat_nft_packets_total", rule="esp-drop") == 0, "NAT-T: no plain ESP to drop"


def test_pings_move_the_byte_and_packet_counters(sc: Scenario) -> None:
    before = {name: scrape(sc, name) for name in ENDPOINTS}
    assert sc.ping(CLIENT1, ADDR.server, count=PINGS)
    after = {name: scrape(sc, name) for name in ENDPOINTS}

    def grew(daemon: str, name: str, **labels: str) -> float:
        return total(after[daemon], name, **labels) - total(before[daemon], name, **labels)

    # An echo request is 84 bytes inside the tunnel; the reply too. Keepalives and DPD are not ESP.
    for direction in ("in", "out"):
        assert grew("concentrator", "natt_esp_packets_total", direction=direction) >= PINGS
        assert grew("concentrator", "natt_esp_bytes_total", direction=direction) >= PINGS * 84
        assert grew("client1", "natt_esp_packets_total", direction=direction) >= PINGS
    assert grew("client1", "natt_esp_bytes_total", direction="out") >= PINGS * 84
    assert grew("client2", "natt_esp_packets_total") == 0, "the other client carried none of it"
    assert grew("pat", "natt_pat_translated_packets_total", direction="out") >= PINGS
    assert grew("pat", "natt_pat_translated_bytes_total", direction="in") >= PINGS * 84
    assert grew("concentrator", "natt_datapath_tun_packets_total") >= PINGS
    # The stats command is the metrics' source: the CLI shows the same counters (which only went up since).
    stats = json.loads(scenario._cli("natt-concentrator", sc, "concentrator", "stats", "--json"))
    assert stats["ipsec"]["in_packets"] >= total(after["concentrator"], "natt_esp_packets_total", direction="in")
    assert stats["natt"]["sessions"] == 2 and stats["ike"]["setups"] == 2
    assert set(stats["transforms"]) == {t for (n, ls), _ in after["concentrator"].items()
                                        if n == "natt_esp_bytes_total" for k, t in ls if k == "transform"}
    mine = json.loads(scenario._cli("natt-client", sc, "client1", "stats", "--json"))
    assert mine["client"]["tunnel_up"] is True
    assert mine["ipsec"]["out_packets"] >= total(after["client1"], "natt_esp_packets_total", direction="out")
