"""Bounded half-open state: first messages past the global or per-source cap are dropped before any DH work, and
a phase 1 reply to an unproven source is resent a bounded number of times (issue: hold under attack)."""

from __future__ import annotations

import pytest

from natt.ike.endpoint import HALF_OPEN_RETRANSMITS, IkeEndpoint
from natt.ike.events import ChildSaUp, MessageSent
from tests.protocol.conftest import make_policy, make_profile
from tests.protocol.sim import Network

pytestmark = pytest.mark.protocol


def _first_messages(n: int, source: str) -> list[bytes]:
    out = []
    for _ in range(n):
        ep = IkeEndpoint(source)
        ep.connect(make_profile(), 0.0)
        (d,) = ep.datagrams_to_send()
        out.append(d.data)
    return out


def test_per_source_and_global_caps_drop_before_any_work() -> None:
    net = Network(make_policy(half_open_per_source=10, half_open_limit=25))
    conc = net.concentrator.endpoint
    flood = _first_messages(40, "203.0.113.66")
    for i, data in enumerate(flood):
        conc.receive_datagram(data, ("203.0.113.66", 10000 + i), 500, net.now)
    assert conc.half_open == 10 and conc.stats["half-open-per-source-limit"] == 30
    sent = len(conc.datagrams_to_send())
    assert sent == 10, "only admitted first messages were answered"
    for k in range(4):
        for i, data in enumerate(_first_messages(5, f"203.0.113.{100 + k}")):
            conc.receive_datagram(data, (f"203.0.113.{100 + k}", 20000 + i), 500, net.now)
    assert conc.half_open == 25 and conc.stats["half-open-limit"] == 5
    # Half-open SAs expire (O(log n) each, through the timer heap); then a real client gets through.
    net.advance(40.0, step=5.0)
    assert conc.half_open == 0
    net.add_client("client1", "203.0.113.20")
    net.connect("client1", make_profile())
    net.pump()
    assert net.clients["client1"].of(ChildSaUp)


def test_phase1_reply_to_an_unproven_source_is_resent_a_bounded_number_of_times() -> None:
    net = Network(make_policy())
    conc = net.concentrator.endpoint
    (data,) = _first_messages(1, "203.0.113.66")
    conc.receive_datagram(data, ("203.0.113.66", 500), 500, net.now)
    conc.datagrams_to_send()
    net.advance(60.0)
    resent = [e for e in net.concentrator.of(MessageSent) if e.retransmit]
    assert len(resent) == HALF_OPEN_RETRANSMITS
    assert conc.half_open == 0
