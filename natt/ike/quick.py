"""Quick Mode (RFC 2409 5.5): phase 2 SAs for ESP, several per phase 1, with rekey and expiry.

    I → R  HDR*, HASH(1), SA, Ni [, KE] [, IDci, IDcr]
    R → I  HDR*, HASH(2), SA, Nr [, KE] [, IDci, IDcr] [, RESPONDER-LIFETIME]
    I → R  HDR*, HASH(3)
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from typing import TYPE_CHECKING

from natt.crypto import keys as kdf
from natt.crypto.dh import get_group
from natt.errors import (
    EspError,
    InvalidHashInformation,
    InvalidIdInformation,
    MissingPayload,
    SelectorNotAuthorised,
    UnexpectedMessage,
)
from natt.esp.sa import EspSA
from natt.esp.transforms import EspTransform, make_transform
from natt.ike.config import Phase2Proposal
from natt.ike.events import Cause, ChildSaDown, ChildSaUp, CommittedByEsp, NotifyReceived, WeakAlgorithm
from natt.ike.ikesa import ChildSA, IkeSA, QuickModeState, Role
from natt.ike.proposals import lifetime_seconds, phase2_sa, read_phase2_reply, select_phase2
from natt.ike.rules import Kind
from natt.wire.constants import (
    EncapsulationMode,
    ExchangeType,
    IpsecAttr,
    LifeType,
    NotifyType,
    ProtocolId,
)
from natt.wire.message import Message, encode_payloads
from natt.wire.payloads import (
    DataAttribute,
    Hash,
    Identification,
    KeyExchange,
    Nonce,
    Notify,
    Payload,
    SecurityAssociation,
)

if TYPE_CHECKING:
    from natt.ike.context import IkeContext

NONCE_LEN = 20
UDP_TUNNEL_MODES = (EncapsulationMode.UDP_ENCAPSULATED_TUNNEL, EncapsulationMode.UDP_ENCAPSULATED_TUNNEL_DRAFT)


def _selector_id(net: str) -> Identification:
    n = ipaddress.IPv4Network(net, strict=False)
    if n.prefixlen == 32:
        return Identification.ipv4(str(n.network_address))
    return Identification.ipv4_subnet(str(n))


def _new_spi(ctx: IkeContext, sa: IkeSA) -> bytes:
    while True:
        spi = ctx.rng(4)
        value = int.from_bytes(spi, "big")
        if value > 255 and value not in sa.children:  # 1-255 are reserved (RFC 4303 2.1)
            return spi


def _encap_mode(sa: IkeSA) -> int:
    if sa.udp_encap and sa.natt:
        return sa.natt.udp_tunnel_mode()
    return EncapsulationMode.TUNNEL


REKEY_GRACE = 10.0  # seconds a replaced pair still takes inbound ESP before its rekeyer deletes it
SETUP_QUICK_MODE_RETRIES = 2  # a set-up Quick Mode that ran out of resends is started again this many times


def start(ctx: IkeContext, sa: IkeSA, remote_net: str, rekey_of: int | None = None) -> int:
    """Send Quick Mode message 1: the client proposes a tunnel between its assigned address and remote_net; either
    side proposes the replacement of child `rekey_of` (same selectors, its suite first)."""
    assert sa.hash
    old = sa.children.get(rekey_of) if rekey_of is not None else None
    if old is not None:
        local_net, remote_net = old.local_selector, old.remote_selector
        offered = _rekey_offer(ctx, sa, old)
    else:
        p = sa.profile
        assert p
        if remote_net == "self":
            remote_net = f"{sa.remote[0]}/32"
        local_net = f"{sa.assigned_address or sa.local[0]}/32"
        offered = tuple(x for x in p.phase2 if x.pfs_group == p.phase2[0].pfs_group)
    mid = ctx.new_message_id(sa)
    qm = QuickModeState(mid, _new_spi(ctx, sa), ni=ctx.rng(NONCE_LEN), offered=offered,
                        local_selector=str(ipaddress.IPv4Network(local_net)),
                        remote_selector=str(ipaddress.IPv4Network(remote_net)), rekey_of=rekey_of, ours=True)
    qm.id_ci, qm.id_cr = _selector_id(local_net), _selector_id(remote_net)
    payloads: list[Payload] = [phase2_sa(offered, qm.our_spi, _encap_mode(sa)), Nonce(data=qm.ni)]
    if offered[0].pfs_group is not None:
        qm.dh = get_group(offered[0].pfs_group).generate()
        payloads.append(KeyExchange(data=qm.dh.public_bytes()))
    payloads += [qm.id_ci, qm.id_cr]
    h1 = kdf.qm_hash1(sa.hash, sa.skeyid_a, mid, encode_payloads(payloads)[1])
    sa.quick_modes[mid] = qm
    ctx.send(sa, ExchangeType.QUICK_MODE, mid, [Hash(data=h1), *payloads], encrypt=True,
             expect="Quick Mode reply")
    return mid


def _allowed(ctx: IkeContext, sa: IkeSA) -> list[Phase2Proposal]:
    """What this side accepts in phase 2: the group's suites (with its PFS group), or the client's profile."""
    if sa.group is not None:
        g = sa.group
        if not g.pfs:
            return list(g.phase2)
        assert sa.proposal
        return [replace(p, pfs_group=p.pfs_group or sa.proposal.group) for p in g.phase2]
    assert sa.profile
    return list(sa.profile.phase2)


def _rekey_offer(ctx: IkeContext, sa: IkeSA, old: ChildSA) -> tuple[Phase2Proposal, ...]:
    """The child's own suite, lifetime and PFS setting, alone: one proposal with one transform. vpnc takes a
    gateway's rekey only in that shape (its do_rekey reads the first transform and echoes the whole offer back)."""
    return (old.proposal,)


def _pending_rekey(sa: IkeSA, local_sel: str, remote_sel: str) -> QuickModeState | None:
    return next((q for q in sa.quick_modes.values() if q.ours and not q.abandoned and q.rekey_of is not None
                 and (q.local_selector, q.remote_selector) == (local_sel, remote_sel)), None)


def _client_accepts(sa: IkeSA, local_sel: str, remote_sel: str) -> None:
    """A gateway-started Quick Mode (a rekey) is taken for a tunnel this client has, and no other."""
    if any((c.local_selector, c.remote_selector) == (local_sel, remote_sel) for c in sa.children.values()):
        return
    raise SelectorNotAuthorised(f"gateway proposes {local_sel} <-> {remote_sel}: no such tunnel here")


class QuickMode:
    """RFC 2409 5.5. The responder takes a proposal only for the address it gave this user (authorise_selectors)."""

    def verify(self, ctx: IkeContext, sa: IkeSA, msg: Message, kind: Kind) -> None:
        assert sa.hash
        mid = msg.header.message_id
        first = _first_hash(msg)
        if kind is Kind.QM_1:
            want = kdf.qm_hash1(sa.hash, sa.skeyid_a, mid, msg.bytes_after_first())
        else:
            qm = sa.quick_modes[mid]
            if kind is Kind.QM_2:
                if qm.nr:
                    raise UnexpectedMessage("second Quick Mode reply")
                want = kdf.qm_hash2(sa.hash, sa.skeyid_a, mid, qm.ni, msg.bytes_after_first())
            else:
                want = kdf.qm_hash3(sa.hash, sa.skeyid_a, mid, qm.ni, qm.nr)
        if first != want:
            raise InvalidHashInformation(f"{kind.value}: HASH does not match")

    def process(self, ctx: IkeContext, sa: IkeSA, msg: Message, kind: Kind, data: bytes) -> None:
        mid = msg.header.message_id
        if kind is Kind.QM_1:
            _r1(ctx, sa, msg, data)
        elif kind is Kind.QM_2:
            _i2(ctx, sa, msg, sa.quick_modes[mid], data)
        else:
            _r3(ctx, sa, msg, sa.quick_modes[mid])


def authorise_selectors(ctx: IkeContext, sa: IkeSA, local_sel: str, remote_sel: str) -> None:
    """What a remote-access user may ask for: its own assigned address on its side, and on ours what its group's
    split policy allows (all, without one; always our own address, the seed's first Quick Mode)."""
    assert sa.group
    if sa.assigned_address is None or remote_sel != f"{sa.assigned_address}/32":
        raise SelectorNotAuthorised(f"user [{sa.user}] proposes {remote_sel} for its side, but was given "
                                    f"{sa.assigned_address or 'no address'}")
    if not sa.group.split_networks or local_sel == f"{ctx.local_address}/32":
        return
    ours = ipaddress.IPv4Network(local_sel)
    if not any(ours.subnet_of(ipaddress.IPv4Network(n)) for n in sa.group.split_networks):
        raise SelectorNotAuthorised(f"user [{sa.user}] proposes {local_sel} on our side, outside its group's "
                                    f"networks {', '.join(sa.group.split_networks)}")


def _first_hash(msg: Message) -> bytes:
    if not msg.payloads or not isinstance(msg.payloads[0], Hash):
        raise MissingPayload("Quick Mode message does not start with HASH")
    return msg.payloads[0].data


def _lifetime_notify(spi: bytes, seconds: int) -> Notify:
    attrs = [DataAttribute(IpsecAttr.SA_LIFE_TYPE, LifeType.SECONDS),
             DataAttribute.integer(IpsecAttr.SA_LIFE_DURATION, seconds)]
    body = b"".join(_attr_bytes(a) for a in attrs)
    return Notify(NotifyType.RESPONDER_LIFETIME, ProtocolId.IPSEC_ESP, spi, body)


def _attr_bytes(a: DataAttribute) -> bytes:
    from natt.wire.buffer import Writer

    w = Writer()
    a.encode(w)
    return w.getvalue()


def _r1(ctx: IkeContext, sa: IkeSA, msg: Message, data: bytes) -> None:
    """Quick Mode message 1 from the peer: the concentrator's usual case, or the gateway's rekey at a client."""
    assert sa.hash
    mid = msg.header.message_id
    sa_p = msg.get(SecurityAssociation)
    nonce = msg.get(Nonce)
    if sa_p is None or nonce is None:
        raise MissingPayload("Quick Mode without SA or nonce")
    ids = msg.get_all(Identification)
    if len(ids) not in (0, 2):
        raise InvalidIdInformation(f"{len(ids)} ID payloads in Quick Mode")
    id_ci = ids[0] if ids else Identification.ipv4(sa.remote[0])
    id_cr = ids[1] if ids else Identification.ipv4(ctx.local_address)
    local_sel, remote_sel = str(id_cr.network()), str(id_ci.network())
    if sa.role is Role.RESPONDER:
        assert ctx.policy
        authorise_selectors(ctx, sa, local_sel, remote_sel)
        max_lifetime = ctx.policy.phase2_lifetime
    else:
        _client_accepts(sa, local_sel, remote_sel)
        max_lifetime = max(p.lifetime for p in _allowed(ctx, sa))
    encaps = UDP_TUNNEL_MODES if sa.udp_encap else (EncapsulationMode.TUNNEL,)
    our_spi = _new_spi(ctx, sa)
    choice = select_phase2(sa_p, _allowed(ctx, sa), encaps, our_spi, max_lifetime)
    mine = _pending_rekey(sa, local_sel, remote_sel)
    if mine is not None and sa.role is Role.RESPONDER:
        # Both sides rekey this pair at once: the IKE initiator's exchange goes on, ours stops here (its reply
        # will get no HASH(3)), so exactly one new pair comes of it.
        mine.abandoned = True
        ctx.answered(sa, mine.message_id)
    qm = QuickModeState(mid, our_spi, ni=nonce.data, nr=ctx.rng(NONCE_LEN), id_ci=id_ci, id_cr=id_cr,
                        local_selector=local_sel, remote_selector=remote_sel, chosen=choice.proposal,
                        encap=choice.encap, peer_spi=choice.peer_spi)
    payloads: list[Payload] = [choice.reply, Nonce(data=qm.nr)]
    if choice.proposal.pfs_group is not None:
        ke = msg.get(KeyExchange)
        if ke is None:
            raise MissingPayload("PFS negotiated but no KE in Quick Mode")
        qm.dh = get_group(choice.proposal.pfs_group).generate()
        qm.gxy = qm.dh.shared_secret(ke.data)
        payloads.append(KeyExchange(data=qm.dh.public_bytes()))
    if ids:
        payloads += [id_ci, id_cr]
    if sa.role is Role.RESPONDER:
        payloads.append(_lifetime_notify(our_spi, choice.proposal.lifetime))
    h2 = kdf.qm_hash2(sa.hash, sa.skeyid_a, mid, qm.ni, encode_payloads(payloads)[1])
    qm.reply = ctx.send(sa, ExchangeType.QUICK_MODE, mid, [Hash(data=h2), *payloads], encrypt=True,
                       expect="Quick Mode HASH(3)", in_reply_to=data)
    sa.quick_modes[mid] = qm
    ctx.awaiting_commit[int.from_bytes(our_spi, "big")] = (sa.id, mid)


def _i2(ctx: IkeContext, sa: IkeSA, msg: Message, qm: QuickModeState, data: bytes) -> None:
    assert sa.hash
    mid = msg.header.message_id
    sa_p = msg.get(SecurityAssociation)
    nonce = msg.get(Nonce)
    if sa_p is None or nonce is None:
        raise MissingPayload("Quick Mode reply without SA or nonce")
    chosen, encap, peer_spi = read_phase2_reply(sa_p, qm.offered)
    qm.nr, qm.chosen, qm.encap, qm.peer_spi = nonce.data, chosen, encap, peer_spi
    if chosen.pfs_group is not None:
        ke = msg.get(KeyExchange)
        if ke is None or qm.dh is None:
            raise MissingPayload("PFS negotiated but no KE in the Quick Mode reply")
        qm.gxy = qm.dh.shared_secret(ke.data)
    for n in msg.notifies():
        ctx.emit(NotifyReceived(sa.id, sa.peer, n.notify_type, n.protocol_id, n.spi, n.data))
        if n.notify_type == NotifyType.RESPONDER_LIFETIME:
            qm.responder_lifetime = lifetime_seconds(n.data, n.protocol_id)
    ctx.answered(sa, mid)
    if qm.abandoned:
        # Lost a rekey collision, or the peer's rekey of this pair completed first: no HASH(3), nothing installed.
        sa.quick_modes.pop(mid, None)
        ctx.stats["rekey-collision-yielded"] += 1
        return
    h3 = kdf.qm_hash3(sa.hash, sa.skeyid_a, mid, qm.ni, qm.nr)
    ctx.send(sa, ExchangeType.QUICK_MODE, mid, [Hash(data=h3)], encrypt=True, in_reply_to=data)
    _install(ctx, sa, qm)


def _r3(ctx: IkeContext, sa: IkeSA, msg: Message, qm: QuickModeState) -> None:
    ctx.answered(sa, qm.message_id)
    _install(ctx, sa, qm)


def _keymat(sa: IkeSA, qm: QuickModeState, transform: EspTransform, spi: bytes) -> bytes:
    """KEYMAT for one direction (RFC 2409 5.5): the SPI its receiver chose."""
    assert sa.hash
    return kdf.keymat(sa.hash, sa.skeyid_d, ProtocolId.IPSEC_ESP, spi, qm.ni, qm.nr, transform.keymat_len, qm.gxy)


def _transform(qm: QuickModeState) -> EspTransform:
    assert qm.chosen
    return make_transform(qm.chosen.transform, qm.chosen.key_bits, qm.chosen.auth)


def commit_by_esp(ctx: IkeContext, sa: IkeSA, qm: QuickModeState, packet: bytes) -> bool:
    """Our Quick Mode message 2 went out, HASH(3) has not come, and ESP arrived on the inbound SPI we chose: if it
    authenticates under that SPI's KEYMAT, the peer has the pair (only it holds SKEYID_d and the nonces), so its
    HASH(3) was lost; the pair is installed now rather than after our resend and its answer. Without this, a lost
    HASH(3) left the peer sending into a pair we did not have for a resend interval or more; if every resend's
    answer was lost too, for good (the lossy-link lab test). False, and nothing changes, if it does not
    authenticate."""
    if qm.probe is None:
        transform = _transform(qm)
        qm.probe = EspSA(int.from_bytes(qm.our_spi, "big"), transform, _keymat(sa, qm, transform, qm.our_spi),
                         outbound=False)
    try:
        qm.probe.decrypt(packet)
    except EspError:
        ctx.stats["commit-by-esp-refused"] += 1
        return False
    ctx.stats["quick-mode-committed-by-esp"] += 1
    ctx.emit(CommittedByEsp(sa.id, sa.peer, qm.message_id, int.from_bytes(qm.our_spi, "big")))
    ctx.answered(sa, qm.message_id)
    _install(ctx, sa, qm)
    return True


def _install(ctx: IkeContext, sa: IkeSA, qm: QuickModeState) -> None:
    """Both directions' KEYMAT (RFC 2409 5.5): each uses the SPI its receiver chose."""
    assert sa.hash and qm.chosen
    sa.quick_modes.pop(qm.message_id, None)
    ctx.awaiting_commit.pop(int.from_bytes(qm.our_spi, "big"), None)
    p = qm.chosen
    transform = _transform(qm)
    if transform.weak:
        ctx.emit(WeakAlgorithm(sa.id, sa.peer, transform.name))
    lifetime = min(p.lifetime, qm.responder_lifetime or p.lifetime)
    k_in = _keymat(sa, qm, transform, qm.our_spi)
    k_out = _keymat(sa, qm, transform, qm.peer_spi)
    inbound, outbound = int.from_bytes(qm.our_spi, "big"), int.from_bytes(qm.peer_spi, "big")
    expires = ctx.now + lifetime
    child = ChildSA(qm.message_id, inbound, outbound, p, qm.encap, qm.local_selector, qm.remote_selector,
                    ctx.now, expires, _soft_lifetime(ctx, sa, ctx.now, lifetime))
    replaced = _supersede(ctx, sa, child, rekeyer=qm.ours)
    sa.children[inbound] = child
    if sa.cisco_udp_port is not None:
        # IPsec over UDP, negotiated as plain tunnel mode. The client sends from the announced port to it; the
        # concentrator learns the client's translated port from its first ESP packet.
        udp, local_port = True, sa.cisco_udp_port
        remote_port = sa.cisco_udp_port if sa.role is Role.INITIATOR else 0
    else:
        udp, local_port, remote_port = qm.encap in UDP_TUNNEL_MODES, sa.local[1], sa.remote[1]
    ctx.emit(ChildSaUp(sa.id, sa.peer, qm.message_id, inbound, outbound, p.transform, p.key_bits, p.auth,
                      k_in, k_out, udp, local_port, remote_port, qm.local_selector, qm.remote_selector,
                      lifetime, qm.rekey_of, sa.session_id, replaced))


def child_down(ctx: IkeContext, sa: IkeSA, child: ChildSA, reason: str, cause: Cause = Cause.OTHER) -> None:
    if sa.children.pop(child.inbound_spi, None) is not None:
        ctx.emit(ChildSaDown(sa.id, sa.peer, child.inbound_spi, child.outbound_spi, reason, cause))


def _soft_lifetime(ctx: IkeContext, sa: IkeSA, now: float, lifetime: int) -> float:
    """When this side starts the child's replacement: `rekey_margin` of its lifetime before it ends, less up to half
    as much again at random (strongSwan's rekeyfuzz), so that many SAs do not rekey in one burst. The concentrator
    uses half the client's margin: a client that rekeys does so first, and the concentrator rekeys the children of
    clients that never do (vpnc)."""
    timers = sa.profile.timers if sa.profile else ctx.policy.timers if ctx.policy else None
    margin = (timers.rekey_margin if timers else 0.1) * lifetime
    if sa.role is Role.RESPONDER:
        margin /= 2
    fuzz = int.from_bytes(ctx.rng(2), "big") / 0xFFFF * margin / 2
    return now + max(lifetime - margin - fuzz, lifetime / 2)


def _supersede(ctx: IkeContext, sa: IkeSA, new: ChildSA, *, rekeyer: bool) -> int | None:
    """A new pair for the selectors of older ones (a rekey, from either side): the old ones are not rekeyed again,
    take inbound ESP for a grace period (make-before-break), and the side that made the rekey then deletes them.
    A rekey of our own for these selectors that has not completed stops: the peer's came first. Returns the
    inbound SPI of a pair the new one replaces, if any."""
    replaced = None
    for old in sa.children.values():
        if (old.local_selector, old.remote_selector) != (new.local_selector, new.remote_selector):
            continue
        if not old.rekeyed or replaced is None:
            replaced = old.inbound_spi
        old.rekeyed = True
        if rekeyer:
            old.delete_at = min(old.expires_at, ctx.now + REKEY_GRACE)
    for q in sa.quick_modes.values():
        if q.ours and q.rekey_of is not None and (q.local_selector, q.remote_selector) == \
                (new.local_selector, new.remote_selector):
            q.abandoned = True
            ctx.answered(sa, q.message_id)
    return replaced


def rekey(ctx: IkeContext, sa: IkeSA) -> int:
    """Rekey every current child now (the operator's `rekey --phase2`); how many Quick Modes were started."""
    started = 0
    for child in list(sa.children.values()):
        if not child.rekeyed:
            child.rekeyed = True
            start(ctx, sa, child.remote_selector, rekey_of=child.inbound_spi)
            started += 1
    return started


def deadlines(sa: IkeSA) -> list[float]:
    out: list[float] = []
    for c in sa.children.values():
        out.append(c.delete_at if c.delete_at is not None else c.expires_at)
        if c.rekey_at is not None and not c.rekeyed:
            out.append(c.rekey_at)
    return out


def timers(ctx: IkeContext, sa: IkeSA) -> None:
    from natt.ike import info

    for child in list(sa.children.values()):
        if child.delete_at is not None and ctx.now >= child.delete_at:
            info.send_delete_child(ctx, sa, child)
            child_down(ctx, sa, child, "replaced by a rekey", Cause.REKEYED)
        elif ctx.now >= child.expires_at:
            info.send_delete_child(ctx, sa, child)
            child_down(ctx, sa, child, "lifetime expired", Cause.LIFETIME_EXPIRED)
        elif child.rekey_at is not None and not child.rekeyed and ctx.now >= child.rekey_at:
            child.rekeyed = True
            start(ctx, sa, child.remote_selector, rekey_of=child.inbound_spi)


def quick_mode_gave_up(ctx: IkeContext, sa: IkeSA, message_id: int) -> bool:
    """A Quick Mode's retransmissions ran out: only that exchange ends (the IKE SA stays). A rekey that did not
    happen is tried again later while the old pair lives. False if `message_id` is no Quick Mode of ours."""
    qm = sa.quick_modes.pop(message_id, None)
    if qm is None:
        return False
    ctx.awaiting_commit.pop(int.from_bytes(qm.our_spi, "big"), None)
    old = sa.children.get(qm.rekey_of) if qm.rekey_of is not None else None
    if old is not None and old.delete_at is None and qm.ours and not qm.abandoned:
        old.rekeyed = False
        old.rekey_at = min(old.expires_at, ctx.now + REKEY_GRACE)
    elif qm.ours and qm.rekey_of is None and not qm.abandoned and sa.role is Role.INITIATOR and \
            not any(c.remote_selector == qm.remote_selector for c in sa.children.values()):
        # A tunnel the session set up never came (its messages lost, on a lossy link): without it the client
        # would be "connected" with no SA for these networks. Start it again a few times; then end the IKE SA, so
        # that the client reconnects rather than sit in a black hole (found by the lossy-link lab test).
        if qm.retry >= SETUP_QUICK_MODE_RETRIES:
            ctx.delete_sa(sa.id, ctx.now, f"Quick Mode for {qm.remote_selector} not answered", Cause.RETRANSMIT_TIMEOUT)
        else:
            mid = start(ctx, sa, qm.remote_selector)
            sa.quick_modes[mid].retry = qm.retry + 1
    return True


QUICK_MODE = QuickMode()
