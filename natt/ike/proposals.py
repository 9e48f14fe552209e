"""Building and choosing SA proposals for phase 1 (ISAKMP) and phase 2 (ESP)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from natt.errors import BadProposalSyntax, NoProposalChosen
from natt.ike.config import Phase1Proposal, Phase2Proposal
from natt.wire.constants import (
    EncapsulationMode,
    IkeAttr,
    IkeTransformId,
    IpsecAttr,
    LifeType,
    ProtocolId,
)
from natt.wire.payloads import DataAttribute, Proposal, SecurityAssociation, Transform


def _phase1_transform(number: int, p: Phase1Proposal) -> Transform:
    attrs = [DataAttribute(IkeAttr.ENCRYPTION_ALGORITHM, p.cipher)]
    if p.key_bits is not None:
        attrs.append(DataAttribute(IkeAttr.KEY_LENGTH, p.key_bits))
    attrs += [
        DataAttribute(IkeAttr.HASH_ALGORITHM, p.hash),
        DataAttribute(IkeAttr.AUTHENTICATION_METHOD, p.auth),
        DataAttribute(IkeAttr.GROUP_DESCRIPTION, p.group),
        DataAttribute(IkeAttr.LIFE_TYPE, LifeType.SECONDS),
        DataAttribute.integer(IkeAttr.LIFE_DURATION, p.lifetime),
    ]
    return Transform(number, IkeTransformId.KEY_IKE, attrs)


def phase1_sa(proposals: Sequence[Phase1Proposal]) -> SecurityAssociation:
    transforms = [_phase1_transform(i + 1, p) for i, p in enumerate(proposals)]
    return SecurityAssociation(proposals=[Proposal(1, ProtocolId.ISAKMP, b"", transforms)])


def _read_phase1(t: Transform) -> Phase1Proposal:
    cipher, hash_, auth, group = (
        t.attr(IkeAttr.ENCRYPTION_ALGORITHM),
        t.attr(IkeAttr.HASH_ALGORITHM),
        t.attr(IkeAttr.AUTHENTICATION_METHOD),
        t.attr(IkeAttr.GROUP_DESCRIPTION),
    )
    if cipher is None or hash_ is None or auth is None or group is None:
        raise BadProposalSyntax(f"phase 1 transform {t.number} lacks a mandatory attribute")
    lifetime = 86400
    if t.attr(IkeAttr.LIFE_TYPE) == LifeType.SECONDS and t.attr(IkeAttr.LIFE_DURATION):
        lifetime = t.attr(IkeAttr.LIFE_DURATION) or lifetime
    return Phase1Proposal(cipher, t.attr(IkeAttr.KEY_LENGTH), hash_, group, auth, lifetime)


def _same_suite1(a: Phase1Proposal, b: Phase1Proposal) -> bool:
    return (a.cipher, a.key_bits, a.hash, a.group, a.auth) == (b.cipher, b.key_bits, b.hash, b.group, b.auth)


@dataclass
class Phase1Choice:
    proposal: Phase1Proposal  # with the lifetime both sides will use
    reply: SecurityAssociation
    peer_lifetime: int


def select_phase1(
    sa: SecurityAssociation, allowed: Sequence[Phase1Proposal], max_lifetime: int
) -> Phase1Choice:
    """The first of the peer's transforms that our policy allows (the peer's order wins)."""
    for prop in sa.proposals:
        if prop.protocol_id != ProtocolId.ISAKMP:
            continue
        for t in prop.transforms:
            if t.transform_id != IkeTransformId.KEY_IKE:
                continue
            try:
                offered = _read_phase1(t)
            except BadProposalSyntax:
                continue
            if any(_same_suite1(offered, ours) for ours in allowed):
                chosen = replace(offered, lifetime=min(offered.lifetime, max_lifetime))
                reply = SecurityAssociation(proposals=[Proposal(prop.number, ProtocolId.ISAKMP, b"", [t])])
                return Phase1Choice(chosen, reply, offered.lifetime)
    raise NoProposalChosen(f"none of {sum(len(p.transforms) for p in sa.proposals)} phase 1 transforms allowed")


def read_phase1_reply(sa: SecurityAssociation, offered: Sequence[Phase1Proposal]) -> Phase1Proposal:
    """The initiator checks the responder chose exactly one transform it offered."""
    if len(sa.proposals) != 1 or len(sa.proposals[0].transforms) != 1:
        raise BadProposalSyntax("responder must answer with one proposal and one transform")
    chosen = _read_phase1(sa.proposals[0].transforms[0])
    for ours in offered:
        if _same_suite1(chosen, ours):
            return replace(chosen, lifetime=min(chosen.lifetime, ours.lifetime))
    raise NoProposalChosen("responder chose a transform we did not offer")


# --- phase 2 ----------------------------------------------------------------------------


def _phase2_attrs(p: Phase2Proposal, encap: int) -> list[DataAttribute]:
    attrs = [
        DataAttribute(IpsecAttr.SA_LIFE_TYPE, LifeType.SECONDS),
        DataAttribute.integer(IpsecAttr.SA_LIFE_DURATION, p.lifetime),
        DataAttribute(IpsecAttr.ENCAPSULATION_MODE, encap),
    ]
    if p.auth is not None:
        attrs.append(DataAttribute(IpsecAttr.AUTHENTICATION_ALGORITHM, p.auth))
    if p.key_bits is not None:
        attrs.append(DataAttribute(IpsecAttr.KEY_LENGTH, p.key_bits))
    if p.pfs_group is not None:
        attrs.append(DataAttribute(IpsecAttr.GROUP_DESCRIPTION, p.pfs_group))
    return attrs


def phase2_sa(proposals: Sequence[Phase2Proposal], spi: bytes, encap: int) -> SecurityAssociation:
    """One proposal per suite, each with one transform, as Cisco clients send them."""
    props = [
        Proposal(i + 1, ProtocolId.IPSEC_ESP, spi, [Transform(1, p.transform, _phase2_attrs(p, encap))])
        for i, p in enumerate(proposals)
    ]
    return SecurityAssociation(proposals=props)


def _read_phase2(t: Transform) -> tuple[Phase2Proposal, int]:
    encap = t.attr(IpsecAttr.ENCAPSULATION_MODE) or EncapsulationMode.TUNNEL
    lifetime = 28800
    if t.attr(IpsecAttr.SA_LIFE_TYPE) in (None, LifeType.SECONDS) and t.attr(IpsecAttr.SA_LIFE_DURATION):
        lifetime = t.attr(IpsecAttr.SA_LIFE_DURATION) or lifetime
    p = Phase2Proposal(
        t.transform_id,
        t.attr(IpsecAttr.KEY_LENGTH),
        t.attr(IpsecAttr.AUTHENTICATION_ALGORITHM),
        t.attr(IpsecAttr.GROUP_DESCRIPTION),
        lifetime,
    )
    return p, encap


def _same_suite2(a: Phase2Proposal, b: Phase2Proposal) -> bool:
    return (a.transform, a.key_bits, a.auth, a.pfs_group) == (b.transform, b.key_bits, b.auth, b.pfs_group)


@dataclass
class Phase2Choice:
    proposal: Phase2Proposal
    encap: int
    peer_spi: bytes
    reply: SecurityAssociation
    peer_lifetime: int


def select_phase2(
    sa: SecurityAssociation,
    allowed: Sequence[Phase2Proposal],
    encap_modes: Sequence[int],
    our_spi: bytes,
    max_lifetime: int,
) -> Phase2Choice:
    for prop in sa.proposals:
        if prop.protocol_id != ProtocolId.IPSEC_ESP or len(prop.spi) != 4:
            continue
        for t in prop.transforms:
            offered, encap = _read_phase2(t)
            if encap not in encap_modes:
                continue
            if any(_same_suite2(offered, ours) for ours in allowed):
                lifetime = min(offered.lifetime, max_lifetime)
                chosen = replace(offered, lifetime=lifetime)
                reply_t = Transform(t.number, t.transform_id, _phase2_attrs(chosen, encap))
                reply = SecurityAssociation(proposals=[Proposal(prop.number, ProtocolId.IPSEC_ESP, our_spi, [reply_t])])
                return Phase2Choice(chosen, encap, prop.spi, reply, offered.lifetime)
    raise NoProposalChosen("no acceptable phase 2 proposal (transforms, key lengths, PFS or encapsulation)")


def read_phase2_reply(
    sa: SecurityAssociation, offered: Sequence[Phase2Proposal]
) -> tuple[Phase2Proposal, int, bytes]:
    if len(sa.proposals) != 1 or len(sa.proposals[0].transforms) != 1:
        raise BadProposalSyntax("responder must answer with one proposal and one transform")
    prop = sa.proposals[0]
    if prop.protocol_id != ProtocolId.IPSEC_ESP or len(prop.spi) != 4:
        raise BadProposalSyntax("phase 2 reply is not ESP with a 4-byte SPI")
    chosen, encap = _read_phase2(prop.transforms[0])
    for ours in offered:
        if _same_suite2(chosen, ours):
            return replace(chosen, lifetime=min(chosen.lifetime, ours.lifetime)), encap, prop.spi
    raise NoProposalChosen("responder chose a phase 2 transform we did not offer")


def lifetime_seconds(data: bytes, protocol_id: int) -> int | None:
    """The seconds in a RESPONDER-LIFETIME notify's attributes (RFC 2407 4.6.3).

    Phase 1 (protocol ISAKMP) uses the IKE attribute numbers, phase 2 the IPsec DOI ones.
    """
    from natt.errors import DecodeError
    from natt.wire.buffer import Reader
    from natt.wire.payloads.sa import decode_attributes

    life_type, duration = ((IkeAttr.LIFE_TYPE, IkeAttr.LIFE_DURATION) if protocol_id == ProtocolId.ISAKMP
                           else (IpsecAttr.SA_LIFE_TYPE, IpsecAttr.SA_LIFE_DURATION))
    try:
        attrs = decode_attributes(Reader(data))
        current = None
        for a in attrs:
            if a.type == life_type:
                current = a.as_int()
            elif a.type == duration and current == LifeType.SECONDS:
                return a.as_int()
    except DecodeError:
        return None
    return None
