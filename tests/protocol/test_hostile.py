"""A hostile member of the group against the concentrator (issue: authentication gates everything).

The attacker holds the group name and PSK, as every user of the seed's group does, and deviates: Quick Mode
before or during XAUTH, Mode Config before XAUTH, Quick Mode without Mode Config or for another user's
address, forged and replayed messages, a plain notify from a new port, a DELETE naming another session's
SPI. Each is refused, counted, changes nothing of the SA it aims at, and an honest second client (the
victim) keeps passing traffic in the same simulation throughout.
"""

from __future__ import annotations

import ipaddress

import pytest

from natt.ike.config import GroupPolicy
from natt.ike.events import (
    Cause,
    ChildSaUp,
    ExchangeFailed,
    IkeSaDown,
    MessageRefused,
    MessageSent,
    ModeConfigDone,
    PortFloated,
    XauthCheck,
    XauthResult,
)
from natt.ike.ikesa import IkeSA, State
from natt.wire.constants import ExchangeType, NotifyType, PayloadType
from tests import hostile
from tests.protocol.conftest import CONCENTRATOR, PSK, make_policy, make_profile
from tests.protocol.sim import UDP, Network, Node, Packet, Pat, ipv4_packet

pytestmark = pytest.mark.protocol

SERVER = "192.168.2.10"
ATTACKER = "10.10.10.66"


@pytest.fixture
def net() -> Network:
    """The seed's PAT, the victim (client2, vpnclient2) connected and passing traffic, an attacker behind the
    same PAT holding the group PSK and vpnclient1's password."""
    n = Network(make_policy(), CONCENTRATOR, Pat(ipaddress.IPv4Network("10.10.10.0/24"), "203.0.113.78"))
    n.add_client("victim", "10.10.10.3")
    n.connect("victim", make_profile("vpnclient2"))
    n.pump()
    n.add_client("attacker", ATTACKER)
    _victim_pings(n)
    return n


def _victim_pings(net: Network) -> None:
    victim = net.clients["victim"]
    address = victim.of(ModeConfigDone)[-1].address
    before_c, before_v = len(net.concentrator.delivered), len(victim.delivered)
    assert net.route_esp(victim, ipv4_packet(address, SERVER, b"ping")) is not None
    assert len(net.concentrator.delivered) == before_c + 1, net.concentrator.esp_errors
    assert net.route_esp(net.concentrator, ipv4_packet(SERVER, address, b"pong")) is not None
    assert len(victim.delivered) == before_v + 1, victim.esp_errors
    assert victim.delivered[-1].endswith(b"pong")


def _conc_sa(net: Network, node: Node) -> IkeSA:
    (sa,) = node.endpoint.sas.values()
    return next(s for s in net.concentrator.endpoint.sas.values() if s.icookie == sa.icookie)


def _snapshot(sa: IkeSA) -> tuple:
    """Everything a received message may change only once it has been authenticated."""
    return (sa.state, sa.p1_iv, sa.p1_last_block, dict(sa.ivs), sa.last_inbound, sa.remote, sa.local, sa.floated,
            {mid: (r.next_at, r.tries_left) for mid, r in sa.pending.items()}, set(sa.children), sa.dpd_outstanding,
            sa.assigned_address, sa.xauth_done, list(sa.seen_mids))


def _conc_children(net: Network) -> list[ChildSaUp]:
    return net.concentrator.of(ChildSaUp)


def _start_attacker(net: Network, *, password: str = "secret1", hold=None) -> tuple[Node, hostile.Holder, IkeSA]:
    attacker = net.clients["attacker"]
    holder = hostile.Holder(attacker.endpoint)
    if hold is not None:
        holder.rule = hold
    net.connect("attacker", make_profile("vpnclient1", password=password))
    net.pump()
    (sa,) = attacker.endpoint.sas.values()
    return attacker, holder, sa


def _refused(net: Network, kind: str) -> int:
    return net.concentrator.endpoint.stats[f"not-allowed:{kind}"]


def test_quick_mode_while_xauth_is_pending_is_refused(net: Network) -> None:
    """RFC-wise the SA is not established before XAUTH succeeds (draft-beaulieu 2): no Quick Mode is taken."""
    attacker, holder, sa = _start_attacker(net, hold=hostile.is_xauth_answer)
    conc_sa = _conc_sa(net, attacker)
    assert conc_sa.state is State.XAUTH and holder.held, "the attacker holds back its XAUTH answer"
    before = _snapshot(conc_sa)
    for _ in range(3):
        hostile.quick_mode(attacker.endpoint, sa, "0.0.0.0/0", claim="10.40.1.77")
        net.pump()
    assert _snapshot(conc_sa) == before, "the refused Quick Modes changed nothing"
    assert _refused(net, "QUICK_MODE") == 3, "refused by the header alone: not even decrypted"
    assert not [c for c in _conc_children(net) if c.sa_id == conc_sa.id]
    refusals = [e for e in net.concentrator.of(MessageRefused) if e.sa_id == conc_sa.id]
    assert refusals and refusals[0].state == "xauth" and refusals[0].exchange == ExchangeType.QUICK_MODE
    _victim_pings(net)


@pytest.mark.parametrize("password", ["secret1", "wrong"])
def test_quick_mode_during_the_credentials_check_is_refused(net: Network, password: str) -> None:
    """The answer is being checked (off the daemon's loop): nothing moves the SA until the verdict."""
    net.concentrator.answer_xauth = False
    attacker, _, sa = _start_attacker(net, password=password)
    conc_sa = _conc_sa(net, attacker)
    assert conc_sa.state is State.XAUTH_CHECKING
    (check,) = [e for e in net.concentrator.of(XauthCheck) if e.sa_id == conc_sa.id]
    assert "password" not in repr(check) or password not in repr(check), "the password stays out of reprs"
    before = _snapshot(conc_sa)
    hostile.quick_mode(attacker.endpoint, sa, "0.0.0.0/0", claim="10.40.1.77")
    hostile.mode_config_request(attacker.endpoint, sa)
    net.pump()
    assert _snapshot(conc_sa) == before
    assert _refused(net, "QUICK_MODE") == 1 and _refused(net, "TRANSACTION") == 1
    sa.state, sa.assigned_address = State.XAUTH, None  # the attacker puts itself back on the honest path
    net.concentrator.endpoint.xauth_verdict(check.ticket, password == "secret1", net.now)
    net.concentrator.answer_xauth = True
    net.pump()
    ups = [c for c in _conc_children(net) if c.sa_id == conc_sa.id]
    if password == "wrong":
        assert not ups
        # Asked again (xauth_max_tries), and the client, out of answers, deleted the SA: never further.
        assert conc_sa.state is State.DELETED
        assert [e.cause for e in net.concentrator.of(IkeSaDown) if e.sa_id == conc_sa.id] == [Cause.PEER_DELETED]
    else:
        # The honest path after the refusals: Mode Config, then its own Quick Mode for its own address.
        assert {u.remote_selector for u in ups} == {f"{conc_sa.assigned_address}/32"}
    _victim_pings(net)


def test_mode_config_before_xauth_is_refused(net: Network) -> None:
    attacker, _, sa = _start_attacker(net, hold=hostile.is_xauth_answer)
    conc_sa = _conc_sa(net, attacker)
    before = _snapshot(conc_sa)
    hostile.mode_config_request(attacker.endpoint, sa)
    net.pump()
    assert _snapshot(conc_sa) == before and conc_sa.assigned_address is None
    assert _refused(net, "CFG_REQUEST") == 1, "decrypted and read (XAUTH replies are allowed now), then refused"
    assert not [e for e in net.concentrator.of(ModeConfigDone) if e.sa_id == conc_sa.id]
    _victim_pings(net)


def test_quick_mode_after_xauth_without_mode_config_is_refused(net: Network) -> None:
    """XAUTH passed, Mode Config skipped, the victim's address claimed: no address was given, so no Quick Mode."""
    victim_address = net.clients["victim"].of(ModeConfigDone)[-1].address
    attacker, _, sa = _start_attacker(net, hold=hostile.is_modecfg_request)
    conc_sa = _conc_sa(net, attacker)
    assert [r.ok for r in net.concentrator.of(XauthResult) if r.sa_id == conc_sa.id] == [True]
    assert conc_sa.state is State.MODECFG and conc_sa.assigned_address is None
    before = _snapshot(conc_sa)
    hostile.quick_mode(attacker.endpoint, sa, "0.0.0.0/0", claim=victim_address)
    net.pump()
    assert _snapshot(conc_sa) == before
    assert _refused(net, "QUICK_MODE") == 1
    assert not [c for c in _conc_children(net) if c.sa_id == conc_sa.id]
    _victim_pings(net)
    # Authenticated but never configured: it does not linger (no address, so no tunnel can come of it).
    net.advance(35.0)
    assert conc_sa.id not in net.concentrator.endpoint.sas
    assert [e.cause for e in net.concentrator.of(IkeSaDown) if e.sa_id == conc_sa.id] == [Cause.HALF_OPEN_TIMEOUT]
    _victim_pings(net)


def test_quick_mode_naming_another_users_address_is_refused(net: Network) -> None:
    """Fully set up with an address of its own, the attacker asks for the victim's: refused with
    INVALID-ID-INFORMATION, and the victim's traffic still goes to the victim."""
    victim_address = net.clients["victim"].of(ModeConfigDone)[-1].address
    attacker, _, sa = _start_attacker(net)
    conc_sa = _conc_sa(net, attacker)
    own = conc_sa.assigned_address
    assert own and own != victim_address
    children_before = set(conc_sa.children)
    hostile.quick_mode(attacker.endpoint, sa, "0.0.0.0/0", claim=victim_address)
    net.pump()
    assert set(conc_sa.children) == children_before
    fails = [e for e in net.concentrator.of(ExchangeFailed) if e.sa_id == conc_sa.id]
    assert fails and fails[-1].cause is Cause.SELECTOR_REFUSED and victim_address in fails[-1].reason
    assert not fails[-1].fatal, "an authenticated user's bad proposal is refused, its session stays"
    told = [e for e in net.concentrator.of(MessageSent) if e.sa_id == conc_sa.id and e.notifies]
    assert told and told[-1].notifies == (NotifyType.INVALID_ID_INFORMATION,)
    assert all(c.remote_selector == f"{own}/32" for c in _conc_children(net) if c.sa_id == conc_sa.id)
    _victim_pings(net)
    assert not [d for d in net.clients["attacker"].delivered if b"pong" in d]


def test_the_data_path_table_refuses_a_second_owner(net: Network) -> None:
    """Defence in depth: even if IKE let a child through for the victim's address, the SA table (the same object
    the daemons' data path uses) refuses to install it and keeps routing to the victim."""
    from dataclasses import replace

    victim_address = net.clients["victim"].of(ModeConfigDone)[-1].address
    attacker, _, _ = _start_attacker(net)
    conc_sa = _conc_sa(net, attacker)
    theirs = next(c for c in _conc_children(net) if c.sa_id == conc_sa.id)
    stolen = replace(theirs, inbound_spi=theirs.inbound_spi ^ 0x1, remote_selector=f"{victim_address}/32")
    from natt.errors import SelectorConflict

    with pytest.raises(SelectorConflict):
        net.concentrator.table.install(stolen, conc_sa.peer, None, follows_ike=True)
    _victim_pings(net)


def test_forged_encrypted_message_changes_nothing(net: Network) -> None:
    """The victim's cookies, the encryption flag and a random body, from the attacker's address: dropped, and the
    victim's IV chain, timers, liveness and address stay as they were (later exchanges still decrypt)."""
    victim = net.clients["victim"]
    conc_sa = _conc_sa(net, victim)
    (victim_sa,) = victim.endpoint.sas.values()
    before = _snapshot(conc_sa)
    for exchange, mid in ((ExchangeType.INFORMATIONAL, 0), (ExchangeType.INFORMATIONAL, 0x11223344),
                          (ExchangeType.QUICK_MODE, 0x55667788), (ExchangeType.TRANSACTION, 0x99AABBCC),
                          (ExchangeType.AGGRESSIVE, 0)):
        data = hostile.framed(victim_sa, hostile.forged(victim_sa, exchange, mid))
        net.send(Packet(UDP, (ATTACKER, 4500), (CONCENTRATOR, 4500), data))
        net.send(Packet(UDP, ("203.0.113.200", 4500), (CONCENTRATOR, 4500), data))
    net.pump()
    assert _snapshot(conc_sa) == before
    # The session still works: a DPD exchange and a new Quick Mode both decrypt and verify.
    net.advance(40.0)
    assert conc_sa.id in net.concentrator.endpoint.sas and conc_sa.dpd_outstanding == 0
    _victim_pings(net)


def test_replayed_phase1_message_after_establishment_is_refused(net: Network) -> None:
    victim = net.clients["victim"]
    conc_sa = _conc_sa(net, victim)
    replay = next(p for p in net.wire if p.src[0] == "203.0.113.78" and p.dst[1] == 4500 and
                  p.data[:4] == b"\x00\x00\x00\x00" and p.data[4 + 18] == ExchangeType.AGGRESSIVE)
    before = _snapshot(conc_sa)
    net.send(Packet(UDP, (ATTACKER, 4500), (CONCENTRATOR, 4500), replay.data))
    net.send(replay)
    net.pump()
    assert _snapshot(conc_sa) == before
    # A copy of a message the SA took is dropped before decryption; one it no longer remembers, by the state table.
    dropped = net.concentrator.endpoint.stats["duplicate-dropped"]
    assert dropped + _refused(net, "PHASE1_OUT_OF_ORDER") == 2, dropped
    _victim_pings(net)


def test_plain_notify_from_a_new_port_moves_nothing(net: Network) -> None:
    victim = net.clients["victim"]
    conc_sa = _conc_sa(net, victim)
    (victim_sa,) = victim.endpoint.sas.values()
    before = _snapshot(conc_sa)
    data = hostile.framed(victim_sa, hostile.plain_notify(victim_sa))
    net.send(Packet(UDP, (conc_sa.remote[0], 31337), (CONCENTRATOR, 4500), data))
    net.pump()
    assert _snapshot(conc_sa) == before
    assert not [e for e in net.concentrator.of(PortFloated) if e.remote_port == 31337]
    _victim_pings(net)


def test_replayed_authenticated_message_moves_nothing(net: Network) -> None:
    """An authenticated message seen before (its M-ID) proves nothing new: replayed from elsewhere, it does not
    move the peer (RFC 3947 7) nor count as a sign of life."""
    victim = net.clients["victim"]
    conc_sa = _conc_sa(net, victim)
    net.advance(35.0)  # the victim's DPD R-U-THERE: an authenticated Informational on the wire
    dpd = [p for p in net.wire if p.dst == (CONCENTRATOR, 4500) and p.src[0] == "203.0.113.78"
           and len(p.data) > 40 and p.data[4 + 18] == ExchangeType.INFORMATIONAL]
    assert dpd
    before_remote, before_seen = conc_sa.remote, conc_sa.last_inbound
    net.now += 5
    net.send(Packet(UDP, ("203.0.113.200", 5555), (CONCENTRATOR, 4500), dpd[-1].data))
    net.pump()
    assert conc_sa.remote == before_remote and conc_sa.last_inbound == before_seen
    _victim_pings(net)


def test_delete_naming_another_sessions_spi_is_refused(net: Network) -> None:
    victim_children = {c.inbound_spi for c in _conc_children(net) if c.sa_id == _conc_sa(net, net.clients["victim"]).id}
    attacker, _, sa = _start_attacker(net)
    for spi in victim_children:
        hostile.delete_spi(attacker.endpoint, sa, spi)
    net.pump()
    victim_sa = _conc_sa(net, net.clients["victim"])
    assert victim_children <= set(victim_sa.children)
    assert net.concentrator.endpoint.stats["delete-unknown-spi"] == len(victim_children)
    assert [e.cause for e in net.concentrator.of(MessageRefused) if e.cause is Cause.UNKNOWN_SPI]
    _victim_pings(net)


def test_nat_mapping_change_is_followed_after_authenticated_esp_and_ike_only(net: Network) -> None:
    """The PAT forgets the victim's mapping and gives it a new port: the concentrator moves its one record of the
    peer on the first authenticated ESP packet (positive control for the cases above), IKE then follows."""
    assert net.pat is not None
    victim = net.clients["victim"]
    conc_sa = _conc_sa(net, victim)
    old = conc_sa.remote
    net.pat.out_map.clear()
    net.pat.in_map.clear()
    net.pat.next_port = 40000
    _victim_pings(net)  # ESP from the new port: authenticated, so followed; the pong goes to the new port
    assert conc_sa.remote == ("203.0.113.78", 40000) != old
    moved = net.concentrator.of(PortFloated)[-1]
    assert moved.by_esp and moved.rebind and moved.remote_port == 40000
    from natt.events.ikelog import IkeLogger

    log = IkeLogger("concentrator")
    for e in net.concentrator.events:
        log.record(e, 1_000_000.0, net.concentrator.endpoint.sas.get(e.sa_id))
    assert any("NAT mapping changed" in e.text and "40000" in e.text and "ESP packet" in e.text for e in log.log)
    net.advance(40.0)  # DPD both ways on the new mapping
    assert conc_sa.id in net.concentrator.endpoint.sas
    (victim_sa,) = victim.endpoint.sas.values()
    assert victim_sa.remote == (CONCENTRATOR, 4500), "the initiator never follows"


def test_unknown_group_gets_a_decoy_answer() -> None:
    """No group-name oracle: an unknown group gets message 2 like a known group's (same payloads, same size), whose
    HASH_R is keyed by a secret nobody holds; message 3 then fails as a wrong PSK does."""
    net = Network(make_policy(), CONCENTRATOR)
    for name in ("known", "unknown"):
        net.add_client(name, "203.0.113.20" if name == "known" else "203.0.113.21")
    net.connect("known", make_profile())
    net.connect("unknown", make_profile(group="nosuchgroup"))
    net.pump()
    conc = net.concentrator
    replies = {e.peer: e for e in conc.of(MessageSent) if e.exchange == ExchangeType.AGGRESSIVE}
    known, unknown = replies["203.0.113.20"], replies["203.0.113.21"]
    assert known.payloads == unknown.payloads
    assert PayloadType.HASH in unknown.payloads
    sizes = {p.src: len(p.data) for p in net.wire if p.src[0] == CONCENTRATOR and p.dst[1] == 500}
    assert len(set(sizes.values())) == 1, sizes
    assert conc.endpoint.stats["unknown-group"] == 1
    assert any(e.cause is Cause.UNKNOWN_GROUP for e in conc.of(ExchangeFailed))
    # The prober (who does not know the decoy key) cannot complete phase 1, and learns what a wrong PSK teaches.
    prober = net.clients["unknown"]
    assert prober.of(ExchangeFailed)[0].cause is Cause.AUTH_FAILED
    assert not [e for e in conc.of(ChildSaUp) if e.peer == "203.0.113.21"]


def test_decoy_keys_differ_per_start_and_per_name() -> None:
    group = GroupPolicy("ciscovpn", PSK)
    a = Network(make_policy(groups={"ciscovpn": group})).concentrator.endpoint
    b = Network(make_policy(groups={"ciscovpn": group})).concentrator.endpoint
    ga, decoy = a.group_for("x")
    assert decoy and ga.psk != PSK and ga.phase1 == group.phase1
    assert a.group_for("x")[0].psk == ga.psk, "stable for one start"
    assert a.group_for("y")[0].psk != ga.psk and b.group_for("x")[0].psk != ga.psk
    assert a.group_for("ciscovpn") == (group, False)


def test_xauth_failures_are_throttled_across_ike_sas(net: Network) -> None:
    """Wrong passwords over many IKE SAs: backoff, then a lockout; the right password no longer works at once."""
    from natt.ike.throttle import ThrottleSettings

    net.concentrator.endpoint.throttle.settings = ThrottleSettings(free_failures=2, backoff_base=30.0,
                                                                   lockout_failures=4, lockout_seconds=0)
    attacker = net.clients["attacker"]
    checks_before = len(net.concentrator.of(XauthCheck))
    for _ in range(6):
        net.connect("attacker", make_profile("vpnclient1", password="wrong"))
        net.pump()
        net.now += 31.0
    results = [e for e in net.concentrator.of(XauthResult) if e.user == "vpnclient1"]
    assert any("locked out" in r.reason for r in results)
    net.connect("attacker", make_profile("vpnclient1"))  # now the right password
    net.pump()
    assert not attacker.of(ChildSaUp), "locked out: even the right password is refused until cleared"
    checks = len(net.concentrator.of(XauthCheck)) - checks_before
    assert checks == 4, "throttled attempts cost no password check"
    downs = [e for e in attacker.of(IkeSaDown)]
    assert downs and downs[-1].cause is Cause.XAUTH_FAILED
    assert net.concentrator.endpoint.throttle.clear(user="vpnclient1") >= 1
    net.concentrator.endpoint.throttle.clear(source="203.0.113.78")
    net.connect("attacker", make_profile("vpnclient1"))
    net.pump()
    assert attacker.of(ChildSaUp), "cleared by the operator: the right password works again"
    _victim_pings(net)


def test_retransmitted_refused_quick_mode_gets_the_same_refusal(net: Network) -> None:
    """A refused Quick Mode that the peer sends again (same bytes) is answered from the reply cache: not decrypted a
    second time (its IV chain moved on with the first copy), not miscounted as malformed."""
    victim_address = net.clients["victim"].of(ModeConfigDone)[-1].address
    attacker, holder, sa = _start_attacker(net)
    conc_sa = _conc_sa(net, attacker)
    holder.rule = lambda s, h: h.exchange == ExchangeType.QUICK_MODE
    hostile.quick_mode(attacker.endpoint, sa, "0.0.0.0/0", claim=victim_address)
    net.pump()
    (qm,) = holder.release()
    for _ in range(3):
        net.send(Packet(UDP, (ATTACKER, qm.local_port), qm.remote, qm.data))
    net.pump()
    stats = net.concentrator.endpoint.stats
    assert stats["INVALID-ID-INFORMATION"] == 1 and stats["PAYLOAD-MALFORMED"] == 0
    answers = [e for e in net.concentrator.of(MessageSent) if e.sa_id == conc_sa.id and e.retransmit]
    assert len(answers) == 2, "the two copies got the cached refusal"


def test_refused_quick_modes_retransmitted_past_the_reply_cache_are_refused_again(net: Network) -> None:
    """More refused Quick Modes than the reply cache holds, each sent again later: every copy is read and refused
    as what it is, none miscounted as malformed (its refused exchange left no IV chain behind)."""
    victim_address = net.clients["victim"].of(ModeConfigDone)[-1].address
    attacker, holder, sa = _start_attacker(net)
    holder.rule = lambda s, h: h.exchange == ExchangeType.QUICK_MODE
    for _ in range(6):
        hostile.quick_mode(attacker.endpoint, sa, "0.0.0.0/0", claim=victim_address)
        net.pump()
    qms = holder.release()
    for qm in qms + qms:
        net.send(Packet(UDP, (ATTACKER, qm.local_port), qm.remote, qm.data))
    net.pump()
    stats = net.concentrator.endpoint.stats
    assert stats["PAYLOAD-MALFORMED"] == 0
    assert stats["INVALID-ID-INFORMATION"] >= 6
