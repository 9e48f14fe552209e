"""The seed's whole flow in memory: Aggressive Mode + NAT-T + XAUTH + Mode Config + two Quick Modes.

Two real IkeEndpoints talk through a simulated PAT (SCENARIO.md, "What happens on the wire").
"""

from __future__ import annotations

import ipaddress

import pytest

from natt.ike.config import SEED_PHASE1, SEED_PHASE2, Phase1Proposal
from natt.ike.events import (
    ChildSaUp,
    DpdEvent,
    ExchangeFailed,
    IkeSaDown,
    KeepaliveReceived,
    KeepaliveSent,
    MessageSent,
    ModeConfigDone,
    NatDetection,
    NattRefused,
    NotifyReceived,
    Phase1Established,
    PortFloated,
    WeakAlgorithm,
    XauthResult,
)
from natt.wire.constants import (
    EncapsulationMode,
    ExchangeType,
    NotifyType,
    PayloadType,
)
from tests.protocol.conftest import CONCENTRATOR, make_policy, make_profile
from tests.protocol.sim import Network, Pat, ipv4_packet

pytestmark = pytest.mark.protocol

SERVER = "192.168.2.10"


def _connect(lab: Network, name: str, **kw: object) -> int:
    sa_id = lab.connect(name, make_profile("vpnclient1" if name == "client1" else "vpnclient2", **kw))
    lab.pump()
    return sa_id


def _ping(lab: Network, name: str) -> None:
    """An ICMP-shaped packet from the client's assigned address to the server, and back."""
    node = lab.clients[name]
    cfg = node.of(ModeConfigDone)[-1]
    before_c, before_n = len(lab.concentrator.delivered), len(node.delivered)
    # Routed by each side's SA table, as the daemons' data paths do (the newest pair for the flow).
    assert lab.route_esp(node, ipv4_packet(cfg.address, SERVER, b"ping " + name.encode())) is not None
    assert len(lab.concentrator.delivered) == before_c + 1, lab.concentrator.esp_errors
    inner = lab.concentrator.delivered[-1]
    assert ipaddress.IPv4Address(inner[12:16]) == ipaddress.IPv4Address(cfg.address)
    assert lab.route_esp(lab.concentrator, ipv4_packet(SERVER, cfg.address, b"pong")) is not None
    assert len(node.delivered) == before_n + 1, node.esp_errors
    assert node.delivered[-1].endswith(b"pong")


def test_seed_flow_through_pat(lab: Network) -> None:
    _connect(lab, "client1")
    client, conc = lab.clients["client1"], lab.concentrator

    # Message sets of the seed's client log: AG (SA, KE, NON, ID, VID x5), then encrypted AG 3.
    sent = [e for e in client.of(MessageSent) if not e.retransmit]
    assert sent[0].exchange == ExchangeType.AGGRESSIVE
    assert sent[0].payloads[:4] == (PayloadType.SA, PayloadType.KE, PayloadType.NONCE, PayloadType.ID)
    assert sent[0].payloads[4:] == (PayloadType.VENDOR_ID,) * 5
    assert sent[0].port == 500
    third = sent[1]
    assert third.exchange == ExchangeType.AGGRESSIVE and third.encrypted
    assert third.payloads == (PayloadType.HASH, PayloadType.NOTIFY, PayloadType.NAT_D, PayloadType.NAT_D)
    assert third.notifies == (NotifyType.INITIAL_CONTACT,)
    assert third.port == 4500, "RFC 3947 4: the initiator floats to 4500 for Aggressive Mode message 3"
    reply = next(iter(conc.of(MessageSent)))
    assert reply.payloads[:5] == (PayloadType.SA, PayloadType.KE, PayloadType.NONCE, PayloadType.ID,
                                  PayloadType.HASH)
    assert reply.payloads.count(PayloadType.NAT_D) == 2

    # Both sides know who is behind the NAT (seed: "This end IS behind a NAT device").
    (c_nat,) = client.of(NatDetection)
    assert c_nat.local_behind_nat and not c_nat.remote_behind_nat
    (r_nat,) = conc.of(NatDetection)
    assert r_nat.remote_behind_nat and not r_nat.local_behind_nat
    assert conc.of(PortFloated), "the concentrator follows the float to 4500"

    assert [r.ok for r in conc.of(XauthResult)] == [True]
    assert [r.ok for r in client.of(XauthResult)] == [True]
    assert client.of(Phase1Established) and conc.of(Phase1Established)

    cfg = client.of(ModeConfigDone)[0]
    assert ipaddress.IPv4Address(cfg.address) in ipaddress.IPv4Network("10.40.1.0/24")
    assert cfg.natt_port == 4500, "seed: 'Received and using NAT-T port number, value = 0x00001194'"
    assert cfg.save_password is False and cfg.pfs is False
    assert cfg.app_version == "natt concentrator 0.1"
    assert conc.of(ModeConfigDone)[0].address == cfg.address

    # Two Quick Modes: the concentrator's own address and 0.0.0.0/0, both UDP-encapsulated.
    ups = client.of(ChildSaUp)
    assert sorted(u.remote_selector for u in ups) == sorted([f"{CONCENTRATOR}/32", "0.0.0.0/0"])
    assert all(u.udp_encap and u.remote_port == 4500 and u.local_port == 4500 for u in ups)
    conc_ups = conc.of(ChildSaUp)
    assert len(conc_ups) == 2 and all(u.udp_encap for u in conc_ups)
    assert {u.inbound_spi for u in ups} == {u.outbound_spi for u in conc_ups}
    assert any(n.notify_type == NotifyType.RESPONDER_LIFETIME for n in client.of(NotifyReceived))

    _ping(lab, "client1")
    assert lab.pat is not None and lab.pat.dropped_esp == 0


def test_two_clients_behind_one_pat(lab: Network) -> None:
    _connect(lab, "client1")
    _connect(lab, "client2")
    assert lab.pat is not None
    floated = {(src, sport): port for src, sport, port in lab.pat.xlate() if sport == 4500}
    assert set(floated) == {("10.10.10.2", 4500), ("10.10.10.3", 4500)}
    assert len(set(floated.values())) == 2, "both clients share 4500 inside but get different outside ports"
    addrs = {lab.clients[n].of(ModeConfigDone)[0].address for n in ("client1", "client2")}
    assert len(addrs) == 2
    _ping(lab, "client1")
    _ping(lab, "client2")
    remotes = {sa.remote for sa in lab.concentrator.endpoint.sas.values()}
    assert {r[1] for r in remotes} == set(floated.values())


def test_wrong_psk_is_refused(lab: Network) -> None:
    _connect(lab, "client1", psk=b"not-the-key")
    client = lab.clients["client1"]
    fails = client.of(ExchangeFailed)
    assert fails and fails[0].notify == NotifyType.AUTHENTICATION_FAILED
    assert client.endpoint.stats["AUTHENTICATION-FAILED"] == 1
    assert not client.of(Phase1Established) and not client.endpoint.sas
    # The initiator tells the concentrator, in clear, why it stopped.
    assert any(n.notify_type == NotifyType.AUTHENTICATION_FAILED for n in lab.concentrator.of(NotifyReceived))


def test_wrong_xauth_password_is_refused_other_client_undisturbed(lab: Network) -> None:
    _connect(lab, "client2")
    _connect(lab, "client1", password="wrong", xauth_max_tries=3)
    conc = lab.concentrator
    results = [r for r in conc.of(XauthResult) if r.user == "vpnclient1"]
    assert [r.ok for r in results] == [False, False, False], "three tries, as the policy allows"
    assert results[-1].final
    client = lab.clients["client1"]
    assert client.of(XauthResult)[-1].ok is False
    assert not client.endpoint.sas and not client.of(ChildSaUp)
    assert any(e.reason.startswith("XAUTH failed") for e in client.of(IkeSaDown))
    _ping(lab, "client2")


def test_no_acceptable_proposal(lab: Network) -> None:
    only_legacy = make_profile(phase1=(SEED_PHASE1,))
    lab.connect("client1", only_legacy)
    lab.pump()
    conc = lab.concentrator
    assert conc.endpoint.stats["NO-PROPOSAL-CHOSEN"] == 1
    assert any(n.notify_type == NotifyType.NO_PROPOSAL_CHOSEN for n in lab.clients["client1"].of(NotifyReceived))
    assert not conc.endpoint.sas


def test_esp_replay_and_tamper_are_refused(lab: Network) -> None:
    _connect(lab, "client1")
    client, conc = lab.clients["client1"], lab.concentrator
    cfg = client.of(ModeConfigDone)[0]
    esp = lab.send_esp(client, "0.0.0.0/0", ipv4_packet(cfg.address, SERVER, b"x" * 64))
    assert len(conc.delivered) == 1
    sa_id = client.of(ChildSaUp)[0].sa_id
    remote = client.endpoint.sas[sa_id].remote
    from tests.protocol.sim import UDP, Packet

    lab.send(Packet(UDP, (client.address, 4500), remote, esp))  # replayed
    tampered = bytearray(esp)
    tampered[-20] ^= 0x01
    tampered[4:8] = (int.from_bytes(esp[4:8], "big") + 1).to_bytes(4, "big")
    lab.send(Packet(UDP, (client.address, 4500), remote, bytes(tampered)))
    assert len(conc.delivered) == 1
    assert conc.esp_errors == ["replay", "auth_failed"]
    (inbound,) = [s for s in conc.inbound.values() if s.errors.get("replay")]
    assert inbound.errors["replay"] == 1 and inbound.errors["auth_failed"] == 1


@pytest.mark.parametrize("nat", [True, False])
def test_main_mode(nat: bool) -> None:
    pat = Pat(ipaddress.IPv4Network("10.10.10.0/24"), "203.0.113.78") if nat else None
    net = Network(make_policy(), CONCENTRATOR, pat)
    net.add_client("client1", "10.10.10.2" if nat else "203.0.113.20")
    net.connect("client1", make_profile(mode="main"))
    net.pump()
    client = net.clients["client1"]
    sent = [e for e in client.of(MessageSent) if not e.retransmit]
    assert [e.exchange for e in sent[:3]] == [ExchangeType.IDENTITY_PROTECTION] * 3
    assert client.of(Phase1Established)[0].mode == "main"
    ups = client.of(ChildSaUp)
    assert len(ups) == 2
    assert all(u.udp_encap is nat for u in ups), "ESP is UDP-encapsulated only when a NAT is detected"
    (det,) = client.of(NatDetection)
    assert det.local_behind_nat is nat
    _ping(net, "client1")


def test_legacy_seed_suite_works_and_is_flagged_weak() -> None:
    net = Network(make_policy(groups={"ciscovpn": _legacy_group()}), CONCENTRATOR,
                  Pat(ipaddress.IPv4Network("10.10.10.0/24"), "203.0.113.78"))
    net.add_client("client1", "10.10.10.2")
    net.connect("client1", make_profile(phase1=(SEED_PHASE1,), phase2=(SEED_PHASE2,)))
    net.pump()
    est = net.concentrator.of(Phase1Established)[0]
    assert (est.cipher, est.hash) == ("3DES-168", "MD5")
    weak = {w.what for w in net.concentrator.of(WeakAlgorithm)}
    assert {"3DES-168", "MD5"} <= weak
    _ping(net, "client1")


def _legacy_group():
    from natt.ike.config import GroupPolicy

    return GroupPolicy("ciscovpn", b"cisco123", phase1=(SEED_PHASE1, Phase1Proposal()), phase2=(SEED_PHASE2,))


def test_natt_disabled_on_concentrator_reproduces_the_seed_failure() -> None:
    """Seed troubleshooting: the tunnel comes up, ESP goes unencapsulated and the PAT drops it."""
    pat = Pat(ipaddress.IPv4Network("10.10.10.0/24"), "203.0.113.78")
    net = Network(make_policy(nat_traversal=False), CONCENTRATOR, pat)
    net.add_client("client1", "10.10.10.2")
    net.connect("client1", make_profile())
    net.pump()
    client = net.clients["client1"]
    assert net.concentrator.of(NattRefused), "the concentrator says the peer offered NAT-T"
    ups = client.of(ChildSaUp)
    assert len(ups) == 2 and not any(u.udp_encap for u in ups)
    cfg = client.of(ModeConfigDone)[0]
    assert cfg.natt_port is None
    net.send_esp(client, "0.0.0.0/0", ipv4_packet(cfg.address, SERVER, b"lost"))
    assert pat.dropped_esp == 1 and net.concentrator.delivered == []


def test_keepalives_and_dpd(lab: Network) -> None:
    _connect(lab, "client1")
    lab.advance(40.0)
    client, conc = lab.clients["client1"], lab.concentrator
    assert len(client.of(KeepaliveSent)) >= 4, "every 9 s, as in the seed"
    assert conc.of(KeepaliveReceived)
    assert conc.of(KeepaliveSent) and client.of(KeepaliveReceived)
    kinds = {e.kind for e in client.of(DpdEvent)} | {e.kind for e in conc.of(DpdEvent)}
    assert {"request-sent", "request-received", "ack-sent", "ack-received"} <= kinds
    assert client.endpoint.sas and conc.endpoint.sas, "DPD answered: nobody was declared dead"


def test_dead_peer_is_detected(lab: Network) -> None:
    _connect(lab, "client1")
    lab.clients.pop("client1")  # the client vanishes without a word
    lab.advance(60.0)
    downs = lab.concentrator.of(IkeSaDown)
    assert downs and downs[0].reason.startswith("DPD")
    assert not lab.concentrator.endpoint.sas


def test_retransmitted_request_gets_the_cached_reply(lab: Network) -> None:
    client = lab.clients["client1"]
    client.endpoint.connect(make_profile(), lab.now)
    (first,) = client.endpoint.datagrams_to_send()
    from tests.protocol.sim import UDP, Packet

    lab.send(Packet(UDP, (client.address, 500), first.remote, first.data))
    replies = lab.concentrator.endpoint.datagrams_to_send()
    lab.send(Packet(UDP, (client.address, 500), first.remote, first.data))
    again = lab.concentrator.endpoint.datagrams_to_send()
    assert [d.data for d in again] == [d.data for d in replies]
    assert len(lab.concentrator.endpoint.sas) == 1


def test_lost_reply_is_retransmitted(lab: Network) -> None:
    client = lab.clients["client1"]
    client.endpoint.connect(make_profile(), lab.now)
    client.endpoint.datagrams_to_send()  # message 1 lost on the way
    lab.advance(3.0)
    assert any(e.retransmit for e in (client.take_events() or client.of(MessageSent)))
    lab.pump()
    assert client.of(ChildSaUp)


def test_phase2_rekey_keeps_traffic(lab: Network) -> None:
    from natt.ike.config import Phase2Proposal

    _connect(lab, "client1", phase2=(Phase2Proposal(lifetime=60),))
    first = {u.inbound_spi for u in lab.clients["client1"].of(ChildSaUp)}
    lab.advance(58.0)
    ups = lab.clients["client1"].of(ChildSaUp)
    rekeyed = [u for u in ups if u.rekey_of in first]
    assert len(rekeyed) == 2
    _ping(lab, "client1")
    lab.advance(5.0)
    assert set(lab.clients["client1"].inbound) == {u.inbound_spi for u in rekeyed}
    _ping(lab, "client1")


def test_udp_tunnel_mode_matches_natt_variant(lab: Network) -> None:
    _connect(lab, "client1")
    sa = next(iter(lab.concentrator.endpoint.sas.values()))
    assert sa.natt is not None and sa.natt.name == "RFC 3947"
    assert all(c.encap == EncapsulationMode.UDP_ENCAPSULATED_TUNNEL for c in sa.children.values())


def test_draft_natt_peer_gets_draft_payloads_and_modes(lab: Network) -> None:
    """A draft-02 peer (the seed's Cisco client): NAT-D as payload 130, encapsulation 61443."""
    from natt.wire.constants import VendorId

    _connect(lab, "client1", natt_vendor_ids=(VendorId.NATT_DRAFT_02_N,))
    reply = lab.concentrator.of(MessageSent)[0]
    assert reply.payloads.count(PayloadType.NAT_D_DRAFT) == 2
    sa = next(iter(lab.concentrator.endpoint.sas.values()))
    assert sa.natt is not None and sa.natt.draft
    assert all(c.encap == EncapsulationMode.UDP_ENCAPSULATED_TUNNEL_DRAFT for c in sa.children.values())
    _ping(lab, "client1")


def test_mode_config_push() -> None:
    net = Network(make_policy(modecfg_push=True), CONCENTRATOR,
                  Pat(ipaddress.IPv4Network("10.10.10.0/24"), "203.0.113.78"))
    net.add_client("client1", "10.10.10.2")
    net.connect("client1", make_profile())
    net.pump()
    client = net.clients["client1"]
    cfgs = client.of(ModeConfigDone)
    assert cfgs and len({c.address for c in cfgs}) == 1
    assert len(client.of(ChildSaUp)) == 2, "push and pull both answered; the tunnels start once"
    _ping(net, "client1")


def test_idle_session_state_stays_small(lab: Network) -> None:
    """A held session keeps no per-exchange leftovers: informational exchanges (DPD every 30 s here) leave
    no IV behind, and cached replies go once no retransmission can still come (REPLY_CACHE_TTL)."""
    from natt.ike.endpoint import REPLY_CACHE_TTL

    _connect(lab, "client1")
    (conc_sa,) = lab.concentrator.endpoint.sas.values()
    (client_sa,) = lab.clients["client1"].endpoint.sas.values()
    assert conc_sa.replies  # right after the set-up, a retransmitted request still gets its answer
    ivs_after_setup = (len(conc_sa.ivs), len(client_sa.ivs))
    lab.advance(REPLY_CACHE_TTL + 60.0, step=3.0)
    dpds = {e.kind for e in lab.concentrator.of(DpdEvent)} | {e.kind for e in lab.clients["client1"].of(DpdEvent)}
    assert {"request-sent", "ack-received"} <= dpds  # informational exchanges did happen meanwhile
    assert (len(conc_sa.ivs), len(client_sa.ivs)) == ivs_after_setup
    assert not conc_sa.replies and not client_sa.replies
    _ping(lab, "client1")  # and the session still works


@pytest.mark.parametrize("mid", ["zero", "a quick mode's"])
def test_informational_iv_is_fresh_whatever_its_message_id(lab: Network, mid: str) -> None:
    """vpnc picks a delete's M-ID from one random byte, so it may be 0 or (rarely) one an earlier exchange used,
    and encrypts it from hash(last phase 1 block | M-ID) all the same (its isakmp_crypt). Built here that way,
    the concentrator must decrypt it and act on it."""
    from natt.crypto import keys as kdf
    from natt.crypto.cipher import pad_ike
    from natt.ike import info
    from natt.wire.buffer import Writer
    from natt.wire.constants import HEADER_LEN, ExchangeType, Flag, ProtocolId
    from natt.wire.message import Header, encode_payloads
    from natt.wire.payloads import Delete
    from tests.protocol.sim import UDP, Packet

    _connect(lab, "client1")
    client = lab.clients["client1"]
    (sa,) = client.endpoint.sas.values()
    (conc_sa,) = lab.concentrator.endpoint.sas.values()
    message_id = 0 if mid == "zero" else next(mid for mid in conc_sa.ivs)  # an exchange the concentrator chained
    assert sa.hash and sa.cipher
    d = Delete(ProtocolId.ISAKMP, [sa.icookie + sa.rcookie], 16)
    first, body = encode_payloads([info.hash_payload(sa, message_id, [d]), d])
    iv = kdf.phase2_iv(sa.hash, sa.p1_last_block, message_id, sa.cipher.block_size)
    sealed = sa.cipher.encrypt(sa.enc_key, iv, pad_ike(body, sa.cipher.block_size))
    w = Writer()
    Header(sa.icookie, sa.rcookie, first, ExchangeType.INFORMATIONAL, Flag.ENCRYPTION, message_id,
           HEADER_LEN + len(sealed)).encode(w)
    dgram = sa.datagram(w.getvalue() + sealed)
    lab.send(Packet(UDP, (client.address, dgram.local_port), dgram.remote, dgram.data))
    lab.concentrator.take_events()
    assert [e.reason for e in lab.concentrator.of(IkeSaDown)] == ["peer deleted the IKE SA"]
    assert not lab.concentrator.endpoint.sas
