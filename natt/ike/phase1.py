"""Phase 1 with pre-shared keys: Aggressive Mode (RFC 2409 5.4) and Main Mode (5.4, 5.1).

Both roles live here, one function per message, in the order the RFC lists them. NAT-D and
vendor IDs are composed in from natd / vendor, as strongSwan composes its isakmp_natd task.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from natt.crypto import keys as kdf
from natt.crypto.cipher import get_cipher
from natt.crypto.dh import get_group
from natt.crypto.prf import get_hash
from natt.errors import (
    AuthenticationFailed,
    InvalidKeyInformation,
    MissingPayload,
    SessionLimitReached,
)
from natt.ike import natd, transaction, vendor
from natt.ike.config import Phase1Proposal
from natt.ike.events import Cause, ExchangeFailed, NatDetection, NattRefused, Phase1Established, WeakAlgorithm
from natt.ike.ikesa import IkeSA, Role, State
from natt.ike.proposals import phase1_sa, read_phase1_reply, select_phase1
from natt.ike.rules import Kind
from natt.wire.constants import (
    AuthMethod,
    ExchangeType,
    IdType,
    NotifyType,
    ProtocolId,
)
from natt.wire.message import Message
from natt.wire.payloads import (
    Hash,
    Identification,
    KeyExchange,
    NatD,
    Nonce,
    Notify,
    Payload,
    SecurityAssociation,
    VendorIdPayload,
)

if TYPE_CHECKING:
    from natt.ike.context import IkeContext

NONCE_LEN = 20
XAUTH_METHODS = {AuthMethod.XAUTH_INIT_PRESHARED}


def _need(msg: Message, cls: type, what: str):
    p = msg.get(cls)
    if p is None:
        raise MissingPayload(f"{what} payload missing")
    return p


# -- shared steps ------------------------------------------------------------------------


def _set_suite(ctx: IkeContext, sa: IkeSA, p: Phase1Proposal) -> None:
    sa.proposal = p
    sa.hash = get_hash(p.hash)
    sa.cipher = get_cipher(p.cipher, p.key_bits)
    group = get_group(p.group)
    for weak, what in ((sa.cipher.weak, sa.cipher.name), (sa.hash.weak, sa.hash.name),
                       (group.weak, group.name)):
        if weak:
            ctx.emit(WeakAlgorithm(sa.id, sa.peer, what))


def _my_id(ctx: IkeContext, sa: IkeSA) -> Identification:
    if sa.role is Role.INITIATOR:
        assert sa.profile
        # Cisco clients name their group with a KEY_ID; the concentrator picks the PSK by it.
        return Identification.text(IdType.KEY_ID, sa.profile.group, protocol=17, port=500)
    return Identification.ipv4(ctx.local_address, protocol=17, port=500)


def _take_peer_vids(ctx: IkeContext, sa: IkeSA, msg: Message) -> None:
    for v in msg.get_all(VendorIdPayload):
        if v.data not in sa.peer_vids:
            sa.peer_vids.append(v.data)
        vendor.seen(ctx, sa, v.data)


def _natd_payloads(sa: IkeSA) -> list[Payload]:
    """Peer's address as we send to it first, then our own (RFC 3947 3.2)."""
    assert sa.hash and sa.natt
    h = sa.hash.hash
    return [
        NatD(data=natd.natd_hash(h, sa.icookie, sa.rcookie, *sa.remote), draft=sa.natt.draft),
        NatD(data=natd.natd_hash(h, sa.icookie, sa.rcookie, *sa.local), draft=sa.natt.draft),
    ]


def _detect_nat(ctx: IkeContext, sa: IkeSA, msg: Message) -> None:
    received = [p.data for p in msg.get_all(NatD)]
    if sa.natt is None:
        return
    if not received:
        # NAT-T vendor IDs but no NAT-D: the peer will not float; treat as plain IKE.
        sa.natt = None
        return
    assert sa.hash
    # The ports of message 1 and the current (maybe floated) ones: see natd.detect.
    locals_ = [sa.local, (sa.local[0], sa.first_local_port)]
    remotes = [sa.remote, sa.first_remote]
    sa.nat = natd.detect(received, sa.hash.hash, sa.icookie, sa.rcookie, locals_, remotes)
    ctx.emit(NatDetection(sa.id, sa.peer, sa.nat.local_behind_nat, sa.nat.remote_behind_nat, True, sa.natt.name))


def _dh_agree(sa: IkeSA, peer_public: bytes) -> bytes:
    assert sa.dh
    if len(peer_public) != len(sa.dh.public_bytes()):
        raise InvalidKeyInformation(f"KE of {len(peer_public)} bytes for {sa.dh.group.name}")
    return sa.dh.shared_secret(peer_public)


def _psk(ctx: IkeContext, sa: IkeSA) -> bytes:
    if sa.role is Role.INITIATOR:
        assert sa.profile
        return sa.profile.psk
    assert sa.group
    return sa.group.psk


def _allowed(ctx: IkeContext, sa: IkeSA) -> list[Phase1Proposal]:
    assert sa.group
    auth = AuthMethod.XAUTH_INIT_PRESHARED if sa.group.xauth else AuthMethod.PRE_SHARED_KEY
    return [replace(p, auth=auth) for p in sa.group.phase1]


def _check_capacity(ctx: IkeContext, sa: IkeSA) -> None:
    assert ctx.policy
    if ctx.established_count >= ctx.policy.session_limit:
        raise SessionLimitReached(f"session limit {ctx.policy.session_limit} reached")


def _take_natt_offer(ctx: IkeContext, sa: IkeSA) -> None:
    variant = natd.choose_variant(sa.peer_vids)
    if variant is None:
        return
    assert ctx.policy
    if ctx.policy.nat_traversal:
        sa.natt = variant
    else:
        sa.peer_offered_natt = True
        ctx.emit(NattRefused(sa.id, sa.peer))


# -- entry points --------------------------------------------------------------------------


def start(ctx: IkeContext, sa: IkeSA) -> None:
    """Initiator, message 1 of Aggressive or Main Mode."""
    p = sa.profile
    assert p
    offered = p.phase1
    if sa.mode == "aggressive":
        # The KE goes in message 1, so every proposal must share its DH group.
        offered = tuple(x for x in p.phase1 if x.group == p.phase1[0].group)
    assert sa.initiator
    sa.initiator.offered = offered
    sa_payload = phase1_sa(offered)
    sa.sai_b = sa_payload.body()
    vids = [VendorIdPayload(data=v) for v in vendor.initiator_vids(p.nat_traversal, p.natt_vendor_ids)]
    if sa.mode == "aggressive":
        sa.dh = get_group(offered[0].group).generate()
        sa.gxi = sa.dh.public_bytes()
        sa.ni = ctx.rng(NONCE_LEN)
        idp = _my_id(ctx, sa)
        sa.idi_b = idp.body()
        payloads: list[Payload] = [sa_payload, KeyExchange(data=sa.gxi), Nonce(data=sa.ni), idp, *vids]
        ctx.send(sa, ExchangeType.AGGRESSIVE, 0, payloads, encrypt=False, expect="Aggressive Mode message 1")
    else:
        ctx.send(sa, ExchangeType.IDENTITY_PROTECTION, 0, [sa_payload, *vids], encrypt=False,
                expect="Main Mode message 1")
    sa.state = State.P1_SENT_1


class AggressiveMode:
    """RFC 2409 5.4 with a pre-shared key: three messages, HASH_I in the third (encrypted when NAT-T floats)."""

    def verify(self, ctx: IkeContext, sa: IkeSA, msg: Message, kind: Kind) -> None:
        if kind is Kind.AM_3 and _need(msg, Hash, "HASH").data != sa.hash_i():
            raise AuthenticationFailed(f"HASH_I from group [{sa.identity}] does not match: wrong pre-shared key?")

    def process(self, ctx: IkeContext, sa: IkeSA, msg: Message, kind: Kind, data: bytes) -> None:
        {Kind.AM_1: _am_r1, Kind.AM_2: _am_i2, Kind.AM_3: _am_r3}[kind](ctx, sa, msg, data)


class MainMode:
    """RFC 2409 5.1/5.4: SA, then KE and nonces (NAT-D), then the encrypted IDs and hashes."""

    def verify(self, ctx: IkeContext, sa: IkeSA, msg: Message, kind: Kind) -> None:
        if kind not in (Kind.MM_5, Kind.MM_6):
            return
        # The hash covers the ID in this very message: computed from it, stored only once it verified.
        idp, hash_p = _need(msg, Identification, "ID"), _need(msg, Hash, "HASH")
        assert sa.hash
        if kind is Kind.MM_5:
            name, want = "HASH_I", kdf.hash_i(sa.hash, sa.skeyid, sa.gxi, sa.gxr, sa.icookie, sa.rcookie, sa.sai_b,
                                              idp.raw)
        else:
            name, want = "HASH_R", kdf.hash_r(sa.hash, sa.skeyid, sa.gxr, sa.gxi, sa.rcookie, sa.icookie, sa.sai_b,
                                              idp.raw)
        if hash_p.data != want:
            raise AuthenticationFailed(f"{name} does not match: wrong pre-shared key?")

    def process(self, ctx: IkeContext, sa: IkeSA, msg: Message, kind: Kind, data: bytes) -> None:
        handlers = {Kind.MM_1: _mm_r1, Kind.MM_2: _mm_i2, Kind.MM_3: _mm_r3, Kind.MM_4: _mm_i4, Kind.MM_5: _mm_r5,
                    Kind.MM_6: _mm_i6}
        handlers[kind](ctx, sa, msg, data)


# -- Aggressive Mode ----------------------------------------------------------------------


def _am_r1(ctx: IkeContext, sa: IkeSA, msg: Message, data: bytes) -> None:
    """Responder: SA, KE, Ni, IDii, VIDs in; SA, KE, Nr, IDir, HASH_R, VIDs, NAT-D x2 out."""
    assert ctx.policy
    sa_p = _need(msg, SecurityAssociation, "SA")
    ke = _need(msg, KeyExchange, "KE")
    nonce = _need(msg, Nonce, "nonce")
    idp = _need(msg, Identification, "ID")
    sa.identity = idp.display()
    r = sa.responder
    assert r
    r.group, r.decoy = ctx.group_for(sa.identity)
    if r.decoy:
        # Answered all the same (a silence or a notify would tell a scanner which names exist), under a key that
        # nobody holds: message 3 then fails as a wrong pre-shared key does.
        ctx.stats["unknown-group"] += 1
        ctx.emit(ExchangeFailed(sa.id, sa.peer, f"unknown group [{sa.identity}]: answered with a decoy", None, False,
                                Cause.UNKNOWN_GROUP))
    _check_capacity(ctx, sa)
    _take_peer_vids(ctx, sa, msg)
    choice = select_phase1(sa_p, _allowed(ctx, sa), ctx.policy.phase1_lifetime)
    _set_suite(ctx, sa, choice.proposal)
    sa.sai_b, sa.idi_b = sa_p.raw, idp.raw
    sa.gxi, sa.ni = ke.data, nonce.data
    sa.dh = get_group(choice.proposal.group).generate()
    sa.gxr = sa.dh.public_bytes()
    sa.gxy = _dh_agree(sa, sa.gxi)
    sa.nr = ctx.rng(NONCE_LEN)
    idr = _my_id(ctx, sa)
    sa.idr_b = idr.body()
    sa.derive_phase1_keys(_psk(ctx, sa))
    _take_natt_offer(ctx, sa)
    vids = [VendorIdPayload(data=v) for v in vendor.responder_vids(sa.natt.vid if sa.natt else None)]
    payloads: list[Payload] = [choice.reply, KeyExchange(data=sa.gxr), Nonce(data=sa.nr), idr,
                               Hash(data=sa.hash_r()), *vids]
    if sa.natt:
        payloads += _natd_payloads(sa)
    ctx.send(sa, ExchangeType.AGGRESSIVE, 0, payloads, encrypt=False, expect="Aggressive Mode message 3",
            in_reply_to=data)
    sa.state = State.AM_SENT_2


def _am_i2(ctx: IkeContext, sa: IkeSA, msg: Message, data: bytes) -> None:
    """Initiator: check the responder's choice and HASH_R, detect NAT, float, send HASH_I."""
    p = sa.profile
    assert p and sa.dh
    sa_p = _need(msg, SecurityAssociation, "SA")
    ke = _need(msg, KeyExchange, "KE")
    nonce = _need(msg, Nonce, "nonce")
    idp = _need(msg, Identification, "ID")
    hash_p = _need(msg, Hash, "HASH")
    _set_suite(ctx, sa, read_phase1_reply(sa_p, sa.initiator.offered))
    _take_peer_vids(ctx, sa, msg)
    sa.gxr, sa.nr, sa.idr_b = ke.data, nonce.data, idp.raw
    sa.identity = idp.display()
    sa.gxy = _dh_agree(sa, sa.gxr)
    sa.derive_phase1_keys(p.psk)
    if hash_p.data != sa.hash_r():
        raise AuthenticationFailed("HASH_R does not match: wrong group password (pre-shared key)?")
    ctx.answered(sa, 0)
    if p.nat_traversal:
        sa.natt = natd.choose_variant(sa.peer_vids)
    _detect_nat(ctx, sa, msg)
    if sa.natt and (p.force_natt or (sa.nat and sa.nat.nat_detected)):
        ctx.float_ports(sa)
    payloads: list[Payload] = [Hash(data=sa.hash_i())]
    if p.send_initial_contact and sa.initiator.reauth_of is None:  # a re-authentication keeps the old SA alive
        payloads.append(Notify(NotifyType.INITIAL_CONTACT, ProtocolId.ISAKMP, sa.icookie + sa.rcookie))
    if sa.natt:
        payloads += _natd_payloads(sa)
    # With XAUTH the gateway speaks next. If this message is lost, only the gateway's resends of message 2 bring it
    # again, and a gateway bounds those to an address nobody has proven (natt's: 5): on a lossy link they ran out
    # in 1 of 20 connects at 40 % (the lossy-link lab test). So the client resends it as well until the gateway's
    # next message comes (endpoint._receive_for); the gateway drops a copy it no longer needs.
    expect = "Aggressive Mode message 3" if sa.proposal and sa.proposal.auth in XAUTH_METHODS else None
    ctx.send(sa, ExchangeType.AGGRESSIVE, 0, payloads, encrypt=True, expect=expect, in_reply_to=data)
    _authenticated(ctx, sa)


def _am_r3(ctx: IkeContext, sa: IkeSA, msg: Message, data: bytes) -> None:
    """Responder: HASH_I (verified), INITIAL-CONTACT, NAT-D x2."""
    ctx.answered(sa, 0)
    _detect_nat(ctx, sa, msg)
    sa.responder.initial_contact = any(n.notify_type == NotifyType.INITIAL_CONTACT for n in msg.notifies())
    _authenticated(ctx, sa)


# -- Main Mode ----------------------------------------------------------------------------


def _mm_r1(ctx: IkeContext, sa: IkeSA, msg: Message, data: bytes) -> None:
    assert ctx.policy
    sa_p = _need(msg, SecurityAssociation, "SA")
    # Main Mode hides the ID until message 5, so the PSK comes from the group allowed to use MM.
    group = next((g for g in ctx.policy.groups.values() if g.main_mode), None)
    if group is None:
        raise AuthenticationFailed("Main Mode offered but no group allows it")
    sa.responder.group = group
    _check_capacity(ctx, sa)
    _take_peer_vids(ctx, sa, msg)
    choice = select_phase1(sa_p, _allowed(ctx, sa), ctx.policy.phase1_lifetime)
    _set_suite(ctx, sa, choice.proposal)
    sa.sai_b = sa_p.raw
    _take_natt_offer(ctx, sa)
    vids = [VendorIdPayload(data=v) for v in vendor.responder_vids(sa.natt.vid if sa.natt else None)]
    ctx.send(sa, ExchangeType.IDENTITY_PROTECTION, 0, [choice.reply, *vids], encrypt=False,
            expect="Main Mode message 3", in_reply_to=data)
    sa.state = State.MM_SENT_2


def _mm_i2(ctx: IkeContext, sa: IkeSA, msg: Message, data: bytes) -> None:
    p = sa.profile
    assert p
    sa_p = _need(msg, SecurityAssociation, "SA")
    _set_suite(ctx, sa, read_phase1_reply(sa_p, sa.initiator.offered))
    _take_peer_vids(ctx, sa, msg)
    ctx.answered(sa, 0)
    if p.nat_traversal:
        sa.natt = natd.choose_variant(sa.peer_vids)
    assert sa.proposal
    sa.dh = get_group(sa.proposal.group).generate()
    sa.gxi = sa.dh.public_bytes()
    sa.ni = ctx.rng(NONCE_LEN)
    payloads: list[Payload] = [KeyExchange(data=sa.gxi), Nonce(data=sa.ni)]
    if sa.natt:
        payloads += _natd_payloads(sa)
    ctx.send(sa, ExchangeType.IDENTITY_PROTECTION, 0, payloads, encrypt=False, expect="Main Mode message 4",
            in_reply_to=data)
    sa.state = State.MM_SENT_3


def _mm_r3(ctx: IkeContext, sa: IkeSA, msg: Message, data: bytes) -> None:
    ke = _need(msg, KeyExchange, "KE")
    nonce = _need(msg, Nonce, "nonce")
    assert sa.proposal
    ctx.answered(sa, 0)
    sa.gxi, sa.ni = ke.data, nonce.data
    sa.dh = get_group(sa.proposal.group).generate()
    sa.gxr = sa.dh.public_bytes()
    sa.gxy = _dh_agree(sa, sa.gxi)
    sa.nr = ctx.rng(NONCE_LEN)
    sa.derive_phase1_keys(_psk(ctx, sa))
    _detect_nat(ctx, sa, msg)
    payloads: list[Payload] = [KeyExchange(data=sa.gxr), Nonce(data=sa.nr)]
    if sa.natt:
        payloads += _natd_payloads(sa)
    ctx.send(sa, ExchangeType.IDENTITY_PROTECTION, 0, payloads, encrypt=False, expect="Main Mode message 5",
            in_reply_to=data)
    sa.state = State.MM_SENT_4


def _mm_i4(ctx: IkeContext, sa: IkeSA, msg: Message, data: bytes) -> None:
    p = sa.profile
    assert p
    ke = _need(msg, KeyExchange, "KE")
    nonce = _need(msg, Nonce, "nonce")
    ctx.answered(sa, 0)
    sa.gxr, sa.nr = ke.data, nonce.data
    sa.gxy = _dh_agree(sa, sa.gxr)
    sa.derive_phase1_keys(p.psk)
    _detect_nat(ctx, sa, msg)
    if sa.natt and (p.force_natt or (sa.nat and sa.nat.nat_detected)):
        ctx.float_ports(sa)
    idp = _my_id(ctx, sa)
    sa.idi_b = idp.body()
    payloads: list[Payload] = [idp, Hash(data=sa.hash_i())]
    if p.send_initial_contact and sa.initiator.reauth_of is None:  # a re-authentication keeps the old SA alive
        payloads.append(Notify(NotifyType.INITIAL_CONTACT, ProtocolId.ISAKMP, sa.icookie + sa.rcookie))
    ctx.send(sa, ExchangeType.IDENTITY_PROTECTION, 0, payloads, encrypt=True, expect="Main Mode message 6")
    sa.state = State.MM_SENT_5


def _mm_r5(ctx: IkeContext, sa: IkeSA, msg: Message, data: bytes) -> None:
    idp = _need(msg, Identification, "ID")
    sa.idi_b = idp.raw
    sa.identity = idp.display()
    ctx.answered(sa, 0)
    sa.responder.initial_contact = any(n.notify_type == NotifyType.INITIAL_CONTACT for n in msg.notifies())
    idr = _my_id(ctx, sa)
    sa.idr_b = idr.body()
    ctx.send(sa, ExchangeType.IDENTITY_PROTECTION, 0, [idr, Hash(data=sa.hash_r())], encrypt=True,
            in_reply_to=data)
    _authenticated(ctx, sa)


def _mm_i6(ctx: IkeContext, sa: IkeSA, msg: Message, data: bytes) -> None:
    idp = _need(msg, Identification, "ID")
    sa.idr_b = idp.raw
    sa.identity = idp.display()
    ctx.answered(sa, 0)
    _authenticated(ctx, sa)


# -- after authentication ---------------------------------------------------------------------


def _authenticated(ctx: IkeContext, sa: IkeSA) -> None:
    """Keys agreed and peer proven: XAUTH next if negotiated, else phase 1 is up."""
    sa.state = State.AUTHENTICATED
    ctx.phase1_done(sa)
    assert sa.proposal
    if sa.proposal.auth in XAUTH_METHODS:
        sa.state = State.XAUTH
        if sa.role is Role.RESPONDER:
            transaction.start_xauth(ctx, sa)
        return
    established(ctx, sa)


def established(ctx: IkeContext, sa: IkeSA) -> None:
    """Phase 1 and XAUTH done: the SA counts as a session; Mode Config comes next (the address is not given yet,
    so no Quick Mode is accepted before it: rules.py)."""
    from natt.ike import info

    assert sa.proposal and sa.hash and sa.cipher
    sa.state = State.MODECFG
    sa.established_at = ctx.now
    sa.expires_at = ctx.now + sa.proposal.lifetime
    sa.forget_phase1_secrets()
    ctx.session_established(sa)
    group_name = sa.group.name if sa.group else (sa.profile.group if sa.profile else "")
    ctx.emit(Phase1Established(sa.id, sa.peer, sa.mode, group_name, sa.cipher.name, sa.hash.name,
                               get_group(sa.proposal.group).name, sa.proposal.lifetime, sa.identity))
    info.start_liveness(ctx, sa)
    schedule_reauth(ctx, sa)
    if sa.role is Role.INITIATOR:
        transaction.start_modecfg(ctx, sa)
    elif ctx.adopt_session(sa):
        # A re-authentication: the session's tunnels and address are this SA's now. Some clients do no Mode Config
        # or Quick Mode after it (vpnc waits for this notify, then goes on with the pairs it has).
        info.send_phase1_lifetime(ctx, sa)
    elif ctx.policy and ctx.policy.modecfg_push:
        transaction.push_modecfg(ctx, sa)


def schedule_reauth(ctx: IkeContext, sa: IkeSA) -> None:
    """The initiator's phase 1 soft lifetime: `rekey_margin` of the lifetime before expiry, less up to half as much
    again at random; then it re-authenticates (a new phase 1 for the same session). A margin of 0 never does (the
    SA then simply expires, as vpnc's do)."""
    if sa.role is not Role.INITIATOR or sa.profile is None or sa.established_at is None or sa.expires_at is None:
        return
    lifetime = sa.expires_at - sa.established_at
    margin = sa.profile.timers.rekey_margin * lifetime
    if margin <= 0:
        sa.rekey_at = None
        return
    fuzz = int.from_bytes(ctx.rng(2), "big") / 0xFFFF * margin / 2
    sa.rekey_at = sa.expires_at - max(margin + fuzz, min(lifetime / 10, 30.0))


AGGRESSIVE_MODE = AggressiveMode()
MAIN_MODE = MainMode()
