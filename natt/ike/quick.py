"""Quick Mode (RFC 2409 5.5): phase 2 SAs for ESP, several per phase 1, with rekey and expiry.

    I → R  HDR*, HASH(1), SA, Ni [, KE] [, IDci, IDcr]
    R → I  HDR*, HASH(2), SA, Nr [, KE] [, IDci, IDcr] [, RESPONDER-LIFETIME]
    I → R  HDR*, HASH(3)
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from natt.crypto import keys as kdf
from natt.crypto.dh import get_group
from natt.errors import (
    InvalidHashInformation,
    InvalidIdInformation,
    MissingPayload,
    SelectorNotAuthorised,
    UnexpectedMessage,
)
from natt.esp.transforms import make_transform
from natt.ike.config import Phase2Proposal
from natt.ike.events import Cause, ChildSaDown, ChildSaUp, NotifyReceived, WeakAlgorithm
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


def start(ctx: IkeContext, sa: IkeSA, remote_net: str, rekey_of: int | None = None) -> int:
    """Initiator: propose a tunnel between our (assigned) address and remote_net."""
    p = sa.profile
    assert p and sa.hash
    if remote_net == "self":
        remote_net = f"{sa.remote[0]}/32"
    local_net = f"{sa.assigned_address or sa.local[0]}/32"
    offered = tuple(x for x in p.phase2 if x.pfs_group == p.phase2[0].pfs_group)
    mid = ctx.new_message_id(sa)
    qm = QuickModeState(mid, _new_spi(ctx, sa), ni=ctx.rng(NONCE_LEN), offered=offered,
                        local_selector=local_net, remote_selector=str(ipaddress.IPv4Network(remote_net)),
                        rekey_of=rekey_of)
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
    assert sa.hash and sa.group and ctx.policy
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
    authorise_selectors(ctx, sa, local_sel, remote_sel)
    encaps = UDP_TUNNEL_MODES if sa.udp_encap else (EncapsulationMode.TUNNEL,)
    pfs = sa.group.pfs
    allowed = [p for p in sa.group.phase2] if not pfs else [
        Phase2Proposal(p.transform, p.key_bits, p.auth, p.pfs_group or sa.proposal.group, p.lifetime)  # type: ignore[union-attr]
        for p in sa.group.phase2]
    our_spi = _new_spi(ctx, sa)
    choice = select_phase2(sa_p, allowed, encaps, our_spi, ctx.policy.phase2_lifetime)
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
    payloads.append(_lifetime_notify(our_spi, choice.proposal.lifetime))
    h2 = kdf.qm_hash2(sa.hash, sa.skeyid_a, mid, qm.ni, encode_payloads(payloads)[1])
    qm.reply = ctx.send(sa, ExchangeType.QUICK_MODE, mid, [Hash(data=h2), *payloads], encrypt=True,
                       expect="Quick Mode HASH(3)", in_reply_to=data)
    sa.quick_modes[mid] = qm


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
    h3 = kdf.qm_hash3(sa.hash, sa.skeyid_a, mid, qm.ni, qm.nr)
    ctx.send(sa, ExchangeType.QUICK_MODE, mid, [Hash(data=h3)], encrypt=True, in_reply_to=data)
    _install(ctx, sa, qm)


def _r3(ctx: IkeContext, sa: IkeSA, msg: Message, qm: QuickModeState) -> None:
    ctx.answered(sa, qm.message_id)
    _install(ctx, sa, qm)


def _install(ctx: IkeContext, sa: IkeSA, qm: QuickModeState) -> None:
    """Both directions' KEYMAT (RFC 2409 5.5): each uses the SPI its receiver chose."""
    assert sa.hash and qm.chosen
    sa.quick_modes.pop(qm.message_id, None)
    p = qm.chosen
    transform = make_transform(p.transform, p.key_bits, p.auth)
    if transform.weak:
        ctx.emit(WeakAlgorithm(sa.id, sa.peer, transform.name))
    lifetime = min(p.lifetime, qm.responder_lifetime or p.lifetime)
    k_in = kdf.keymat(sa.hash, sa.skeyid_d, ProtocolId.IPSEC_ESP, qm.our_spi, qm.ni, qm.nr,
                      transform.keymat_len, qm.gxy)
    k_out = kdf.keymat(sa.hash, sa.skeyid_d, ProtocolId.IPSEC_ESP, qm.peer_spi, qm.ni, qm.nr,
                       transform.keymat_len, qm.gxy)
    inbound, outbound = int.from_bytes(qm.our_spi, "big"), int.from_bytes(qm.peer_spi, "big")
    margin = (sa.profile.timers.rekey_margin if sa.profile else 0.0) * lifetime
    child = ChildSA(qm.message_id, inbound, outbound, p, qm.encap, qm.local_selector, qm.remote_selector,
                    ctx.now, ctx.now + lifetime, ctx.now + lifetime - margin if sa.role is Role.INITIATOR else None)
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
                      lifetime, qm.rekey_of))


def child_down(ctx: IkeContext, sa: IkeSA, child: ChildSA, reason: str, cause: Cause = Cause.OTHER) -> None:
    if sa.children.pop(child.inbound_spi, None) is not None:
        ctx.emit(ChildSaDown(sa.id, sa.peer, child.inbound_spi, child.outbound_spi, reason, cause))


def deadlines(sa: IkeSA) -> list[float]:
    out: list[float] = []
    for c in sa.children.values():
        out.append(c.expires_at)
        if c.rekey_at is not None and not c.rekeyed:
            out.append(c.rekey_at)
    return out


def timers(ctx: IkeContext, sa: IkeSA) -> None:
    from natt.ike import info

    for child in list(sa.children.values()):
        if ctx.now >= child.expires_at:
            info.send_delete_child(ctx, sa, child)
            child_down(ctx, sa, child, "lifetime expired", Cause.LIFETIME_EXPIRED)
        elif child.rekey_at is not None and not child.rekeyed and ctx.now >= child.rekey_at:
            child.rekeyed = True
            start(ctx, sa, child.remote_selector, rekey_of=child.inbound_spi)


QUICK_MODE = QuickMode()
