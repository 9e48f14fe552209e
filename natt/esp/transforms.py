"""The ESP transforms natt negotiates in Quick Mode, with every length the data path needs.

An ESP transform is the pair (ESP transform ID + Key Length attribute, Authentication
Algorithm attribute) of RFC 2407 4.4.4 / 4.5. AES-GCM (RFC 4106) is an AEAD and carries
no authentication algorithm; the CBC ciphers (RFC 3602, RFC 2451) always pair with an
HMAC (RFC 2403, RFC 2404, RFC 4868): natt never offers or accepts ESP without integrity.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from natt.errors import UnsupportedAlgorithm
from natt.wire.constants import AuthAlgorithm, EspTransformId

__all__ = ["SUPPORTED_TRANSFORMS", "EspTransform", "make_transform"]

# RFC 4106 section 8.1: the last 4 octets of the KEYMAT for the cipher are the nonce salt.
GCM_SALT_LEN = 4

# Per authentication algorithm: (HMAC key bytes, ICV bytes, display name, name suffix).
# The ICV is the HMAC truncated to 96 bits (RFC 2403, RFC 2404) or to half the output
# for SHA2-256 (RFC 4868 section 2.3, which IKEv1 uses too: RFC 4868 section 2.1).
_AUTH: dict[int, tuple[int, int, str, str]] = {
    AuthAlgorithm.HMAC_MD5: (16, 12, "MD5", "HMAC-MD5-96"),
    AuthAlgorithm.HMAC_SHA1: (20, 12, "SHA1", "HMAC-SHA1-96"),
    AuthAlgorithm.HMAC_SHA2_256: (32, 16, "SHA2-256", "HMAC-SHA2-256-128"),
}

_AES_CBC_AUTH = (AuthAlgorithm.HMAC_SHA1, AuthAlgorithm.HMAC_SHA2_256, AuthAlgorithm.HMAC_MD5)
_TRIPLE_DES_AUTH = (AuthAlgorithm.HMAC_MD5, AuthAlgorithm.HMAC_SHA1)
# RFC 2451: the 3DES key is 192 bits on the wire (64 of them parity), 168 effective.
TRIPLE_DES_KEY_BITS = 192


@dataclass(frozen=True)
class EspTransform:
    """One negotiated ESP transform; `key_bits` is the cipher key without the GCM salt."""

    name: str
    transform_id: int
    key_bits: int
    auth: int | None
    weak: bool

    @property
    def is_aead(self) -> bool:
        return self.transform_id == EspTransformId.AES_GCM_16

    @property
    def enc_key_len(self) -> int:
        """Encryption KEYMAT bytes: for GCM this includes the 4-byte salt (RFC 4106 8.1)."""
        return self.key_bits // 8 + (GCM_SALT_LEN if self.is_aead else 0)

    @property
    def auth_key_len(self) -> int:
        return 0 if self.auth is None else _AUTH[self.auth][0]

    @property
    def keymat_len(self) -> int:
        """KEYMAT splits encryption key first, then authentication key (RFC 2409 5.5)."""
        return self.enc_key_len + self.auth_key_len

    @property
    def icv_len(self) -> int:
        return 16 if self.auth is None else _AUTH[self.auth][1]

    @property
    def iv_len(self) -> int:
        if self.is_aead:
            return 8
        return 8 if self.transform_id == EspTransformId.TRIPLE_DES else 16

    @property
    def block_size(self) -> int:
        """The alignment of payload + padding + 2 (RFC 4303 2.4): GCM only needs 4 bytes."""
        if self.is_aead:
            return 4
        return 8 if self.transform_id == EspTransformId.TRIPLE_DES else 16

    @property
    def display_cipher(self) -> str:
        if self.transform_id == EspTransformId.TRIPLE_DES:
            return "3DES-168"
        return f"AES-{self.key_bits}"

    @property
    def display_hash(self) -> str:
        # GCM authenticates with its own GHASH: the session view shows the mode there.
        return "AES-GCM" if self.auth is None else _AUTH[self.auth][2]


@functools.lru_cache(maxsize=64)
def make_transform(transform_id: int, key_bits: int | None, auth: int | None) -> EspTransform:
    """The transform a Quick Mode proposal names; UnsupportedAlgorithm for anything else.
    Transforms are immutable: every SA of one suite shares one (an SA each would cost memory per session)."""
    if transform_id == EspTransformId.AES_GCM_16:
        return _gcm(key_bits, auth)
    if transform_id == EspTransformId.AES_CBC:
        return _aes_cbc(key_bits, auth)
    if transform_id == EspTransformId.TRIPLE_DES:
        return _triple_des(key_bits, auth)
    raise UnsupportedAlgorithm(f"ESP transform {transform_id} is not supported")


def _gcm(key_bits: int | None, auth: int | None) -> EspTransform:
    # RFC 4106 section 8.4: the Key Length attribute is mandatory for AES-GCM.
    if key_bits not in (128, 256):
        raise UnsupportedAlgorithm(f"AES-GCM-16 with key length {key_bits} is not supported")
    if auth is not None:
        # RFC 4106 section 8.4: an AEAD must not be combined with a separate integrity check.
        raise UnsupportedAlgorithm("AES-GCM-16 must not be combined with an authentication algorithm")
    return EspTransform(f"AES-{key_bits}-GCM-16", int(EspTransformId.AES_GCM_16), key_bits, None, False)


def _aes_cbc(key_bits: int | None, auth: int | None) -> EspTransform:
    # RFC 3602 section 5: the Key Length attribute is mandatory for AES-CBC.
    if key_bits not in (128, 192, 256):
        raise UnsupportedAlgorithm(f"AES-CBC with key length {key_bits} is not supported")
    if auth is None or auth not in _AES_CBC_AUTH:
        raise UnsupportedAlgorithm(f"AES-CBC with authentication algorithm {auth} is not supported")
    suffix = _AUTH[auth][3]
    weak = auth == AuthAlgorithm.HMAC_MD5
    return EspTransform(f"AES-{key_bits}-CBC/{suffix}", int(EspTransformId.AES_CBC), key_bits, int(auth), weak)


def _triple_des(key_bits: int | None, auth: int | None) -> EspTransform:
    # 3DES has one key size; a peer may still send it as 168 or 192.
    if key_bits not in (None, 168, TRIPLE_DES_KEY_BITS):
        raise UnsupportedAlgorithm(f"3DES with key length {key_bits} is not supported")
    if auth is None or auth not in _TRIPLE_DES_AUTH:
        raise UnsupportedAlgorithm(f"3DES with authentication algorithm {auth} is not supported")
    suffix = _AUTH[auth][3]
    # Weak by its 64-bit block (Sweet32) whatever the HMAC.
    return EspTransform(f"3DES-168/{suffix}", int(EspTransformId.TRIPLE_DES), TRIPLE_DES_KEY_BITS, int(auth), True)


def _all_transforms() -> tuple[EspTransform, ...]:
    gcm = [make_transform(EspTransformId.AES_GCM_16, bits, None) for bits in (128, 256)]
    aes = [make_transform(EspTransformId.AES_CBC, bits, a) for bits in (128, 192, 256) for a in _AES_CBC_AUTH]
    des = [make_transform(EspTransformId.TRIPLE_DES, None, a) for a in _TRIPLE_DES_AUTH]
    return (*gcm, *aes, *des)


# Every transform make_transform accepts, strongest first within each cipher.
SUPPORTED_TRANSFORMS: tuple[EspTransform, ...] = _all_transforms()
