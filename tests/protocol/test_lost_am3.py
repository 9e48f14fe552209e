"""A lost Aggressive Mode message 3 costs one resend interval, not the connect.

With XAUTH the gateway speaks next, so the client's message 3 had no timer of its own: only the gateway's resends
of message 2 brought it again, and the concentrator sends those to an unproven address five times at most. On a
lossy link (40 %) message 3 and every answer to those resends were lost in 3 of 20 connects, each costing a
30 s phase 1 timeout and a reconnect (the lossy-link lab test, issue 12). Now the client resends message 3 until
the gateway's XAUTH request comes.
"""

from __future__ import annotations

import pytest

from natt.ike.events import ChildSaUp, IkeSaDown, MessageSent
from natt.wire.constants import NON_ESP_MARKER, ExchangeType
from tests.protocol.conftest import make_policy, make_profile
from tests.protocol.sim import Network, Packet

pytestmark = pytest.mark.protocol

CLIENT = "203.0.113.20"


def _aggressive(p: Packet) -> bytes | None:
    """The ISAKMP bytes of an Aggressive Mode datagram (behind the non-ESP marker on 4500), else None."""
    data = p.data
    if p.dst[1] != 500:
        if not data.startswith(NON_ESP_MARKER):
            return None
        data = data[len(NON_ESP_MARKER):]
    return data if len(data) > 19 and data[18] == ExchangeType.AGGRESSIVE else None


def _connect(lose_own_resends: bool) -> tuple[Network, dict[str, int]]:
    """Connect with the client's first message 3 lost and, with `lose_own_resends`, every resend of message 2 by the
    concentrator too (its answers then come from the client's timer alone)."""
    net = Network(make_policy())
    net.add_client("client1", CLIENT)
    send = net.send
    lost = {"am3": 0, "am2-resends": 0}
    seen_am2 = [0]

    def lossy(p: Packet) -> None:
        data = _aggressive(p)
        if data is not None and p.src[0] == CLIENT and data[19] & 1 and lost["am3"] == 0:  # encrypted: message 3
            lost["am3"] += 1
            return
        if data is not None and p.dst[0] == CLIENT:
            seen_am2[0] += 1
            if seen_am2[0] > 1 and lose_own_resends:
                lost["am2-resends"] += 1
                return
        send(p)

    net.send = lossy  # type: ignore[method-assign]
    net.connect("client1", make_profile())
    net.pump()
    net.advance(20.0, step=0.5)
    assert lost["am3"] == 1
    return net, lost


def test_the_client_resends_a_lost_message_3_itself() -> None:
    net, lost = _connect(lose_own_resends=True)
    client = net.clients["client1"]
    assert lost["am2-resends"] >= 1, "the concentrator resent message 2 and every copy was lost"
    resent = [e for e in client.of(MessageSent) if e.retransmit and e.what == "Aggressive Mode message 3"]
    assert resent, "the client never resent message 3"
    assert {u.remote_selector for u in client.of(ChildSaUp)} == {"198.51.100.50/32", "0.0.0.0/0"}
    assert not client.of(IkeSaDown)


def test_message_3_stops_once_the_xauth_request_comes() -> None:
    """No loss after the first message 3: one resend of it at most, none once the gateway spoke."""
    net, _ = _connect(lose_own_resends=False)
    client = net.clients["client1"]
    resent = [e for e in client.of(MessageSent) if e.retransmit and e.what == "Aggressive Mode message 3"]
    assert len(resent) <= 1, resent
    assert {u.remote_selector for u in client.of(ChildSaUp)} == {"198.51.100.50/32", "0.0.0.0/0"}
    assert not any(0 in sa.pending for sa in client.endpoint.sas.values())
    assert not client.of(IkeSaDown)
