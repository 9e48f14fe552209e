"""A lost Quick Mode HASH(3) (message 3) costs no traffic and never leaves a black hole.

The client installs a pair when message 2 comes and sends at once; the concentrator installed its half only on
HASH(3). With HASH(3) lost, the client's traffic went into a pair the concentrator did not have until its resend of
message 2 was answered, and if every answer was lost too, the concentrator gave the exchange up while the client
kept the pair: "connected" with no traffic until the pair's rekey (the lossy-link lab test, issue 12).

Now (a) the peer's first ESP that authenticates under the pending pair's inbound SPI completes the exchange at once,
and (b) a client told by a protected INVALID-SPI that the concentrator has no SA for one of its pairs drops that pair
and sets its tunnel up again.
"""

from __future__ import annotations

import ipaddress

import pytest

from natt.ike.events import ChildSaDown, ChildSaUp, CommittedByEsp, IkeSaDown, MessageSent, ModeConfigDone
from natt.wire.constants import ExchangeType
from tests.protocol.conftest import CONCENTRATOR, make_policy, make_profile
from tests.protocol.sim import Network, Node, Packet, Pat, ipv4_packet

pytestmark = pytest.mark.protocol

SERVER = "192.168.2.10"
EVERYTHING = "0.0.0.0/0"


def _lab() -> tuple[Network, Node]:
    net = Network(make_policy(), CONCENTRATOR, Pat(ipaddress.IPv4Network("10.10.10.0/24"), "203.0.113.78"))
    return net, net.add_client("client1", "10.10.10.2")


def _drop_hash3(net: Network, client: Node, remote_selector: str, copies: list[int]) -> None:
    """Drop the client's Quick Mode message 3 for the pair to `remote_selector` while copies[0] > 0 (counted down)."""
    send = net.send

    def send_some(p: Packet) -> None:
        data = p.data[4:] if p.dst[1] == 4500 and p.data[:4] == b"\0\0\0\0" else p.data
        if p.src[0] == client.address and len(data) > 24 and data[18] == ExchangeType.QUICK_MODE and copies[0] > 0:
            mid = int.from_bytes(data[20:24], "big")
            # Message 3 goes out just after the pair is installed: the client's child with this message ID.
            mine = [c for sa in client.endpoint.sas.values() for c in sa.children.values() if c.message_id == mid]
            if mine and mine[0].remote_selector == remote_selector:
                copies[0] -= 1
                return
        send(p)

    net.send = send_some  # type: ignore[method-assign]


def _connect_losing_hash3(copies: int) -> tuple[Network, Node, str, list[int]]:
    """client1 connects while its HASH(3) for the 0.0.0.0/0 pair is lost `copies` times (the returned counter:
    set it to 0 for a good link again); with its assigned address."""
    net, client = _lab()
    lose = [copies]
    _drop_hash3(net, client, EVERYTHING, lose)
    net.connect("client1", make_profile())
    net.pump()
    return net, client, client.of(ModeConfigDone)[-1].address, lose


def _ping(net: Network, client: Node, address: str) -> int:
    """One packet from the client to the server through the tunnel: how many the concentrator delivered so far."""
    assert net.route_esp(client, ipv4_packet(address, SERVER, b"ping")) is not None, client.esp_errors
    net.pump()
    return sum(1 for p in net.concentrator.delivered if p[16:20] == ipaddress.IPv4Address(SERVER).packed)


def test_the_first_esp_completes_a_quick_mode_whose_hash3_was_lost() -> None:
    net, client, address, _ = _connect_losing_hash3(1)
    conc = net.concentrator
    assert {u.remote_selector for u in client.of(ChildSaUp)} == {f"{CONCENTRATOR}/32", EVERYTHING}
    assert [u.local_selector for u in conc.of(ChildSaUp)] == [f"{CONCENTRATOR}/32"], "HASH(3) for 0/0 was lost"
    assert len(conc.endpoint.awaiting_commit) == 1

    # The client's first packet: the concentrator installs the pair on it and delivers it, no resend needed.
    assert _ping(net, client, address) == 1
    (commit,) = conc.of(CommittedByEsp)
    assert [u.local_selector for u in conc.of(ChildSaUp)] == [f"{CONCENTRATOR}/32", EVERYTHING]
    assert conc.of(ChildSaUp)[-1].inbound_spi == commit.inbound_spi
    assert conc.endpoint.stats["quick-mode-committed-by-esp"] == 1
    assert not conc.endpoint.awaiting_commit
    # The exchange is over: no message 2 is resent later, and both halves carry traffic both ways.
    resends_before = [e for e in conc.of(MessageSent) if e.retransmit]
    net.advance(10.0)
    assert [e for e in conc.of(MessageSent) if e.retransmit] == resends_before
    reply = net.route_esp(conc, ipv4_packet(SERVER, address, b"pong"))
    assert reply is not None, conc.esp_errors
    net.pump()
    assert any(p[12:16] == ipaddress.IPv4Address(SERVER).packed for p in client.delivered)
    assert _ping(net, client, address) == 2
    assert not client.of(IkeSaDown) and not conc.of(IkeSaDown)


def test_forged_esp_on_a_pending_spi_installs_nothing() -> None:
    """Only the peer holds the pair's keys: ESP on the pending SPI that does not authenticate changes nothing (and
    draws no INVALID-SPI: the pair is on its way)."""
    net, client, _, _ = _connect_losing_hash3(1)
    conc = net.concentrator
    ((spi, _),) = conc.endpoint.awaiting_commit.items()
    _, up = client.child_for(EVERYTHING)
    assert up.outbound_spi == spi
    forged = spi.to_bytes(4, "big") + (1).to_bytes(4, "big") + bytes(range(64))
    hints = conc.endpoint.stats["recovery-hints-sent"]
    peer = conc.endpoint.sas[conc.of(ChildSaUp)[0].sa_id].remote
    assert conc.endpoint.unknown_esp(spi, peer, 4500, net.now, forged) is False
    assert conc.endpoint.stats["commit-by-esp-refused"] == 1
    assert not conc.of(CommittedByEsp) and len(conc.of(ChildSaUp)) == 1
    assert conc.endpoint.stats["recovery-hints-sent"] == hints
    assert spi in conc.endpoint.awaiting_commit



def test_a_stream_of_forged_esp_from_many_addresses_costs_one_mac_check_each(monkeypatch: pytest.MonkeyPatch) -> None:
    """The pending SPI is visible on the wire once the client sends on it, so an on-path attacker can aim forged ESP
    at it from anywhere. Each forged packet costs one MAC check under keys derived once (not a KEYMAT derivation per
    packet), installs nothing, draws no hint, and leaves the pair to the peer's genuine packet."""
    from natt.ike import quick

    derived: list[bytes] = []
    keymat = quick._keymat

    def counting(*args: object) -> bytes:
        out = keymat(*args)  # type: ignore[arg-type]
        derived.append(out)
        return out

    monkeypatch.setattr(quick, "_keymat", counting)
    net, client, address, _ = _connect_losing_hash3(1)
    conc = net.concentrator
    ((spi, _),) = conc.endpoint.awaiting_commit.items()
    hints = conc.endpoint.stats["recovery-hints-sent"]
    before = len(derived)
    sources = [(f"198.51.100.{i}", 4500 + i) for i in range(1, 51)]
    for n, source in enumerate(sources * 4):  # 200 packets, 50 addresses, sequence numbers that move on
        forged = spi.to_bytes(4, "big") + (n + 1).to_bytes(4, "big") + bytes([n % 256]) * 80
        assert conc.endpoint.unknown_esp(spi, source, 4500, net.now, forged) is False
    assert conc.endpoint.stats["commit-by-esp-refused"] == 200
    assert len(derived) - before == 1, "the probe's KEYMAT is derived once, not per forged packet"
    assert conc.endpoint.stats["recovery-hints-sent"] == hints
    assert not conc.of(CommittedByEsp) and len(conc.of(ChildSaUp)) == 1
    # The peer's own first packet (sequence number 1, which a forger had already used) still completes the exchange.
    assert _ping(net, client, address) == 1
    assert len(conc.of(CommittedByEsp)) == 1 and not conc.endpoint.awaiting_commit

def test_a_pair_the_concentrator_gave_up_on_is_set_up_again() -> None:
    """Every HASH(3) for 0/0 lost and no traffic until the concentrator gave the exchange up: the client's first
    packet after that draws a protected INVALID-SPI; the client drops the pair and negotiates it again."""
    net, client, address, lose = _connect_losing_hash3(1_000)
    conc = net.concentrator
    net.advance(40.0, step=0.5)  # the concentrator's resends of message 2 run out (30 s)
    assert not conc.endpoint.awaiting_commit, "the concentrator gave the Quick Mode up"
    assert [u.local_selector for u in conc.of(ChildSaUp)] == [f"{CONCENTRATOR}/32"]
    old_spi = client.child_for(EVERYTHING)[1].inbound_spi
    lose[0] = 0  # the link is good again

    net.route_esp(client, ipv4_packet(address, SERVER, b"ping"))
    net.pump()
    assert conc.endpoint.stats["recovery-hints-sent"] == 1
    assert client.endpoint.stats["invalid-spi-pair-removed"] == 1
    assert client.endpoint.stats["invalid-spi-tunnel-restarted"] == 1
    assert [d.inbound_spi for d in client.of(ChildSaDown)] == [old_spi]
    ups = [u for u in client.of(ChildSaUp) if u.remote_selector == EVERYTHING]
    assert len(ups) == 2 and ups[-1].inbound_spi != old_spi
    assert [u.local_selector for u in conc.of(ChildSaUp)] == [f"{CONCENTRATOR}/32", EVERYTHING]
    assert _ping(net, client, address) == 1
    assert not client.of(IkeSaDown) and not conc.of(IkeSaDown)


def test_invalid_spi_for_a_replaced_pair_sets_nothing_up() -> None:
    """A protected INVALID-SPI naming an old pair whose replacement is up (the concentrator deleted it first, its
    DELETE lost): that pair goes, and no Quick Mode starts."""
    net, client = _lab()
    net.connect("client1", make_profile())
    net.pump()
    sa_id = client.of(ChildSaUp)[-1].sa_id
    sa = client.endpoint.sas[sa_id]
    old = next(c for c in sa.children.values() if c.remote_selector == EVERYTHING)
    from natt.ike import quick

    quick.start(client.endpoint, sa, EVERYTHING, rekey_of=old.inbound_spi)
    net.pump()
    assert sum(1 for c in sa.children.values() if c.remote_selector == EVERYTHING) == 2
    conc_sa = net.concentrator.endpoint.sas[net.concentrator.of(ChildSaUp)[-1].sa_id]
    from natt.ike import info

    info.send_notify(net.concentrator.endpoint, conc_sa, info.invalid_spi(conc_sa, old.outbound_spi))
    net.pump()
    assert client.endpoint.stats["invalid-spi-pair-removed"] == 1
    assert client.endpoint.stats["invalid-spi-tunnel-restarted"] == 0
    assert [c.remote_selector for c in sa.children.values()].count(EVERYTHING) == 1
    assert not sa.quick_modes
