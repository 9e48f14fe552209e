"""Wireshark judges every packet the exchanges produce: no 'Malformed', no error-level expert info."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.pcap import ip_packet, udp_packet, write_pcap
from tests.protocol.conftest import CONCENTRATOR, make_policy, make_profile
from tests.protocol.sim import ESP, Network, Pat, ipv4_packet

pytestmark = [pytest.mark.protocol, pytest.mark.tshark]

TSHARK = shutil.which("tshark")


def _capture(net: Network, path: Path) -> None:
    pkts = []
    for i, p in enumerate(net.wire):
        if p.proto == ESP:
            pkts.append(ip_packet(50, p.src[0], p.dst[0], p.data, i))
        else:
            pkts.append(udp_packet(p.src, p.dst, p.data, i))
    write_pcap(path, pkts)


def _tshark(path: Path, *args: str) -> str:
    assert TSHARK, "tshark is installed by `make test` (Debian package tshark)"
    out = subprocess.run([TSHARK, "-n", "-r", str(path), *args], capture_output=True, text=True, timeout=120,
                         check=True)
    return out.stdout


def _assert_clean(text: str) -> None:
    bad = [line for line in text.splitlines() if "Malformed" in line or "Expert Info (Error" in line]
    assert not bad, "\n".join(bad[:20])


@pytest.mark.parametrize("mode", ["aggressive", "main"])
def test_exchange_through_pat_decodes_cleanly(tmp_path: Path, mode: str) -> None:
    net = Network(make_policy(), CONCENTRATOR, Pat(ipaddress.IPv4Network("10.10.10.0/24"), "203.0.113.78"))
    net.add_client("client1", "10.10.10.2")
    net.connect("client1", make_profile(mode=mode))
    net.pump()
    node = net.clients["client1"]
    addr = node.endpoint.sas[next(iter(node.endpoint.sas))].assigned_address
    assert addr
    net.send_esp(node, "0.0.0.0/0", ipv4_packet(addr, "192.168.2.10", b"ping"))
    net.advance(35.0)  # keepalives and DPD on the wire too
    pcap = tmp_path / f"{mode}.pcap"
    _capture(net, pcap)
    verbose = _tshark(pcap, "-V")
    _assert_clean(verbose)
    summary = _tshark(pcap, "-T", "fields", "-e", "udp.dstport", "-e", "isakmp.exchangetype", "-e", "esp.spi",
                      "-e", "_ws.col.Protocol")
    rows = [r.split("\t") for r in summary.strip().splitlines()]
    ike_ports = [r[0] for r in rows if r[3] == "ISAKMP"]
    # Public side: to the concentrator 500 first, then 4500 (replies go to the PAT's translated ports).
    assert ike_ports[0] == "500" and "4500" in ike_ports, "IKE starts on 500 and moves to 4500"
    assert any(r[2] for r in rows), "UDP-encapsulated ESP recognised on 4500"
    assert "NAT-D" in verbose or "NAT Discovery" in verbose
    assert "NAT-keepalive packet" in verbose


def test_no_nat_sends_raw_esp(tmp_path: Path) -> None:
    net = Network(make_policy(), CONCENTRATOR, None)
    net.add_client("client1", "203.0.113.20")
    net.connect("client1", make_profile())
    net.pump()
    node = net.clients["client1"]
    addr = next(iter(node.endpoint.sas.values())).assigned_address
    net.send_esp(node, "0.0.0.0/0", ipv4_packet(addr, "192.168.2.10", b"ping"))
    assert net.concentrator.delivered
    pcap = tmp_path / "raw.pcap"
    _capture(net, pcap)
    _assert_clean(_tshark(pcap, "-V"))
    protos = _tshark(pcap, "-T", "fields", "-e", "ip.proto", "-e", "udp.dstport").split()
    assert "50" in protos and "4500" not in protos, "no NAT: ESP is IP protocol 50, nothing on 4500"


def test_refusals_deletes_and_legacy_decode_cleanly(tmp_path: Path) -> None:
    """Notifies (AUTHENTICATION-FAILED, NO-PROPOSAL-CHOSEN), XAUTH failure, deletes, the seed's 3DES suite."""
    from natt.ike.config import SEED_PHASE1, SEED_PHASE2, GroupPolicy, Phase1Proposal

    group = GroupPolicy("ciscovpn", b"cisco123", phase1=(SEED_PHASE1, Phase1Proposal()), phase2=(SEED_PHASE2,))
    net = Network(make_policy(groups={"ciscovpn": group}, xauth_max_tries=1), CONCENTRATOR,
                  Pat(ipaddress.IPv4Network("10.10.10.0/24"), "203.0.113.78"))
    for i in range(1, 5):
        net.add_client(f"c{i}", f"10.10.10.{i + 1}")
    net.connect("c1", make_profile(psk=b"wrong"))
    net.connect("c2", make_profile(password="wrong"))
    net.connect("c3", make_profile(phase1=(Phase1Proposal(group=15),)))
    net.connect("c4", make_profile("vpnclient2", phase1=(SEED_PHASE1,), phase2=(SEED_PHASE2,)))
    net.pump()
    c4 = net.clients["c4"]
    (sa_id,) = c4.endpoint.sas
    c4.endpoint.delete_sa(sa_id, net.now, "user disconnect")
    net.pump()
    # The wrong-PSK half-open SA is not torn down by the client's unauthenticated notify: it times out.
    assert len(net.concentrator.endpoint.sas) == 1
    net.advance(31.0)
    assert not net.concentrator.endpoint.sas, "every session refused, deleted or timed out"
    pcap = tmp_path / "refusals.pcap"
    _capture(net, pcap)
    verbose = _tshark(pcap, "-V")
    _assert_clean(verbose)
    assert "AUTHENTICATION-FAILED" in verbose and "NO-PROPOSAL-CHOSEN" in verbose
