"""NAT transparency modes and the concentrator's preference among them (VPN 3000 order: IPsec over TCP — not
built —, then NAT-T, then Cisco IPsec over UDP), negotiated between two real endpoints through a PAT."""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest

from natt.errors import InvalidHashInformation
from natt.esp.udpencap import CISCO_UDP_KEEPALIVE, DatagramKind, classify_cisco_udp
from natt.ike import info
from natt.ike.events import ChildSaUp, ModeConfigDone
from natt.wire.constants import CISCO_UDP_PORT, NATT_PORT, ExchangeType
from natt.wire.message import Header, Message
from natt.wire.payloads import Hash
from tests.protocol.conftest import CONCENTRATOR, make_policy, make_profile
from tests.protocol.sim import Network, Pat

pytestmark = pytest.mark.protocol


def _net(nat_traversal: bool, ipsec_over_udp: bool, port: int = CISCO_UDP_PORT) -> Network:
    policy = make_policy(nat_traversal=nat_traversal)
    g = policy.groups["ciscovpn"]
    policy.groups["ciscovpn"] = dataclasses.replace(g, ipsec_over_udp=ipsec_over_udp, ipsec_over_udp_port=port)
    net = Network(policy, CONCENTRATOR, Pat(ipaddress.IPv4Network("10.10.10.0/24"), "203.0.113.78"))
    net.add_client("client1", "10.10.10.2")
    return net


def _up(net: Network, **profile: object) -> tuple[list[ChildSaUp], list[ChildSaUp], ModeConfigDone]:
    net.connect("client1", make_profile(**profile))
    net.pump()
    client = net.clients["client1"]
    return client.of(ChildSaUp), net.concentrator.of(ChildSaUp), client.of(ModeConfigDone)[-1]


def test_natt_is_preferred_over_ipsec_over_udp() -> None:
    net = _net(nat_traversal=True, ipsec_over_udp=True)
    client_ups, conc_ups, cfg = _up(net)
    assert cfg.natt_port == NATT_PORT
    assert len(conc_ups) == 2 and all(u.udp_encap and u.local_port == NATT_PORT for u in conc_ups)
    assert all(u.remote_port == NATT_PORT for u in client_ups)
    assert all(sa.cisco_udp_port is None for sa in net.concentrator.endpoint.sas.values())


@pytest.mark.parametrize("port", [CISCO_UDP_PORT, 10443])
def test_ipsec_over_udp_when_natt_is_off(port: int) -> None:
    net = _net(nat_traversal=False, ipsec_over_udp=True, port=port)
    client_ups, conc_ups, cfg = _up(net)
    assert cfg.natt_port == port, "announced in Mode Config (MODECFG_UNITY_NATT_PORT)"
    (sa,) = net.concentrator.endpoint.sas.values()
    assert sa.cisco_udp_port == port and not sa.udp_encap
    # The concentrator learns the client's translated port from its ESP; the client sends to the announced port.
    assert len(conc_ups) == 2 and all(u.udp_encap and (u.local_port, u.remote_port) == (port, 0) for u in conc_ups)
    assert all(u.udp_encap and (u.local_port, u.remote_port) == (port, port) for u in client_ups)


def test_client_that_does_not_ask_gets_no_port() -> None:
    net = _net(nat_traversal=False, ipsec_over_udp=True)
    client_ups, conc_ups, cfg = _up(net, ipsec_over_udp=False)
    assert cfg.natt_port is None and not any(u.udp_encap for u in conc_ups + client_ups)


def test_group_without_ipsec_over_udp_gives_no_port() -> None:
    net = _net(nat_traversal=False, ipsec_over_udp=False)
    _, conc_ups, cfg = _up(net)
    assert cfg.natt_port is None and not any(u.udp_encap for u in conc_ups)


def test_ipsec_over_udp_client_sends_keepalives_to_the_port() -> None:
    net = _net(nat_traversal=False, ipsec_over_udp=True)
    _up(net)
    client = net.clients["client1"].endpoint
    client.handle_timer(net.now + 10.0)
    sent = [d for d in client.datagrams_to_send() if d.data == CISCO_UDP_KEEPALIVE]
    assert sent and sent[0].remote == (CONCENTRATOR, CISCO_UDP_PORT) and sent[0].local_port == CISCO_UDP_PORT


def test_cisco_udp_datagram_kinds() -> None:
    assert classify_cisco_udp(CISCO_UDP_KEEPALIVE) is DatagramKind.KEEPALIVE
    assert classify_cisco_udp(b"\xff") is DatagramKind.KEEPALIVE
    assert classify_cisco_udp(b"\x12\x34\x56\x78" + bytes(12)) is DatagramKind.ESP
    assert classify_cisco_udp(b"\x00\x00\x00\x00" + bytes(20)) is DatagramKind.INVALID, "no IKE on this port"
    assert classify_cisco_udp(b"\x12\x34\x56") is DatagramKind.INVALID


def test_empty_informational_hash_forms(lab: Network) -> None:
    """vpnc's IKE keepalive hashes 0x00 | M-ID; the RFC form hashes M-ID alone; anything else is refused."""
    from natt.crypto import keys as kdf

    lab.connect("client1", make_profile())
    lab.pump()
    (sa,) = lab.concentrator.endpoint.sas.values()
    assert sa.hash
    header = Header(sa.icookie, sa.rcookie, 8, ExchangeType.INFORMATIONAL, 1, 0x1234)

    def msg(digest: bytes) -> Message:
        return Message(header, [Hash(data=digest)], b"", [(0, 4 + len(digest))])

    info.check_hash(sa, msg(kdf.empty_info_hash(sa.hash, sa.skeyid_a, 0x1234)))
    info.check_hash(sa, msg(kdf.info_hash(sa.hash, sa.skeyid_a, 0x1234, b"")))
    with pytest.raises(InvalidHashInformation):
        info.check_hash(sa, msg(kdf.empty_info_hash(sa.hash, sa.skeyid_a, 0x1235)))
