"""Sessions that last: phase 2 rekey from either side, make-before-break, lifetimes negotiated and capped, phase 1
re-authentication that keeps the session, and the simultaneous-login policy (issue: sessions that last).

Short lifetimes and a fake clock; traffic both ways at every step through each side's SA table (the daemons'
routing), so a lost or misrouted packet, a replay drop or an ICV failure at a switch-over shows.
"""

from __future__ import annotations

import ipaddress

import pytest

from natt.ike import quick
from natt.ike.config import GroupPolicy, Phase1Proposal, Phase2Proposal, Timers
from natt.ike.events import (
    Cause,
    ChildSaDown,
    ChildSaUp,
    IkeSaDown,
    MessageSent,
    ModeConfigDone,
    Reauthenticated,
    XauthResult,
)
from natt.wire.constants import ExchangeType
from tests import hostile
from tests.protocol.conftest import CONCENTRATOR, PSK, make_policy, make_profile
from tests.protocol.sim import Network, Node, Pat, ipv4_packet

pytestmark = pytest.mark.protocol

SERVER = "192.168.2.10"


def _net(**policy: object) -> Network:
    return Network(make_policy(**policy), CONCENTRATOR, Pat(ipaddress.IPv4Network("10.10.10.0/24"), "203.0.113.78"))


def _client(net: Network, name: str = "client1", user: str = "vpnclient1", address: str = "10.10.10.2",
            **profile: object) -> Node:
    node = net.add_client(name, address)
    net.connect(name, make_profile(user, **profile))
    net.pump()
    assert node.of(ChildSaUp), "connected"
    return node


class Traffic:
    """One packet each way per step; counts what was sent and what arrived."""

    def __init__(self, net: Network, node: Node) -> None:
        self.net, self.node = net, node
        self.sent = self.lost = 0

    def step(self) -> None:
        net, node = self.net, self.node
        address = node.of(ModeConfigDone)[-1].address
        for src, dst, sender, receiver in ((address, SERVER, node, net.concentrator),
                                           (SERVER, address, net.concentrator, node)):
            before = len(receiver.delivered)
            self.sent += 1
            if net.route_esp(sender, ipv4_packet(src, dst, b"x" * 40)) is None or \
                    len(receiver.delivered) != before + 1:
                self.lost += 1

    def run(self, seconds: float, step: float = 0.5) -> None:
        for _ in range(int(seconds / step)):
            self.net.advance(step, step=step)
            self.step()


def _live_children(node: Node) -> list[ChildSaUp]:
    return [node.ups[spi] for spi in node.table.inbound]


def _clean(node: Node) -> None:
    assert not [e for e in node.esp_errors if e in ("replay", "auth_failed", "selector-mismatch")], node.esp_errors


def test_the_concentrator_rekeys_for_a_client_that_never_does() -> None:
    """vpnc never rekeys: the concentrator starts the Quick Modes (soft lifetime), the new pairs carry the traffic
    before the old ones go (deleted by the concentrator after the grace period), and nothing is lost."""
    net = _net(phase2_lifetime=60)
    client = _client(net, timers=Timers(rekey_margin=0.0, dpd_interval=30.0), phase2=(Phase2Proposal(lifetime=60),))
    traffic = Traffic(net, client)
    traffic.run(130)
    conc = net.concentrator
    rekeys = [u for u in conc.of(ChildSaUp) if u.rekey_of is not None]
    assert len(rekeys) >= 4, "two pairs, rekeyed at least twice in 130 s of 60 s lifetimes"
    assert not [u for u in client.of(ChildSaUp) if u.rekey_of is not None], "the client started none"
    downs = [d for d in conc.of(ChildSaDown)]
    assert downs and {d.cause for d in downs} == {Cause.REKEYED}, "old pairs go by rekey, none by expiry"
    assert traffic.lost == 0, f"{traffic.lost} of {traffic.sent} packets lost across the rekeys"
    _clean(client), _clean(conc)
    assert len(_live_children(client)) <= 4 and len(_live_children(conc)) <= 4
    assert len({u.session_id for u in conc.of(ChildSaUp)}) == 1


def test_the_client_rekeys_first_and_the_concentrator_makes_no_duplicate() -> None:
    net = _net(phase2_lifetime=60)
    client = _client(net, phase2=(Phase2Proposal(lifetime=60),))
    traffic = Traffic(net, client)
    traffic.run(70)
    conc = net.concentrator
    assert len([u for u in client.of(ChildSaUp) if u.rekey_of is not None]) == 2
    assert len(conc.of(ChildSaUp)) == 4, "two first pairs and their two replacements, no third"
    assert not [u for u in conc.of(ChildSaUp) if u.rekey_of is not None], "the concentrator started no rekey"
    assert conc.endpoint.stats["rekey-collision-yielded"] == 0
    assert {d.cause for d in client.of(ChildSaDown)} == {Cause.REKEYED}, "the rekeyer deleted the old pairs"
    assert traffic.lost == 0
    _clean(client), _clean(conc)


def test_rekey_collision_makes_exactly_one_new_pair() -> None:
    """Both sides start the rekey of the same pairs at the same moment: the IKE initiator's exchanges go on, the
    concentrator's stop at their reply (no HASH(3)), so each side ends with one new pair per tunnel."""
    net = _net()
    client = _client(net)
    traffic = Traffic(net, client)
    (conc_sa,) = net.concentrator.endpoint.sas.values()
    (client_sa,) = client.endpoint.sas.values()
    assert quick.rekey(net.concentrator.endpoint, conc_sa) == 2
    assert quick.rekey(client.endpoint, client_sa) == 2
    net.pump()
    traffic.step()
    conc = net.concentrator
    assert len(client.of(ChildSaUp)) == 4 and len(conc.of(ChildSaUp)) == 4, "two first pairs, two new ones"
    assert conc.endpoint.stats["rekey-collision-yielded"] == 2
    traffic.run(80, step=1.0)  # the abandoned exchanges time out quietly; the IKE SA stays
    assert conc_sa.id in conc.endpoint.sas and client_sa.id in client.endpoint.sas
    assert not [d for d in client.of(IkeSaDown)]
    assert traffic.lost == 0
    _clean(client), _clean(conc)


def test_a_lost_quick_mode_message_during_a_rekey_is_retransmitted() -> None:
    net = _net(phase2_lifetime=60)
    client = _client(net, timers=Timers(rekey_margin=0.0, dpd_interval=30.0), phase2=(Phase2Proposal(lifetime=60),))
    holder = hostile.Holder(client.endpoint)
    dropped: list[int] = []

    def drop_first_reply(sa, header) -> bool:  # the client's first Quick Mode message 2, lost on the way
        if header.exchange == ExchangeType.QUICK_MODE and not dropped:
            dropped.append(header.message_id)
            return True
        return False

    holder.rule = drop_first_reply
    traffic = Traffic(net, client)
    traffic.run(62)
    holder.held.clear()
    conc = net.concentrator
    assert dropped, "a reply was lost"
    retransmitted = [e for e in conc.of(MessageSent) if e.retransmit and e.message_id == dropped[0]]
    assert retransmitted, "the concentrator sent its message 1 again"
    assert len([u for u in conc.of(ChildSaUp) if u.rekey_of is not None]) == 2
    assert traffic.lost == 0
    _clean(client), _clean(conc)


def test_lifetimes_are_capped_and_both_sides_use_the_cap() -> None:
    """vpnc proposes 2147483 s for both phases: the concentrator caps them at its own (86400 s / 28800 s, the seed's)
    and says so (RESPONDER-LIFETIME); the client then uses the cap too."""
    net = _net()
    huge1 = Phase1Proposal(lifetime=2147483)
    client = _client(net, phase1=(huge1,), phase2=(Phase2Proposal(lifetime=2147483),))
    (conc_sa,) = net.concentrator.endpoint.sas.values()
    (client_sa,) = client.endpoint.sas.values()
    assert conc_sa.proposal is not None and conc_sa.proposal.lifetime == 86400
    assert client_sa.expires_at is not None and client_sa.established_at is not None
    assert client_sa.expires_at - client_sa.established_at == 86400
    assert {u.lifetime for u in client.of(ChildSaUp)} == {28800}
    assert {u.lifetime for u in net.concentrator.of(ChildSaUp)} == {28800}


def test_reauthentication_keeps_the_session_its_address_and_its_traffic() -> None:
    """Phase 1 lifetime 120 s: before each expiry the client makes a new phase 1 (XAUTH again, Mode Config gives the
    same address), its own Quick Modes, then deletes the old IKE SA. One session throughout, no packet lost."""
    net = _net(phase1_lifetime=120)
    client = _client(net, phase1=(Phase1Proposal(lifetime=120),))
    traffic = Traffic(net, client)
    first = client.of(ModeConfigDone)[0].address
    traffic.run(400, step=1.0)
    conc = net.concentrator
    reauths = client.of(Reauthenticated)
    assert len(reauths) >= 3, "re-authenticated before each of three expiries"
    assert {e.address for e in client.of(ModeConfigDone)} == {first}
    assert {e.address for e in conc.of(ModeConfigDone)} == {first}
    assert conc.endpoint.total_sessions == 1, "one session, not one per re-authentication"
    assert len({u.session_id for u in conc.of(ChildSaUp)}) == 1
    assert not [d for d in client.of(IkeSaDown) if d.cause is not Cause.REKEYED], "no IKE SA ended otherwise"
    assert len(client.endpoint.sas) == 1 and len(conc.endpoint.sas) == 1
    assert conc.endpoint.stats["delete-unknown-spi"] == 0, "the old pairs' DELETEs found them (on the new SA)"
    assert len(_live_children(conc)) == 2 and len(_live_children(client)) == 2, "no pair left behind"
    assert traffic.lost == 0, f"{traffic.lost} of {traffic.sent} lost"
    _clean(client), _clean(conc)
    from natt.events.ikelog import IkeLogger

    log = IkeLogger("client")
    for e in client.events:
        log.record(e, 1_000_000.0, None)
    texts = [e.text for e in log.log]
    assert sum("re-authenticated" in t for t in texts) == len(reauths)
    assert not [t for t in texts if t.startswith("Connection terminated")], "the user saw no disconnection"
    assert sum(t.startswith("Connection established") for t in texts) == 1


@pytest.mark.parametrize("action", ["refuse", "replace"])
def test_the_same_user_twice(action: str) -> None:
    """One user, two clients, a limit of one session: the second login is refused with a reason its user sees, or
    it replaces the first, which is told why before its DELETE. Never a silent kick, one owner per address."""
    group = GroupPolicy("ciscovpn", PSK, max_logins=1, login_limit_action=action)
    net = _net(groups={"ciscovpn": group})
    first = _client(net)
    second = net.add_client("client2", "10.10.10.3")
    net.connect("client2", make_profile("vpnclient1"))
    net.pump()
    if action == "refuse":
        assert not second.of(ChildSaUp)
        (result,) = second.of(XauthResult)
        assert not result.ok and "already has 1 session" in result.reason
        assert [d.cause for d in second.of(IkeSaDown)] == [Cause.XAUTH_FAILED]
        Traffic(net, first).step()
        assert first.endpoint.sas
    else:
        assert second.of(ChildSaUp)
        (down,) = first.of(IkeSaDown)
        assert down.cause is Cause.PEER_DELETED and "replaced" in down.reason and "10.10.10" not in down.reason
        assert not first.endpoint.sas
        traffic = Traffic(net, second)
        traffic.step()
        assert traffic.lost == 0
    assert len(net.concentrator.endpoint.sas) == 1


def test_packets_in_flight_on_the_old_pair_still_arrive_after_the_switch() -> None:
    """Make-before-break: a packet the concentrator encrypted on the old pair just before the client's rekey
    completed, and that arrives just after, is still taken (the old inbound SA lives for the grace period)."""
    from tests.protocol.sim import UDP, Packet

    net = _net(phase2_lifetime=60)
    client = _client(net, phase2=(Phase2Proposal(lifetime=60),))
    address = client.of(ModeConfigDone)[-1].address
    conc = net.concentrator
    in_flight: list[tuple[object, bytes]] = []
    for _ in range(120):  # until the client's rekey is under way, keep one encrypted packet back each step
        out = conc.table.route(ipv4_packet(SERVER, address, b"late"))
        assert out is not None
        in_flight = [(out, out.esp.encrypt(ipv4_packet(SERVER, address, b"late")))]
        net.advance(0.5, step=0.5)
        if [u for u in client.of(ChildSaUp) if u.rekey_of is not None and u.remote_selector == "0.0.0.0/0"]:
            break
    assert [u for u in client.of(ChildSaUp) if u.rekey_of is not None], "the client rekeyed the pair"
    (old_out, esp), = in_flight
    assert old_out is not conc.table.route(ipv4_packet(SERVER, address, b"new")), "the new pair routes now"
    net.advance(1.0)  # queued somewhere on the way for a second
    before = len(client.delivered)
    net.send(Packet(UDP, (CONCENTRATOR, old_out.sock), old_out.remote, esp))  # type: ignore[attr-defined]
    assert len(client.delivered) == before + 1, client.esp_errors
    net.advance(12.0)  # after the grace period (or their expiry, if sooner) the old pairs are gone on both sides
    assert {d.cause for d in conc.of(ChildSaDown)} <= {Cause.PEER_DELETED, Cause.LIFETIME_EXPIRED}
    assert len(_live_children(client)) == 2 and len(_live_children(conc)) == 2


def test_a_phase_1_started_on_4500_is_answered_on_4500() -> None:
    """vpnc and charon re-authenticate from their floated socket: message 1 arrives on 4500 behind the non-ESP
    marker. The answer must leave from 4500 with the marker too, or their socket (bound to 4500) never sees it."""
    from natt.ike.endpoint import IkeEndpoint
    from natt.wire.constants import NON_ESP_MARKER

    net = _net()
    conc = net.concentrator.endpoint
    initiator = IkeEndpoint("203.0.113.20")
    initiator.connect(make_profile(), net.now)
    (first,) = initiator.datagrams_to_send()
    conc.receive_datagram(NON_ESP_MARKER + first.data, ("203.0.113.20", 4500), 4500, net.now)
    (reply,) = conc.datagrams_to_send()
    assert reply.local_port == 4500 and reply.remote == ("203.0.113.20", 4500)
    assert reply.data.startswith(NON_ESP_MARKER)
    initiator.receive_datagram(reply.data, (CONCENTRATOR, 4500), 4500, net.now)
    assert [d for d in initiator.datagrams_to_send()], "the initiator read the answer and went on"


def test_a_vpnc_style_reauthentication_keeps_the_tunnels() -> None:
    """vpnc re-authenticates at 80 % of its phase 1 (a new phase 1 and XAUTH from its 4500 socket) but then does
    no Mode Config and no Quick Mode: it goes on with the pairs it has, and deletes its old phase 1 naming the NEW
    one's cookies (Debian's vpnc before upstream ef04936). The concentrator takes the session over at XAUTH (the
    pairs move to the new SA, the phase 1 lifetime notify vpnc waits for is sent), reads that DELETE as meant for
    the old SA, and the tunnel stays up."""
    from natt.ike.events import ChildSaMoved, NotifyReceived
    from natt.wire.constants import NotifyType, ProtocolId
    from natt.wire.payloads import Delete

    net = _net(phase1_lifetime=90)
    client = _client(net, timers=Timers(rekey_margin=0.0, dpd_interval=30.0), phase1=(Phase1Proposal(lifetime=90),))
    traffic = Traffic(net, client)
    traffic.run(10)
    conc = net.concentrator
    (old,) = conc.endpoint.sas.values()
    (old_client,) = client.endpoint.sas.values()
    holder = hostile.Holder(client.endpoint)
    holder.rule = hostile.is_modecfg_request  # vpnc asks for nothing after its re-authentication
    new_client_id = client.endpoint.reauthenticate(old_client.id, net.now)
    assert new_client_id is not None
    net.pump()
    new = next(sa for sa in conc.endpoint.sas.values() if sa is not old)
    assert new.session_id == old.session_id and new.assigned_address == old.assigned_address
    assert not old.children and len(new.children) == 2, "the pairs moved to the new SA"
    assert {e.inbound_spi for e in conc.of(ChildSaMoved)} == set(new.children)
    lifetimes = [n for n in client.of(NotifyReceived) if n.notify_type == NotifyType.RESPONDER_LIFETIME
                 and n.sa_id == new_client_id]
    assert lifetimes, "the phase 1 lifetime notify vpnc waits for"
    traffic.run(5)
    # vpnc's DELETE of its old phase 1, naming the new SA's cookies, sent on the new SA.
    new_client = client.endpoint.sas[new_client_id]
    client.endpoint.send_hashed(new_client, ExchangeType.INFORMATIONAL, client.endpoint.new_message_id(new_client),
                                [Delete(ProtocolId.ISAKMP, [new_client.icookie + new_client.rcookie], 16)])
    net.pump()
    assert old.id not in conc.endpoint.sas and new.id in conc.endpoint.sas
    assert conc.endpoint.stats["delete-names-successor"] == 1
    assert not [d for d in conc.of(ChildSaDown)], "no pair was deleted"
    traffic.run(20)
    assert traffic.lost == 0, f"{traffic.lost} of {traffic.sent} lost"
    assert conc.endpoint.total_sessions == 1
    _clean(client), _clean(conc)


def test_both_logs_say_who_rekeyed() -> None:
    from natt.events.ikelog import IkeLogger

    net = _net(phase2_lifetime=60)
    client = _client(net, timers=Timers(rekey_margin=0.0, dpd_interval=30.0), phase2=(Phase2Proposal(lifetime=60),))
    Traffic(net, client).run(62)
    logs = {}
    for role, node in (("concentrator", net.concentrator), ("client", client)):
        log = IkeLogger(role)
        for e in node.events:
            log.record(e, 1_000_000.0, node.endpoint.sas.get(e.sa_id))
        logs[role] = [e.text for e in log.log if "IPSec SA rekeyed" in e.text]
    assert len(logs["concentrator"]) == 2 and all("(started here)" in t for t in logs["concentrator"])
    assert len(logs["client"]) == 2 and all("(started by the peer)" in t for t in logs["client"])


def test_old_pairs_are_deleted_on_the_successor_even_when_the_gateway_ends_the_old_sa_first() -> None:
    """charon deletes a re-authenticated IKE SA itself, before the client's grace period is over: the client then
    still sends its old pairs' DELETEs, on the new IKE SA, so no leftover pair stays at the gateway."""
    net = _net(phase1_lifetime=120)
    client = _client(net, phase1=(Phase1Proposal(lifetime=120),))
    traffic = Traffic(net, client)
    conc = net.concentrator
    (old_conc,) = conc.endpoint.sas.values()
    for _ in range(120):
        traffic.run(1.0, step=1.0)
        if client.of(Reauthenticated):
            break
    assert client.of(Reauthenticated) and old_conc.id in conc.endpoint.sas, "within the grace period"
    conc.endpoint.delete_sa(old_conc.id, net.now, "the gateway ends the old IKE SA", Cause.REKEYED)
    net.pump()
    traffic.run(15.0)
    assert len(_live_children(conc)) == 2 and len(_live_children(client)) == 2
    assert conc.endpoint.stats["delete-unknown-spi"] == 0
    assert traffic.lost == 0
