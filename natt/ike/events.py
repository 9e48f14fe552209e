"""What happened inside the IKE core: small frozen dataclasses the daemons and logs consume."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Cause(Enum):
    """Why a message was refused or an SA went down: logs and daemons branch on this, never on reason text."""

    ADMIN = "administrator request"
    SHUTDOWN = "shutting down"
    PEER_DELETED = "peer deleted the SA"
    DPD_TIMEOUT = "dead peer detection"
    RETRANSMIT_TIMEOUT = "peer did not answer"
    HALF_OPEN_TIMEOUT = "phase 1 not completed in time"
    LIFETIME_EXPIRED = "lifetime expired"
    AUTH_FAILED = "authentication failed"  # phase 1: pre-shared key / HASH_I / HASH_R
    XAUTH_FAILED = "XAUTH failed"
    XAUTH_THROTTLED = "XAUTH throttled"  # backoff or lockout after failed logins
    UNKNOWN_GROUP = "unknown group"
    NO_PROPOSAL = "no acceptable proposal"
    SESSION_LIMIT = "session limit reached"
    POOL_EXHAUSTED = "address pool exhausted"
    SELECTOR_REFUSED = "selectors not authorised"  # Quick Mode for an address the user was not given
    NOT_ALLOWED_NOW = "message not allowed in this state"  # the state x exchange table said no
    BAD_HASH = "HASH does not verify"
    UNDECRYPTABLE = "cannot decrypt"
    MALFORMED = "malformed message"
    UNKNOWN_SA = "unknown IKE SA"
    REPLACED = "replaced by a new login"
    UNKNOWN_SPI = "no such SA in this session"
    REKEYED = "replaced by a rekey"
    LOGIN_LIMIT = "simultaneous login limit"
    OTHER = "error"


@dataclass(frozen=True)
class IkeEvent:
    sa_id: int  # the endpoint's handle for the IKE SA
    peer: str  # peer IP address as seen on the wire


@dataclass(frozen=True)
class MessageSent(IkeEvent):
    exchange: int
    payloads: tuple[int, ...]
    encrypted: bool
    message_id: int
    port: int  # remote UDP port
    notifies: tuple[int, ...] = ()
    retransmit: bool = False
    what: str = ""  # a timer's retransmission: the message resent ("Aggressive Mode message 1") ...
    attempt: int = 0  # ... and which resend this is (1 = the first)


@dataclass(frozen=True)
class MessageReceived(IkeEvent):
    exchange: int
    payloads: tuple[int, ...]
    encrypted: bool
    message_id: int
    icookie: bytes
    rcookie: bytes
    flags: int
    length: int
    notifies: tuple[int, ...] = ()


@dataclass(frozen=True)
class VendorIdSeen(IkeEvent):
    data: bytes
    name: str | None


@dataclass(frozen=True)
class NatDetection(IkeEvent):
    local_behind_nat: bool
    remote_behind_nat: bool
    natt_negotiated: bool
    draft: str  # "RFC 3947", "draft-02", ...


@dataclass(frozen=True)
class PortFloated(IkeEvent):
    """The peer's IKE (and NAT-T ESP) endpoint moved: the float to 4500, or a NAT mapping that changed. Only ever
    after an authenticated IKE message or an authenticated ESP packet from the new address (RFC 3947 7)."""

    local_port: int
    remote_port: int
    remote_address: str = ""
    by_esp: bool = False
    rebind: bool = False  # already on 4500: a NAT mapping changed (not the float itself)


@dataclass(frozen=True)
class WeakAlgorithm(IkeEvent):
    what: str


@dataclass(frozen=True)
class NattRefused(IkeEvent):
    """The peer offered NAT-T but this concentrator's NAT transparency is off."""


@dataclass(frozen=True)
class Phase1Established(IkeEvent):
    mode: str
    group: str
    cipher: str
    hash: str
    dh_group: str
    lifetime: int
    identity: str


@dataclass(frozen=True)
class XauthRequested(IkeEvent):
    pass


@dataclass(frozen=True)
class XauthCheck(IkeEvent):
    """Responder: an XAUTH reply's credentials to check. The daemon runs the (slow, salted) password check off its
    event loop and answers with IkeEndpoint.xauth_verdict(ticket, ok, now); nothing else moves that SA meanwhile."""

    ticket: int
    user: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class XauthLockout(IkeEvent):
    """Failed logins crossed a threshold: `kind` is "user" or "source", `key` the user name or address."""

    kind: str
    key: str
    failures: int
    until: float | None  # core time; None = until an operator clears it


@dataclass(frozen=True)
class MessageRefused(IkeEvent):
    """A message the SA's state does not accept now (the state x exchange table), or one that failed
    authentication: dropped before it could change anything."""

    state: str
    exchange: int
    kind: str
    cause: Cause


@dataclass(frozen=True)
class XauthResult(IkeEvent):
    user: str
    ok: bool
    final: bool
    reason: str = ""


@dataclass(frozen=True)
class ModeConfigDone(IkeEvent):
    """Address and settings assigned (responder) or received (initiator)."""

    address: str
    netmask: str | None
    dns: tuple[str, ...] = ()
    nbns: tuple[str, ...] = ()
    domain: str = ""
    banner: str = ""
    split_networks: tuple[str, ...] = ()
    natt_port: int | None = None
    app_version: str = ""
    save_password: bool | None = None
    pfs: bool | None = None


@dataclass(frozen=True)
class ChildSaUp(IkeEvent):
    """A phase 2 SA pair is ready: the daemon builds its ESP SAs from this."""

    message_id: int
    inbound_spi: int
    outbound_spi: int
    transform: int
    key_bits: int | None
    auth: int | None
    keymat_in: bytes = field(repr=False)
    keymat_out: bytes = field(repr=False)
    udp_encap: bool  # ESP in UDP: NAT-T (RFC 3948) or Cisco IPsec over UDP
    local_port: int  # the ESP transport's ports (UDP); remote_port 0 = learn it from the peer's first ESP
    remote_port: int
    local_selector: str
    remote_selector: str
    lifetime: int
    rekey_of: int | None = None  # inbound SPI of the SA this one replaces
    session_id: int = 0  # the login this tunnel belongs to (kept across rekeys and re-authentication); 0 = sa_id
    replaces: int | None = None  # inbound SPI of an older pair for the same selectors, whoever started the rekey


@dataclass(frozen=True)
class CommittedByEsp(IkeEvent):
    """Quick Mode HASH(3) never came, but the peer's ESP authenticated under the pair's inbound SPI: installed."""

    message_id: int
    inbound_spi: int


@dataclass(frozen=True)
class ChildSaDown(IkeEvent):
    inbound_spi: int
    outbound_spi: int
    reason: str
    cause: Cause = Cause.OTHER


@dataclass(frozen=True)
class NotifyReceived(IkeEvent):
    notify_type: int
    protocol_id: int
    spi: bytes
    data: bytes


@dataclass(frozen=True)
class DpdEvent(IkeEvent):
    kind: str  # "request-sent", "request-received", "ack-sent", "ack-received", "heartbeat-received"
    seq: int


@dataclass(frozen=True)
class NotifyHint(IkeEvent):
    """An unprotected INVALID-COOKIE / INVALID-SPI from the peer named one of our SAs: we run DPD at once."""

    what: str


@dataclass(frozen=True)
class Overload(IkeEvent):
    """Call admission dropped first messages in the last interval (admission.py): one event sums them up."""

    seconds: float
    dropped: tuple[tuple[str, int], ...]  # reason → count
    evicted: int
    sources: int
    top: tuple[tuple[str, int], ...]  # the sources dropped most, with their counts
    half_open: int


@dataclass(frozen=True)
class KeepaliveReceived(IkeEvent):
    pass


@dataclass(frozen=True)
class ExchangeFailed(IkeEvent):
    """A message was refused or an exchange could not go on."""

    reason: str
    notify: int | None
    fatal: bool
    cause: Cause = Cause.OTHER


@dataclass(frozen=True)
class IkeSaDown(IkeEvent):
    reason: str
    cause: Cause = Cause.OTHER


@dataclass(frozen=True)
class Reauthenticated(IkeEvent):
    """A new IKE SA (sa_id) took over a session from an older one (old_sa_id), before that one expired: the
    tunnels moved, the address stayed (phase 1 rekey by re-authentication)."""

    old_sa_id: int
    session_id: int


@dataclass(frozen=True)
class ChildSaMoved(IkeEvent):
    """A child SA pair now belongs to IKE SA sa_id (it was old_sa_id's): a re-authentication took the session over.
    Its keys, SPIs and selectors are unchanged."""

    inbound_spi: int
    old_sa_id: int


@dataclass(frozen=True)
class KeepaliveSent(IkeEvent):
    """A NAT keepalive (RFC 3948 4) went out."""
