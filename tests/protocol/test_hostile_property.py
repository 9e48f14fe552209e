"""Property: whatever otherwise valid messages a group member sends, in whatever order, with losses, duplicates
and clock jumps, the concentrator never has a child SA for a session without an XAUTH success, nor for an
address it did not assign to that session's user; and the victim's address always routes to the victim.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from natt.ike.events import ChildSaUp, ModeConfigDone, XauthResult
from natt.ike.ikesa import State
from tests import hostile
from tests.protocol.conftest import CONCENTRATOR, make_policy, make_profile
from tests.protocol.sim import UDP, Network, Packet, Pat, ipv4_packet

pytestmark = [pytest.mark.protocol, pytest.mark.slow]

ATTACKER = "10.10.10.66"

moves = st.one_of(
    st.tuples(st.just("flush")),  # everything held, in order (the honest path's step)
    st.tuples(st.just("flush")),
    st.tuples(st.just("release"), st.integers(0, 7)),
    st.tuples(st.just("drop"), st.integers(0, 7)),
    st.tuples(st.just("duplicate"), st.integers(0, 7)),
    st.tuples(st.just("quick"), st.sampled_from(["own", "victim", "free", "outside", "none"]),
              st.sampled_from(["0.0.0.0/0", "self", "192.168.2.0/24"])),
    st.tuples(st.just("modecfg")),
    st.tuples(st.just("advance"), st.integers(1, 4)),
    st.tuples(st.just("connect"), st.booleans()),
)


def _check(net: Network, victim_address: str) -> None:
    conc = net.concentrator
    xauth_ok: set[int] = set()
    assigned: dict[int, str] = {}
    for e in conc.events:
        if isinstance(e, XauthResult) and e.ok:
            xauth_ok.add(e.sa_id)
        elif isinstance(e, ModeConfigDone):
            assigned[e.sa_id] = e.address
        elif isinstance(e, ChildSaUp):
            assert e.sa_id in xauth_ok, f"child SA 0x{e.inbound_spi:08x} for a session without XAUTH success"
            assert e.sa_id in assigned, "child SA before Mode Config gave an address"
            assert e.remote_selector == f"{assigned[e.sa_id]}/32", (
                f"child SA for {e.remote_selector}, but the session was given {assigned[e.sa_id]}")
    victim_sa = next(sa for sa in conc.endpoint.sas.values() if sa.assigned_address == victim_address)
    out = conc.table.route(ipv4_packet("192.168.2.10", victim_address, b"x"))
    assert out is not None and out.sa_id == victim_sa.id, "the victim's address routes to the victim"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans(), st.lists(moves, min_size=1, max_size=60))
def test_no_child_sa_without_xauth_and_the_assigned_address(right_password: bool, script: list[tuple]) -> None:
    net = Network(make_policy(), CONCENTRATOR, Pat(ipaddress.IPv4Network("10.10.10.0/24"), "203.0.113.78"))
    net.add_client("victim", "10.10.10.3")
    net.connect("victim", make_profile("vpnclient2"))
    net.pump()
    victim_address = net.clients["victim"].of(ModeConfigDone)[-1].address
    attacker = net.add_client("attacker", ATTACKER)
    holder = hostile.Holder(attacker.endpoint)
    holder.rule = lambda sa, h: True  # every attacker datagram waits for the script to move it
    net.connect("attacker", make_profile("vpnclient1", password="secret1" if right_password else "wrong"))
    net.pump()

    def deliver(index: int, keep: bool) -> None:
        if not holder.held:
            return
        d = holder.held[index % len(holder.held)]
        if not keep:
            holder.held.remove(d)
        net.send(Packet(UDP, (ATTACKER, d.local_port), d.remote, d.data))

    for move in script:
        sa = next(iter(attacker.endpoint.sas.values()), None)
        if move[0] == "flush":
            while holder.held:
                deliver(0, keep=False)
        elif move[0] == "release":
            deliver(move[1], keep=False)
        elif move[0] == "duplicate":
            deliver(move[1], keep=True)
        elif move[0] == "drop" and holder.held:
            holder.held.pop(move[1] % len(holder.held))
        elif move[0] == "quick" and sa is not None and sa.p1_last_block:
            claim = {"own": sa.assigned_address, "victim": victim_address, "free": "10.40.1.200",
                     "outside": "172.31.0.9", "none": None}[move[1]]
            hostile.quick_mode(attacker.endpoint, sa, move[2], claim=claim)
        elif move[0] == "modecfg" and sa is not None and sa.p1_last_block and sa.state is not State.ESTABLISHED:
            hostile.mode_config_request(attacker.endpoint, sa)
        elif move[0] == "advance":
            net.advance(float(move[1]))
        elif move[0] == "connect" and sa is None:
            net.connect("attacker", make_profile("vpnclient1", password="secret1" if move[1] else "wrong"))
        net.pump()
        _check(net, victim_address)
    # What the run reached (pytest --hypothesis-show-statistics): the property is only worth its deep states.
    reached = {sa.state.value for sa in net.concentrator.endpoint.sas.values() if sa.assigned_address != victim_address}
    event(f"attacker reached: {', '.join(sorted(reached)) or 'nothing'}")
    theirs = [e for e in net.concentrator.of(ChildSaUp) if e.remote_selector != f"{victim_address}/32"]
    event(f"attacker child SAs: {len(theirs)}")
