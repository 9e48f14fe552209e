"""The face of the IKE core: bytes, addresses and time in; datagrams, a timer and events out.

In the manner of aioquic's QuicConnection, one IkeEndpoint serves every IKE SA of a daemon:

    ep.receive_datagram(data, remote, local_port, now)
    for d in ep.datagrams_to_send(): sock[d.local_port].sendto(d.data, d.remote)
    while (e := ep.next_event()) is not None: ...
    ep.handle_timer(now) when now >= ep.get_timer()

It never touches a socket or a clock. ESP does not come here: the daemon's fast path takes it.
"""

from __future__ import annotations

import hashlib
import heapq
import os
from collections import Counter, deque
from collections.abc import Callable

from natt.errors import (
    AuthenticationFailed,
    DecodeError,
    DecryptionError,
    NattError,
    ProtocolError,
    UnexpectedMessage,
)
from natt.ike import info, phase1, quick, transaction
from natt.ike.config import ClientProfile, ConcentratorPolicy, GroupPolicy
from natt.ike.events import (
    ExchangeFailed,
    IkeEvent,
    IkeSaDown,
    KeepaliveReceived,
    MessageReceived,
    MessageSent,
)
from natt.ike.ikesa import PHASE1_STATES, Datagram, IkeSA, Retransmit, Role, State
from natt.ike.pool import AddressPool
from natt.wire.constants import (
    HEADER_LEN,
    IKE_PORT,
    NAT_KEEPALIVE,
    NATT_PORT,
    NON_ESP_MARKER,
    ExchangeType,
    notify_name,
)
from natt.wire.message import Header, Message
from natt.wire.payloads import Notify, Payload

ZERO_COOKIE = bytes(8)
HALF_OPEN_TIMEOUT = 30.0
MAX_REPLY_CACHE = 4  # a peer retransmits its latest request(s); two Quick Modes may overlap
# A peer gives up retransmitting well within this (vpnc: 5 tries over ~30 s; strongSwan: ~165 s for IKEv2, 5
# IKEv1 retransmits within ~60 s by default); after it, cached replies only cost memory in an idle session.
REPLY_CACHE_TTL = 180.0


class IkeEndpoint:
    def __init__(
        self,
        local_address: str,
        policy: ConcentratorPolicy | None = None,
        *,
        ike_port: int = IKE_PORT,
        natt_port: int = NATT_PORT,
        rng: Callable[[int], bytes] = os.urandom,
    ) -> None:
        self.local_address = local_address
        self.policy = policy
        self.ike_port = ike_port
        self.natt_port = natt_port
        self._plain_ports = {ike_port}  # ports where IKE comes without the non-ESP marker
        self.rng = rng
        self.now = 0.0
        self.sas: dict[int, IkeSA] = {}
        self._by_cookies: dict[tuple[bytes, bytes], IkeSA] = {}
        self._half_open: dict[tuple[bytes, tuple[str, int]], IkeSA] = {}
        self._next_id = 1
        self._out: list[Datagram] = []
        self._events: deque[IkeEvent] = deque()
        self.stats: Counter[str] = Counter()
        self.pools: dict[str, AddressPool] = {}
        self.peak_sessions = 0
        self.total_sessions = 0
        self.established_count = 0  # SAs past phase 1 and not removed (the session limit counts these)
        # Timers: each SA's earliest deadline in a heap. An entry may fire early (then the SA is looked at and
        # filed again) but never late: whatever can bring a deadline forward reschedules that SA.
        self._timer_heap: list[tuple[float, int]] = []
        self._due: dict[int, float] = {}
        self._by_remote: dict[tuple[str, int], int] = {}  # NAT keepalive source → SA id (a cache)

    # -- the I/O side's calls --------------------------------------------------------------

    def connect(self, profile: ClientProfile, now: float, local_port: int | None = None) -> int:
        """Start phase 1 towards profile.peer as the initiator; returns the SA handle."""
        self.now = now
        port = local_port or self.ike_port
        self._plain_ports.add(port)  # an initiator may start IKE from any source port
        sa = self._new_sa(Role.INITIATOR, self.rng(8), ZERO_COOKIE, (self.local_address, port),
                          (profile.peer, IKE_PORT))
        sa.profile = profile
        sa.mode = profile.mode
        phase1.start(self, sa)
        self._schedule(sa)
        return sa.id

    def receive_datagram(self, data: bytes, remote: tuple[str, int], local_port: int, now: float) -> None:
        self.now = now
        if local_port not in self._plain_ports:
            if data == NAT_KEEPALIVE:
                self._keepalive_received(remote)
                return
            if not data.startswith(NON_ESP_MARKER):
                self.stats["esp-on-ike-path"] += 1
                return
            data = data[len(NON_ESP_MARKER) :]
        try:
            header = Header.decode(data)
        except DecodeError as e:
            self._refused(None, remote, e, fatal=False)
            return
        sa = self._find_sa(header, remote, data)
        if sa is None:
            return
        self._receive_for(sa, header, data, remote, local_port)
        self._schedule(sa)

    def datagrams_to_send(self) -> list[Datagram]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> IkeEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        heap, due = self._timer_heap, self._due
        while heap:
            when, sa_id = heap[0]
            if due.get(sa_id) == when:
                return when
            heapq.heappop(heap)  # superseded by a later filing of the same SA, or the SA is gone
        return None

    def handle_timer(self, now: float) -> None:
        self.now = now
        heap, due = self._timer_heap, self._due
        fired: list[IkeSA] = []
        while heap and heap[0][0] <= now:
            when, sa_id = heapq.heappop(heap)
            if due.get(sa_id) != when:
                continue
            del due[sa_id]
            sa = self.sas.get(sa_id)
            if sa is not None:
                fired.append(sa)
        for sa in fired:
            self._sa_timers(sa)
            self._schedule(sa)

    def _schedule(self, sa: IkeSA) -> None:
        """File the SA under its earliest deadline (after anything that may have changed its deadlines)."""
        if sa.id not in self.sas:
            self._due.pop(sa.id, None)
            return
        deadlines = self._deadlines(sa)
        if not deadlines:
            self._due.pop(sa.id, None)
            return
        when = min(deadlines)
        if self._due.get(sa.id) != when:
            self._due[sa.id] = when
            heapq.heappush(self._timer_heap, (when, sa.id))

    def delete_sa(self, sa_id: int, now: float, reason: str = "administrator request") -> None:
        """Tell the peer (delete notifies for every child and the IKE SA), then forget the SA."""
        self.now = now
        sa = self.sas.get(sa_id)
        if sa is None:
            return
        if sa.state not in (State.START, State.DELETED) and sa.enc_key and sa.p1_last_block:
            info.send_delete_all(self, sa)
        self.remove_sa(sa, reason)
        self._schedule(sa)

    def note_inbound_traffic(self, sa_id: int, now: float) -> None:
        """ESP arrived for this SA: the peer is alive, no DPD needed (RFC 3706 5.5)."""
        sa = self.sas.get(sa_id)
        if sa is not None:
            sa.last_inbound = now

    def active_sessions(self) -> list[IkeSA]:
        return [sa for sa in self.sas.values() if sa.state not in (State.DELETED,)]

    # -- services for the exchange modules -------------------------------------------------

    def emit(self, event: IkeEvent) -> None:
        self._events.append(event)

    def new_message_id(self, sa: IkeSA) -> int:
        while True:
            mid = int.from_bytes(self.rng(4), "big")
            if mid and mid not in sa.ivs and mid not in sa.pending:
                return mid

    def send(
        self,
        sa: IkeSA,
        exchange: int,
        message_id: int,
        payloads: list[Payload],
        *,
        encrypt: bool,
        expect: str | None = None,
        in_reply_to: bytes | None = None,
    ) -> Datagram:
        """Seal and queue a message; `expect` arms retransmission until a reply clears it."""
        data = sa.seal(exchange, message_id, payloads, encrypt)
        dgram = sa.datagram(data)
        self._out.append(dgram)
        sa.last_outbound = self.now
        notifies = tuple(p.notify_type for p in payloads if isinstance(p, Notify))
        self.emit(MessageSent(sa.id, sa.peer, exchange, tuple(p.payload_type for p in payloads),
                              encrypt, message_id, dgram.remote[1], notifies))
        if expect is not None:
            t = sa.profile.timers if sa.profile else self.policy.timers if self.policy else None
            base = t.retransmit_base if t else 2.0
            tries = t.retransmit_tries if t else 5
            sa.pending[message_id] = Retransmit(dgram, self.now + base, base, tries, expect)
        if in_reply_to is not None:
            sa.replies[_digest(in_reply_to)] = dgram
            sa.replied_at = self.now
            while len(sa.replies) > MAX_REPLY_CACHE:
                sa.replies.pop(next(iter(sa.replies)))
        return dgram

    def send_hashed(self, sa: IkeSA, exchange: int, message_id: int, payloads: list[Payload],
                    *, expect: str | None = None, in_reply_to: bytes | None = None) -> Datagram:
        """Informational and transaction messages: HASH(1) = prf(SKEYID_a, M-ID | rest)."""
        return self.send(sa, exchange, message_id, [info.hash_payload(sa, message_id, payloads), *payloads],
                         encrypt=True, expect=expect, in_reply_to=in_reply_to)

    def answered(self, sa: IkeSA, message_id: int) -> None:
        sa.pending.pop(message_id, None)

    def float_ports(self, sa: IkeSA) -> None:
        """Move this SA to UDP 4500 (RFC 3947 4): both ends, from the next message on."""
        if not sa.floated:
            sa.floated = True
            sa.local = (sa.local[0], self.natt_port)
            if sa.role is Role.INITIATOR:
                sa.remote = (sa.remote[0], NATT_PORT)

    def queue(self, datagram: Datagram) -> None:
        self._out.append(datagram)

    def pool_for(self, group: GroupPolicy) -> AddressPool:
        pool = self.pools.get(group.name)
        if pool is None:
            pool = self.pools[group.name] = AddressPool(group.pool)
        return pool

    def register_cookies(self, sa: IkeSA) -> None:
        self._by_cookies[(sa.icookie, sa.rcookie)] = sa

    def remove_sa(self, sa: IkeSA, reason: str) -> None:
        if sa.state is State.DELETED:
            return
        for child in list(sa.children.values()):
            quick.child_down(self, sa, child, reason)
        if sa.established_at is not None:
            self.established_count -= 1
        sa.state = State.DELETED
        sa.delete_reason = reason
        if sa.role is Role.RESPONDER and sa.assigned_address and sa.group:
            self.pool_for(sa.group).release(sa.assigned_address)
        self.sas.pop(sa.id, None)
        self._due.pop(sa.id, None)
        self._by_cookies.pop((sa.icookie, sa.rcookie), None)
        for key, other in list(self._half_open.items()):
            if other is sa:
                del self._half_open[key]
        self.emit(IkeSaDown(sa.id, sa.peer, reason))

    def refuse(self, sa: IkeSA | None, remote: tuple[str, int], err: NattError, *, fatal: bool) -> None:
        self._refused(sa, remote, err, fatal=fatal)

    # -- internals ---------------------------------------------------------------------------

    def _new_sa(self, role: Role, icookie: bytes, rcookie: bytes,
                local: tuple[str, int], remote: tuple[str, int]) -> IkeSA:
        sa = IkeSA(self._next_id, role, icookie, rcookie, local, remote, self.now)
        sa.last_inbound = self.now
        self._next_id += 1
        self.sas[sa.id] = sa
        self.register_cookies(sa)
        return sa

    def _find_sa(self, header: Header, remote: tuple[str, int], data: bytes) -> IkeSA | None:
        sa = self._by_cookies.get((header.icookie, header.rcookie))
        if sa is not None:
            return sa
        if header.rcookie == ZERO_COOKIE:
            if header.exchange not in (ExchangeType.AGGRESSIVE, ExchangeType.IDENTITY_PROTECTION):
                self.stats["INVALID-COOKIE"] += 1
                return None
            known = self._half_open.get((header.icookie, remote))
            if known is not None:
                return known
            return self._new_responder_sa(header, remote)
        # A responder's first reply: our initiator SA is still filed under a zero rcookie.
        pending = self._by_cookies.get((header.icookie, ZERO_COOKIE))
        if pending is not None and pending.role is Role.INITIATOR:
            del self._by_cookies[(header.icookie, ZERO_COOKIE)]
            pending.rcookie = header.rcookie
            self.register_cookies(pending)
            return pending
        self.stats["INVALID-COOKIE"] += 1
        self.emit(ExchangeFailed(0, remote[0], "message for an unknown IKE SA (cookies)", None, False))
        return None

    def _new_responder_sa(self, header: Header, remote: tuple[str, int]) -> IkeSA | None:
        if self.policy is None:
            self.stats["not-a-responder"] += 1
            return None
        sa = self._new_sa(Role.RESPONDER, header.icookie, self.rng(8), (self.local_address, self.ike_port), remote)
        sa.mode = "aggressive" if header.exchange == ExchangeType.AGGRESSIVE else "main"
        self._half_open[(header.icookie, remote)] = sa
        return sa

    def _receive_for(self, sa: IkeSA, header: Header, data: bytes, remote: tuple[str, int],
                     local_port: int) -> None:
        cached = sa.replies.get(_digest(data))
        if cached is not None:
            # A retransmitted request: answer with the same reply, do not process it again.
            self._out.append(cached)
            self.emit(MessageSent(sa.id, sa.peer, header.exchange, (), True, header.message_id,
                                  cached.remote[1], retransmit=True))
            return
        try:
            msg = sa.open(header, data)
        except (DecodeError, DecryptionError) as e:
            if header.encrypted and header.message_id == 0 and sa.state in (State.AM_SENT_2, State.MM_SENT_4,
                                                                                State.MM_SENT_5):
                # Phase 1 keys disagree: the only secret input is the pre-shared key.
                e = AuthenticationFailed(f"cannot decrypt phase 1 message ({e}): pre-shared key mismatch?")
            self._refused(sa, remote, e, fatal=header.message_id == 0 and sa.state is not State.ESTABLISHED)
            return
        sa.last_inbound = self.now
        self._track_peer_address(sa, remote, local_port)
        self.emit(MessageReceived(sa.id, sa.peer, header.exchange, tuple(msg.payload_types()),
                                  header.encrypted, header.message_id, header.icookie, header.rcookie,
                                  header.flags, header.length,
                                  tuple(n.notify_type for n in msg.notifies())))
        try:
            self._dispatch(sa, msg, data)
        except NattError as e:
            fatal = sa.state not in (State.ESTABLISHED,) or isinstance(e, AuthenticationFailed)
            self._refused(sa, remote, e, fatal=fatal)

    def _dispatch(self, sa: IkeSA, msg: Message, data: bytes) -> None:
        ex = msg.header.exchange
        if ex in (ExchangeType.AGGRESSIVE, ExchangeType.IDENTITY_PROTECTION):
            phase1.receive(self, sa, msg, data)
        elif ex == ExchangeType.INFORMATIONAL:
            info.receive(self, sa, msg, data)
        elif sa.state in PHASE1_STATES:
            raise UnexpectedMessage(f"{ex} exchange before phase 1 is complete")
        elif ex == ExchangeType.TRANSACTION:
            transaction.receive(self, sa, msg, data)
        elif ex == ExchangeType.QUICK_MODE:
            quick.receive(self, sa, msg, data)
        else:
            raise UnexpectedMessage(f"exchange type {ex} not handled")

    def _track_peer_address(self, sa: IkeSA, remote: tuple[str, int], local_port: int) -> None:
        """The responder follows the initiator's float to 4500 and later NAT rebinding."""
        if remote == sa.remote:
            return
        if sa.role is Role.RESPONDER and remote[0] == sa.remote[0]:
            from natt.ike.events import PortFloated

            if local_port == self.natt_port:
                sa.floated = True
                sa.local = (sa.local[0], self.natt_port)
            sa.remote = remote
            self.emit(PortFloated(sa.id, sa.peer, local_port, remote[1]))

    def _keepalive_received(self, remote: tuple[str, int]) -> None:
        # Not proof of life for DPD: a keepalive is unauthenticated and the NAT may answer for a dead peer.
        sa = self.sas.get(self._by_remote.get(remote, 0))
        if sa is None or sa.remote != remote:
            sa = next((s for s in self.sas.values() if s.remote == remote), None)
            if sa is None:
                self.stats["keepalive-unknown-peer"] += 1
                return
            if len(self._by_remote) > 4 * len(self.sas) + 1024:
                self._by_remote.clear()
            self._by_remote[remote] = sa.id
        self.emit(KeepaliveReceived(sa.id, sa.peer))

    def _refused(self, sa: IkeSA | None, remote: tuple[str, int], err: NattError, *, fatal: bool) -> None:
        name = notify_name(err.notify) if err.notify is not None else type(err).__name__
        self.stats[name] += 1
        self.emit(ExchangeFailed(sa.id if sa else 0, remote[0], str(err) or type(err).__name__,
                                 int(err.notify) if err.notify is not None else None, fatal))
        if sa is None:
            return
        if fatal and isinstance(err, ProtocolError | DecodeError):
            info.send_plain_notify(self, sa, err)
        if fatal:
            self.remove_sa(sa, f"{name}: {err}")

    def _deadlines(self, sa: IkeSA) -> list[float]:
        d = [r.next_at for r in sa.pending.values()]
        if sa.state is not State.ESTABLISHED and sa.established_at is None:
            d.append(sa.created_at + HALF_OPEN_TIMEOUT)
        d += info.deadlines(self, sa)
        d += quick.deadlines(sa)
        if sa.expires_at is not None:
            d.append(sa.expires_at)
        return d

    def _sa_timers(self, sa: IkeSA) -> None:
        now = self.now
        if sa.replies and now - sa.replied_at > REPLY_CACHE_TTL:
            sa.replies.clear()
        for mid, r in list(sa.pending.items()):
            if now < r.next_at:
                continue
            if r.tries_left <= 0:
                sa.pending.pop(mid, None)
                self.emit(ExchangeFailed(sa.id, sa.peer, f"no answer to {r.what}", None, True))
                self.stats["retransmit-timeout"] += 1
                self.remove_sa(sa, f"peer did not answer {r.what}")
                return
            self._out.append(r.datagram)
            self.emit(MessageSent(sa.id, sa.peer, 0, (), False, mid, r.datagram.remote[1], retransmit=True))
            r.tries_left -= 1
            r.interval *= 2
            r.next_at = now + r.interval
        if sa.established_at is None and now >= sa.created_at + HALF_OPEN_TIMEOUT:
            self.stats["half-open-timeout"] += 1
            self.remove_sa(sa, "phase 1 not completed in time")
            return
        if sa.expires_at is not None and now >= sa.expires_at:
            self.delete_sa(sa.id, now, "phase 1 lifetime expired")
            return
        info.timers(self, sa)
        if sa.state is not State.DELETED:
            quick.timers(self, sa)

    def phase1_done(self, sa: IkeSA) -> None:
        """Phase 1 complete: the SA leaves the half-open table and counts as a session."""
        for key, other in list(self._half_open.items()):
            if other is sa:
                del self._half_open[key]


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


__all__ = ["HEADER_LEN", "Datagram", "IkeEndpoint"]
