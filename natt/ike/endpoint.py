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
import hmac
import os
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import replace

from natt.errors import (
    AuthenticationFailed,
    DecodeError,
    DecryptionError,
    InvalidHashInformation,
    InvalidIdInformation,
    NattError,
    NoProposalChosen,
    PoolExhausted,
    ProtocolError,
    SessionLimitReached,
    UnexpectedMessage,
    XauthFailed,
)
from natt.ike import info, phase1, quick, rules, transaction
from natt.ike.admission import Admission, OverloadWindow
from natt.ike.config import ClientProfile, ConcentratorPolicy, GroupPolicy
from natt.ike.context import Task
from natt.ike.events import (
    Cause,
    ChildSaMoved,
    ExchangeFailed,
    IkeEvent,
    IkeSaDown,
    KeepaliveReceived,
    MessageReceived,
    MessageRefused,
    MessageSent,
    Overload,
    PortFloated,
    Reauthenticated,
    XauthCheck,
)
from natt.ike.ikesa import (
    AFTER_PHASE1_STATES,
    PHASE1_STATES,
    Datagram,
    IkeSA,
    InitiatorHold,
    ResponderHold,
    Retransmit,
    Role,
    State,
)
from natt.ike.pool import AddressPool
from natt.ike.rules import Kind
from natt.ike.throttle import LoginThrottle, ThrottleSettings
from natt.wire.constants import (
    HEADER_LEN,
    IKE_PORT,
    NAT_KEEPALIVE,
    NATT_PORT,
    NON_ESP_MARKER,
    ExchangeType,
    NotifyType,
    notify_name,
)
from natt.wire.message import Header
from natt.wire.payloads import Notify, Payload

ZERO_COOKIE = bytes(8)
HALF_OPEN_TIMEOUT = 30.0
MAX_REPLY_CACHE = 4  # a peer retransmits its latest request(s); two Quick Modes may overlap
# A peer gives up retransmitting well within this (vpnc: 5 tries over ~30 s; strongSwan: ~165 s for IKEv2, 5
# IKEv1 retransmits within ~60 s by default); after it, cached replies only cost memory in an idle session.
REPLY_CACHE_TTL = 180.0
REPLY_REPEATS = 5  # times one cached reply answers copies of its request (a peer retransmits fewer times)
HALF_OPEN_RETRANSMITS = 5  # times a responder resends a phase 1 reply before the initiator has proven anything
SETUP_RESEND_CAP = 3.0  # seconds between resends at most while a session sets up ...
SETUP_RESENDS = 9  # ... and as many resends as fit in HALF_OPEN_TIMEOUT (2, 5, 8, ... 26 s)
REAUTH_RETRY = 10.0  # a failed re-authentication is tried again after this, while the old SA lives
HINTS_PER_SECOND = 50  # INVALID-COOKIE / INVALID-SPI notifies sent to unknown peers, in all


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
        # In order of arrival (OrderedDict: O(1) removal anywhere, O(1) oldest), for eviction when full.
        self._half_open: OrderedDict[tuple[bytes, tuple[str, int]], IkeSA] = OrderedDict()
        self._half_open_by_source: Counter[str] = Counter()
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
        # Aggressive Mode naming an unknown group is answered as a known one would be, under a key derived from
        # this per-start secret that nobody holds: no group-name oracle (the VPN 3000's 2005 advisory).
        self._decoy_key = rng(32)
        self.throttle = LoginThrottle(policy.xauth_throttle if policy is not None else ThrottleSettings())
        self.admission = Admission(policy.admission if policy is not None else None)
        self.overload = OverloadWindow()
        self._tickets: dict[int, int] = {}  # XAUTH credential checks under way: ticket → SA id
        self._members: Counter[int] = Counter()  # session → its live IKE SAs (a re-authentication has two)
        self._established_in: Counter[int] = Counter()  # session → its IKE SAs past phase 1
        self._by_user: dict[str, set[int]] = {}  # XAUTH user → SA ids (users who passed)
        self._hint_last: dict[tuple[str, int], float] = {}  # recovery hints: when each peer last got one
        self.awaiting_commit: dict[int, tuple[int, int]] = {}  # see IkeContext.awaiting_commit
        self._hint_window = 0.0
        self._hints_in_window = 0
        self._next_ticket = 1

    # -- the I/O side's calls --------------------------------------------------------------

    def connect(self, profile: ClientProfile, now: float, local_port: int | None = None, *,
                reauth_of: int | None = None) -> int:
        """Start phase 1 towards profile.peer as the initiator; returns the SA handle. With `reauth_of`, the new SA
        re-authenticates that one: same session, no INITIAL-CONTACT, and it takes over the tunnels once its own
        are up (then the old one is deleted)."""
        self.now = now
        port = local_port or self.ike_port
        self._plain_ports.add(port)  # an initiator may start IKE from any source port
        sa = self._new_sa(Role.INITIATOR, self.rng(8), ZERO_COOKIE, (self.local_address, port),
                          (profile.peer, IKE_PORT))
        sa.initiator = InitiatorHold(profile)
        old = self.sas.get(reauth_of) if reauth_of is not None else None
        if old is not None and old.initiator is not None:
            self._join_session(sa, old.session_id)
            sa.initiator.reauth_of = old.id
            old.initiator.reauth_by = sa.id
        sa.mode = profile.mode
        phase1.start(self, sa)
        self._schedule(sa)
        return sa.id

    def receive_datagram(self, data: bytes, remote: tuple[str, int], local_port: int, now: float) -> None:
        self.now = now
        if data == NAT_KEEPALIVE and local_port not in self._plain_ports:
            self._keepalive_received(remote)
            return
        message = self._isakmp(data, local_port)
        if message is None:
            self.stats["esp-on-ike-path"] += 1
            return
        data = message
        try:
            header = Header.decode(data)
        except DecodeError as e:
            self._refused(None, remote, e, fatal=False)
            return
        sa = self._find_sa(header, remote, local_port, data)
        if sa is None:
            return
        self._receive_for(sa, header, data, remote, local_port)
        self._schedule(sa)

    def of_known_sa(self, data: bytes, local_port: int) -> bool:
        """Whether a datagram names an IKE SA held here, by its cookies alone (two slices and a lookup, no parsing):
        the I/O side serves these first when it must choose, as under a flood on 4500."""
        message = self._isakmp(data, local_port)
        return message is not None and len(message) >= 16 and (message[:8], message[8:16]) in self._by_cookies

    def _isakmp(self, data: bytes, local_port: int) -> bytes | None:
        """The ISAKMP message a datagram carries: all of it on a plain port, what follows the non-ESP marker on a
        NAT-T port (None without the marker: ESP, or junk)."""
        if local_port in self._plain_ports:
            return data
        return data[len(NON_ESP_MARKER) :] if data.startswith(NON_ESP_MARKER) else None

    def datagrams_to_send(self) -> list[Datagram]:
        out, self._out = self._out, []
        return out

    def next_event(self) -> IkeEvent | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        heap, due = self._timer_heap, self._due
        report = self.overload.report_at
        while heap:
            when, sa_id = heap[0]
            if due.get(sa_id) == when:
                return when if report is None else min(when, report)
            heapq.heappop(heap)  # superseded by a later filing of the same SA, or the SA is gone
        return report

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
        report = self.overload.report_at
        if report is not None and now >= report:
            self._report_overload(now)

    def _report_overload(self, now: float) -> None:
        summary = self.overload.take(now)
        if summary is not None:
            self.emit(Overload(0, "", summary.seconds, tuple(sorted(summary.dropped.items())), summary.evicted,
                               summary.sources, summary.top, len(self._half_open)))

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

    def delete_sa(self, sa_id: int, now: float, reason: str = "administrator request",
                  cause: Cause = Cause.ADMIN, *, tell: bool = False) -> None:
        """Tell the peer (delete notifies for every child and the IKE SA; with `tell`, the reason first, so its user
        learns why), then forget the SA."""
        self.now = now
        sa = self.sas.get(sa_id)
        if sa is None:
            return
        if sa.state in AFTER_PHASE1_STATES and sa.enc_key and sa.p1_last_block:
            if tell:
                info.send_delete_reason(self, sa, reason)
            self._hand_over(sa)
            info.send_delete_all(self, sa)
        self.remove_sa(sa, reason, cause)
        self._schedule(sa)

    def reauthenticate(self, sa_id: int, now: float) -> int | None:
        """Phase 1 rekey, the initiator's way (IKEv1 has no other): a new phase 1, XAUTH and Mode Config for the
        same session, its own Quick Modes, then the old SA goes. The new SA's handle, or None."""
        old = self.sas.get(sa_id)
        if old is None or old.initiator is None or old.state is not State.ESTABLISHED or old.initiator.reauth_by:
            return None
        self.stats["reauthentications"] += 1
        new = self.connect(old.initiator.profile, now, old.first_local_port, reauth_of=sa_id)
        self._schedule(old)
        return new

    def rekey_children(self, sa_id: int, now: float) -> int:
        """Rekey every child of an established SA now, from this side (the operator's `rekey --phase2`)."""
        self.now = now
        sa = self.sas.get(sa_id)
        if sa is None or sa.state is not State.ESTABLISHED:
            return 0
        started = quick.rekey(self, sa)
        self._schedule(sa)
        return started

    def xauth_verdict(self, ticket: int, ok: bool, now: float) -> None:
        """The daemon checked the credentials of an XauthCheck event (off its loop): go on with that SA."""
        self.now = now
        sa = self.sas.get(self._tickets.pop(ticket, 0))
        if sa is None or sa.responder is None or sa.responder.xauth_ticket != ticket or \
                sa.state is not State.XAUTH_CHECKING:
            self.stats["xauth-verdict-stale"] += 1
            return
        sa.responder.xauth_ticket = None
        transaction.XAUTH.verdict(self, sa, ok)
        self._schedule(sa)

    def esp_peer_moved(self, sa_id: int, remote: tuple[str, int], now: float) -> None:
        """Authenticated ESP (ICV and anti-replay passed) came from a new address or port: the NAT mapping changed
        (RFC 3948). The responder's one record of where the peer is moves, for IKE and ESP alike; an initiator
        never follows (RFC 3947 7)."""
        self.now = now
        sa = self.sas.get(sa_id)
        if sa is None or sa.role is not Role.RESPONDER or not sa.udp_encap or remote == sa.remote:
            return
        self._move_peer(sa, remote, self.natt_port, by_esp=True)

    def note_inbound_traffic(self, sa_id: int, now: float) -> None:
        """ESP arrived for this SA: the peer is alive, no DPD needed (RFC 3706 5.5)."""
        sa = self.sas.get(sa_id)
        if sa is not None:
            sa.last_inbound = now

    @property
    def half_open(self) -> int:
        """IKE SAs whose phase 1 is not complete yet (the flood gauge)."""
        return len(self._half_open)

    def active_sessions(self) -> list[IkeSA]:
        return [sa for sa in self.sas.values() if sa.state not in (State.DELETED,)]

    def sessions_of(self, user: str) -> list[IkeSA]:
        """The live SAs of a user who passed XAUTH (an index: logins stay O(1) with thousands of sessions)."""
        return [self.sas[i] for i in self._by_user.get(user, ()) if i in self.sas]

    def session_peers(self, sa: IkeSA) -> list[IkeSA]:
        """The other live IKE SAs of sa's session (a re-authentication overlaps two), oldest first."""
        if self._members.get(sa.session_id, 0) <= 1:
            return []
        return [o for o in self.sas.values() if o is not sa and o.session_id == sa.session_id]

    def adopt_session(self, sa: IkeSA) -> bool:
        """A responder SA that re-authenticated a session takes it over at once: the older SA's child SAs and address
        move to it (ESP does not care which phase 1 made its keys) and it is established. The older SA stays,
        without tunnels, until its client deletes it or it expires. False if there is nothing to take over."""
        olds = [o for o in self.session_peers(sa) if o.state is State.ESTABLISHED]
        if not olds or sa.role is not Role.RESPONDER:
            return False
        old = olds[-1]
        sa.assigned_address, sa.cisco_udp_port = old.assigned_address, old.cisco_udp_port
        sa.peer_app_version = old.peer_app_version
        for spi, child in list(old.children.items()):
            sa.children[spi] = child
            del old.children[spi]
            self.emit(ChildSaMoved(sa.id, sa.peer, spi, old.id))
        sa.state = State.ESTABLISHED
        sa.adopted_at = self.now
        self.emit(Reauthenticated(sa.id, sa.peer, old.id, sa.session_id))
        return True

    def _join_session(self, sa: IkeSA, session_id: int) -> None:
        self._members[sa.session_id] -= 1
        if self._members[sa.session_id] <= 0:
            del self._members[sa.session_id]
        sa.session_id = session_id
        self._members[session_id] += 1

    def admit_login(self, sa: IkeSA) -> str | None:
        """A user passed XAUTH: may this login go on? None = yes (perhaps as a re-authentication of its own
        session, or after replacing older ones); else why not (told to the client in the XAUTH status).

        - The same client (address and port) making a new IKE SA for a session it has, without INITIAL-CONTACT,
          re-authenticates: the new SA joins that session (same address, same counters), the old one goes later.
        - INITIAL-CONTACT from that same client (address and port) says it lost its state: its sessions from there
          are stale and go, each told why (DELETE-REASON, then DELETE). From another port of the same address it is
          another machine behind the same PAT (the seed's set-up): the limit below decides, never the address.
        - Then the group's simultaneous-login limit: refuse the new login, or replace the oldest session."""
        group = sa.group
        assert group is not None
        self._by_user.setdefault(sa.user, set()).add(sa.id)
        others = [o for o in self.sessions_of(sa.user) if o is not sa and o.group is not None
                  and o.group.name == group.name and o.session_id != sa.session_id
                  and o.state in (State.XAUTH_STATUS, State.MODECFG, State.ESTABLISHED)]
        initial_contact = sa.responder is not None and sa.responder.initial_contact
        if not initial_contact:
            same = next((o for o in others if o.remote == sa.remote), None)
            if same is not None:
                self._join_session(sa, same.session_id)
                self.stats["reauthentications"] += 1
                return None
        else:
            for o in [o for o in others if o.remote == sa.remote]:
                self.delete_sa(o.id, self.now, f"replaced: user [{sa.user}] logged in again from {sa.peer} "
                               "(INITIAL-CONTACT)", Cause.REPLACED, tell=True)
                others.remove(o)
        sessions: dict[int, list[IkeSA]] = {}
        for o in others:
            sessions.setdefault(o.session_id, []).append(o)
        if not group.max_logins or len(sessions) < group.max_logins:
            return None
        if group.login_limit_action != "replace":
            self.stats["login-limit-refused"] += 1
            return (f"user [{sa.user}] already has {len(sessions)} session(s), the limit of group [{group.name}]; "
                    "log out the other session first")
        oldest = sorted(sessions.values(), key=lambda ss: min(s.created_at for s in ss))
        for ss in oldest[: len(sessions) - group.max_logins + 1]:
            for o in ss:
                self.delete_sa(o.id, self.now, f"replaced: user [{sa.user}] logged in from {sa.peer} (group "
                               f"[{group.name}] allows {group.max_logins} session(s))", Cause.REPLACED, tell=True)
            self.stats["login-limit-replaced"] += 1
        return None

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
            cap = None
            if sa.state is not State.ESTABLISHED or exchange == ExchangeType.QUICK_MODE:
                # Setting up (phase 1, XAUTH, Mode Config) and any Quick Mode: each has 30 s (HALF_OPEN_TIMEOUT),
                # so resend at a steady pace within it rather than 2, 4, 8, 16 s: on a lossy link four sends were
                # too few, and a Quick Mode message 2 given up on left a client "connected" with no SA at the
                # gateway (issue: hold under faults, the lossy-link lab test).
                cap, tries = SETUP_RESEND_CAP, max(tries, SETUP_RESENDS)
            if sa.role is Role.RESPONDER and sa.state in PHASE1_STATES:
                # To a source nobody has authenticated yet (perhaps spoofed): a bounded echo. Call admission bounds
                # how many such sources get one at all.
                tries = min(tries, HALF_OPEN_RETRANSMITS)
            sa.pending[message_id] = Retransmit(dgram, self.now + base, base, tries, expect, cap=cap)
        if in_reply_to is not None:
            sa.replies[_digest(in_reply_to)] = dgram
            sa.replied_at = self.now
            while len(sa.replies) > MAX_REPLY_CACHE:
                sa.replies_answered.pop(next(iter(sa.replies)), None)
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

    def group_for(self, identity: str) -> tuple[GroupPolicy, bool]:
        """The group an Aggressive Mode ID names, or a decoy (True) that answers like the first group would, under
        a key derived from a per-start secret: an unknown name costs and looks the same as a known one, and its
        HASH_R says nothing about any real key."""
        assert self.policy is not None
        group = self.policy.groups.get(identity)
        if group is not None:
            return group, False
        template = next(iter(self.policy.groups.values()))
        key = hmac.new(self._decoy_key, identity.encode("utf-8", "replace"), hashlib.sha256).digest()
        return replace(template, name=identity, psk=key), True

    def check_credentials(self, sa: IkeSA, user: str, password: str) -> None:
        """Hand an XAUTH answer to the daemon to check; xauth_verdict brings the answer back."""
        ticket = self._next_ticket
        self._next_ticket += 1
        self._tickets[ticket] = sa.id
        assert sa.responder is not None
        sa.responder.xauth_ticket = ticket
        sa.state = State.XAUTH_CHECKING
        self.emit(XauthCheck(sa.id, sa.peer, ticket, user, password))

    def session_established(self, sa: IkeSA) -> None:
        """Phase 1 (and XAUTH) complete: the SA counts as a session, unless it re-authenticates one that counts."""
        self._established_in[sa.session_id] += 1
        if self._established_in[sa.session_id] > 1:
            return
        self.total_sessions += 1
        self.established_count += 1
        self.peak_sessions = max(self.peak_sessions, self.established_count)

    def pool_for(self, group: GroupPolicy) -> AddressPool:
        pool = self.pools.get(group.name)
        if pool is None:
            pool = self.pools[group.name] = AddressPool(group.pool)
        return pool

    def register_cookies(self, sa: IkeSA) -> None:
        self._by_cookies[(sa.icookie, sa.rcookie)] = sa

    def remove_sa(self, sa: IkeSA, reason: str, cause: Cause = Cause.OTHER) -> None:
        if sa.state is State.DELETED:
            return
        self._hand_over(sa)
        for child in list(sa.children.values()):
            quick.child_down(self, sa, child, reason, cause)
        for qm in sa.quick_modes.values():
            self.awaiting_commit.pop(int.from_bytes(qm.our_spi, "big"), None)
        if sa.established_at is not None:
            self._established_in[sa.session_id] -= 1
            if self._established_in[sa.session_id] <= 0:
                del self._established_in[sa.session_id]
                self.established_count -= 1
        sa.state = State.DELETED
        sa.delete_reason = reason
        self._members[sa.session_id] -= 1
        if self._members[sa.session_id] <= 0:
            del self._members[sa.session_id]
            if sa.role is Role.RESPONDER and sa.assigned_address and sa.group:
                self.pool_for(sa.group).release(sa.assigned_address)  # the session's last SA: its address goes
        users = self._by_user.get(sa.user)
        if users is not None:
            users.discard(sa.id)
            if not users:
                del self._by_user[sa.user]
        if sa.initiator is not None:
            self._reauth_ended(sa)
        if sa.responder is not None and sa.responder.xauth_ticket is not None:
            self._tickets.pop(sa.responder.xauth_ticket, None)
        self.sas.pop(sa.id, None)
        self._due.pop(sa.id, None)
        self._by_cookies.pop((sa.icookie, sa.rcookie), None)
        self.phase1_done(sa)
        self.emit(IkeSaDown(sa.id, sa.peer, reason, cause))

    # -- internals ---------------------------------------------------------------------------

    def _new_sa(self, role: Role, icookie: bytes, rcookie: bytes,
                local: tuple[str, int], remote: tuple[str, int]) -> IkeSA:
        sa = IkeSA(self._next_id, role, icookie, rcookie, local, remote, self.now)
        sa.last_inbound = self.now
        sa.session_id = self._next_id  # a login of its own, until a re-authentication says otherwise
        self._members[sa.session_id] += 1
        self._next_id += 1
        self.sas[sa.id] = sa
        self.register_cookies(sa)
        return sa

    def _find_sa(self, header: Header, remote: tuple[str, int], local_port: int, data: bytes) -> IkeSA | None:
        sa = self._by_cookies.get((header.icookie, header.rcookie))
        if sa is not None:
            return sa
        if header.rcookie == ZERO_COOKIE:
            if header.exchange not in (ExchangeType.AGGRESSIVE, ExchangeType.IDENTITY_PROTECTION):
                self.stats["INVALID-COOKIE"] += 1
                if self.policy is None and header.exchange == ExchangeType.INFORMATIONAL and not header.encrypted:
                    # A client's few SAs only: a concentrator takes no hints, and spends nothing on such junk.
                    self._orphan_informational(header, remote, data)
                return None
            known = self._half_open.get((header.icookie, remote))
            if known is not None:
                return known
            return self._new_responder_sa(header, remote, local_port)
        # A responder's first reply: our initiator SA is still filed under a zero rcookie. It takes the
        # responder's cookie only once that reply has been accepted (_receive_for).
        pending = self._by_cookies.get((header.icookie, ZERO_COOKIE))
        if pending is not None and pending.role is Role.INITIATOR:
            return pending
        self.stats["INVALID-COOKIE"] += 1
        if self.policy is not None:
            # Perhaps this concentrator restarted and forgot the client's SA: tell it (unprotected, rate-limited),
            # so that it checks at once (DPD) instead of at its next DPD interval.
            hint = info.invalid_cookie_notify(header)
            self._hint(remote, local_port, hint)
        self.emit(ExchangeFailed(0, remote[0], "message for an unknown IKE SA (cookies)", None, False,
                                 Cause.UNKNOWN_SA))
        return None

    def _new_responder_sa(self, header: Header, remote: tuple[str, int], local_port: int) -> IkeSA | None:
        if self.policy is None:
            self.stats["not-a-responder"] += 1
            return None
        # Call admission (admission.py), cheapest test first; a drop costs no DH, no state, no answer to amplify.
        holding = self._half_open_by_source[remote[0]]
        if holding >= self.policy.half_open_per_source:
            return self._shed("half-open-per-source-limit", remote)
        refused = self.admission.admit(remote[0], holding, self.now)
        if refused is not None:
            return self._shed(refused.value, remote)
        if len(self._half_open) >= self.policy.half_open_limit and not self._evict_oldest_half_open():
            return self._shed("half-open-limit", remote)
        # A phase 1 may start on 4500 (a client re-authenticating after NAT-T floated: vpnc, charon): it is
        # answered there, behind the non-ESP marker, or the client (whose socket is bound to 4500) never sees it.
        on_natt = local_port == self.natt_port
        sa = self._new_sa(Role.RESPONDER, header.icookie, self.rng(8),
                          (self.local_address, self.natt_port if on_natt else self.ike_port), remote)
        if on_natt:
            sa.floated = True
        sa.responder = ResponderHold()
        sa.mode = "aggressive" if header.exchange == ExchangeType.AGGRESSIVE else "main"
        self._half_open[(header.icookie, remote)] = sa
        self._half_open_by_source[remote[0]] += 1
        sa.first_remote = remote
        return sa

    def _shed(self, reason: str, remote: tuple[str, int]) -> None:
        """A first message dropped by call admission: counted, and summed up in one Overload event an interval."""
        self.stats[reason] += 1
        self.overload.note(reason, remote[0], self.now)
        return None

    def _evict_oldest_half_open(self) -> bool:
        """The half-open table is full: its oldest SA gives way to a newcomer if it has had its chance (a real
        client finishes phase 1 in one round trip). O(1): the table is in order of arrival."""
        if not self._half_open:
            return False
        oldest = next(iter(self._half_open.values()))
        if self.now - oldest.created_at < self.admission.settings.evict_after:
            return False
        self.stats["half-open-evicted"] += 1
        self.overload.note_evicted()
        self.remove_sa(oldest, "phase 1 not completed: half-open table full, the oldest gave way",
                       Cause.HALF_OPEN_TIMEOUT)
        return True

    def _receive_for(self, sa: IkeSA, header: Header, data: bytes, remote: tuple[str, int],
                     local_port: int) -> None:
        """Authenticate, then commit: the table, decryption, parsing and the HASH come first; only a message that
        passed them all moves the IV chain, retransmission state, liveness or the peer's address."""
        digest = _digest(data)
        cached = sa.replies.get(digest)
        if cached is not None:
            # A retransmitted request: answer with the same reply, do not process it again. The answer goes where
            # the copy came from (a peer whose NAT mapping just changed still gets it), a few times at most: a
            # captured request replayed from elsewhere must not make us send the reply to the peer again and
            # again (a reflector, and a stream of out-of-place answers from the peer).
            answered = sa.replies_answered.get(digest, 0)
            if answered >= REPLY_REPEATS:
                self.stats["retransmit-not-answered"] += 1
                return
            sa.replies_answered[digest] = answered + 1
            if remote != cached.remote and local_port == cached.local_port:
                # Only a copy on the socket the reply leaves from: on 4500 the reply is framed behind the non-ESP
                # marker, on 500 it is not (a client floated to 4500 answers a responder's message-2 resend, which
                # comes from 500, at the reply's own address).
                cached = replace(cached, remote=remote)
            self._out.append(cached)
            self.emit(MessageSent(sa.id, sa.peer, header.exchange, (), True, header.message_id,
                                  cached.remote[1], retransmit=True))
            return
        if digest in sa.processed:
            # A copy of a message already taken (the peer answered our resend twice, say): nothing to do, and
            # decrypting it again would use an IV that has moved on and read as garbage.
            self.stats["duplicate-dropped"] += 1
            return
        # 1. The header alone may rule it out (no decryption for a message this state never takes).
        early = rules.could_accept(sa, header.exchange, header.encrypted)
        if early is not None:
            self._not_allowed(sa, remote, header, early)
            return
        if header.exchange in (ExchangeType.AGGRESSIVE, ExchangeType.IDENTITY_PROTECTION) and \
                sa.state is not State.START and remote[0] != sa.remote[0]:
            self._not_allowed(sa, remote, header, rules.header_kind(sa, header.exchange, header.encrypted))
            return
        # 2. Decrypt with a candidate IV and decode: nothing is kept yet.
        try:
            msg, next_iv = sa.open(header, data)
        except (DecodeError, DecryptionError) as e:
            if header.encrypted and sa.state in (State.AM_SENT_2, State.MM_SENT_4, State.MM_SENT_5):
                # Phase 1 keys disagree: the only secret input is the pre-shared key.
                e = AuthenticationFailed(f"cannot decrypt phase 1 message ({e}): pre-shared key mismatch?")
            self._refused(sa, remote, e, fatal=False, cause=Cause.UNDECRYPTABLE if header.encrypted else None)
            return
        # 3. The table, now that the contents tell the message's kind.
        kind = rules.classify(sa, msg)
        if not rules.accepts(sa, kind):
            self._not_allowed(sa, remote, header, kind)
            return
        task = _TASKS[kind]
        adopt = sa.role is Role.INITIATOR and sa.rcookie == ZERO_COOKIE and header.rcookie != ZERO_COOKIE
        if adopt:
            sa.rcookie = header.rcookie  # what the reply's keys and hashes are computed over
        # 4. Verify: HASH, and that it answers something we asked. Raises; changes nothing.
        try:
            task.verify(self, sa, msg, kind)
        except NattError as e:
            if adopt:
                sa.rcookie = ZERO_COOKIE
            # A responder's SA never dies of an unauthenticated message; a client's phase 1 ends on its first
            # bad HASH_R (its user wants the reason now, not a timeout).
            fatal = sa.role is Role.INITIATOR and sa.state in PHASE1_STATES
            self._refused(sa, remote, e, fatal=fatal)
            return
        # 5. Commit.
        if adopt:
            del self._by_cookies[(header.icookie, ZERO_COOKIE)]
            self.register_cookies(sa)
        sa.confirm_iv(header, next_iv)
        fresh = sa.fresh_message(header.message_id, rules.KIND_CODE[kind])
        if fresh and (header.encrypted or sa.state in PHASE1_STATES):
            sa.last_inbound = self.now
        if header.encrypted and fresh:
            self._track_peer_address(sa, remote, local_port)
        if sa.role is Role.INITIATOR and header.message_id != 0 and 0 in sa.pending and \
                header.exchange in (ExchangeType.TRANSACTION, ExchangeType.QUICK_MODE):
            # The gateway's first exchange after phase 1 (its XAUTH request): our Aggressive Mode message 3 came.
            self.answered(sa, 0)
        self.emit(MessageReceived(sa.id, sa.peer, header.exchange, tuple(msg.payload_types()),
                                  header.encrypted, header.message_id, header.icookie, header.rcookie,
                                  header.flags, header.length,
                                  tuple(n.notify_type for n in msg.notifies())))
        # 6. Process.
        sa.processed.append(digest)
        try:
            task.process(self, sa, msg, kind, data)
        except NattError as e:
            if kind is Kind.QM_1 and header.message_id not in sa.quick_modes:
                # The refused exchange leaves no chain: a retransmission of it decrypts (and is refused) again.
                sa.ivs.pop(header.message_id, None)
            fatal = sa.state is not State.ESTABLISHED or isinstance(e, AuthenticationFailed)
            self._refused(sa, remote, e, fatal=fatal)
            if not fatal and sa.state is State.ESTABLISHED:
                # Encrypted (the peer is authenticated), and kept as the reply to these bytes: the peer's
                # retransmission of the refused message is answered the same way, not decrypted again.
                info.send_plain_notify(self, sa, e, in_reply_to=data)
        if sa.initiator is not None and sa.initiator.reauth_of is not None:
            self._reauth_progress(sa)

    def _reauth_progress(self, sa: IkeSA) -> None:
        """A re-authenticating SA whose own tunnels are all up takes over: the old SA (and its pairs) is deleted."""
        assert sa.initiator is not None and sa.initiator.reauth_of is not None
        if sa.state is not State.ESTABLISHED or not sa.children or \
                any(q.ours and not q.abandoned for q in sa.quick_modes.values()):
            return
        old_id, sa.initiator.reauth_of = sa.initiator.reauth_of, None
        self.emit(Reauthenticated(sa.id, sa.peer, old_id, sa.session_id))
        old = self.sas.get(old_id)
        if old is None:
            return
        # The old SA and its pairs go after the same grace period as a rekeyed pair: packets on their way are still
        # taken, and the gateway has finished with the new pairs (charon, busy with the last Quick Mode, would
        # otherwise delete the pair it is about to rekey) before it reads the DELETEs.
        old.rekey_at = None
        old.expires_at = min(old.expires_at or self.now + quick.REKEY_GRACE, self.now + quick.REKEY_GRACE)
        old.initiator.replaced_by = sa.id
        for child in old.children.values():
            child.rekeyed = True  # the successor has its own pairs for these selectors: no rekey here any more
        self._schedule(old)

    def _retire(self, old: IkeSA) -> None:
        """A re-authenticated SA's time is up: it goes (its pairs' DELETEs on its successor: _hand_over)."""
        self.delete_sa(old.id, self.now, "replaced by re-authentication (phase 1 rekey)", Cause.REKEYED)

    def _hand_over(self, old: IkeSA) -> None:
        """A re-authenticated SA ends (its grace period over, or the gateway deleted it first, as charon does): its
        pairs' DELETEs go on its successor, where a gateway that moved them at XAUTH (strongSwan "adopting
        children", natt's concentrator) looks them up."""
        new = self.sas.get(old.initiator.replaced_by or 0) if old.initiator is not None else None
        if new is None or new.state is not State.ESTABLISHED:
            return
        for child in list(old.children.values()):
            info.send_delete_child(self, new, child)
            quick.child_down(self, old, child, "replaced by re-authentication", Cause.REKEYED)

    def _reauth_ended(self, sa: IkeSA) -> None:
        """An SA went: if it was re-authenticating another that still lives, that one tries again shortly."""
        assert sa.initiator is not None
        old = self.sas.get(sa.initiator.reauth_of) if sa.initiator.reauth_of is not None else None
        if old is not None and old.initiator is not None and old.initiator.reauth_by == sa.id:
            old.initiator.reauth_by = None
            old.rekey_at = min((old.expires_at or self.now) - 1.0, self.now + REAUTH_RETRY)
            self._schedule(old)

    def unknown_esp(self, spi: int, remote: tuple[str, int], local_port: int, now: float,
                    packet: bytes | None = None) -> bool:
        """ESP for an SPI the data path does not know. If it is the inbound SPI of a Quick Mode of ours waiting for
        HASH(3) and `packet` authenticates under it, the pair is installed (quick.commit_by_esp) and True says: hand
        the packet to the data path again. Otherwise (this concentrator restarted, or the SA is long gone) an
        INVALID-SPI notify back on UDP 4500, inside the peer's IKE SA if there is one, else unprotected;
        rate-limited, so that a flood of junk ESP costs a few small datagrams a second at most (Cisco's invalid SPI
        recovery)."""
        self.now = now
        waiting = self.awaiting_commit.get(spi)
        if waiting is not None:
            sa = self.sas.get(waiting[0])
            qm = sa.quick_modes.get(waiting[1]) if sa is not None else None
            if sa is None or qm is None or qm.ours or qm.chosen is None or int.from_bytes(qm.our_spi, "big") != spi:
                del self.awaiting_commit[spi]  # a stale entry
            elif packet is None:
                return False
            else:
                # One authentication per packet for an SPI only the peer knows (it went encrypted in our message 2);
                # no hint while the pair is on its way.
                committed = quick.commit_by_esp(self, sa, qm, packet)
                if committed:
                    self._schedule(sa)
                return committed
        # The rate limit first: junk ESP from many sources must not cost a search of every SA each.
        if self.policy is None or local_port != self.natt_port or not self._allow_hint(remote):
            return False
        sa = next((s for s in self.sas.values() if s.remote == remote and s.state is State.ESTABLISHED), None)
        if sa is not None:
            info.send_notify(self, sa, info.invalid_spi(sa, spi))
            self.stats["recovery-hints-sent"] += 1
            return False
        self._send_hint(remote, local_port, info.orphan_invalid_spi(self.rng(8), spi))
        return False

    def _hint(self, remote: tuple[str, int], local_port: int, data: bytes) -> None:
        if self._allow_hint(remote):
            self._send_hint(remote, local_port, data)

    def _send_hint(self, remote: tuple[str, int], local_port: int, data: bytes) -> None:
        if local_port == self.natt_port:
            data = NON_ESP_MARKER + data
        self._out.append(Datagram(data, remote, local_port))
        self.stats["recovery-hints-sent"] += 1

    def _allow_hint(self, remote: tuple[str, int]) -> bool:
        """At most one recovery hint a second to one peer, and HINTS_PER_SECOND in all."""
        now = self.now
        if now - self._hint_window >= 1.0:
            self._hint_window, self._hints_in_window = now, 0
            if len(self._hint_last) > 4096:
                self._hint_last.clear()
        if self._hints_in_window >= HINTS_PER_SECOND or now - self._hint_last.get(remote, -1e9) < 1.0:
            self.stats["recovery-hints-suppressed"] += 1
            return False
        self._hints_in_window += 1
        self._hint_last[remote] = now
        return True

    def _orphan_informational(self, header: Header, remote: tuple[str, int], data: bytes) -> None:
        """An unprotected INVALID-SPI under no IKE SA of ours: if it names an SPI we send on to that address, the
        gateway may have lost our SAs; check now (DPD: authenticated), never act on the notify itself."""
        try:
            msg, _ = IkeSA.open_plain(header, data)
        except NattError:
            return
        for n in msg.notifies()[:4]:
            if n.notify_type != NotifyType.INVALID_SPI or len(n.spi) != 4:
                continue
            spi = int.from_bytes(n.spi, "big")
            for sa in self.sas.values():
                if sa.remote[0] == remote[0] and any(c.outbound_spi == spi for c in sa.children.values()):
                    info.dpd_now(self, sa, "INVALID-SPI")
                    self._schedule(sa)

    def _not_allowed(self, sa: IkeSA, remote: tuple[str, int], header: Header, kind: Kind | None) -> None:
        """The table refused it: counted by kind, logged with the state and exchange, and nothing changes."""
        kind = kind or Kind.OTHER
        self.stats["not-allowed"] += 1
        self.stats[f"not-allowed:{kind.name}"] += 1
        self.emit(MessageRefused(sa.id, remote[0], sa.state.value, header.exchange, kind.value,
                                 Cause.NOT_ALLOWED_NOW))

    def _track_peer_address(self, sa: IkeSA, remote: tuple[str, int], local_port: int) -> None:
        """The responder follows the initiator's float to 4500 and, with NAT-T, a NAT mapping that changed; only
        after an authenticated message with a message ID not seen before (a replay moves nothing)."""
        if remote == sa.remote or sa.role is not Role.RESPONDER:
            return
        floating = not sa.floated and local_port == self.natt_port and remote[0] == sa.remote[0]
        if floating or (sa.udp_encap and local_port == self.natt_port):
            self._move_peer(sa, remote, local_port, by_esp=False)

    def _move_peer(self, sa: IkeSA, remote: tuple[str, int], local_port: int, *, by_esp: bool) -> None:
        rebind = sa.floated
        if local_port == self.natt_port and not sa.floated:
            sa.floated = True
            sa.local = (sa.local[0], self.natt_port)
        sa.remote = remote
        self.stats["peer-moved-by-esp" if by_esp else "peer-moved"] += 1
        self.emit(PortFloated(sa.id, sa.peer, local_port, remote[1], remote[0], by_esp, rebind))

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

    def _refused(self, sa: IkeSA | None, remote: tuple[str, int], err: NattError, *, fatal: bool,
                 cause: Cause | None = None) -> None:
        name = notify_name(err.notify) if err.notify is not None else type(err).__name__
        cause = cause or cause_of(err)
        self.stats[name] += 1
        self.emit(ExchangeFailed(sa.id if sa else 0, remote[0], str(err) or type(err).__name__,
                                 int(err.notify) if err.notify is not None else None, fatal, cause))
        if sa is None or not fatal:
            return
        if sa.state in AFTER_PHASE1_STATES and sa.p1_last_block:
            # An authenticated peer broke the rules: say why (encrypted), then DELETE, so it does not wait.
            info.send_plain_notify(self, sa, err)
            self.delete_sa(sa.id, self.now, f"{name}: {err}", cause)
            return
        if isinstance(err, ProtocolError | DecodeError):
            info.send_plain_notify(self, sa, err)
        self.remove_sa(sa, f"{name}: {err}", cause)

    def _deadlines(self, sa: IkeSA) -> list[float]:
        d = [r.next_at for r in sa.pending.values()]
        if sa.state is not State.ESTABLISHED and sa.established_at is None:
            d.append(sa.created_at + HALF_OPEN_TIMEOUT)
        elif sa.state is State.MODECFG and sa.established_at is not None:
            d.append(sa.established_at + HALF_OPEN_TIMEOUT)
        d += info.deadlines(self, sa)
        d += quick.deadlines(sa)
        if sa.expires_at is not None:
            d.append(sa.expires_at)
        if sa.rekey_at is not None:
            d.append(sa.rekey_at)
        return d

    def _sa_timers(self, sa: IkeSA) -> None:
        now = self.now
        if sa.replies and now - sa.replied_at > REPLY_CACHE_TTL:
            sa.replies.clear()
            sa.replies_answered.clear()
        for mid, r in list(sa.pending.items()):
            if now < r.next_at:
                continue
            if r.tries_left <= 0:
                sa.pending.pop(mid, None)
                if quick.quick_mode_gave_up(self, sa, mid):
                    self.stats["quick-mode-timeout"] += 1
                    self.emit(ExchangeFailed(sa.id, sa.peer, f"no answer to {r.what}", None, False,
                                             Cause.RETRANSMIT_TIMEOUT))
                    if sa.state is State.DELETED:
                        return  # a set-up Quick Mode that never came ended the session (quick.py)
                    continue
                self.emit(ExchangeFailed(sa.id, sa.peer, f"no answer to {r.what}", None, True,
                                         Cause.RETRANSMIT_TIMEOUT))
                self.stats["retransmit-timeout"] += 1
                self.remove_sa(sa, f"peer did not answer {r.what}", Cause.RETRANSMIT_TIMEOUT)
                return
            self._out.append(r.datagram)
            r.sent += 1
            self.emit(MessageSent(sa.id, sa.peer, 0, (), False, mid, r.datagram.remote[1], retransmit=True,
                                  what=r.what, attempt=r.sent))
            r.tries_left -= 1
            r.interval = r.interval * 2 if r.cap is None else min(r.interval * 2, r.cap)
            r.next_at = now + r.interval
        if sa.established_at is None and now >= sa.created_at + HALF_OPEN_TIMEOUT:
            self.stats["half-open-timeout"] += 1
            self.remove_sa(sa, "phase 1 not completed in time", Cause.HALF_OPEN_TIMEOUT)
            return
        if sa.state is State.MODECFG and sa.established_at is not None and \
                now >= sa.established_at + HALF_OPEN_TIMEOUT:
            # Authenticated, but never configured: no address, so no tunnel can come of it (rules.py).
            self.stats["modecfg-timeout"] += 1
            self.delete_sa(sa.id, now, "Mode Config not completed in time", Cause.HALF_OPEN_TIMEOUT)
            return
        if sa.rekey_at is not None and now >= sa.rekey_at and sa.initiator is not None and \
                sa.initiator.reauth_by is None:
            sa.rekey_at = None
            self.reauthenticate(sa.id, now)
        if sa.expires_at is not None and now >= sa.expires_at:
            if sa.initiator is not None and sa.initiator.replaced_by is not None:
                self._retire(sa)
                return
            self.delete_sa(sa.id, now, "phase 1 lifetime expired", Cause.LIFETIME_EXPIRED)
            return
        info.timers(self, sa)
        if sa.state is not State.DELETED:
            quick.timers(self, sa)

    def phase1_done(self, sa: IkeSA) -> None:
        """Phase 1 complete (or the SA gone): it leaves the half-open table."""
        if sa.role is Role.RESPONDER and self._half_open.get((sa.icookie, sa.first_remote)) is sa:
            del self._half_open[(sa.icookie, sa.first_remote)]
            source = sa.first_remote[0]
            self._half_open_by_source[source] -= 1
            if self._half_open_by_source[source] <= 0:
                del self._half_open_by_source[source]


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


# Each kind of message, the task that verifies and processes it (the table in rules.py says when).
_TASKS: dict[Kind, Task] = {
    **dict.fromkeys((Kind.AM_1, Kind.AM_2, Kind.AM_3), phase1.AGGRESSIVE_MODE),
    **dict.fromkeys((Kind.MM_1, Kind.MM_2, Kind.MM_3, Kind.MM_4, Kind.MM_5, Kind.MM_6), phase1.MAIN_MODE),
    **dict.fromkeys((Kind.XAUTH_REQUEST, Kind.XAUTH_REPLY, Kind.XAUTH_STATUS, Kind.XAUTH_ACK), transaction.XAUTH),
    **dict.fromkeys((Kind.CFG_REQUEST, Kind.CFG_REPLY, Kind.CFG_SET, Kind.CFG_ACK), transaction.MODE_CONFIG),
    **dict.fromkeys((Kind.QM_1, Kind.QM_2, Kind.QM_3), quick.QUICK_MODE),
    **dict.fromkeys((Kind.INFO, Kind.INFO_PLAIN), info.INFORMATIONAL),
}

# Typed errors → the cause events carry (most specific first; the logs branch on these).
_CAUSES: tuple[tuple[type[NattError], Cause], ...] = (
    (XauthFailed, Cause.XAUTH_FAILED),
    (AuthenticationFailed, Cause.AUTH_FAILED),
    (SessionLimitReached, Cause.SESSION_LIMIT),
    (NoProposalChosen, Cause.NO_PROPOSAL),
    (PoolExhausted, Cause.POOL_EXHAUSTED),
    (InvalidHashInformation, Cause.BAD_HASH),
    (InvalidIdInformation, Cause.SELECTOR_REFUSED),
    (UnexpectedMessage, Cause.NOT_ALLOWED_NOW),
    (DecryptionError, Cause.UNDECRYPTABLE),
    (DecodeError, Cause.MALFORMED),
)


def cause_of(err: NattError) -> Cause:
    for cls, cause in _CAUSES:
        if isinstance(err, cls):
            return cause
    return Cause.OTHER


__all__ = ["HEADER_LEN", "Datagram", "IkeEndpoint"]
