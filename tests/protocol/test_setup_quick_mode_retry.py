"""A set-up Quick Mode whose every message is lost (a lossy link) is started again, so a client that reports
"connected" has all its tunnels; if it never comes, the IKE SA ends and the client reconnects rather than sit in
a black hole (found by the lossy-link lab test)."""

from __future__ import annotations

import pytest

from natt.ike.events import ChildSaUp, IkeSaDown
from natt.ike.quick import SETUP_QUICK_MODE_RETRIES
from natt.wire.constants import ExchangeType
from tests.protocol.conftest import make_policy, make_profile
from tests.protocol.sim import Network, Packet

pytestmark = pytest.mark.protocol


def _lossy(net: Network, lose: list[int]) -> None:
    """Drop the client's Quick Mode messages 1 for 0.0.0.0/0 while `lose[0]` > 0 (counted down per message)."""
    send = net.send

    def send_some(p: Packet) -> None:
        data = p.data[4:] if p.dst[1] == 4500 and p.data[:4] == b"\0\0\0\0" else p.data
        if p.src[0] == "203.0.113.20" and len(data) > 24 and data[18] == ExchangeType.QUICK_MODE and lose[0] > 0:
            mid = int.from_bytes(data[20:24], "big")
            qms = [sa.quick_modes.get(mid) for sa in net.clients["client1"].endpoint.sas.values()]
            if any(q is not None and q.remote_selector == "0.0.0.0/0" for q in qms):
                lose[0] -= 1
                return
        send(p)

    net.send = send_some  # type: ignore[method-assign]


def test_a_lost_set_up_quick_mode_is_started_again() -> None:
    net = Network(make_policy())
    net.add_client("client1", "203.0.113.20")
    lose = [10]  # the first Quick Mode for 0.0.0.0/0 and all its 9 resends
    _lossy(net, lose)
    net.connect("client1", make_profile())
    net.pump()
    assert len(net.clients["client1"].of(ChildSaUp)) == 1, "only the tunnel to the concentrator came"
    net.advance(60.0, step=0.5)
    ups = net.clients["client1"].of(ChildSaUp)
    assert {u.remote_selector for u in ups} == {"198.51.100.50/32", "0.0.0.0/0"}, ups
    assert not net.clients["client1"].of(IkeSaDown)


def test_a_set_up_quick_mode_that_never_comes_ends_the_session() -> None:
    net = Network(make_policy())
    net.add_client("client1", "203.0.113.20")
    _lossy(net, [10_000])
    net.connect("client1", make_profile())
    net.pump()
    net.advance(30.0 * (SETUP_QUICK_MODE_RETRIES + 2), step=0.5)
    downs = net.clients["client1"].of(IkeSaDown)
    assert downs and "not answered" in downs[0].reason, downs
    assert {u.remote_selector for u in net.clients["client1"].of(ChildSaUp)} == {"198.51.100.50/32"}
