"""Which message each IKE SA state accepts, per role: the one table to check against the RFCs.

RFC 2409 5.4 (Aggressive Mode), 5.1/5.4 (Main Mode with a pre-shared key), 5.5 (Quick Mode), 5.7
(Informational); draft-beaulieu-ike-xauth-02 (XAUTH: REQUEST/REPLY, then SET/ACK of the status) and
draft-dukes-ike-mode-cfg-02 (Mode Config: REQUEST/REPLY pulled by the client, or SET/ACK pushed).

A received message is first given a `Kind` (from its exchange type, and once decrypted from its
contents), then looked up here for the SA's role and state. A message that matches no row is dropped
before any of its payloads is acted on: counted by kind, logged with the state and exchange names, and
nothing of the SA changes (not its IV chain, timers, liveness or the peer's address).
"""

from __future__ import annotations

from enum import Enum

from natt.ike.ikesa import IkeSA, Role, State
from natt.wire.constants import ConfigAttr, ConfigType, ExchangeType
from natt.wire.message import Message
from natt.wire.payloads import ConfigAttributes


class Kind(Enum):
    AM_1 = "Aggressive Mode message 1"
    AM_2 = "Aggressive Mode message 2"
    AM_3 = "Aggressive Mode message 3"
    MM_1 = "Main Mode message 1"
    MM_2 = "Main Mode message 2"
    MM_3 = "Main Mode message 3"
    MM_4 = "Main Mode message 4"
    MM_5 = "Main Mode message 5"
    MM_6 = "Main Mode message 6"
    PHASE1_OUT_OF_ORDER = "phase 1 message out of order"
    INFO_PLAIN = "unencrypted Informational"  # logged, never acted on: anyone can forge it
    INFO = "Informational"
    XAUTH_REQUEST = "XAUTH request"
    XAUTH_REPLY = "XAUTH reply"
    XAUTH_STATUS = "XAUTH status"
    XAUTH_ACK = "XAUTH status ACK"
    CFG_REQUEST = "Mode Config request"
    CFG_REPLY = "Mode Config reply"
    CFG_SET = "Mode Config set"
    CFG_ACK = "Mode Config ACK"
    TRANSACTION_OTHER = "transaction of an unknown kind"
    TRANSACTION = "transaction message (XAUTH or Mode Config)"  # refused by its header, unread
    QUICK_MODE = "Quick Mode message"  # refused by its header, unread
    QM_1 = "Quick Mode message 1"
    QM_2 = "Quick Mode message 2"
    QM_3 = "Quick Mode message 3"
    OTHER = "unknown exchange"


K = Kind
KIND_CODE = {k: i for i, k in enumerate(Kind)}  # small integers, for the replay memory (IkeSA.fresh_message)
assert len(KIND_CODE) <= 64
R, I = Role.RESPONDER, Role.INITIATOR  # noqa: E741 (the table reads as R and I rows)
S = State

# role, state → the messages it accepts. Everything else is refused unread.
ACCEPTS: dict[tuple[Role, State], frozenset[Kind]] = {
    # -- the responder (the concentrator) --
    (R, S.START): frozenset({K.AM_1, K.MM_1}),
    (R, S.AM_SENT_2): frozenset({K.AM_3, K.INFO_PLAIN}),
    (R, S.MM_SENT_2): frozenset({K.MM_3, K.INFO_PLAIN}),
    (R, S.MM_SENT_4): frozenset({K.MM_5, K.INFO_PLAIN}),
    # XAUTH request sent: only the user's answer. No Mode Config, no Quick Mode before XAUTH succeeds.
    (R, S.XAUTH): frozenset({K.XAUTH_REPLY, K.INFO}),
    # The answer is being checked: nothing moves this SA until the verdict.
    (R, S.XAUTH_CHECKING): frozenset({K.INFO}),
    # Status OK sent: its ACK, or (the ACK lost) the Mode Config request that only a client that read the
    # status sends (draft-dukes 3.2 follows XAUTH with the request).
    (R, S.XAUTH_STATUS): frozenset({K.XAUTH_ACK, K.CFG_REQUEST, K.INFO}),
    # XAUTH done (or none in this group), no address yet: the Mode Config request.
    (R, S.MODECFG): frozenset({K.CFG_REQUEST, K.INFO}),
    # Authenticated and given its address: Quick Modes (for that address only: quick.py), a pulled request
    # beside a push, the push's ACK.
    # Quick Mode 2 answers one this side started (it rekeys the children of clients that never do: vpnc).
    (R, S.ESTABLISHED): frozenset({K.QM_1, K.QM_2, K.QM_3, K.CFG_REQUEST, K.CFG_ACK, K.INFO}),
    # -- the initiator (the client) --
    (I, S.P1_SENT_1): frozenset({K.AM_2, K.MM_2, K.INFO_PLAIN}),
    (I, S.MM_SENT_3): frozenset({K.MM_4, K.INFO_PLAIN}),
    (I, S.MM_SENT_5): frozenset({K.MM_6, K.INFO_PLAIN}),
    (I, S.XAUTH): frozenset({K.XAUTH_REQUEST, K.XAUTH_STATUS, K.INFO}),
    (I, S.MODECFG): frozenset({K.CFG_REPLY, K.CFG_SET, K.INFO}),
    # The gateway may rekey too (Quick Mode 1 and 3 from it): for a tunnel this client has (quick.py).
    (I, S.ESTABLISHED): frozenset({K.QM_1, K.QM_2, K.QM_3, K.CFG_SET, K.INFO}),
}

# Phase 1 messages are known by their place: (exchange, state the SA is in) → which message this must be.
_PHASE1: dict[tuple[int, State], Kind] = {
    (ExchangeType.AGGRESSIVE, S.START): K.AM_1,
    (ExchangeType.AGGRESSIVE, S.P1_SENT_1): K.AM_2,
    (ExchangeType.AGGRESSIVE, S.AM_SENT_2): K.AM_3,
    (ExchangeType.IDENTITY_PROTECTION, S.START): K.MM_1,
    (ExchangeType.IDENTITY_PROTECTION, S.P1_SENT_1): K.MM_2,
    (ExchangeType.IDENTITY_PROTECTION, S.MM_SENT_2): K.MM_3,
    (ExchangeType.IDENTITY_PROTECTION, S.MM_SENT_3): K.MM_4,
    (ExchangeType.IDENTITY_PROTECTION, S.MM_SENT_4): K.MM_5,
    (ExchangeType.IDENTITY_PROTECTION, S.MM_SENT_5): K.MM_6,
}

# Whether a kind travels encrypted: anything else in that respect is refused before it is read.
PLAIN_KINDS = frozenset({K.AM_1, K.AM_2, K.MM_1, K.MM_2, K.MM_3, K.MM_4, K.INFO_PLAIN})
PHASE1_KINDS = frozenset({K.AM_1, K.AM_2, K.AM_3, K.MM_1, K.MM_2, K.MM_3, K.MM_4, K.MM_5, K.MM_6})
_XAUTH_ATTRS = frozenset({ConfigAttr.XAUTH_TYPE, ConfigAttr.XAUTH_USER_NAME, ConfigAttr.XAUTH_USER_PASSWORD,
                          ConfigAttr.XAUTH_PASSCODE, ConfigAttr.XAUTH_MESSAGE, ConfigAttr.XAUTH_STATUS,
                          ConfigAttr.XAUTH_CHALLENGE, ConfigAttr.XAUTH_DOMAIN})


def accepts(sa: IkeSA, kind: Kind) -> bool:
    return kind in ACCEPTS.get((sa.role, sa.state), frozenset())


def header_kind(sa: IkeSA, exchange: int, encrypted: bool) -> Kind | None:
    """What can be told before decrypting: a phase 1 message's kind, an Informational's; None = look inside."""
    if exchange in (ExchangeType.AGGRESSIVE, ExchangeType.IDENTITY_PROTECTION):
        if (exchange == ExchangeType.AGGRESSIVE) != (sa.mode == "aggressive"):
            return K.PHASE1_OUT_OF_ORDER  # the other mode's message, mid-negotiation
        return _PHASE1.get((exchange, sa.state), K.PHASE1_OUT_OF_ORDER)
    if exchange == ExchangeType.INFORMATIONAL:
        return K.INFO if encrypted else K.INFO_PLAIN
    if exchange in (ExchangeType.TRANSACTION, ExchangeType.QUICK_MODE):
        return None
    return K.OTHER


def could_accept(sa: IkeSA, exchange: int, encrypted: bool) -> Kind | None:
    """The cheap gate before any decryption: the kind if the header alone rules the message out, else None.

    Transaction and Quick Mode messages need their contents to be told apart; they pass here only if the
    state accepts some message of that exchange at all, and only encrypted.
    """
    kind = header_kind(sa, exchange, encrypted)
    allowed = ACCEPTS.get((sa.role, sa.state), frozenset())
    if kind is not None:
        if kind not in allowed or (kind in PLAIN_KINDS) == encrypted:
            return kind
        return None
    family = _QUICK_KINDS if exchange == ExchangeType.QUICK_MODE else _TRANSACTION_KINDS
    if not encrypted or not family & allowed:
        return K.QUICK_MODE if exchange == ExchangeType.QUICK_MODE else K.TRANSACTION
    return None


_QUICK_KINDS = frozenset({K.QM_1, K.QM_2, K.QM_3})
_TRANSACTION_KINDS = frozenset({K.XAUTH_REQUEST, K.XAUTH_REPLY, K.XAUTH_STATUS, K.XAUTH_ACK, K.CFG_REQUEST,
                                K.CFG_REPLY, K.CFG_SET, K.CFG_ACK})


def classify(sa: IkeSA, msg: Message) -> Kind:
    """The kind of a decrypted message, for the table."""
    header = msg.header
    kind = header_kind(sa, header.exchange, header.encrypted)
    if kind is not None:
        return kind
    if header.exchange == ExchangeType.QUICK_MODE:
        qm = sa.quick_modes.get(header.message_id)
        if qm is None:
            return K.QM_1
        return K.QM_2 if qm.ours else K.QM_3
    cfg = msg.get(ConfigAttributes)
    if cfg is None:
        return K.TRANSACTION_OTHER
    xauth = any(a.type in _XAUTH_ATTRS for a in cfg.attributes)
    status = any(a.type == ConfigAttr.XAUTH_STATUS for a in cfg.attributes)
    if cfg.cfg_type == ConfigType.REQUEST:
        return K.XAUTH_REQUEST if xauth else K.CFG_REQUEST
    if cfg.cfg_type == ConfigType.REPLY:
        return K.XAUTH_REPLY if xauth else K.CFG_REPLY
    if cfg.cfg_type == ConfigType.SET:
        return K.XAUTH_STATUS if status else K.CFG_SET
    if cfg.cfg_type == ConfigType.ACK:
        return K.XAUTH_ACK if status else K.CFG_ACK
    return K.TRANSACTION_OTHER


def table_text() -> str:
    """The table as text, for the README and a reviewer."""
    lines = []
    for (role, state), kinds in ACCEPTS.items():
        lines.append(f"{role.value:9} {state.value:15} " + ", ".join(sorted(k.value for k in kinds)))
    return "\n".join(lines)
