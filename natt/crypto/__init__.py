"""Cryptography for IKEv1: DH groups, the hash/prf, message ciphers and RFC 2409 key derivation."""

from natt.crypto.cipher import IkeCipher, get_cipher, iv_for_next, pad_ike
from natt.crypto.dh import GROUPS, DHGroup, DHPrivateKey, get_group
from natt.crypto.keys import Phase1Keys
from natt.crypto.prf import HASHES, HashAlg, get_hash

__all__ = [
    "GROUPS",
    "HASHES",
    "DHGroup",
    "DHPrivateKey",
    "HashAlg",
    "IkeCipher",
    "Phase1Keys",
    "get_cipher",
    "get_group",
    "get_hash",
    "iv_for_next",
    "pad_ike",
]
