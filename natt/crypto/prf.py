"""The negotiated hash of an IKE SA and its HMAC, which IKEv1 uses as the prf.

RFC 2409 section 4: when no PRF attribute is negotiated (no implementation does), the prf
is the HMAC version of the negotiated hash algorithm.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from natt.errors import UnsupportedAlgorithm
from natt.wire.constants import IkeHash

__all__ = ["HASHES", "HashAlg", "get_hash"]


@dataclass(frozen=True)
class HashAlg:
    """One IKE Hash Algorithm attribute value (`id` is the IkeHash number)."""

    id: int
    name: str
    digest_size: int
    weak: bool
    # The name hashlib and hmac know it by.
    openssl_name: str = field(repr=False)

    def hash(self, data: bytes) -> bytes:
        return hashlib.new(self.openssl_name, data).digest()

    def prf(self, key: bytes, data: bytes) -> bytes:
        # The one-shot hmac.digest runs entirely inside OpenSSL: the fastest path Python has.
        return hmac.digest(key, data, self.openssl_name)


MD5 = HashAlg(int(IkeHash.MD5), "MD5", 16, True, "md5")
SHA1 = HashAlg(int(IkeHash.SHA1), "SHA1", 20, True, "sha1")
SHA2_256 = HashAlg(int(IkeHash.SHA2_256), "SHA2-256", 32, False, "sha256")
SHA2_384 = HashAlg(int(IkeHash.SHA2_384), "SHA2-384", 48, False, "sha384")
SHA2_512 = HashAlg(int(IkeHash.SHA2_512), "SHA2-512", 64, False, "sha512")

HASHES: dict[int, HashAlg] = {h.id: h for h in (MD5, SHA1, SHA2_256, SHA2_384, SHA2_512)}


def get_hash(hash_id: int) -> HashAlg:
    """The hash a Hash Algorithm attribute names; UnsupportedAlgorithm if we lack it."""
    try:
        return HASHES[hash_id]
    except KeyError:
        raise UnsupportedAlgorithm(f"hash algorithm {_describe(hash_id)} is not supported") from None


def _describe(hash_id: int) -> str:
    try:
        return f"{hash_id} ({IkeHash(hash_id).name})"
    except ValueError:
        return str(hash_id)
