"""IKE read from the socket it shares with ESP (UDP 4500) is handed to the core in batches: the messages of IKE
SAs held here go first whatever the load, strangers' only while the time budget lasts (the lab's 4500 flood lost a
third of the clients' pings when every first message was handled as it was read)."""

from __future__ import annotations

import ipaddress

import pytest

from natt.ike import info
from natt.ike.events import DpdEvent, IkeEvent
from natt.wire.constants import NON_ESP_MARKER
from natt_daemons.common import ikeio
from tests.flood import first_message
from tests.protocol.conftest import CONCENTRATOR, make_policy, make_profile
from tests.protocol.sim import Network, Pat

pytestmark = pytest.mark.unit

CLIENT = "10.10.10.2"


def _established() -> tuple[Network, bytes, tuple[str, int]]:
    """A session behind a PAT (so on 4500), and a DPD R-U-THERE from its client as it arrives at the concentrator
    (not yet delivered): the bytes and the translated source."""
    net = Network(make_policy(), CONCENTRATOR, Pat(ipaddress.IPv4Network("10.10.10.0/24"), "203.0.113.78"))
    net.add_client("client1", CLIENT)
    net.connect("client1", make_profile())
    net.pump()
    client = net.clients["client1"].endpoint
    (sa,) = client.sas.values()
    info.dpd_now(client, sa, "test")
    (dpd,) = client.datagrams_to_send()
    assert dpd.data.startswith(NON_ESP_MARKER) and dpd.remote[1] == 4500
    (conc_sa,) = net.concentrator.endpoint.sas.values()
    return net, dpd.data, conc_sa.remote


async def test_held_sas_go_first_and_strangers_are_shed_past_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    net, dpd, src = _established()
    conc = net.concentrator.endpoint
    flood = NON_ESP_MARKER + first_message(CONCENTRATOR, "192.0.2.9", "ciscovpn")
    events: list[IkeEvent] = []
    driver = ikeio.IkeDriver(conc, events.append)
    driver.senders[4500] = lambda data, addr: None
    assert conc.of_known_sa(dpd, 4500) and not conc.of_known_sa(flood, 4500)
    monkeypatch.setattr(ikeio, "SHARED_BUDGET", -1.0)  # the budget is spent before the batch starts
    driver.feed_batch([(flood, ("192.0.2.9", 4500 + i)) for i in range(50)] + [(dpd, src)], 4500)
    assert driver.shed == 50 and driver.datagrams_shared == 1
    assert [e.kind for e in events if isinstance(e, DpdEvent)] == ["request-received", "ack-sent"]
    assert conc.half_open == 0


async def test_within_the_budget_every_datagram_is_handled() -> None:
    net, dpd, src = _established()
    conc = net.concentrator.endpoint
    flood = NON_ESP_MARKER + first_message(CONCENTRATOR, "192.0.2.9", "ciscovpn")
    driver = ikeio.IkeDriver(conc, lambda e: None)
    driver.senders[4500] = lambda data, addr: None
    driver.feed_batch([(flood, ("192.0.2.9", 4501)), (dpd, src)], 4500)
    assert driver.shed == 0 and driver.datagrams_shared == 2
    assert conc.half_open == 1


def test_what_a_4500_datagram_carries_is_told_by_the_non_esp_marker() -> None:
    """On 4500 the ISAKMP message follows the non-ESP marker; without it the datagram is ESP (or junk) and is not
    IKE's, neither for the priority check nor for the core; a NAT keepalive is neither. On 500 there is no marker."""
    net, dpd, remote = _established()
    conc = net.concentrator.endpoint
    assert conc.of_known_sa(dpd, 4500)
    assert not conc.of_known_sa(dpd[len(NON_ESP_MARKER):], 4500), "an ISAKMP message without the marker is ESP"
    assert conc.of_known_sa(dpd[len(NON_ESP_MARKER):], 500)
    assert not conc.of_known_sa(dpd, 500), "on 500 the marker would be the cookies"
    conc.receive_datagram(dpd[len(NON_ESP_MARKER):], remote, 4500, net.now)
    conc.receive_datagram(b"\xff", remote, 4500, net.now)  # a NAT keepalive
    assert conc.stats["esp-on-ike-path"] == 1
    assert not conc.datagrams_to_send()
    conc.receive_datagram(dpd, remote, 4500, net.now)
    assert [d.remote for d in conc.datagrams_to_send()] == [remote], "the DPD behind the marker is answered"
