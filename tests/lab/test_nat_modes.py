"""NAT transparency modes in the lab: no NAT (raw ESP), and the seed's failure case with NAT-T off.

SCENARIO.md, "The failure the doc troubleshoots": NAT-T off on the concentrator, transparent
tunneling on in the client, client behind PAT: the tunnel comes up, no data passes.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from natt_daemons.common.control import call
from natt_daemons.lab import procs, scenario
from natt_daemons.lab.scenario import Scenario, ScenarioConfig
from natt_daemons.lab.topology import ADDR, CLIENT1, CONC, PUBCLIENT, Lab

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, TUN, nftables"),
]
CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture
def natt_off() -> Iterator[Scenario]:
    prefix = f"nf{secrets.token_hex(3)}-"
    sc = Scenario(Lab(prefix), CONFIGS, ScenarioConfig(nat_traversal=False))
    try:
        sc.lab.up()
        sc.start_infrastructure()
        yield sc
    finally:
        sc.stop()
        scenario.tear_down(prefix)


def _log(sc: Scenario, name: str) -> str:
    """The rendered log with its 80-column wrapping undone (the concentrator's page wraps mid-word)."""
    return "\n".join(e["text"].replace("\n", "") for e in call(sc.socket(name), "log", {}))


def test_natt_off_reproduces_the_seed_failure_and_says_why(natt_off: Scenario) -> None:
    sc = natt_off
    sc.start_client("client1")
    st = sc.wait_connected("client1")
    assert st["tunnel_port"] == 0, "seed: the client shows tunnel port 0"
    assert not sc.ping(CLIENT1, ADDR.server, count=6), "no data passes: the PAT drops plain ESP"
    st = procs.wait_for(lambda: (s := sc.status("client1"))["diagnosis"] and s, 10, 0.5, "client diagnosis")
    assert st["packets_encrypted"] >= 6 and st["packets_decrypted"] == 0
    assert "NAT Transparency (nat_traversal) is disabled on the concentrator" in st["diagnosis"][0]
    text = subprocess.run([scenario._bin("natt-client"), "status", "--socket", sc.socket("client1")],
                          capture_output=True, text=True, timeout=30, check=True).stdout
    assert re.search(r"Tunnel port\s+: 0", text) and "DIAGNOSIS" in text
    (row,) = call(sc.socket("concentrator"), "sessions")["remote_access"]
    assert row["protocol"] == "IPSec", "seed: Protocol IPSec, not IPsec/NAT-T"
    assert row["bytes_rx"] == 0 and row["bytes_tx"] == 0
    conc_log = _log(sc, "concentrator")
    assert "Peer offered NAT-T while NAT transparency is disabled on this concentrator: enable nat_traversal" \
        in conc_log
    assert "no data will flow" in conc_log
    assert "did not offer NAT-T" in _log(sc, "client1")
    pat = call(sc.socket("pat"), "stats")
    assert any(v for k, v in pat.items() if "esp" in k and isinstance(v, int)), pat

    # The fix: turn NAT Transparency on, reload with SIGHUP, reconnect.
    cfg = sc.config_path("concentrator")
    cfg.write_text(cfg.read_text().replace("nat_traversal = false", "nat_traversal = true"))
    assert sc.procs["concentrator"].signal(signal.SIGHUP)
    time.sleep(0.5)
    call(sc.socket("client1"), "disconnect")
    call(sc.socket("client1"), "connect")
    st = sc.wait_connected("client1")
    assert st["tunnel_port"] == 4500
    assert sc.ping(CLIENT1, ADDR.server), "after the fix, traffic passes"
    (row,) = call(sc.socket("concentrator"), "sessions")["remote_access"]
    assert row["protocol"] == "IPsec/NAT-T"


@pytest.fixture
def no_nat() -> Iterator[Scenario]:
    prefix = f"nn{secrets.token_hex(3)}-"
    sc = Scenario(Lab(prefix), CONFIGS)
    try:
        sc.lab.up()
        sc.start_infrastructure()
        yield sc
    finally:
        sc.stop()
        scenario.tear_down(prefix)


def test_no_nat_sends_plain_esp(no_nat: Scenario, tmp_path: Path) -> None:
    """A client on the public segment: NAT-D says no NAT, ESP goes as IP protocol 50 (a raw socket)."""
    sc = no_nat
    text = (CONFIGS / "client1.toml").read_text().replace('"/run/natt/client-client1.sock"',
                                                          f'"{sc.socket("pubclient")}"')
    cfg = sc.run_dir / "pubclient.toml"
    cfg.write_text(text)
    pcap = tmp_path / "public.pcap"
    os.chmod(tmp_path, 0o755)
    cap = procs.start(sc.lab, CONC, ["tshark", "-q", "-i", "public", "-w", str(pcap), "-a", "duration:20",
                                     "-f", "udp port 500 or udp port 4500 or ip proto 50"],
                      sc.run_dir / "tshark.log", name="tshark")
    client = procs.start(sc.lab, PUBCLIENT, [scenario._bin("natt-client"), "run", "--config", str(cfg)],
                         sc.run_dir / "pubclient.log", name="pubclient")
    try:
        procs.wait_for(lambda: pcap.exists(), 15, 0.2, "tshark started")
        st = procs.wait_for(lambda: Path(sc.socket("pubclient")).exists() and (s := call(sc.socket("pubclient"),
                            "status"))["state"] == "connected" and s, 30, 0.3, "pubclient connected")
        assert st["tunnel_port"] == 0 and st["nat"]["this_end_behind_nat"] is False
        assert sc.ping(PUBCLIENT, ADDR.server)
        (row,) = call(sc.socket("concentrator"), "sessions")["remote_access"]
        assert row["protocol"] == "IPSec" and row["public_ip"] == ADDR.pubclient and row["bytes_rx"] > 0
        time.sleep(1)
    finally:
        client.stop(8.0)
        cap.stop(10.0)
    out = subprocess.run(["tshark", "-n", "-r", str(pcap), "-T", "fields", "-e", "ip.proto", "-e", "udp.dstport",
                          "-e", "_ws.col.Protocol"], capture_output=True, text=True, timeout=60, check=True).stdout
    rows = [r.split("\t") for r in out.strip().splitlines()]
    assert any(r[0] == "50" and r[2] == "ESP" for r in rows), "ESP as IP protocol 50"
    assert not any(r[1] == "4500" for r in rows), "nothing floats to 4500 without a NAT"
    verbose = subprocess.run(["tshark", "-n", "-r", str(pcap), "-V"], capture_output=True, text=True, timeout=60,
                             check=True).stdout
    assert "Malformed" not in verbose
