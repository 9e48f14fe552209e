"""The seed scenario for real: two clients behind one PAT gateway, the concentrator, a server behind it.

Real daemons as processes in fresh namespaces, real sockets, real nftables, real traffic.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from natt_daemons.common.control import call
from natt_daemons.lab import procs, scenario
from natt_daemons.lab.scenario import Scenario
from natt_daemons.lab.topology import ADDR, CLIENT1, CLIENT2, PAT, SERVER, Lab
from tests.capture import capture, fields, problems, verbose

pytestmark = [
    pytest.mark.lab,
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root: network namespaces, TUN, nftables"),
]
REPO = Path(__file__).resolve().parents[2]
CONFIGS = REPO / "configs"


def random_prefix() -> str:
    return f"ns{secrets.token_hex(3)}-"


@pytest.fixture(scope="module")
def sc() -> Iterator[Scenario]:
    with scenario.seed_lab("ns", CONFIGS) as s:
        yield s


def test_both_clients_connected_and_pass_traffic(sc: Scenario) -> None:
    for name, role in (("client1", CLIENT1), ("client2", CLIENT2)):
        st = sc.status(name)
        assert st["state"] == "connected"
        assert st["tunnel_port"] == 4500, "NAT-T: the tunnel runs on UDP 4500"
        assert sc.ping(role, ADDR.server), f"{name} reaches {ADDR.server} through the tunnel"
        st = sc.status(name)
        assert st["packets_decrypted"] > 0 and st["packets_encrypted"] > 0
        assert st["nat"]["this_end_behind_nat"] is True


def _xlate(sc: Scenario) -> dict:
    return call(sc.socket("pat"), "xlate")


def _flows_4500(sc: Scenario) -> dict[str, int]:
    """inside address → translated (global) port of its UDP 4500 flow to the concentrator."""
    out = {}
    for e in _entries(_xlate(sc)):
        if e["proto"] == "udp" and e["inside_port"] == 4500 and e["destination"] == ADDR.conc_public:
            out[e["inside"]] = e["global_port"]
    return out


def _entries(x: object) -> list[dict]:
    return x["entries"] if isinstance(x, dict) else list(x)  # type: ignore[index]


def test_pat_translates_both_clients_to_different_ports(sc: Scenario) -> None:
    flows = _flows_4500(sc)
    assert set(flows) == {ADDR.client1, ADDR.client2}
    assert len(set(flows.values())) == 2, "one outside address, two translated ports"
    text = subprocess.run([scenario._bin("natt-pat"), "xlate", "--socket", sc.socket("pat")], capture_output=True,
                          text=True, timeout=30, check=True).stdout
    assert " in use, " in text and " most used" in text
    for inside, port in flows.items():
        assert f"PAT Global {ADDR.pat_outside}({port}) Local {inside}(4500)" in text


def test_concentrator_sessions(sc: Scenario) -> None:
    sc.ping(CLIENT1, ADDR.server)
    sc.ping(CLIENT2, ADDR.server)
    s = call(sc.socket("concentrator"), "sessions")
    rows = {r["username"]: r for r in s["remote_access"]}
    assert set(rows) == {"vpnclient1", "vpnclient2"}
    assert s["summary"]["active_remote_access"] == 2 and s["summary"]["concurrent_limit"] == 100
    for r in rows.values():
        assert r["protocol"] == "IPsec/NAT-T"
        assert r["public_ip"] == ADDR.pat_outside
        assert r["assigned_ip"].startswith("10.40.1.")
        assert r["bytes_tx"] > 0 and r["bytes_rx"] > 0
    assert rows["vpnclient1"]["assigned_ip"] != rows["vpnclient2"]["assigned_ip"]


def test_session_detail_shows_nat_t_ports(sc: Scenario) -> None:
    flows = _flows_4500(sc)
    (detail,) = call(sc.socket("concentrator"), "session", {"user": "vpnclient1"})
    assert detail["ike"]["negotiation_mode"] == "Aggressive"
    assert len(detail["ipsec"]) == 2
    for s in detail["ipsec"]:
        assert s["udp_destination_port"] == 4500
        assert s["udp_source_port"] == flows[ADDR.client1], "the client's translated source port"


def test_capture_on_pat_outside_decodes_cleanly(sc: Scenario, tmp_path: Path) -> None:
    """Reconnect client2 under tshark on the PAT's outside interface: IKE 500 → 4500, NAT-D, ESP in UDP."""
    pcap = tmp_path / "outside.pcap"
    with capture(sc.lab, PAT, "outside", pcap, duration=25):
        time.sleep(1.0)
        call(sc.socket("client2"), "disconnect")
        call(sc.socket("client2"), "connect")
        sc.wait_connected("client2")
        assert sc.ping(CLIENT2, ADDR.server)
        time.sleep(1.0)
    text = verbose(pcap)
    bad = problems(text)
    assert not bad, bad[:10]
    rows = fields(pcap, "udp.dstport", "_ws.col.Protocol", "esp.spi")
    ike_ports = [f[0] for f in rows if f[1] == "ISAKMP"]
    # The disconnect's deletes go out on 4500 first; the new connection starts on 500 and floats to 4500.
    assert "500" in ike_ports, "the new connection starts on UDP 500"
    assert "4500" in ike_ports[ike_ports.index("500"):], "then IKE moves to 4500"
    assert "NAT-D" in text or "NAT Discovery" in text
    assert any(f[2] for f in rows), "UDP-encapsulated ESP on the wire"


def test_wrong_password_is_refused_and_the_other_client_is_undisturbed(sc: Scenario) -> None:
    text = sc.config_path("client2").read_text().replace('password = "lab-pass-2"', 'password = "wrong"')
    sc.procs["client2"].stop(8.0)
    bad = sc.run_dir / "client2-bad.toml"
    bad.write_text(text.replace(sc.socket("client2"), sc.socket("client2bad")))
    bad.chmod(0o600)  # it holds secrets: the client refuses a file others may read
    p = procs.start(sc.lab, CLIENT2, [scenario._bin("natt-client"), "run", "--config", str(bad)],
                    sc.run_dir / "client2-bad.log", name="client2bad")
    try:
        procs.wait_for(lambda: "XAUTH" in call(sc.socket("client2bad"), "status").get("last_error", "")
                       if Path(sc.socket("client2bad")).exists() else False, 30, 0.3, "XAUTH refusal")
        log = call(sc.socket("concentrator"), "log", {"classes": ["XAUTH"]})
        assert any("vpnclient2" in e["message"] and "failed extended authentication" in e["message"] for e in log)
        assert sc.status("client1")["state"] == "connected"
        assert sc.ping(CLIENT1, ADDR.server), "client1 is not disturbed"
    finally:
        p.stop(8.0)


def _gone(pid: int) -> bool:
    """Ended: no /proc entry, or a zombie waiting for init to reap it (it holds nothing any more)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_lab_up_and_down_leave_nothing(tmp_path: Path) -> None:
    prefix = random_prefix()
    env = dict(os.environ)
    natt_lab = scenario._bin("natt-lab")
    try:
        up = subprocess.run([natt_lab, "up", "--prefix", prefix, "--configs", str(CONFIGS)], capture_output=True,
                            text=True, timeout=180, env=env)
        assert up.returncode == 0, up.stdout + up.stderr
        assert "client1 connected" in up.stdout and "client2 connected" in up.stdout
        assert "PAT Global" in up.stdout and "IPsec/NAT-T" in up.stdout
        pids = [p.pid for p in procs.registered(prefix)]
        assert len(pids) == 4
    finally:
        down = subprocess.run([natt_lab, "down", "--prefix", prefix], capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    assert not Lab(prefix).exists() and not Lab(prefix).leftover_links()
    assert not procs.run_dir(prefix).exists(), "configs and logs removed too"
    for pid in pids:
        assert _gone(pid), f"process {pid} survived lab-down"
    again = subprocess.run([natt_lab, "down", "--prefix", prefix], capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, "lab-down is safe to run twice"


def test_bulk_traffic_uses_udp_gso_and_gro(sc: Scenario) -> None:
    """A TCP stream through the tunnel: the client's ESP leaves in UDP GSO sends, the concentrator reads
    them with UDP GRO, several datagrams per call, and hands the decrypted segments to its TUN as GSO packets
    (and iperf3 sees its data arrive, so the kernel took them)."""
    srv = procs.start(sc.lab, SERVER, ["iperf3", "-s", "-1"], sc.run_dir / "iperf3-s.log", name="iperf3-s")
    try:
        time.sleep(0.5)
        out = sc.lab.run(CLIENT1, ["iperf3", "-c", ADDR.server, "-t", "2", "-J"], timeout=30)
        assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
        received = json.loads(out.stdout)["end"]["sum_received"]["bytes"]
        assert received > 1_000_000
    finally:
        srv.stop(5.0)
    client, conc = sc.status("client1")["datapath"], call(sc.socket("concentrator"), "status")["datapath"]
    assert client["gso"] and client["gso_sends"] > 0, client
    assert conc["gro"] and conc["gro_reads"] > 0, conc
    assert conc["tun_offload"] and conc["tun_gso_writes"] > 0, conc
    assert conc["tun_gso_segments"] > 2 * conc["tun_gso_writes"], conc  # several segments per write


def test_quick_reconnects_keep_the_address_and_routes(sc: Scenario) -> None:
    """Disconnect then connect at once, several times: the old connection's tear-down must never undo the new
    one's address or routes (netlink work runs in order, on one worker)."""
    for _ in range(4):
        call(sc.socket("client1"), "disconnect")
        call(sc.socket("client1"), "connect")
        st = sc.wait_connected("client1")
        procs.wait_for(lambda: sc.status("client1")["routes"], 10, 0.1, "client1 routes")
        time.sleep(0.3)  # any late tear-down would have run by now
        st = sc.status("client1")
        addrs = sc.lab.run(CLIENT1, ["ip", "-4", "-o", "addr", "show", "dev", "natt-vpn0"]).stdout
        assert f"inet {st['assigned_address']}/32" in addrs, addrs
        routes = sc.lab.run(CLIENT1, ["ip", "-4", "route", "show", "dev", "natt-vpn0"]).stdout
        assert "0.0.0.0/1" in routes and "128.0.0.0/1" in routes, routes
        assert sc.ping(CLIENT1, ADDR.server)
