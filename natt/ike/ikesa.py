"""The state of one IKE (phase 1) SA and its phase 2 children, and how its messages are sealed."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from natt.crypto import keys as kdf
from natt.crypto.cipher import IkeCipher, pad_ike
from natt.crypto.dh import DHPrivateKey
from natt.crypto.prf import HashAlg
from natt.errors import DecryptionError, InvalidFlags
from natt.ike.config import ClientProfile, GroupPolicy, Phase1Proposal, Phase2Proposal
from natt.ike.natd import NatStatus, NattVariant
from natt.wire.buffer import Writer
from natt.wire.constants import HEADER_LEN, NON_ESP_MARKER, ExchangeType, Flag
from natt.wire.message import Header, Message, decode_payloads, encode_payloads
from natt.wire.payloads import Payload

if TYPE_CHECKING:
    from natt.esp.sa import EspSA


class Role(Enum):
    INITIATOR = "initiator"
    RESPONDER = "responder"


class State(Enum):
    START = "start"
    P1_SENT_1 = "p1-sent-1"  # initiator: AM msg1 / MM msg1 sent
    MM_SENT_2 = "mm-sent-2"  # responder
    MM_SENT_3 = "mm-sent-3"  # initiator
    MM_SENT_4 = "mm-sent-4"  # responder
    MM_SENT_5 = "mm-sent-5"  # initiator
    AM_SENT_2 = "am-sent-2"  # responder
    AUTHENTICATED = "authenticated"  # phase 1 keys and peer authenticated (transient)
    XAUTH = "xauth"  # responder: request sent, waiting for the user's answer; initiator: waiting for the gateway
    XAUTH_CHECKING = "xauth-checking"  # responder: the answer is being checked (off the daemon's loop)
    XAUTH_STATUS = "xauth-status"  # responder: status OK sent, waiting for the ACK
    MODECFG = "modecfg"  # XAUTH done (or none): the address is not assigned yet
    ESTABLISHED = "established"  # authenticated and configured: ready for Quick Modes
    DELETED = "deleted"


# States in which the phase 1 exchange is still running (its messages chain the phase 1 IV).
PHASE1_STATES = frozenset({State.START, State.P1_SENT_1, State.MM_SENT_2, State.MM_SENT_3, State.MM_SENT_4,
                           State.MM_SENT_5, State.AM_SENT_2})
# States after phase 1: the peer is authenticated by the PSK and Informational exchanges (DPD, DELETE) work.
AFTER_PHASE1_STATES = frozenset({State.AUTHENTICATED, State.XAUTH, State.XAUTH_CHECKING, State.XAUTH_STATUS,
                                 State.MODECFG, State.ESTABLISHED})
SEEN_MIDS = 16  # recent inbound message IDs kept per SA: a replayed message never moves the peer or proves life


@dataclass(frozen=True)
class Datagram:
    """One UDP payload to send: the daemon picks the socket by local_port."""

    data: bytes
    remote: tuple[str, int]
    local_port: int


@dataclass(slots=True)
class Retransmit:
    datagram: Datagram
    next_at: float
    interval: float
    tries_left: int
    what: str
    sent: int = 0  # resends so far
    cap: float | None = None  # the interval doubles up to this (None: without bound)


@dataclass(slots=True)
class ChildSA:
    message_id: int
    inbound_spi: int
    outbound_spi: int
    proposal: Phase2Proposal
    encap: int
    local_selector: str
    remote_selector: str
    established_at: float
    expires_at: float
    rekey_at: float | None  # soft lifetime: when this side starts its replacement (None: never)
    rekeyed: bool = False  # a replacement is under way or done: no second one
    delete_at: float | None = None  # replaced by a rekey this side made: deleted then (after a grace period)


@dataclass(slots=True)
class QuickModeState:
    """A Quick Mode in progress (either role)."""

    message_id: int
    our_spi: bytes
    ni: bytes = b""
    nr: bytes = b""
    offered: tuple[Phase2Proposal, ...] = ()
    id_ci: Payload | None = None
    id_cr: Payload | None = None
    local_selector: str = ""
    remote_selector: str = ""
    dh: DHPrivateKey | None = None
    rekey_of: int | None = None
    retry: int = 0  # an initiator's set-up Quick Mode started again after its resends ran out: how many times
    reply: Datagram | None = None  # responder: cached HASH(2) message
    chosen: Phase2Proposal | None = None
    encap: int = 0
    peer_spi: bytes = b""
    gxy: bytes | None = None
    responder_lifetime: int | None = None
    ours: bool = False  # this side sent message 1 (either role may: a rekey)
    abandoned: bool = False  # lost a rekey collision: a reply to it gets no HASH(3) and installs nothing
    # Our message 2 sent, HASH(3) not come: the inbound half, built once, that ESP on our SPI must authenticate
    # under to complete the exchange (quick.commit_by_esp); kept so forged packets cost one MAC check each.
    probe: EspSA | None = None


@dataclass(slots=True)
class InitiatorHold:
    """What only an initiator keeps: its profile, what it offered, how far its own set-up went."""

    profile: ClientProfile
    offered: tuple[Phase1Proposal, ...] = ()
    xauth_answers: int = 0
    quick_modes_started: bool = False
    reauth_of: int | None = None  # this SA re-authenticates that one (phase 1 rekey): it takes over its tunnels
    reauth_by: int | None = None  # the SA re-authenticating this one, while it runs
    replaced_by: int | None = None  # the SA that took this one's session over: this one goes after a grace period
    peer_reason: str = ""  # what the gateway said (DELETE-REASON) before it ended the session


@dataclass(slots=True)
class ResponderHold:
    """What only a responder keeps: the group the peer named (or a decoy), XAUTH attempts and the check under way,
    and whether the peer said INITIAL-CONTACT."""

    group: GroupPolicy | None = None
    decoy: bool = False
    xauth_tries: int = 0
    xauth_ticket: int | None = None
    initial_contact: bool = False


MAX_IVS = 16  # phase 2 exchanges whose IV chain is kept (a Quick Mode or transaction spans 2-4 messages)


@dataclass(slots=True)
class IkeSA:
    id: int
    role: Role
    icookie: bytes
    rcookie: bytes
    local: tuple[str, int]
    remote: tuple[str, int]
    created_at: float
    mode: str = "aggressive"
    state: State = State.START
    initiator: InitiatorHold | None = None  # exactly one of these two is set, by the role
    responder: ResponderHold | None = None
    proposal: Phase1Proposal | None = None
    hash: HashAlg | None = None
    cipher: IkeCipher | None = None
    dh: DHPrivateKey | None = None
    gxi: bytes = b""
    gxr: bytes = b""
    gxy: bytes = b""
    ni: bytes = b""
    nr: bytes = b""
    sai_b: bytes = b""
    idi_b: bytes = b""
    idr_b: bytes = b""
    skeyid: bytes = b""
    skeyid_d: bytes = b""
    skeyid_a: bytes = b""
    skeyid_e: bytes = b""
    enc_key: bytes = b""
    p1_iv: bytes = b""
    p1_last_block: bytes = b""
    ivs: dict[int, bytes] = field(default_factory=dict)
    peer_vids: list[bytes] = field(default_factory=list)
    natt: NattVariant | None = None
    nat: NatStatus | None = None
    peer_offered_natt: bool = False
    floated: bool = False
    identity: str = ""
    user: str = ""
    xauth_done: bool = False
    assigned_address: str | None = None
    cisco_udp_port: int | None = None  # IPsec over UDP, set by Mode Config
    peer_app_version: str = ""
    children: dict[int, ChildSA] = field(default_factory=dict)
    quick_modes: dict[int, QuickModeState] = field(default_factory=dict)
    pending: dict[int, Retransmit] = field(default_factory=dict)  # by message ID (0 = phase 1)
    replies: dict[bytes, Datagram] = field(default_factory=dict)  # received request bytes → our reply
    replies_answered: dict[bytes, int] = field(default_factory=dict)  # ... and how many copies it answered
    # The last messages taken from the peer, by digest: a copy of one (a retransmitted last message of an exchange,
    # such as a second Quick Mode HASH(3)) is dropped before decryption, not decrypted with an IV that has moved on.
    processed: deque[bytes] = field(default_factory=lambda: deque(maxlen=8))
    replied_at: float = 0.0  # when the last reply was cached (the cache empties REPLY_CACHE_TTL later)
    transactions: dict[int, str] = field(default_factory=dict)  # message ID → what we wait for
    established_at: float | None = None
    expires_at: float | None = None
    last_inbound: float = 0.0
    last_outbound: float = 0.0
    dpd_seq: int = 0
    dpd_outstanding: int = 0
    dpd_sent_at: float | None = None
    next_keepalive: float | None = None
    next_heartbeat: float | None = None
    delete_reason: str = ""
    session_id: int = 0  # the login this SA serves: kept by a re-authentication, so the tunnels stay the session's
    rekey_at: float | None = None  # phase 1 soft lifetime: when the initiator re-authenticates
    adopted_at: float | None = None  # responder: when this SA took its session over from an older one
    seen_mids: list[int] = field(default_factory=list)  # the last SEEN_MIDS authenticated inbound (M-ID, kind)s
    first_remote: tuple[str, int] = ("", 0)  # where message 1 came from / went to (NAT-D, see natd.detect)
    first_local_port: int = 500

    def __post_init__(self) -> None:
        self.first_remote = self.remote
        self.first_local_port = self.local[1]

    # -- display -------------------------------------------------------------------------

    @property
    def profile(self) -> ClientProfile | None:
        """The initiator's profile (None on a responder)."""
        return self.initiator.profile if self.initiator is not None else None

    @property
    def group(self) -> GroupPolicy | None:
        """The responder's group, once the peer's ID named it (None on an initiator)."""
        return self.responder.group if self.responder is not None else None

    @property
    def peer(self) -> str:
        return self.remote[0]

    @property
    def peer_dpd(self) -> bool:
        from natt.wire.constants import VendorId

        return VendorId.DPD in self.peer_vids

    @property
    def udp_encap(self) -> bool:
        """ESP goes in UDP only when NAT-T was negotiated and a NAT (or force) was found."""
        return self.natt is not None and self.floated

    # -- key material --------------------------------------------------------------------

    def derive_phase1_keys(self, psk: bytes) -> None:
        assert self.hash and self.cipher
        h = self.hash
        self.skeyid = kdf.skeyid_psk(h, psk, self.ni, self.nr)
        k = kdf.derive_phase1(h, self.skeyid, self.gxy, self.icookie, self.rcookie)
        self.skeyid_d, self.skeyid_a, self.skeyid_e = k.skeyid_d, k.skeyid_a, k.skeyid_e
        self.enc_key = kdf.encryption_key(h, self.skeyid_e, self.cipher.key_len)
        self.p1_iv = kdf.phase1_iv(h, self.gxi, self.gxr, self.cipher.block_size)

    def hash_i(self) -> bytes:
        assert self.hash
        return kdf.hash_i(self.hash, self.skeyid, self.gxi, self.gxr, self.icookie, self.rcookie,
                          self.sai_b, self.idi_b)

    def hash_r(self) -> bytes:
        assert self.hash
        return kdf.hash_r(self.hash, self.skeyid, self.gxr, self.gxi, self.rcookie, self.icookie,
                          self.sai_b, self.idr_b)

    # -- sealing and opening messages ------------------------------------------------------

    def _fresh_iv(self, exchange: int) -> bool:
        """An Informational message after phase 1 starts from hash(last phase 1 block | M-ID), whatever its M-ID
        (0 included: vpnc draws its delete M-IDs from one random byte) and whatever else used that M-ID before,
        and leaves no chain behind (RFC 2409 appendix B; vpnc's isakmp_crypt does the same)."""
        return exchange == ExchangeType.INFORMATIONAL and self.state not in PHASE1_STATES

    def _iv_for(self, message_id: int, exchange: int) -> bytes:
        fresh = self._fresh_iv(exchange)
        if message_id == 0 and not fresh:
            return self.p1_iv
        iv = None if fresh else self.ivs.get(message_id)
        if iv is None:
            assert self.hash and self.cipher
            iv = kdf.phase2_iv(self.hash, self.p1_last_block, message_id, self.cipher.block_size)
        return iv

    def forget_phase1_secrets(self) -> None:
        """Phase 1 is done: what only its exchange needed (DH key, g^xy, SKEYID, nonces, the hashed payloads)
        goes, so a long-lived session holds only SKEYID_d/a/e and its keys (smaller, and less to leak)."""
        self.dh = None
        self.gxi = self.gxr = self.gxy = self.ni = self.nr = b""
        self.sai_b = self.idi_b = self.idr_b = self.skeyid = b""

    def seal(self, exchange: int, message_id: int, payloads: list[Payload], encrypt: bool) -> bytes:
        first, body = encode_payloads(payloads)
        flags = 0
        if encrypt:
            assert self.cipher
            body = self.cipher.encrypt(self.enc_key, self._iv_for(message_id, exchange),
                                       pad_ike(body, self.cipher.block_size))
            self._chain(message_id, exchange, body[-self.cipher.block_size :])
            flags = Flag.ENCRYPTION
        header = Header(self.icookie, self.rcookie, first, exchange, flags, message_id,
                        HEADER_LEN + len(body))
        w = Writer()
        header.encode(w)
        return w.getvalue() + body

    def open(self, header: Header, data: bytes) -> tuple[Message, bytes | None]:
        """Decrypt (when flagged) and decode. Nothing changes here: the IV the message leads to comes back beside
        it, and becomes the chain's only through confirm_iv, once the message has verified (keymat_v1's
        update_iv / confirm_iv)."""
        body = data[HEADER_LEN : header.length]
        if not header.encrypted:
            payloads, spans = decode_payloads(header.next_payload, body, allow_padding=False)
            return Message(header, payloads, body, spans), None
        if not self.enc_key or self.cipher is None:
            raise InvalidFlags("encrypted message before keys exist")
        if not body or len(body) % self.cipher.block_size:
            raise DecryptionError(f"ciphertext of {len(body)} bytes")
        plain = self.cipher.decrypt(self.enc_key, self._iv_for(header.message_id, header.exchange), body)
        payloads, spans = decode_payloads(header.next_payload, plain, allow_padding=True)
        return Message(header, payloads, plain, spans), body[-self.cipher.block_size :]

    @staticmethod
    def open_plain(header: Header, data: bytes) -> tuple[Message, None]:
        """Decode an unencrypted message that belongs to no SA (a notify about one we may have lost)."""
        if header.encrypted:
            raise InvalidFlags("encrypted message for no SA")
        body = data[HEADER_LEN : header.length]
        payloads, spans = decode_payloads(header.next_payload, body, allow_padding=False)
        return Message(header, payloads, body, spans), None

    def confirm_iv(self, header: Header, next_iv: bytes | None) -> None:
        """A received message verified: its last ciphertext block is now the chain's IV."""
        if next_iv is not None:
            self._chain(header.message_id, header.exchange, next_iv)

    def _chain(self, message_id: int, exchange: int, last_block: bytes) -> None:
        """The IV a message (sent, or received and verified) leaves for the next one of its exchange."""
        if self._fresh_iv(exchange):
            return
        if message_id == 0:
            self.p1_iv = self.p1_last_block = last_block
        elif exchange != ExchangeType.INFORMATIONAL:  # one message each (phase 1 informationals too)
            self.ivs[message_id] = last_block
            while len(self.ivs) > MAX_IVS:  # informational exchanges never come back: keep the recent ones
                self.ivs.pop(next(iter(self.ivs)))

    def fresh_message(self, message_id: int, kind_code: int) -> bool:
        """Whether an authenticated message (its M-ID and which message of its exchange it is) is new here; phase
        1's M-ID 0 always is (its messages come in a fixed order). Remembers it."""
        if message_id == 0:
            return True
        key = message_id << 6 | kind_code
        if key in self.seen_mids:
            return False
        self.seen_mids.append(key)
        if len(self.seen_mids) > SEEN_MIDS:
            del self.seen_mids[0]
        return True

    def datagram(self, data: bytes) -> Datagram:
        """Frame for the current ports: on 4500, IKE carries the non-ESP marker (RFC 3948 2.2)."""
        if self.floated:
            data = NON_ESP_MARKER + data
        return Datagram(data, self.remote, self.local[1])
