"""Our client against our concentrator in the lab: Main and Aggressive Mode, legacy and modern suites."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from natt_daemons.common.control import call
from natt_daemons.lab import scenario
from natt_daemons.lab.scenario import Scenario, ScenarioConfig
from natt_daemons.lab.topology import ADDR, CLIENT1, Lab

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, TUN, nftables"),
]
CONFIGS = Path(__file__).resolve().parents[2] / "configs"
SUITES = {
    "legacy": ('["3des-md5-modp1024"]', '["3des-md5"]', "3DES-168", "MD5"),
    "modern": ('["aes256-sha256-modp2048"]', '["aes256-sha256"]', "AES-256", "SHA2-256"),
}


@pytest.mark.parametrize("mode", ["aggressive", "main"])
@pytest.mark.parametrize("suite", list(SUITES))
def test_mode_and_suite(mode: str, suite: str) -> None:
    p1, p2, cipher, hashing = SUITES[suite]
    prefix = f"ms{secrets.token_hex(3)}-"
    sc = Scenario(Lab(prefix), CONFIGS,
                  ScenarioConfig(client_extra={"mode": f'"{mode}"', "phase1": p1, "phase2": p2}))
    try:
        sc.lab.up()
        sc.start_infrastructure()
        sc.start_client("client1")
        st = sc.wait_connected("client1")
        assert st["ike"]["mode"] == mode and st["tunnel_port"] == 4500
        assert sc.ping(CLIENT1, ADDR.server)
        (detail,) = call(sc.socket("concentrator"), "session", {"user": "vpnclient1"})
        assert detail["ike"]["negotiation_mode"] == mode.capitalize()
        assert (detail["ike"]["encryption"], detail["ike"]["hashing"]) == (cipher, hashing)
        assert all(s["udp_destination_port"] == 4500 and s["bytes_received"] > 0 for s in detail["ipsec"]
                   if s["remote_address"] == f"{st['assigned_address']}/32" and s["local_address"] == "0.0.0.0/0")
    finally:
        sc.stop()
        scenario.tear_down(prefix)
