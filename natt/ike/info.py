"""Informational exchanges: notifies, deletes, DPD (RFC 3706), Cisco heartbeats, NAT keepalives.

    HDR*, HASH(1), N/D     with HASH(1) = prf(SKEYID_a, M-ID | N/D)   (RFC 2409 5.7)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from natt.crypto import keys as kdf
from natt.errors import InvalidHashInformation, MissingPayload, NattError
from natt.esp.udpencap import CISCO_UDP_KEEPALIVE
from natt.ike.config import Timers
from natt.ike.events import Cause, DpdEvent, KeepaliveSent, MessageRefused, NotifyHint, NotifyReceived
from natt.ike.ikesa import AFTER_PHASE1_STATES, ChildSA, Datagram, IkeSA, Role, State
from natt.ike.rules import Kind
from natt.wire.constants import (
    NAT_KEEPALIVE,
    ExchangeType,
    IkeAttr,
    LifeType,
    NotifyType,
    ProtocolId,
)
from natt.wire.message import Header, Message, encode_payloads
from natt.wire.payloads import DataAttribute, Delete, Hash, Notify, Payload

if TYPE_CHECKING:
    from natt.ike.context import IkeContext

VPNC_QUIRK = 60.0  # seconds after a take-over in which a DELETE naming the new SA is read as vpnc's (see _delete)


def hash_payload(sa: IkeSA, message_id: int, payloads: list[Payload]) -> Hash:
    assert sa.hash
    return Hash(data=kdf.info_hash(sa.hash, sa.skeyid_a, message_id, encode_payloads(payloads)[1]))


def check_hash(sa: IkeSA, msg: Message) -> None:
    assert sa.hash
    if not msg.header.encrypted:
        raise InvalidHashInformation(f"unencrypted exchange {msg.header.exchange} after phase 1")
    if not msg.payloads or not isinstance(msg.payloads[0], Hash):
        raise MissingPayload("message does not start with HASH")
    want = kdf.info_hash(sa.hash, sa.skeyid_a, msg.header.message_id, msg.bytes_after_first())
    if msg.payloads[0].data == want:
        return
    if len(msg.payloads) == 1 and msg.payloads[0].data == kdf.empty_info_hash(sa.hash, sa.skeyid_a,
                                                                             msg.header.message_id):
        return  # vpnc's IKE keepalive (sent in Cisco IPsec-over-UDP mode): an Informational with HASH only
    raise InvalidHashInformation("HASH(1) does not match")


def timers_for(ctx: IkeContext, sa: IkeSA) -> Timers:
    if sa.profile is not None:
        return sa.profile.timers
    return ctx.policy.timers if ctx.policy else Timers()


def _cookies(sa: IkeSA) -> bytes:
    return sa.icookie + sa.rcookie


# -- sending ------------------------------------------------------------------------------------


def send_notify(ctx: IkeContext, sa: IkeSA, notify: Notify, in_reply_to: bytes | None = None) -> None:
    ctx.send_hashed(sa, ExchangeType.INFORMATIONAL, ctx.new_message_id(sa), [notify], in_reply_to=in_reply_to)


def send_plain_notify(ctx: IkeContext, sa: IkeSA, err: NattError, in_reply_to: bytes | None = None) -> None:
    """Say why a message was refused: encrypted once phase 1 keys exist, else in clear (the peer may not share our
    keys: wrong PSK). With `in_reply_to`, a retransmission of the refused message gets the same answer again."""
    if err.silent or err.notify is None or err.notify >= NotifyType.CONNECTED:
        return
    notify = Notify(err.notify, ProtocolId.ISAKMP, _cookies(sa))
    if sa.state in AFTER_PHASE1_STATES and sa.p1_last_block:
        send_notify(ctx, sa, notify, in_reply_to)
    else:
        ctx.send(sa, ExchangeType.INFORMATIONAL, ctx.new_message_id(sa), [notify], encrypt=False)


def send_phase1_lifetime(ctx: IkeContext, sa: IkeSA) -> None:
    assert sa.proposal
    w_attrs = [DataAttribute(IkeAttr.LIFE_TYPE, LifeType.SECONDS),
               DataAttribute.integer(IkeAttr.LIFE_DURATION, sa.proposal.lifetime)]
    from natt.wire.buffer import Writer

    w = Writer()
    for a in w_attrs:
        a.encode(w)
    send_notify(ctx, sa, Notify(NotifyType.RESPONDER_LIFETIME, ProtocolId.ISAKMP, _cookies(sa), w.getvalue()))


def send_delete_child(ctx: IkeContext, sa: IkeSA, child: ChildSA) -> None:
    if sa.state in AFTER_PHASE1_STATES:
        d = Delete(ProtocolId.IPSEC_ESP, [child.inbound_spi.to_bytes(4, "big")], 4)
        ctx.send_hashed(sa, ExchangeType.INFORMATIONAL, ctx.new_message_id(sa), [d])


def send_delete_reason(ctx: IkeContext, sa: IkeSA, reason: str) -> None:
    """Why the session ends, before its DELETE (private status DELETE-REASON): the client shows it to its user."""
    send_notify(ctx, sa, Notify(NotifyType.DELETE_REASON, ProtocolId.ISAKMP, _cookies(sa), reason.encode()[:200]))


def send_delete_all(ctx: IkeContext, sa: IkeSA) -> None:
    for child in list(sa.children.values()):
        send_delete_child(ctx, sa, child)
    d = Delete(ProtocolId.ISAKMP, [_cookies(sa)], 16)
    ctx.send_hashed(sa, ExchangeType.INFORMATIONAL, ctx.new_message_id(sa), [d])


def _send_dpd(ctx: IkeContext, sa: IkeSA) -> None:
    sa.dpd_seq = (sa.dpd_seq + 1) & 0xFFFFFFFF or 1
    sa.dpd_outstanding += 1
    sa.dpd_sent_at = ctx.now
    send_notify(ctx, sa, Notify(NotifyType.R_U_THERE, ProtocolId.ISAKMP, _cookies(sa), sa.dpd_seq.to_bytes(4, "big")))
    ctx.emit(DpdEvent(sa.id, sa.peer, "request-sent", sa.dpd_seq))


def dpd_now(ctx: IkeContext, sa: IkeSA, why: str) -> None:
    """A hint (an unprotected INVALID-SPI / INVALID-COOKIE from the peer's address) that the peer may have lost our
    SA: check at once with an authenticated R-U-THERE, unless a check is already under way. Nothing else is done
    on the hint's word; the DPD answer (or its absence) decides."""
    if sa.established_at is None or sa.dpd_sent_at is not None or sa.state is State.DELETED:
        return
    ctx.stats["dpd-on-hint"] += 1
    ctx.emit(NotifyHint(sa.id, sa.peer, why))
    _send_dpd(ctx, sa)


def invalid_cookie_notify(header: Header) -> bytes:
    """INVALID-COOKIE about the cookies a message came with, unprotected (we share no keys with its sender)."""
    return _plain_notify(header.icookie, header.rcookie,
                         Notify(NotifyType.INVALID_COOKIE, ProtocolId.ISAKMP, header.icookie + header.rcookie))


def invalid_spi(sa: IkeSA, spi: int) -> Notify:
    return Notify(NotifyType.INVALID_SPI, ProtocolId.IPSEC_ESP, spi.to_bytes(4, "big"))


def orphan_invalid_spi(icookie: bytes, spi: int) -> bytes:
    """INVALID-SPI under no IKE SA (a fresh initiator cookie, no responder cookie), unprotected."""
    notify = Notify(NotifyType.INVALID_SPI, ProtocolId.IPSEC_ESP, spi.to_bytes(4, "big"))
    return _plain_notify(icookie, bytes(8), notify)


def _plain_notify(icookie: bytes, rcookie: bytes, notify: Notify) -> bytes:
    from natt.wire.buffer import Writer
    from natt.wire.constants import HEADER_LEN
    from natt.wire.message import Header as _Header

    first, body = encode_payloads([notify])
    w = Writer()
    _Header(icookie, rcookie, first, ExchangeType.INFORMATIONAL, 0, 0, HEADER_LEN + len(body)).encode(w)
    return w.getvalue() + body


# -- receiving ------------------------------------------------------------------------------------


class Informational:
    """RFC 2409 5.7: after phase 1, HASH(1)-protected notifies and deletes; before it, unencrypted notifies that
    are logged and never acted on (anyone can forge them)."""

    def verify(self, ctx: IkeContext, sa: IkeSA, msg: Message, kind: Kind) -> None:
        if kind is Kind.INFO:
            if not sa.p1_last_block:
                raise InvalidHashInformation("encrypted informational before phase 1 keys")
            check_hash(sa, msg)

    def process(self, ctx: IkeContext, sa: IkeSA, msg: Message, kind: Kind, data: bytes) -> None:
        if kind is Kind.INFO_PLAIN:
            for n in msg.notifies():
                ctx.emit(NotifyReceived(sa.id, sa.peer, n.notify_type, n.protocol_id, n.spi, n.data))
                if n.notify_type == NotifyType.INVALID_COOKIE and n.spi == _cookies(sa):
                    dpd_now(ctx, sa, "INVALID-COOKIE")  # the gateway says it has no such SA: check now
                elif n.notify_type == NotifyType.INVALID_SPI and len(n.spi) == 4 and \
                        any(c.outbound_spi == int.from_bytes(n.spi, "big") for c in sa.children.values()):
                    dpd_now(ctx, sa, "INVALID-SPI")
            return
        for n in msg.notifies():
            _notify(ctx, sa, n)
        for d in msg.get_all(Delete):
            _delete(ctx, sa, d)


def _notify(ctx: IkeContext, sa: IkeSA, n: Notify) -> None:
    ctx.emit(NotifyReceived(sa.id, sa.peer, n.notify_type, n.protocol_id, n.spi, n.data))
    if n.notify_type == NotifyType.R_U_THERE:
        seq = int.from_bytes(n.data[:4], "big") if len(n.data) >= 4 else 0
        ctx.emit(DpdEvent(sa.id, sa.peer, "request-received", seq))
        send_notify(ctx, sa, Notify(NotifyType.R_U_THERE_ACK, ProtocolId.ISAKMP, _cookies(sa), n.data[:4]))
        ctx.emit(DpdEvent(sa.id, sa.peer, "ack-sent", seq))
    elif n.notify_type == NotifyType.R_U_THERE_ACK:
        seq = int.from_bytes(n.data[:4], "big") if len(n.data) >= 4 else 0
        if seq == sa.dpd_seq:
            sa.dpd_outstanding = 0
            sa.dpd_sent_at = None
        ctx.emit(DpdEvent(sa.id, sa.peer, "ack-received", seq))
    elif n.notify_type == NotifyType.CISCO_HEARTBEAT:
        seq = int.from_bytes(n.data[:4], "big") if len(n.data) >= 4 else 0
        ctx.emit(DpdEvent(sa.id, sa.peer, "heartbeat-received", seq))
    elif n.notify_type == NotifyType.RESPONDER_LIFETIME and n.protocol_id == ProtocolId.ISAKMP:
        from natt.ike.phase1 import schedule_reauth
        from natt.ike.proposals import lifetime_seconds

        seconds = lifetime_seconds(n.data, n.protocol_id)
        if seconds and sa.established_at is not None:
            sa.expires_at = min(sa.expires_at or float("inf"), sa.established_at + seconds)
            schedule_reauth(ctx, sa)
    elif n.notify_type == NotifyType.DELETE_REASON and sa.initiator is not None:
        sa.initiator.peer_reason = n.data[:200].decode("utf-8", "replace")
    elif n.notify_type == NotifyType.INVALID_SPI and n.protocol_id == ProtocolId.IPSEC_ESP and len(n.spi) == 4:
        _invalid_spi(ctx, sa, int.from_bytes(n.spi, "big"))


def _invalid_spi(ctx: IkeContext, sa: IkeSA, spi: int) -> None:
    """A protected INVALID-SPI (inside the IKE SA: the peer itself says it) naming an SPI we send on: the peer has
    no such SA, say its Quick Mode ended without it, so the pair carries nothing. It goes, its DELETE telling the
    peer to drop any half of it; and a client sets that tunnel up again at once unless another pair or a Quick
    Mode under way has it (Cisco's invalid-SPI recovery). Without this, a client kept sending into the pair until
    its rekey. An unprotected INVALID-SPI only starts DPD (Informational.process): anyone can send one."""
    from natt.ike import quick

    for s in [sa, *ctx.session_peers(sa)]:
        child = next((c for c in s.children.values() if c.outbound_spi == spi), None)
        if child is None:
            continue
        ctx.stats["invalid-spi-pair-removed"] += 1
        selectors = (child.local_selector, child.remote_selector)
        send_delete_child(ctx, s, child)
        quick.child_down(ctx, s, child, "the peer has no SA for it (INVALID-SPI)", Cause.UNKNOWN_SPI)
        if s.role is not Role.INITIATOR or s.state is not State.ESTABLISHED:
            return
        carried = any((c.local_selector, c.remote_selector) == selectors for c in s.children.values()) or any(
            q.ours and not q.abandoned and (q.local_selector, q.remote_selector) == selectors
            for q in s.quick_modes.values())
        if not carried:
            ctx.stats["invalid-spi-tunnel-restarted"] += 1
            quick.start(ctx, s, child.remote_selector)
        return


def _delete(ctx: IkeContext, sa: IkeSA, d: Delete) -> None:
    from natt.ike.quick import child_down

    if d.protocol_id == ProtocolId.ISAKMP:
        older = [o for o in ctx.session_peers(sa) if o.created_at < sa.created_at]
        if _cookies(sa) in d.spis and older and sa.adopted_at is not None and ctx.now - sa.adopted_at < VPNC_QUIRK:
            # Debian's vpnc (before upstream ef04936) deletes its old phase 1 after re-authenticating, but names
            # the new one's cookies. Just after a take-over, with the older SA still there, that is what it means.
            ctx.stats["delete-names-successor"] += 1
            for o in older:
                ctx.remove_sa(o, "peer deleted the IKE SA (its re-authenticated successor goes on)", Cause.REKEYED)
            return
        if _cookies(sa) in d.spis:
            said = sa.initiator.peer_reason if sa.initiator is not None else ""
            ctx.remove_sa(sa, f"peer deleted the IKE SA: {said}" if said else "peer deleted the IKE SA",
                          Cause.PEER_DELETED)
        else:
            _delete_refused(ctx, sa, "DELETE names another IKE SA")
        return
    session = [sa, *ctx.session_peers(sa)]  # a re-authentication moved the pairs: still this session's
    for spi in d.spis:
        value = int.from_bytes(spi, "big")
        mine = [(s, c) for s in session for c in s.children.values() if c.outbound_spi == value]
        if not mine:
            # An SA of another session (or none): a peer deletes only what it negotiated with us.
            _delete_refused(ctx, sa, f"DELETE names SPI 0x{value:08x}, not one of this session's")
        for owner, child in mine:
            child_down(ctx, owner, child, "peer deleted the SA", Cause.PEER_DELETED)


def _delete_refused(ctx: IkeContext, sa: IkeSA, why: str) -> None:
    ctx.stats["delete-unknown-spi"] += 1
    ctx.emit(MessageRefused(sa.id, sa.peer, sa.state.value, ExchangeType.INFORMATIONAL, why, Cause.UNKNOWN_SPI))


# -- liveness timers ------------------------------------------------------------------------------


def start_liveness(ctx: IkeContext, sa: IkeSA) -> None:
    t = timers_for(ctx, sa)
    ipsec_over_udp = sa.cisco_udp_port is not None and sa.role is Role.INITIATOR
    if (sa.floated or ipsec_over_udp) and t.keepalive_interval > 0:
        sa.next_keepalive = ctx.now + t.keepalive_interval
    if sa.role is Role.INITIATOR and t.heartbeat_interval > 0:
        sa.next_heartbeat = ctx.now + t.heartbeat_interval


def deadlines(ctx: IkeContext, sa: IkeSA) -> list[float]:
    if sa.established_at is None or sa.state is State.DELETED:
        return []
    t = timers_for(ctx, sa)
    out = [x for x in (sa.next_keepalive, sa.next_heartbeat) if x is not None]
    if sa.peer_dpd and t.dpd_interval > 0:
        if sa.dpd_sent_at is not None:
            out.append(sa.dpd_sent_at + t.retransmit_base)
        else:
            out.append(max(sa.last_inbound, sa.established_at or 0.0) + t.dpd_interval)
    return out


def timers(ctx: IkeContext, sa: IkeSA) -> None:
    if sa.established_at is None or sa.state is State.DELETED:
        return
    t = timers_for(ctx, sa)
    now = ctx.now
    if sa.next_keepalive is not None and now >= sa.next_keepalive:
        if sa.cisco_udp_port is not None:  # keep the PAT's mapping for the IPsec-over-UDP port alive
            port = sa.cisco_udp_port
            ctx.queue(Datagram(CISCO_UDP_KEEPALIVE, (sa.remote[0], port), port))
        else:
            ctx.queue(Datagram(NAT_KEEPALIVE, sa.remote, sa.local[1]))
        ctx.emit(KeepaliveSent(sa.id, sa.peer))
        sa.next_keepalive = now + t.keepalive_interval
    if sa.next_heartbeat is not None and now >= sa.next_heartbeat:
        sa.dpd_seq = (sa.dpd_seq + 1) & 0xFFFFFFFF or 1
        send_notify(ctx, sa, Notify(NotifyType.CISCO_HEARTBEAT, ProtocolId.ISAKMP, _cookies(sa),
                                   sa.dpd_seq.to_bytes(4, "big")))
        sa.next_heartbeat = now + t.heartbeat_interval
    if not sa.peer_dpd or t.dpd_interval <= 0:
        return
    if sa.dpd_sent_at is not None:
        if sa.last_inbound > sa.dpd_sent_at:
            # Any authenticated traffic from the peer proves it alive (RFC 3706 5.5).
            sa.dpd_outstanding, sa.dpd_sent_at = 0, None
        elif now >= sa.dpd_sent_at + t.retransmit_base:
            if sa.dpd_outstanding >= t.dpd_retries:
                ctx.remove_sa(sa, f"DPD: no answer to {sa.dpd_outstanding} R-U-THERE", Cause.DPD_TIMEOUT)
                return
            _send_dpd(ctx, sa)
    elif now >= max(sa.last_inbound, sa.established_at or 0.0) + t.dpd_interval:
        _send_dpd(ctx, sa)


INFORMATIONAL = Informational()
