"""Typed errors for the whole library.

Every error a peer can cause maps to the ISAKMP notify type the daemon would send back
(RFC 2408 3.14.1), so the protocol core can answer it without guessing.
"""

from __future__ import annotations

from natt.wire.constants import NotifyType


class NattError(Exception):
    """Base of every error raised by natt."""

    notify: NotifyType | None = None
    # A silent error is logged but never answered with a notify (it would help a scanner).
    silent: bool = False


# --- decoding (wire) -------------------------------------------------------------------


class DecodeError(NattError):
    """A packet or payload could not be decoded."""

    notify = NotifyType.PAYLOAD_MALFORMED


class TruncatedError(DecodeError):
    """Fewer bytes than a field or a declared length needs."""


class LengthError(DecodeError):
    """A length field is impossible (too small, beyond its container, unequal)."""


class UnequalPayloadLengths(LengthError):
    notify = NotifyType.UNEQUAL_PAYLOAD_LENGTHS


class InvalidPayloadType(DecodeError):
    notify = NotifyType.INVALID_PAYLOAD_TYPE


class InvalidMajorVersion(DecodeError):
    notify = NotifyType.INVALID_MAJOR_VERSION


class InvalidMinorVersion(DecodeError):
    notify = NotifyType.INVALID_MINOR_VERSION


class InvalidExchangeType(DecodeError):
    notify = NotifyType.INVALID_EXCHANGE_TYPE


class InvalidFlags(DecodeError):
    notify = NotifyType.INVALID_FLAGS


class InvalidCookie(DecodeError):
    notify = NotifyType.INVALID_COOKIE


class DoiNotSupported(DecodeError):
    notify = NotifyType.DOI_NOT_SUPPORTED


class SituationNotSupported(DecodeError):
    notify = NotifyType.SITUATION_NOT_SUPPORTED


class InvalidProtocolId(DecodeError):
    notify = NotifyType.INVALID_PROTOCOL_ID


class InvalidSpi(DecodeError):
    notify = NotifyType.INVALID_SPI


class InvalidIdInformation(DecodeError):
    notify = NotifyType.INVALID_ID_INFORMATION


class SelectorNotAuthorised(InvalidIdInformation):
    """A Quick Mode names addresses this user was not given (another user's, or outside its group's networks)."""


class BadProposalSyntax(DecodeError):
    notify = NotifyType.BAD_PROPOSAL_SYNTAX


# --- crypto ------------------------------------------------------------------------------


class CryptoError(NattError):
    """A cryptographic operation failed or was given impossible input."""


class UnsupportedAlgorithm(CryptoError):
    notify = NotifyType.ATTRIBUTES_NOT_SUPPORTED


class InvalidKeyInformation(CryptoError):
    """A peer's DH public value is out of range or off the curve."""

    notify = NotifyType.INVALID_KEY_INFORMATION


class DecryptionError(CryptoError):
    """An encrypted IKE message decrypted to garbage (wrong key, bad padding)."""

    notify = NotifyType.PAYLOAD_MALFORMED


# --- IKE protocol ------------------------------------------------------------------------


class ProtocolError(NattError):
    """A peer broke the exchange's rules."""

    notify = NotifyType.PAYLOAD_MALFORMED


class NoProposalChosen(ProtocolError):
    notify = NotifyType.NO_PROPOSAL_CHOSEN


class AuthenticationFailed(ProtocolError):
    notify = NotifyType.AUTHENTICATION_FAILED


class InvalidHashInformation(ProtocolError):
    notify = NotifyType.INVALID_HASH_INFORMATION


class InvalidMessageId(ProtocolError):
    notify = NotifyType.INVALID_MESSAGE_ID


class UnexpectedMessage(ProtocolError):
    """A message arrived that the exchange's state does not allow now."""

    notify = NotifyType.INVALID_PAYLOAD_TYPE


class MissingPayload(ProtocolError):
    notify = NotifyType.PAYLOAD_MALFORMED


class XauthFailed(ProtocolError):
    """Extended authentication was refused (wrong user or password, too many tries)."""

    notify = NotifyType.AUTHENTICATION_FAILED


class SessionLimitReached(ProtocolError):
    notify = NotifyType.NO_PROPOSAL_CHOSEN


class PoolExhausted(ProtocolError):
    notify = NotifyType.ATTRIBUTES_NOT_SUPPORTED


# --- ESP ---------------------------------------------------------------------------------


class EspError(NattError):
    """An ESP packet was refused; `kind` names the counter it goes to."""

    kind = "error"


class EspTruncated(EspError):
    kind = "truncated"


class EspUnknownSpi(EspError):
    kind = "unknown_spi"


class EspReplay(EspError):
    kind = "replay"


class EspAuthFailed(EspError):
    kind = "auth_failed"


class EspBadPadding(EspError):
    kind = "bad_padding"


class EspSequenceOverflow(EspError):
    kind = "seq_overflow"


class SelectorConflict(EspError):
    """A child SA's remote selector overlaps inner addresses another session owns: it is not installed."""

    kind = "selector_conflict"
