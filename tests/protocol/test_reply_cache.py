"""The reply cache under replay (found by the live fuzz against the lab): a captured request sent again from
elsewhere is answered to where it came from, a few times at most, and never reflected to the real peer."""

from __future__ import annotations

import ipaddress

import pytest

from natt.ike.endpoint import REPLY_REPEATS
from natt.ike.events import ChildSaUp, IkeSaDown, ModeConfigDone
from natt.wire.constants import NON_ESP_MARKER, ExchangeType
from tests.protocol.conftest import make_policy, make_profile
from tests.protocol.sim import Network, Packet, ipv4_packet

pytestmark = pytest.mark.protocol

ATTACKER = ("192.0.2.66", 4500)
SERVER = "192.168.2.10"  # behind the concentrator


def _exchange(data: bytes, port: int) -> int | None:
    """The ISAKMP exchange type of a datagram to `port` (behind the non-ESP marker on 4500), None for ESP."""
    if port != 500:
        if not data.startswith(NON_ESP_MARKER):
            return None
        data = data[len(NON_ESP_MARKER):]
    return data[18] if len(data) > 18 else None


def test_a_replayed_quick_mode_is_answered_to_its_sender_a_few_times_and_never_to_the_peer() -> None:
    net = Network(make_policy())
    net.add_client("client1", "203.0.113.20")
    net.connect("client1", make_profile())
    net.pump()
    assert len(net.clients["client1"].of(ChildSaUp)) == 2
    conc = net.concentrator.endpoint
    # The client's first Quick Mode message 1, as an eavesdropper captured it.
    qm1 = next(p for p in net.wire if p.src[0] == "203.0.113.20" and _exchange(p.data, p.dst[1])
               == ExchangeType.QUICK_MODE)
    port = qm1.dst[1]
    attacker = (ATTACKER[0], port)
    # The client's own retransmission is answered to it, as before.
    conc.receive_datagram(qm1.data, qm1.src, port, net.now)
    (again,) = conc.datagrams_to_send()
    assert again.remote == qm1.src
    # The same bytes replayed from elsewhere, 20 times: answered to the replayer only, and only up to the limit.
    for _ in range(20):
        conc.receive_datagram(qm1.data, attacker, port, net.now)
    out = conc.datagrams_to_send()
    assert all(d.remote == attacker for d in out)
    assert len(out) == REPLY_REPEATS - 1  # the client's own copy used one answer
    assert conc.stats["retransmit-not-answered"] == 20 - (REPLY_REPEATS - 1)
    assert not any(s == qm1.src for s in [d.remote for d in out]), "the reply was reflected to the client"


def test_a_second_copy_of_a_hash3_is_dropped_not_read_as_garbage() -> None:
    """The client answers two copies of message 2 with two HASH(3)s; the second reached the concentrator after the
    first had completed the exchange, was decrypted with the IV that had moved on, and was logged as a malformed
    message (the lossy-link lab test). A copy of a message the SA took is now dropped before decryption."""
    net = Network(make_policy())
    net.add_client("client1", "203.0.113.20")
    net.connect("client1", make_profile())
    net.pump()
    conc = net.concentrator
    hash3 = [p for p in net.wire if p.src[0] == "203.0.113.20" and _exchange(p.data, p.dst[1])
             == ExchangeType.QUICK_MODE and len(p.data) < 100]
    assert len(hash3) == 2, [len(p.data) for p in hash3]
    events = len(conc.events)
    conc.endpoint.receive_datagram(hash3[-1].data, hash3[-1].src, hash3[-1].dst[1], net.now)
    net.pump()
    assert conc.endpoint.stats["duplicate-dropped"] == 1
    assert not conc.endpoint.datagrams_to_send()
    assert conc.endpoint.stats["PAYLOAD-MALFORMED"] == 0
    assert len(conc.events) == events, conc.events[events:]


def test_a_network_that_delivers_every_ike_message_twice_costs_nothing() -> None:
    """Every IKE datagram of the set-up arrives twice, back to back (a duplicating link, or a resend that crossed
    its answer): each second copy is dropped or answered from the reply cache, never read as a new message or as
    garbage, and the session comes up as on a clean link."""
    net = Network(make_policy())
    client = net.add_client("client1", "203.0.113.20")
    send = net.send
    copies: list[int] = []

    def twice(p: Packet) -> None:
        send(p)
        if _exchange(p.data, p.dst[1]) is not None:
            copies.append(_exchange(p.data, p.dst[1]) or 0)
            send(p)

    net.send = twice  # type: ignore[method-assign]
    net.connect("client1", make_profile())
    net.pump()
    conc = net.concentrator
    assert {ExchangeType.AGGRESSIVE, ExchangeType.TRANSACTION, ExchangeType.QUICK_MODE} <= set(copies)
    assert len(client.of(ChildSaUp)) == 2 and len(conc.of(ChildSaUp)) == 2
    assert not client.of(IkeSaDown) and not conc.of(IkeSaDown)
    for node in (client, conc):
        stats = node.endpoint.stats
        assert stats["PAYLOAD-MALFORMED"] == 0 and stats["INVALID-PAYLOAD-TYPE"] == 0, dict(stats)
    assert conc.endpoint.stats["duplicate-dropped"] + client.endpoint.stats["duplicate-dropped"] > 0
    # Traffic passes both ways on the pairs the copies did not disturb.
    address = client.of(ModeConfigDone)[-1].address
    assert net.route_esp(client, ipv4_packet(address, SERVER, b"ping")) is not None, client.esp_errors
    assert net.route_esp(conc, ipv4_packet(SERVER, address, b"pong")) is not None, conc.esp_errors
    net.pump()
    assert [p[12:16] for p in conc.delivered] == [ipaddress.IPv4Address(address).packed]
    assert [p[12:16] for p in client.delivered] == [ipaddress.IPv4Address(SERVER).packed]
    net.advance(5.0)
    assert not client.of(IkeSaDown) and not conc.of(IkeSaDown)
    assert len(client.of(ChildSaUp)) == 2 and len(conc.of(ChildSaUp)) == 2
