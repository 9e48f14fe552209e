"""vpnc (a Cisco-compatible IKEv1 client from Debian, userspace ESP) against our concentrator.

Both lab clients run vpnc at once behind our PAT gateway: XAUTH, Mode Config, NAT-T float to 4500,
traffic to the server both ways, DPD answered, keepalives, and a clean disconnect.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from natt_daemons.common.control import call
from natt_daemons.lab import procs, scenario
from natt_daemons.lab.scenario import Scenario, ScenarioConfig
from natt_daemons.lab.topology import ADDR, CLIENT1, CLIENT2, PAT
from natt_daemons.lab.vpnc import VPNC, start_vpnc
from tests.capture import IKE_AND_ESP, capture, fields, problems, verbose

pytestmark = [
    pytest.mark.interop,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, TUN, nftables"),
    pytest.mark.skipif(not Path(VPNC).exists(), reason="vpnc is installed by `make test` (Debian package vpnc)"),
]
CONFIGS = Path(__file__).resolve().parents[2] / "configs"

# (phase 1 suite on the concentrator, phase 2 suite, vpnc's DH group): the seed's and a stronger one.
SUITES = {
    "seed-3des-md5-dh2": ("3des-md5-modp1024", "3des-md5", "dh2"),
    "aes256-sha1-dh5": ("aes256-sha1-modp1536", "aes256-sha1", "dh5"),
}


@pytest.fixture(params=[(s, m) for s in SUITES for m in ("natt", "force-natt")], ids=lambda p: f"{p[0]}-{p[1]}")
def lab(request: pytest.FixtureRequest) -> Iterator[tuple[Scenario, str, str, bool]]:
    suite, mode = request.param
    p1, p2, dh = SUITES[suite]
    extra = {"phase1": f'["{p1}"]', "phase2": f'["{p2}"]', "dpd_interval": "4", "keepalive_interval": "3"}
    with scenario.running("vp", ScenarioConfig(concentrator_extra=extra)) as sc:
        yield sc, mode, dh, p1.startswith("3des")


def _sessions(sc: Scenario) -> dict[str, dict]:
    return {r["username"]: r for r in call(sc.socket("concentrator"), "sessions")["remote_access"]}


def _tun_address(sc: Scenario, role: str) -> str | None:
    out = sc.lab.run(role, ["ip", "-4", "-o", "addr", "show", "dev", f"vpnc-{role[-1]}"]).stdout
    parts = out.split()
    return parts[parts.index("inet") + 1].split("/")[0] if "inet" in parts else None


def test_two_vpnc_clients_behind_the_pat(lab: tuple[Scenario, str, str, bool]) -> None:
    sc, mode, dh, weak = lab
    clients = {
        CLIENT1: start_vpnc(sc.lab, CLIENT1, sc.run_dir, "vpnclient1", "lab-pass-1", natt_mode=mode, dh_group=dh,
                              weak=weak),
        CLIENT2: start_vpnc(sc.lab, CLIENT2, sc.run_dir, "vpnclient2", "lab-pass-2", natt_mode=mode, dh_group=dh,
                              weak=weak),
    }
    try:
        addrs = {role: procs.wait_for(lambda r=role: _tun_address(sc, r), 30, 0.3, f"vpnc address in {role}")
                 for role in clients}
        assert len(set(addrs.values())) == 2 and all(a.startswith("10.40.1.") for a in addrs.values())
        for role in clients:
            assert sc.ping(role, ADDR.server), f"vpnc in {role} reaches {ADDR.server}"
        rows = _sessions(sc)
        assert set(rows) == {"vpnclient1", "vpnclient2"}
        for r in rows.values():
            assert r["protocol"] == "IPsec/NAT-T" and r["public_ip"] == ADDR.pat_outside
            assert r["bytes_rx"] > 0 and r["bytes_tx"] > 0
            assert r["assigned_ip"] in addrs.values()
        for user in rows:
            (detail,) = call(sc.socket("concentrator"), "session", {"user": user})
            assert all(s["udp_destination_port"] == 4500 for s in detail["ipsec"])
        # Idle for a while: our DPD R-U-THERE must be answered, keepalives flow, nobody is dropped.
        time.sleep(12)
        log = "\n".join(e["text"] for e in call(sc.socket("concentrator"), "log", {}))
        assert "Sending keep-alive of type DPD R-U-THERE (seq number" in log
        assert "Xmit IPSEC-over-UDP NAT keepalive packet: success" in log
        assert "did not answer" not in log, "vpnc answered every DPD request"
        assert set(_sessions(sc)) == {"vpnclient1", "vpnclient2"}
        assert sc.ping(CLIENT1, ADDR.server)
        # A clean disconnect: vpnc deletes its SAs, the concentrator forgets the session.
        clients[CLIENT1].stop()
        procs.wait_for(lambda: set(_sessions(sc)) == {"vpnclient2"}, 15, 0.3, "vpnclient1 session removed")
        log = "\n".join(e["text"] for e in call(sc.socket("concentrator"), "log", {"classes": ["IKE"]}))
        assert "IKE SA deleted: peer deleted the IKE SA" in log, "removed by vpnc's DELETE, not by DPD"
        assert sc.ping(CLIENT2, ADDR.server), "the other vpnc is undisturbed"
    finally:
        for c in clients.values():
            c.stop()


@pytest.fixture
def udp_lab() -> Iterator[Scenario]:
    extra = {"phase1": '["aes256-sha1-modp1536"]', "phase2": '["aes256-sha1"]', "ipsec_over_udp": "true",
             "keepalive_interval": "3"}
    with scenario.running("vu", ScenarioConfig(concentrator_extra=extra)) as sc:
        yield sc


def test_cisco_ipsec_over_udp(udp_lab: Scenario, tmp_path: Path) -> None:
    """vpnc `NAT Traversal Mode cisco-udp` in both client namespaces: the concentrator announces UDP 10000 in
    Mode Config, both vpncs send ESP from their UDP 10000 (the PAT gives one another port), IKE stays on 500."""
    sc = udp_lab
    pcap = tmp_path / "outside.pcap"
    with capture(sc.lab, PAT, "outside", pcap, f"{IKE_AND_ESP} or udp port 10000"):
        _two_cisco_udp_vpncs(sc)
    # tshark has no ESP-over-UDP decode for 10000, but its RFC 3948 "udpencap" reads plain ESP the same way.
    decode = ["udp.port==10000,udpencap"]
    rows = fields(pcap, "ip.dst", "udp.srcport", "udp.dstport", "_ws.col.Protocol", decode_as=decode)
    to_conc = [r for r in rows if r[0] == ADDR.conc_public]
    esp_sources = {r[1] for r in to_conc if r[2] == "10000" and r[3] == "ESP"}
    assert len(esp_sources) == 2 and "10000" in esp_sources, f"two clients' ESP in UDP to 10000: {esp_sources}"
    assert {r[3] for r in to_conc if r[2] == "500"} == {"ISAKMP"}, "IKE stays on UDP 500"
    assert not [r for r in rows if "4500" in (r[1], r[2])], "no NAT-T float in this mode"
    bad = problems(verbose(pcap, decode))
    assert not bad, bad[:10]


def _two_cisco_udp_vpncs(sc: Scenario) -> None:
    clients = {
        CLIENT1: start_vpnc(sc.lab, CLIENT1, sc.run_dir, "vpnclient1", "lab-pass-1", natt_mode="cisco-udp",
                              dh_group="dh5"),
        CLIENT2: start_vpnc(sc.lab, CLIENT2, sc.run_dir, "vpnclient2", "lab-pass-2", natt_mode="cisco-udp",
                              dh_group="dh5"),
    }
    try:
        for role in clients:
            procs.wait_for(lambda r=role: _tun_address(sc, r), 30, 0.3, f"vpnc address in {role}")
        for role in clients:
            assert sc.ping(role, ADDR.server), f"vpnc in {role} reaches {ADDR.server}"
        rows = _sessions(sc)
        assert set(rows) == {"vpnclient1", "vpnclient2"}
        for r in rows.values():
            assert r["protocol"] == "IPsec/UDP" and r["bytes_rx"] > 0 and r["bytes_tx"] > 0, r
        time.sleep(10)  # vpnc's IPsec-over-UDP keepalives (every 9 s) and its IKE keepalives must do no harm
        assert set(_sessions(sc)) == {"vpnclient1", "vpnclient2"}
        assert sc.ping(CLIENT2, ADDR.server)
        log = "\n".join(e["text"] for e in call(sc.socket("concentrator"), "log", {}))
        assert "IPSec over UDP negotiated: ESP in UDP on port 10000" in log
        assert "Refused a malformed message" not in log
        assert call(sc.socket("concentrator"), "status")["datapath_drops"].get("invalid-udp", 0) == 0
    finally:
        for c in clients.values():
            c.stop()
