"""Recovery without a person: after a concentrator restart its clients learn it fast. The restarted concentrator
answers their ESP with INVALID-SPI and their IKE with INVALID-COOKIE (unprotected, rate-limited); a client takes
that only as a reason to run DPD at once (authenticated), so it reconnects in seconds, not after its DPD interval
(issue: hold under attack and faults)."""

from __future__ import annotations

import ipaddress

import pytest

from natt.ike.endpoint import HINTS_PER_SECOND, IkeEndpoint
from natt.ike.events import Cause, DpdEvent, IkeSaDown, ModeConfigDone, NotifyHint
from tests.protocol.conftest import CONCENTRATOR, make_policy, make_profile
from tests.protocol.sim import UDP, Network, Node, Packet, Pat, ipv4_packet

pytestmark = pytest.mark.protocol

SERVER = "192.168.2.10"


def _restart(net: Network) -> None:
    """SIGKILL and start again: a concentrator with the same configuration and no memory of any SA."""
    net.concentrator = Node("concentrator", CONCENTRATOR, IkeEndpoint(CONCENTRATOR, net.concentrator.endpoint.policy))


def _down_after_restart(hints: bool) -> float:
    net = Network(make_policy(), CONCENTRATOR, Pat(ipaddress.IPv4Network("10.10.10.0/24"), "203.0.113.78"))
    client = net.add_client("client1", "10.10.10.2")
    net.connect("client1", make_profile())
    net.pump()
    address = client.of(ModeConfigDone)[-1].address
    net.advance(5.0)
    _restart(net)
    if not hints:
        net.concentrator.endpoint.unknown_esp = lambda *a: None  # type: ignore[method-assign]
        net.concentrator.endpoint._hint = lambda *a: None  # type: ignore[method-assign]
    t0 = net.now
    for _ in range(120):  # the user keeps pinging, once a second
        net.route_esp(client, ipv4_packet(address, SERVER, b"ping"))
        net.advance(1.0)
        if client.of(IkeSaDown):
            break
    (down,) = client.of(IkeSaDown)
    assert down.cause is Cause.DPD_TIMEOUT
    if hints:
        assert [h.what for h in client.of(NotifyHint)][:1] == ["INVALID-SPI"]
        assert net.concentrator.endpoint.stats["recovery-hints-sent"] >= 1
    return net.now - t0


def test_a_restarted_concentrator_is_noticed_in_seconds() -> None:
    with_hints, without = _down_after_restart(True), _down_after_restart(False)
    assert with_hints <= 15.0, f"{with_hints} s with INVALID-SPI/INVALID-COOKIE hints"
    assert without >= 30.0, f"{without} s without: the DPD interval is what it costs otherwise"


def test_an_unprotected_hint_only_starts_dpd() -> None:
    """Anyone can send INVALID-SPI: for a live concentrator it costs one DPD round trip, and nothing ends."""
    net = Network(make_policy(), CONCENTRATOR, Pat(ipaddress.IPv4Network("10.10.10.0/24"), "203.0.113.78"))
    client = net.add_client("client1", "10.10.10.2")
    net.connect("client1", make_profile())
    net.pump()
    (sa,) = client.endpoint.sas.values()
    spi = next(iter(sa.children.values())).outbound_spi
    from natt.ike import info

    forged = info.orphan_invalid_spi(b"\x01" * 8, spi)
    net.send(Packet(UDP, (CONCENTRATOR, 500), ("203.0.113.78", 1025), forged))
    net.pump()
    kinds = [e.kind for e in client.of(DpdEvent)]
    assert kinds[:2] == ["request-sent", "ack-received"]
    assert sa.id in client.endpoint.sas and not client.of(IkeSaDown)


def test_hints_are_rate_limited() -> None:
    net = Network(make_policy(), CONCENTRATOR)
    conc = net.concentrator.endpoint
    for i in range(1000):
        conc.unknown_esp(0x1000 + i, (f"203.0.{i // 250}.{i % 250 + 1}", 4500), 4500, net.now)
    assert len(conc.datagrams_to_send()) == HINTS_PER_SECOND
    for _ in range(10):
        conc.unknown_esp(0x2000, ("203.0.113.5", 4500), 4500, net.now + 2.0)
    assert len(conc.datagrams_to_send()) == 1, "one a second to one peer"
    assert conc.stats["recovery-hints-suppressed"] == 1000 - HINTS_PER_SECOND + 9
