"""Informational exchanges: notifies, deletes, DPD (RFC 3706), Cisco heartbeats, NAT keepalives.

    HDR*, HASH(1), N/D     with HASH(1) = prf(SKEYID_a, M-ID | N/D)   (RFC 2409 5.7)
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from natt.crypto import keys as kdf
from natt.errors import InvalidHashInformation, MissingPayload, NattError
from natt.esp.udpencap import CISCO_UDP_KEEPALIVE
from natt.ike.config import Timers
from natt.ike.events import DpdEvent, KeepaliveSent, NotifyReceived
from natt.ike.ikesa import ChildSA, Datagram, IkeSA, Role, State
from natt.wire.constants import (
    NAT_KEEPALIVE,
    ExchangeType,
    IkeAttr,
    LifeType,
    NotifyType,
    ProtocolId,
)
from natt.wire.message import Message, encode_payloads
from natt.wire.payloads import DataAttribute, Delete, Hash, Notify, Payload

if TYPE_CHECKING:
    from natt.ike.endpoint import IkeEndpoint


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


def timers_for(ep: IkeEndpoint, sa: IkeSA) -> Timers:
    if sa.profile is not None:
        return sa.profile.timers
    return ep.policy.timers if ep.policy else Timers()


def _cookies(sa: IkeSA) -> bytes:
    return sa.icookie + sa.rcookie


# -- sending ------------------------------------------------------------------------------------


def send_notify(ep: IkeEndpoint, sa: IkeSA, notify: Notify) -> None:
    ep.send_hashed(sa, ExchangeType.INFORMATIONAL, ep.new_message_id(sa), [notify])


def send_plain_notify(ep: IkeEndpoint, sa: IkeSA, err: NattError) -> None:
    """Report a phase 1 failure. Unencrypted: the peer may not share our keys (wrong PSK)."""
    if err.silent or err.notify is None or err.notify >= NotifyType.CONNECTED:
        return
    notify = Notify(err.notify, ProtocolId.ISAKMP, _cookies(sa))
    if sa.state is State.ESTABLISHED and sa.p1_last_block:
        send_notify(ep, sa, notify)
    else:
        ep.send(sa, ExchangeType.INFORMATIONAL, ep.new_message_id(sa), [notify], encrypt=False)


def send_phase1_lifetime(ep: IkeEndpoint, sa: IkeSA) -> None:
    assert sa.proposal
    w_attrs = [DataAttribute(IkeAttr.LIFE_TYPE, LifeType.SECONDS),
               DataAttribute.integer(IkeAttr.LIFE_DURATION, sa.proposal.lifetime)]
    from natt.wire.buffer import Writer

    w = Writer()
    for a in w_attrs:
        a.encode(w)
    send_notify(ep, sa, Notify(NotifyType.RESPONDER_LIFETIME, ProtocolId.ISAKMP, _cookies(sa), w.getvalue()))


def send_delete_child(ep: IkeEndpoint, sa: IkeSA, child: ChildSA) -> None:
    if sa.state is State.ESTABLISHED:
        d = Delete(ProtocolId.IPSEC_ESP, [child.inbound_spi.to_bytes(4, "big")], 4)
        ep.send_hashed(sa, ExchangeType.INFORMATIONAL, ep.new_message_id(sa), [d])


def send_delete_all(ep: IkeEndpoint, sa: IkeSA) -> None:
    for child in list(sa.children.values()):
        send_delete_child(ep, sa, child)
    d = Delete(ProtocolId.ISAKMP, [_cookies(sa)], 16)
    ep.send_hashed(sa, ExchangeType.INFORMATIONAL, ep.new_message_id(sa), [d])


def _send_dpd(ep: IkeEndpoint, sa: IkeSA) -> None:
    sa.dpd_seq = (sa.dpd_seq + 1) & 0xFFFFFFFF or 1
    sa.dpd_outstanding += 1
    sa.dpd_sent_at = ep.now
    send_notify(ep, sa, Notify(NotifyType.R_U_THERE, ProtocolId.ISAKMP, _cookies(sa), sa.dpd_seq.to_bytes(4, "big")))
    ep.emit(DpdEvent(sa.id, sa.peer, "request-sent", sa.dpd_seq))


# -- receiving ------------------------------------------------------------------------------------


def receive(ep: IkeEndpoint, sa: IkeSA, msg: Message, data: bytes) -> None:
    if not msg.header.encrypted:
        # Unauthenticated: log what the peer says, never act on it (anyone can forge it).
        for n in msg.notifies():
            ep.emit(NotifyReceived(sa.id, sa.peer, n.notify_type, n.protocol_id, n.spi, n.data))
        return
    if not sa.p1_last_block:
        raise InvalidHashInformation("encrypted informational before phase 1 keys")
    check_hash(sa, msg)
    for n in msg.notifies():
        _notify(ep, sa, n)
    for d in msg.get_all(Delete):
        _delete(ep, sa, d)


def _notify(ep: IkeEndpoint, sa: IkeSA, n: Notify) -> None:
    ep.emit(NotifyReceived(sa.id, sa.peer, n.notify_type, n.protocol_id, n.spi, n.data))
    if n.notify_type == NotifyType.R_U_THERE:
        seq = int.from_bytes(n.data[:4], "big") if len(n.data) >= 4 else 0
        ep.emit(DpdEvent(sa.id, sa.peer, "request-received", seq))
        send_notify(ep, sa, Notify(NotifyType.R_U_THERE_ACK, ProtocolId.ISAKMP, _cookies(sa), n.data[:4]))
        ep.emit(DpdEvent(sa.id, sa.peer, "ack-sent", seq))
    elif n.notify_type == NotifyType.R_U_THERE_ACK:
        seq = int.from_bytes(n.data[:4], "big") if len(n.data) >= 4 else 0
        if seq == sa.dpd_seq:
            sa.dpd_outstanding = 0
            sa.dpd_sent_at = None
        ep.emit(DpdEvent(sa.id, sa.peer, "ack-received", seq))
    elif n.notify_type == NotifyType.CISCO_HEARTBEAT:
        seq = int.from_bytes(n.data[:4], "big") if len(n.data) >= 4 else 0
        ep.emit(DpdEvent(sa.id, sa.peer, "heartbeat-received", seq))
    elif n.notify_type == NotifyType.RESPONDER_LIFETIME and n.protocol_id == ProtocolId.ISAKMP:
        from natt.ike.proposals import lifetime_seconds

        seconds = lifetime_seconds(n.data, n.protocol_id)
        if seconds and sa.established_at is not None:
            sa.expires_at = min(sa.expires_at or float("inf"), sa.established_at + seconds)


def _delete(ep: IkeEndpoint, sa: IkeSA, d: Delete) -> None:
    from natt.ike.quick import child_down

    if d.protocol_id == ProtocolId.ISAKMP:
        if _cookies(sa) in d.spis:
            ep.remove_sa(sa, "peer deleted the IKE SA")
        return
    for spi in d.spis:
        value = int.from_bytes(spi, "big")
        for child in list(sa.children.values()):
            if child.outbound_spi == value:
                child_down(ep, sa, child, "peer deleted the SA")


# -- liveness timers ------------------------------------------------------------------------------


def start_liveness(ep: IkeEndpoint, sa: IkeSA) -> None:
    t = timers_for(ep, sa)
    ipsec_over_udp = sa.cisco_udp_port is not None and sa.role is Role.INITIATOR
    if (sa.floated or ipsec_over_udp) and t.keepalive_interval > 0:
        sa.next_keepalive = ep.now + t.keepalive_interval
    if sa.role is Role.INITIATOR and t.heartbeat_interval > 0:
        sa.next_heartbeat = ep.now + t.heartbeat_interval


def deadlines(ep: IkeEndpoint, sa: IkeSA) -> list[float]:
    if sa.state is not State.ESTABLISHED:
        return []
    t = timers_for(ep, sa)
    out = [x for x in (sa.next_keepalive, sa.next_heartbeat) if x is not None]
    if sa.peer_dpd and t.dpd_interval > 0:
        if sa.dpd_sent_at is not None:
            out.append(sa.dpd_sent_at + t.retransmit_base)
        else:
            out.append(max(sa.last_inbound, sa.established_at or 0.0) + t.dpd_interval)
    return out


def timers(ep: IkeEndpoint, sa: IkeSA) -> None:
    if sa.state is not State.ESTABLISHED:
        return
    t = timers_for(ep, sa)
    now = ep.now
    if sa.next_keepalive is not None and now >= sa.next_keepalive:
        if sa.cisco_udp_port is not None:  # keep the PAT's mapping for the IPsec-over-UDP port alive
            port = sa.cisco_udp_port
            ep.queue(Datagram(CISCO_UDP_KEEPALIVE, (sa.remote[0], port), port))
        else:
            ep.queue(Datagram(NAT_KEEPALIVE, sa.remote, sa.local[1]))
        ep.emit(KeepaliveSent(sa.id, sa.peer))
        sa.next_keepalive = now + t.keepalive_interval
    if sa.next_heartbeat is not None and now >= sa.next_heartbeat:
        sa.dpd_seq = (sa.dpd_seq + 1) & 0xFFFFFFFF or 1
        send_notify(ep, sa, Notify(NotifyType.CISCO_HEARTBEAT, ProtocolId.ISAKMP, _cookies(sa),
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
                ep.remove_sa(sa, f"DPD: no answer to {sa.dpd_outstanding} R-U-THERE")
                return
            _send_dpd(ep, sa)
    elif now >= max(sa.last_inbound, sa.established_at or 0.0) + t.dpd_interval:
        _send_dpd(ep, sa)
