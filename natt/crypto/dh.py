"""Diffie-Hellman groups for IKEv1 phase 1 and Quick Mode PFS.

MODP groups 1 and 2 come from RFC 2409 section 6, 5/14/15/16 from RFC 3526; the ECP groups
19 and 20 from RFC 5903. A KE payload carries the public value exactly as `public_bytes()`
returns it, and the shared secret g^xy is what the key derivation in `keys.py` consumes.

Cost of one handshake's worth of DH, i.e. generate() + public_bytes() + shared_secret()
against a fixed peer value, mean of 200 runs (50 for groups 15, 16) measured with a scratch
script, not a test, on the development machine: Python 3.11.7, cryptography 50.0.2,
OpenSSL 4.0.3.

    group  1 (MODP-768,  Python, 256-bit exponent)         0.9 ms
    group  2 (MODP-1024, Python, 256-bit exponent)         1.3 ms
    group  5 (MODP-1536, OpenSSL)                           0.5 ms
    group 14 (MODP-2048, OpenSSL)                           0.9 ms
    group 15 (MODP-3072, OpenSSL)                           2.2 ms
    group 16 (MODP-4096, OpenSSL)                           3.8 ms
    group 19 (ECP-256, OpenSSL)                             0.11 ms
    group 20 (ECP-384, OpenSSL)                             0.7 ms

Forced through OpenSSL instead, group 1 took 24 ms and group 2 44 ms: see _POW_GROUPS. For groups 1 and 2
g^x comes from a table of powers of g (_fixed_base_pow, 0.19 ms for group 2) and only g^xy needs pow()
(1.1 ms); with pow() both ways group 2 took 2.2 ms on the same day.
"""

from __future__ import annotations

import functools
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Literal

from cryptography.exceptions import UnsupportedAlgorithm as _OpenSSLUnsupported
from cryptography.hazmat.primitives.asymmetric import dh, ec
from cryptography.utils import CryptographyDeprecationWarning

from natt.errors import CryptoError, InvalidKeyInformation, UnsupportedAlgorithm

__all__ = ["GROUPS", "DHGroup", "DHPrivateKey", "get_group"]


def _hex(text: str) -> int:
    """The RFCs print their primes as spaced 32-bit words; keep them that way for review."""
    return int("".join(text.split()), 16)


# RFC 2409 section 6.1 (First Oakley Group).
_MODP_768 = _hex(
    "FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1 29024E08 8A67CC74"
    "020BBEA6 3B139B22 514A0879 8E3404DD EF9519B3 CD3A431B 302B0A6D F25F1437"
    "4FE1356D 6D51C245 E485B576 625E7EC6 F44C42E9 A63A3620 FFFFFFFF FFFFFFFF"
)
# RFC 2409 section 6.2 (Second Oakley Group).
_MODP_1024 = _hex(
    "FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1 29024E08 8A67CC74"
    "020BBEA6 3B139B22 514A0879 8E3404DD EF9519B3 CD3A431B 302B0A6D F25F1437"
    "4FE1356D 6D51C245 E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED"
    "EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE65381 FFFFFFFF FFFFFFFF"
)
# RFC 3526 section 2.
_MODP_1536 = _hex(
    "FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1 29024E08 8A67CC74"
    "020BBEA6 3B139B22 514A0879 8E3404DD EF9519B3 CD3A431B 302B0A6D F25F1437"
    "4FE1356D 6D51C245 E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED"
    "EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D C2007CB8 A163BF05"
    "98DA4836 1C55D39A 69163FA8 FD24CF5F 83655D23 DCA3AD96 1C62F356 208552BB"
    "9ED52907 7096966D 670C354E 4ABC9804 F1746C08 CA237327 FFFFFFFF FFFFFFFF"
)
# RFC 3526 section 3.
_MODP_2048 = _hex(
    "FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1 29024E08 8A67CC74"
    "020BBEA6 3B139B22 514A0879 8E3404DD EF9519B3 CD3A431B 302B0A6D F25F1437"
    "4FE1356D 6D51C245 E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED"
    "EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D C2007CB8 A163BF05"
    "98DA4836 1C55D39A 69163FA8 FD24CF5F 83655D23 DCA3AD96 1C62F356 208552BB"
    "9ED52907 7096966D 670C354E 4ABC9804 F1746C08 CA18217C 32905E46 2E36CE3B"
    "E39E772C 180E8603 9B2783A2 EC07A28F B5C55DF0 6F4C52C9 DE2BCBF6 95581718"
    "3995497C EA956AE5 15D22618 98FA0510 15728E5A 8AACAA68 FFFFFFFF FFFFFFFF"
)
# RFC 3526 section 4.
_MODP_3072 = _hex(
    "FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1 29024E08 8A67CC74"
    "020BBEA6 3B139B22 514A0879 8E3404DD EF9519B3 CD3A431B 302B0A6D F25F1437"
    "4FE1356D 6D51C245 E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED"
    "EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D C2007CB8 A163BF05"
    "98DA4836 1C55D39A 69163FA8 FD24CF5F 83655D23 DCA3AD96 1C62F356 208552BB"
    "9ED52907 7096966D 670C354E 4ABC9804 F1746C08 CA18217C 32905E46 2E36CE3B"
    "E39E772C 180E8603 9B2783A2 EC07A28F B5C55DF0 6F4C52C9 DE2BCBF6 95581718"
    "3995497C EA956AE5 15D22618 98FA0510 15728E5A 8AAAC42D AD33170D 04507A33"
    "A85521AB DF1CBA64 ECFB8504 58DBEF0A 8AEA7157 5D060C7D B3970F85 A6E1E4C7"
    "ABF5AE8C DB0933D7 1E8C94E0 4A25619D CEE3D226 1AD2EE6B F12FFA06 D98A0864"
    "D8760273 3EC86A64 521F2B18 177B200C BBE11757 7A615D6C 770988C0 BAD946E2"
    "08E24FA0 74E5AB31 43DB5BFC E0FD108E 4B82D120 A93AD2CA FFFFFFFF FFFFFFFF"
)
# RFC 3526 section 5.
_MODP_4096 = _hex(
    "FFFFFFFF FFFFFFFF C90FDAA2 2168C234 C4C6628B 80DC1CD1 29024E08 8A67CC74"
    "020BBEA6 3B139B22 514A0879 8E3404DD EF9519B3 CD3A431B 302B0A6D F25F1437"
    "4FE1356D 6D51C245 E485B576 625E7EC6 F44C42E9 A637ED6B 0BFF5CB6 F406B7ED"
    "EE386BFB 5A899FA5 AE9F2411 7C4B1FE6 49286651 ECE45B3D C2007CB8 A163BF05"
    "98DA4836 1C55D39A 69163FA8 FD24CF5F 83655D23 DCA3AD96 1C62F356 208552BB"
    "9ED52907 7096966D 670C354E 4ABC9804 F1746C08 CA18217C 32905E46 2E36CE3B"
    "E39E772C 180E8603 9B2783A2 EC07A28F B5C55DF0 6F4C52C9 DE2BCBF6 95581718"
    "3995497C EA956AE5 15D22618 98FA0510 15728E5A 8AAAC42D AD33170D 04507A33"
    "A85521AB DF1CBA64 ECFB8504 58DBEF0A 8AEA7157 5D060C7D B3970F85 A6E1E4C7"
    "ABF5AE8C DB0933D7 1E8C94E0 4A25619D CEE3D226 1AD2EE6B F12FFA06 D98A0864"
    "D8760273 3EC86A64 521F2B18 177B200C BBE11757 7A615D6C 770988C0 BAD946E2"
    "08E24FA0 74E5AB31 43DB5BFC E0FD108E 4B82D120 A9210801 1A723C12 A787E6D7"
    "88719A10 BDBA5B26 99C32718 6AF4E23C 1A946834 B6150BDA 2583E9CA 2AD44CE8"
    "DBBBC2DB 04DE8EF9 2E8EFC14 1FBECAA6 287C5947 4E6BC05D 99B2964F A090C3A2"
    "233BA186 515BE7ED 1F612970 CEE2D7AF B81BDD76 2170481C D0069127 D5B05AA9"
    "93B4EA98 8D8FDDC1 86FFB7DC 90A6C08F 4DF435C9 34063199 FFFFFFFF FFFFFFFF"
)

# Field primes of the NIST curves (FIPS 186-4 D.1.2.3 and D.1.2.4), used to range-check
# a peer's coordinates before OpenSSL sees them.
_P256_FIELD = 2**256 - 2**224 + 2**192 + 2**96 - 1
_P384_FIELD = 2**384 - 2**128 - 2**96 + 2**32 - 1

_CURVES: dict[int, type[ec.EllipticCurve]] = {19: ec.SECP256R1, 20: ec.SECP384R1}

# OpenSSL handles 768- and 1024-bit groups without complaint, but they are not among its
# named groups, so every import of a peer's public value re-runs the full parameter check,
# primality test of p included: 24 ms (group 1) and 44 ms (group 2) per handshake, measured.
# Python's pow() with a short exponent does the whole exchange in 1.0 and 1.7 ms, so these
# two groups use pow() only. Everything from group 5 up is a named group in OpenSSL
# and goes through it.
_POW_GROUPS = frozenset({1, 2})
# 256 bits is well over twice the strength of groups 1 and 2 (RFC 3526 section 8 on
# exponent sizes), and keeps pow() at about a fifth of the cost of a full-length exponent.
_POW_EXPONENT_BITS = 256


@dataclass(frozen=True)
class DHGroup:
    """One IKE Diffie-Hellman group (the Group Description attribute's value is `id`)."""

    id: int
    name: str
    bits: int
    kind: Literal["modp", "ecp"]
    weak: bool
    # MODP: the group's prime; ECP: the curve's field prime.
    prime: int = field(repr=False)
    generator: int = field(default=2, repr=False)

    @property
    def public_len(self) -> int:
        """Length of a KE payload's data: the prime's length, or x || y for ECP."""
        size = (self.bits + 7) // 8
        return size if self.kind == "modp" else 2 * size

    def prepare(self) -> None:
        """Build what this group's key generation keeps (the table of powers of g for groups 1 and 2: ~1 MB,
        ~45 ms), so that a daemon pays for it at start rather than in its first handshake."""
        if self.kind == "modp" and self.id in _POW_GROUPS:
            _fixed_base_rows(self.prime, self.generator)

    def generate(self, private: bytes | None = None) -> DHPrivateKey:
        """A fresh key pair; `private` (big-endian) makes it deterministic for tests."""
        if self.kind == "ecp":
            return _EcpKey.create(self, private)
        params = None if self.id in _POW_GROUPS else _openssl_parameters(self.prime, self.generator)
        if params is None:
            return _PowModpKey.create(self, private)
        return _OpenSSLModpKey.create(self, params, private)


class DHPrivateKey(ABC):
    """Our half of one Diffie-Hellman exchange."""

    __slots__ = ("group",)

    def __init__(self, group: DHGroup) -> None:
        self.group = group

    @abstractmethod
    def public_bytes(self) -> bytes:
        """The public value as it goes into a KE payload."""

    @abstractmethod
    def shared_secret(self, peer_public: bytes) -> bytes:
        """g^xy from the peer's KE payload data; a bad value raises InvalidKeyInformation."""

    @abstractmethod
    def private_bytes(self) -> bytes:
        """The private value, in the form `DHGroup.generate(private=...)` accepts."""

    def __repr__(self) -> str:
        # Never let a private value reach a log line through repr().
        return f"<{type(self).__name__} {self.group.name}>"


# --- MODP ------------------------------------------------------------------------------


@contextmanager
def _ffdh_quietly() -> Iterator[None]:
    # cryptography flags every finite-field DH object as deprecated. IKEv1 peers have no
    # other choice for these groups, and if support does go, _openssl_parameters() returns
    # None and pow() takes over; until then the warning is noise on every handshake.
    # catch_warnings swaps process-wide state: fine for the single-threaded asyncio daemons.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        yield


@functools.cache
def _openssl_parameters(prime: int, generator: int) -> dh.DHParameters | None:
    """OpenSSL's parameter object for a group, built once; None if OpenSSL won't do it."""
    try:
        with _ffdh_quietly():
            params = dh.DHParameterNumbers(prime, generator).parameters()
            params.generate_private_key()  # probe: refusal shows here, not mid-handshake
    except (_OpenSSLUnsupported, ValueError, AttributeError):
        return None
    return params


def _modp_private(group: DHGroup, private: bytes) -> int:
    """An injected private exponent, range-checked.

    The generator lies in the subgroup of order q = (p-1)/2 (the primes are safe primes),
    so exponents beyond q add nothing, and OpenSSL refuses them outright.
    """
    x = int.from_bytes(private, "big")
    if not private or not 1 < x < (group.prime - 1) // 2:
        raise CryptoError(f"{group.name}: private value out of range (need 1 < x < (p-1)/2)")
    return x


def _modp_peer(group: DHGroup, peer_public: bytes) -> int:
    """The peer's g^y as an integer, refused if it is the wrong size or a degenerate value."""
    if len(peer_public) != group.public_len:
        raise InvalidKeyInformation(
            f"{group.name}: peer public value has {len(peer_public)} bytes, expected {group.public_len}"
        )
    y = int.from_bytes(peer_public, "big")
    # 0, 1 and p-1 (and anything >= p) would force a known shared secret. With a safe
    # prime the only other small subgroup is gone with them, so no further check is needed.
    if not 1 < y < group.prime - 1:
        raise InvalidKeyInformation(f"{group.name}: peer public value out of range (need 1 < y < p-1)")
    return y


_WINDOW = 8  # exponent bits per table row: 32 rows of 256 powers for a 256-bit exponent


@functools.cache
def _fixed_base_rows(prime: int, generator: int) -> tuple[tuple[int, ...], ...]:
    """row[i][j] = g^(j * 2^(8i)) mod p, for exponents of up to _POW_EXPONENT_BITS bits (built once per group,
    ~1 MB and ~30 ms for group 2)."""
    rows = []
    base = generator
    for _ in range(_POW_EXPONENT_BITS // _WINDOW):
        row = [1] * (1 << _WINDOW)
        for j in range(1, 1 << _WINDOW):
            row[j] = row[j - 1] * base % prime
        rows.append(tuple(row))
        base = row[-1] * base % prime  # g^(2^(8(i+1)))
    return tuple(rows)


def _fixed_base_pow(prime: int, generator: int, x: int) -> int:
    """g^x mod p by table (the base never changes): one multiplication per exponent byte instead of a
    square-and-multiply per bit, about a seventh of pow()'s time for group 2."""
    rows = _fixed_base_rows(prime, generator)
    acc = 1
    for i, byte in enumerate(x.to_bytes(_POW_EXPONENT_BITS // 8, "little")):
        if byte:
            acc = acc * rows[i][byte] % prime
    return acc


class _PowModpKey(DHPrivateKey):
    """MODP in pure Python: groups 1 and 2, and any group OpenSSL would not take."""

    __slots__ = ("_public", "_x")

    def __init__(self, group: DHGroup, x: int) -> None:
        super().__init__(group)
        self._x = x
        if x.bit_length() <= _POW_EXPONENT_BITS:  # our own exponents; a test may inject a longer one
            self._public = _fixed_base_pow(group.prime, group.generator, x)
        else:
            self._public = pow(group.generator, x, group.prime)

    @classmethod
    def create(cls, group: DHGroup, private: bytes | None) -> _PowModpKey:
        if private is not None:
            return cls(group, _modp_private(group, private))
        x = 0
        while x < 2:  # a 256-bit random value is below 2 once in 2^255 draws; be exact anyway
            x = int.from_bytes(os.urandom(_POW_EXPONENT_BITS // 8), "big")
        return cls(group, x)

    def public_bytes(self) -> bytes:
        return self._public.to_bytes(self.group.public_len, "big")

    def shared_secret(self, peer_public: bytes) -> bytes:
        y = _modp_peer(self.group, peer_public)
        return pow(y, self._x, self.group.prime).to_bytes(self.group.public_len, "big")

    def private_bytes(self) -> bytes:
        return _int_bytes(self._x)


class _OpenSSLModpKey(DHPrivateKey):
    """MODP through OpenSSL (groups 5, 14, 15, 16)."""

    __slots__ = ("_key", "_numbers", "_public")

    def __init__(self, group: DHGroup, key: dh.DHPrivateKey) -> None:
        super().__init__(group)
        self._key = key
        self._numbers = key.parameters().parameter_numbers()
        self._public = key.public_key().public_numbers().y

    @classmethod
    def create(cls, group: DHGroup, params: dh.DHParameters, private: bytes | None) -> _OpenSSLModpKey:
        if private is None:
            return cls(group, params.generate_private_key())
        x = _modp_private(group, private)
        public = pow(group.generator, x, group.prime)
        try:
            with _ffdh_quietly():
                numbers = dh.DHPublicNumbers(public, params.parameter_numbers())
                key = dh.DHPrivateNumbers(x, numbers).private_key()
        except ValueError as exc:
            raise CryptoError(f"{group.name}: OpenSSL refused the private value") from exc
        return cls(group, key)

    def public_bytes(self) -> bytes:
        return self._public.to_bytes(self.group.public_len, "big")

    def shared_secret(self, peer_public: bytes) -> bytes:
        y = _modp_peer(self.group, peer_public)
        try:
            with _ffdh_quietly():
                peer = dh.DHPublicNumbers(y, self._numbers).public_key()
            secret = self._key.exchange(peer)
        except ValueError as exc:
            raise InvalidKeyInformation(f"{self.group.name}: OpenSSL refused the peer public value") from exc
        # RFC 2409 wants g^xy at the prime's full length; don't rely on the library padding.
        return secret.rjust(self.group.public_len, b"\x00")

    def private_bytes(self) -> bytes:
        return _int_bytes(self._key.private_numbers().x)


def _int_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8 or 1, "big")


# --- ECP -------------------------------------------------------------------------------


class _EcpKey(DHPrivateKey):
    """ECP groups 19 and 20 through OpenSSL, encoded per RFC 5903 section 7."""

    __slots__ = ("_key", "_public")

    def __init__(self, group: DHGroup, key: ec.EllipticCurvePrivateKey) -> None:
        super().__init__(group)
        self._key = key
        numbers = key.public_key().public_numbers()
        size = self._coordinate_len()
        # RFC 5903 section 7: x || y, each at the field's length, no 0x04 point-format octet.
        self._public = numbers.x.to_bytes(size, "big") + numbers.y.to_bytes(size, "big")

    @classmethod
    def create(cls, group: DHGroup, private: bytes | None) -> _EcpKey:
        curve = _CURVES[group.id]()
        if private is None:
            return cls(group, ec.generate_private_key(curve))
        size = group.public_len // 2
        if len(private) != size:
            raise CryptoError(f"{group.name}: private value has {len(private)} bytes, expected {size}")
        try:
            key = ec.derive_private_key(int.from_bytes(private, "big"), curve)
        except ValueError as exc:
            raise CryptoError(f"{group.name}: private value out of range (need 1 <= d < n)") from exc
        return cls(group, key)

    def _coordinate_len(self) -> int:
        return self.group.public_len // 2

    def public_bytes(self) -> bytes:
        return self._public

    def shared_secret(self, peer_public: bytes) -> bytes:
        group = self.group
        if len(peer_public) != group.public_len:
            raise InvalidKeyInformation(
                f"{group.name}: peer public value has {len(peer_public)} bytes, expected {group.public_len}"
            )
        size = self._coordinate_len()
        x = int.from_bytes(peer_public[:size], "big")
        y = int.from_bytes(peer_public[size:], "big")
        if x >= group.prime or y >= group.prime:
            raise InvalidKeyInformation(f"{group.name}: peer public coordinate not below the field prime")
        try:
            peer = ec.EllipticCurvePublicNumbers(x, y, _CURVES[group.id]()).public_key()
        except ValueError as exc:
            # Includes the all-zero encoding: the point at infinity has no x || y form.
            raise InvalidKeyInformation(f"{group.name}: peer public value is not a point on the curve") from exc
        # RFC 5903 section 9 (as corrected by its errata and used by IKEv1 and IKEv2):
        # the shared secret is the x coordinate alone, at the field's length.
        return self._key.exchange(ec.ECDH(), peer)

    def private_bytes(self) -> bytes:
        return self._key.private_numbers().private_value.to_bytes(self._coordinate_len(), "big")


# --- registry ----------------------------------------------------------------------------


def _modp(group_id: int, prime: int, weak: bool) -> DHGroup:
    bits = prime.bit_length()
    return DHGroup(group_id, f"MODP-{bits} (group {group_id})", bits, "modp", weak, prime)


def _ecp(group_id: int, bits: int, field_prime: int) -> DHGroup:
    return DHGroup(group_id, f"ECP-{bits} (group {group_id})", bits, "ecp", False, field_prime, 0)


GROUPS: dict[int, DHGroup] = {
    group.id: group
    for group in (
        _modp(1, _MODP_768, weak=True),
        _modp(2, _MODP_1024, weak=True),
        _modp(5, _MODP_1536, weak=True),
        _modp(14, _MODP_2048, weak=False),
        _modp(15, _MODP_3072, weak=False),
        _modp(16, _MODP_4096, weak=False),
        _ecp(19, 256, _P256_FIELD),
        _ecp(20, 384, _P384_FIELD),
    )
}


def get_group(group_id: int) -> DHGroup:
    """The group a Group Description attribute names; UnsupportedAlgorithm if we lack it."""
    try:
        return GROUPS[group_id]
    except KeyError:
        raise UnsupportedAlgorithm(f"Diffie-Hellman group {group_id} is not supported") from None
