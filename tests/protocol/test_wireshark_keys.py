"""tshark, given only the exported key tables, decrypts the public side of the seed flow (in memory, through a PAT).

The concentrator's export and the client's (whose own address a PAT hides: `*`) each open the inner ICMP in both
directions and the Quick Mode payloads, for every phase 2 suite family; with no tables nothing opens. The lab test
(tests/lab/test_wireshark_keys.py) does the same with the real daemons, CLI and a capture.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from natt.ike import suites
from natt.ike.config import GroupPolicy
from natt.wire.constants import CISCO_UDP_PORT
from natt.wireshark import esp_lines, ikev1_lines
from natt_daemons.common.keyexport import write_tables
from tests.pcap import ip_packet, udp_packet, write_pcap
from tests.protocol.conftest import CONCENTRATOR, PSK, make_policy, make_profile
from tests.protocol.sim import ESP, Network, Node, Pat

pytestmark = [pytest.mark.protocol, pytest.mark.tshark]

TSHARK = shutil.which("tshark")
SERVER = "192.168.2.10"
QUICK_MODE = "32"
SA_PAYLOAD, NONCE_PAYLOAD = "1", "10"
SUITES = {  # phase 2 under test, with a phase 1 Wireshark's IKEv1 decryption also has to follow
    "aes-gcm": ("aes128gcm16", "aes256-sha256-modp2048"),
    "aes-cbc-sha1": ("aes256-sha1", "aes128-sha1-modp2048"),
    "aes-cbc-sha256": ("aes128-sha256", "aes256-sha256-modp2048"),
    "3des-md5": ("3des-md5", "3des-md5-modp1024"),
}


def icmp_echo(src: str, dst: str, seq: int, reply: bool = False) -> bytes:
    body = struct.pack("!BBHHH", 0 if reply else 8, 0, 0, 0x4E41, seq) + b"natt-keys-" * 4
    total = sum(struct.unpack(f"!{len(body) // 2}H", body))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ip_packet(1, src, dst, body[:2] + struct.pack("!H", ~total & 0xFFFF) + body[4:])


def seed_flow(p2: str, p1: str) -> tuple[Network, Node, str]:
    group = GroupPolicy("ciscovpn", PSK, pool="10.40.1.0/24", phase1=(suites.phase1(p1),),
                        phase2=(suites.phase2(p2),))
    net = Network(make_policy(groups={"ciscovpn": group}), CONCENTRATOR,
                  Pat(ipaddress.IPv4Network("10.10.10.0/24"), "203.0.113.78"))
    node = net.add_client("client1", "10.10.10.2")
    net.connect("client1", make_profile(phase1=(suites.phase1(p1),), phase2=(suites.phase2(p2),)))
    net.pump()
    address = next(iter(node.endpoint.sas.values())).assigned_address
    assert address, "the client got its address"
    for seq in (1, 2):
        net.send_esp(node, "0.0.0.0/0", icmp_echo(address, SERVER, seq))
        net.send_esp(net.concentrator, f"{address}/32", icmp_echo(SERVER, address, seq, reply=True))
    assert len(net.concentrator.delivered) == 2 and len(node.delivered) == 2
    return net, node, address


def write_capture(net: Network, path: Path) -> None:
    write_pcap(path, [ip_packet(50, p.src[0], p.dst[0], p.data, i) if p.proto == ESP else
                      udp_packet(p.src, p.dst, p.data, i) for i, p in enumerate(net.wire)])


def export(node: Node, directory: Path) -> None:
    sas = node.endpoint.sas
    write_tables(str(directory), ikev1_lines(sas.values()), [str(line) for line in esp_lines(node.table, sas)])


def decode(pcap: Path, config_dir: Path, *extra: str) -> list[list[str]]:
    """tshark with `config_dir` as its whole personal configuration: the exported tables and nothing else."""
    assert TSHARK, "tshark is installed by `make test` (Debian package tshark)"
    argv = [TSHARK, "-n", "-r", str(pcap), *extra, "-o", "esp.enable_encryption_decode:TRUE",
            "-o", "esp.enable_authentication_check:TRUE", "-T", "fields", "-e", "isakmp.exchangetype",
            "-e", "isakmp.typepayload", "-e", "ip.src", "-e", "ip.dst", "-e", "icmp.type", "-e", "esp.icv_good"]
    env = {"PATH": "/usr/bin:/bin", "WIRESHARK_CONFIG_DIR": str(config_dir)}
    out = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=True, env=env).stdout
    return [(row.split("\t") + [""] * 6)[:6] for row in out.splitlines() if row]


def inner_icmp(rows: list[list[str]], address: str) -> set[tuple[str, str, str]]:
    """(inner source, inner destination, ICMP type) of every decrypted echo: ip.src lists outer, then inner."""
    found = set()
    for r in rows:
        srcs, dsts = r[2].split(","), r[3].split(",")
        if r[4] and len(srcs) == 2:
            found.add((srcs[1], dsts[1], r[4]))
    return found & {(address, SERVER, "8"), (SERVER, address, "0")}


def quick_mode_decrypted(rows: list[list[str]]) -> bool:
    """Quick Mode message 1 or 2 shows its SA and Nonce payloads: only there once decrypted."""
    return any(r[0] == QUICK_MODE and {SA_PAYLOAD, NONCE_PAYLOAD} <= set(r[1].split(",")) for r in rows)


@pytest.mark.parametrize("suite", list(SUITES))
def test_exported_tables_decrypt_the_public_side(tmp_path: Path, suite: str) -> None:
    net, client, address = seed_flow(*SUITES[suite])
    pcap = tmp_path / "public.pcap"
    write_capture(net, pcap)
    for side, node in (("concentrator", net.concentrator), ("client", client)):
        keys = tmp_path / side
        export(node, keys)
        rows = decode(pcap, keys)
        assert inner_icmp(rows, address) == {(address, SERVER, "8"), (SERVER, address, "0")}, (side, rows)
        assert all(r[5] == "1" for r in rows if r[4]), f"{side}: every decrypted packet's ICV checked out"
        assert quick_mode_decrypted(rows), f"{side}: Quick Mode decrypted with the IKEv1 table"


def test_without_the_tables_nothing_opens(tmp_path: Path) -> None:
    """The control for the test above: the same capture and tshark, an empty configuration."""
    net, _, address = seed_flow(*SUITES["aes-gcm"])
    pcap = tmp_path / "public.pcap"
    write_capture(net, pcap)
    empty = tmp_path / "empty"
    empty.mkdir(mode=0o700)
    rows = decode(pcap, empty)
    assert not inner_icmp(rows, address)
    assert not quick_mode_decrypted(rows)


def test_ipsec_over_udp_decrypts_once_its_port_is_decoded_as_udpencap(tmp_path: Path) -> None:
    """Cisco IPsec over UDP (NAT-T off, the group's port 10000): Wireshark knows only 4500 as UDP-encapsulated ESP,
    so the same tables open the tunnel once the port is decoded as UDPENCAP (what the README tells)."""
    group = dataclasses.replace(make_policy().groups["ciscovpn"], ipsec_over_udp=True)
    net = Network(make_policy(nat_traversal=False, groups={"ciscovpn": group}), CONCENTRATOR,
                  Pat(ipaddress.IPv4Network("10.10.10.0/24"), "203.0.113.78"))
    client = net.add_client("client1", "10.10.10.2")
    net.connect("client1", make_profile())
    net.pump()
    address = next(iter(client.endpoint.sas.values())).assigned_address
    assert address
    assert net.route_esp(client, icmp_echo(address, SERVER, 1))
    assert net.route_esp(net.concentrator, icmp_echo(SERVER, address, 1, reply=True))
    pcap = tmp_path / "public.pcap"
    write_capture(net, pcap)
    decode_as = ("-d", f"udp.port=={CISCO_UDP_PORT},udpencap")
    for side, node in (("concentrator", net.concentrator), ("client", client)):
        export(node, tmp_path / side)
        assert not inner_icmp(decode(pcap, tmp_path / side), address), "plain UDP without Decode As"
        assert inner_icmp(decode(pcap, tmp_path / side, *decode_as), address) == {
            (address, SERVER, "8"), (SERVER, address, "0")}, side
