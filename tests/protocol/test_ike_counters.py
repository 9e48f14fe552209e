"""The `stats` IKE counters (natt_daemons.common.ikestats) fed with the real core's events, both sides.

Two IkeEndpoints talk through the simulated PAT; every event each side emits goes to an IkeCounters, as the daemons'
_on_event does. The counts are checked against what happened, not against the counters' own arithmetic.
"""

from __future__ import annotations

import ipaddress

import pytest

from natt.ike.config import Phase1Proposal, Phase2Proposal
from natt.ike.events import Cause, IkeSaDown
from natt_daemons.common.ikestats import IkeCounters, cause_label
from tests.protocol.conftest import CONCENTRATOR, make_policy, make_profile
from tests.protocol.sim import Network, Node, Pat

pytestmark = pytest.mark.protocol


def _net(**policy: object) -> Network:
    return Network(make_policy(**policy), CONCENTRATOR, Pat(ipaddress.IPv4Network("10.10.10.0/24"), "203.0.113.78"))


def _counted(node: Node) -> IkeCounters:
    c = IkeCounters()
    for e in node.events:
        c.note(e)
    return c


def _downs(node: Node) -> int:
    return len(node.of(IkeSaDown))


def test_setups_failures_and_ends_by_cause() -> None:
    net = _net()
    good = net.add_client("client1", "10.10.10.2")
    bad = net.add_client("client2", "10.10.10.3")
    net.connect("client1", make_profile("vpnclient1"))
    net.pump()
    net.connect("client2", make_profile("vpnclient2", password="wrong"))
    net.pump()
    conc = net.concentrator
    c = _counted(conc)
    assert c.setups == 1, "one login completed phase 1 and XAUTH"
    assert c.failures == {cause_label(Cause.XAUTH_FAILED): 1}, c.failures
    assert c.ends == {}
    assert c.child_sas == 2 and c.rekeys_phase2 == 0, "the seed's two Quick Modes"
    assert c.natt_negotiated == 2, "both clients are behind the PAT"
    assert c.port_floats == 2 and c.nat_rebinds == 0, "each floated to 4500 once"
    assert _counted(bad).failures == {cause_label(Cause.XAUTH_FAILED): 1}
    assert _counted(good).setups == 1

    sa_id = next(iter(conc.endpoint.sas))
    conc.endpoint.delete_sa(sa_id, net.now, "logged out by the administrator", Cause.ADMIN, tell=True)
    net.pump()
    c, g = _counted(conc), _counted(good)
    assert c.ends == {cause_label(Cause.ADMIN): 1}
    assert g.ends == {cause_label(Cause.PEER_DELETED): 1}
    for node in (conc, good, bad):
        n = _counted(node)
        assert sum(n.failures.values()) + sum(n.ends.values()) == _downs(node), "every IKE SA's end counted once"


def test_keepalives_dpd_and_retransmissions() -> None:
    net = _net()
    client = net.add_client("client1", "10.10.10.2")
    net.connect("client1", make_profile("vpnclient1"))
    net.pump()
    net.advance(40.0)
    c, k = _counted(net.concentrator), _counted(client)
    assert k.keepalives_sent >= 4 and c.keepalives_received == k.keepalives_sent, "every 9 s, none lost in memory"
    assert c.dpd["requests_sent"] + k.dpd["requests_sent"] >= 1
    assert c.dpd["acks_received"] == k.dpd["acks_sent"] and k.dpd["acks_received"] == c.dpd["acks_sent"]
    assert c.dpd_timeouts == 0 and k.retransmissions == 0
    assert c.messages_received == k.messages_sent and k.messages_received == c.messages_sent

    asked = c.dpd["requests_sent"]
    net.clients.pop("client1")  # the client vanishes without a word
    net.advance(90.0)
    c = _counted(net.concentrator)
    assert c.dpd_timeouts == 1 and c.ends == {cause_label(Cause.DPD_TIMEOUT): 1}
    assert c.dpd["requests_sent"] >= asked + 2, "R-U-THERE asked again before giving up"
    assert c.ike()["dpd"]["timeouts"] == 1


def test_a_lost_message_counts_one_retransmission() -> None:
    net = _net()
    client = net.add_client("client1", "10.10.10.2")
    client.endpoint.connect(make_profile("vpnclient1"), net.now)
    client.endpoint.datagrams_to_send()  # the first message is lost on the way
    net.advance(3.0)
    net.pump()
    k = _counted(client)
    assert k.retransmissions == 1 and k.setups == 1
    assert k.messages_sent == _counted(net.concentrator).messages_received + 1, "the lost one was sent, not received"


def test_rekeys_of_both_phases() -> None:
    net = _net(phase1_lifetime=120)
    client = net.add_client("client1", "10.10.10.2")
    net.connect("client1", make_profile("vpnclient1", phase1=(Phase1Proposal(lifetime=120),),
                                        phase2=(Phase2Proposal(lifetime=60),)))
    net.pump()
    net.advance(130.0)
    c, k = _counted(net.concentrator), _counted(client)
    assert k.rekeys_phase1 >= 1 and c.rekeys_phase1 == k.rekeys_phase1, "re-authenticated before phase 1 expired"
    assert k.rekeys_phase2 >= 2 and c.rekeys_phase2 == k.rekeys_phase2, "both pairs rekeyed, seen alike"
    assert c.setups == 1 + c.rekeys_phase1, "each re-authentication is a phase 1 set-up of its own"
    assert c.failures == {} and k.failures == {}
    # The client ends its old IKE SA itself (replaced); the concentrator sees it deleted by the client.
    assert k.ends == {cause_label(Cause.REKEYED): k.rekeys_phase1}
    assert c.ends == {cause_label(Cause.PEER_DELETED): c.rekeys_phase1}
    assert c.ike()["rekeys"] == {"phase1": c.rekeys_phase1, "phase2": c.rekeys_phase2}
