"""Call admission under a flood of first messages (natt/ike/admission.py): bounded DH work a second, a client
that starts during the flood still gets in, the table never grows past its cap, and the flood is told in one
Overload event an interval, not one per packet (issue: hold under attack and faults)."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from natt.ike.admission import AdmissionSettings
from natt.ike.events import ChildSaUp, Overload
from tests.protocol.conftest import make_policy, make_profile
from tests.protocol.sim import Network
from tests.protocol.test_half_open import _first_messages

pytestmark = pytest.mark.protocol

SOURCES = [f"192.0.2.{i}" for i in range(1, 201)]  # 200 flooding addresses


def _flood(net: Network, template: bytes, seconds: float, per_tick: int, tick: float = 0.01,
           between: Callable[[], None] | None = None) -> int:
    """`per_tick` first messages (fresh cookies, round-robin over SOURCES and two ports each) every `tick` of
    simulated time; timers fire on the way. Returns how many were sent."""
    conc = net.concentrator.endpoint
    sent = 0
    end = net.now + seconds
    data = bytearray(template)
    while net.now < end:
        for _ in range(per_tick):
            data[0:8] = os.urandom(8)
            src = SOURCES[sent % len(SOURCES)]
            conc.receive_datagram(bytes(data), (src, 40000 + (sent // len(SOURCES)) % 2), 500, net.now)
            sent += 1
        if between is not None:
            between()  # the honest peers' turn, amid the flood (their datagrams pass through the sim)
        conc.datagrams_to_send()  # the flood's answers go nowhere (spoofed or ignored)
        net.now += tick
        t = conc.get_timer()
        if t is not None and t <= net.now:
            conc.handle_timer(net.now)
    return sent


def test_flood_is_admitted_at_a_bounded_rate_and_a_client_still_connects() -> None:
    admission = AdmissionSettings(rate=40, burst=20, per_source_rate=2, per_source_burst=4, newcomer_rate=10)
    net = Network(make_policy(half_open_limit=150, half_open_per_source=50, admission=admission))
    conc = net.concentrator.endpoint
    (template,) = _first_messages(1, SOURCES[0])
    sent = _flood(net, template, 3.0, per_tick=20)  # 2,000 first messages a second from 200 sources
    admitted = sent - sum(conc.stats[k] for k in ("admission-rate", "admission-source-rate",
                                                  "half-open-per-source-limit", "half-open-limit"))
    # The common bucket (40/s, bursts of 20) plus the newcomers' reserve bound the DH work whatever the sources.
    assert admitted <= 20 + 40 * 3 + 10 * 3 + 3, admitted
    assert conc.half_open <= 150
    # A client starts in the middle of the flood: it is a newcomer (no half-open SA from its address), so it gets
    # in at once although the common budget is spent; it is not evicted before it finishes (one round trip).
    net.add_client("client1", "203.0.113.20")
    net.connect("client1", make_profile())
    _flood(net, template, 1.0, per_tick=20, between=lambda: net.pump())
    assert net.clients["client1"].of(ChildSaUp), "the client did not get through the flood"
    assert conc.admission._common is not None and conc.admission._common.tokens < 1.0, "the budget was not spent"


def test_a_full_table_gives_way_to_newcomers_oldest_first() -> None:
    admission = AdmissionSettings(rate=1000, burst=500, per_source_rate=1000, per_source_burst=500,
                                  newcomer_rate=100, evict_after=2.0)
    net = Network(make_policy(half_open_limit=100, half_open_per_source=100, admission=admission))
    conc = net.concentrator.endpoint
    (template,) = _first_messages(1, SOURCES[0])
    _flood(net, template, 1.0, per_tick=5)  # 500 offered in 1 s: the table fills, none is 2 s old yet
    assert conc.half_open == 100 and conc.stats["half-open-evicted"] == 0 and conc.stats["half-open-limit"] > 0
    _flood(net, template, 3.0, per_tick=5)
    assert conc.half_open == 100
    assert conc.stats["half-open-evicted"] > 0
    # Whoever is in the table now arrived within the last evict_after seconds plus one tick: the oldest went first.
    ages = [net.now - sa.created_at for sa in conc.sas.values() if sa.established_at is None]
    assert max(ages) <= 2.0 + 0.05, max(ages)


def test_the_flood_is_told_once_an_interval_with_its_figures() -> None:
    admission = AdmissionSettings(rate=20, burst=10, per_source_rate=1, per_source_burst=2, newcomer_rate=5)
    net = Network(make_policy(half_open_limit=100, half_open_per_source=5, admission=admission))
    conc = net.concentrator.endpoint
    (template,) = _first_messages(1, SOURCES[0])
    sent = _flood(net, template, 25.0, per_tick=10, tick=0.05)  # 200/s for 25 s: 5,000 messages
    net.now += 11
    conc.handle_timer(net.now)
    net.concentrator.take_events()
    reports = net.concentrator.of(Overload)
    # 25 s of flood and the quiet interval after it: three reports (10 s windows), never one per packet.
    assert 2 <= len(reports) <= 4, [r.seconds for r in reports]
    dropped = sum(c for r in reports for _reason, c in r.dropped)
    assert dropped == sum(conc.stats[k] for k in ("admission-rate", "admission-source-rate",
                                                  "half-open-per-source-limit", "half-open-limit"))
    assert dropped > 0.9 * sent - 20 * 25 - 5 * 25 - 10
    assert all(r.sources <= len(SOURCES) and len(r.top) == 3 for r in reports)
    assert reports[0].top[0][0] in SOURCES
