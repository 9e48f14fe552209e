"""strongSwan-style suite names ("aes256-sha256-modp2048", "aes128gcm16", "3des-md5") ↔ proposals.

The daemons' configs name suites this way; this is the one place the names are defined.
"""

from __future__ import annotations

from natt.errors import UnsupportedAlgorithm
from natt.ike.config import Phase1Proposal, Phase2Proposal
from natt.wire.constants import AuthAlgorithm, EspTransformId, IkeEncryption, IkeHash

_P1_CIPHERS = {
    "3des": (IkeEncryption.TRIPLE_DES_CBC, None),
    "aes128": (IkeEncryption.AES_CBC, 128),
    "aes192": (IkeEncryption.AES_CBC, 192),
    "aes256": (IkeEncryption.AES_CBC, 256),
}
_P1_HASHES = {
    "md5": IkeHash.MD5,
    "sha1": IkeHash.SHA1,
    "sha256": IkeHash.SHA2_256,
    "sha384": IkeHash.SHA2_384,
    "sha512": IkeHash.SHA2_512,
}
_GROUPS = {
    "modp768": 1, "modp1024": 2, "modp1536": 5, "modp2048": 14, "modp3072": 15, "modp4096": 16,
    "ecp256": 19, "ecp384": 20,
}
_P2_CIPHERS = {
    "3des": (EspTransformId.TRIPLE_DES, None),
    "aes128": (EspTransformId.AES_CBC, 128),
    "aes192": (EspTransformId.AES_CBC, 192),
    "aes256": (EspTransformId.AES_CBC, 256),
    "aes128gcm16": (EspTransformId.AES_GCM_16, 128),
    "aes256gcm16": (EspTransformId.AES_GCM_16, 256),
}
_P2_AUTH = {"md5": AuthAlgorithm.HMAC_MD5, "sha1": AuthAlgorithm.HMAC_SHA1, "sha256": AuthAlgorithm.HMAC_SHA2_256}


def phase1(name: str, lifetime: int = 86400) -> Phase1Proposal:
    """'aes256-sha256-modp2048' → Phase1Proposal."""
    parts = name.lower().split("-")
    if len(parts) != 3 or parts[0] not in _P1_CIPHERS or parts[1] not in _P1_HASHES or parts[2] not in _GROUPS:
        raise UnsupportedAlgorithm(
            f"phase 1 suite {name!r}: want cipher-hash-group from {sorted(_P1_CIPHERS)}, {sorted(_P1_HASHES)}, "
            f"{sorted(_GROUPS)}")
    cipher, bits = _P1_CIPHERS[parts[0]]
    return Phase1Proposal(cipher, bits, _P1_HASHES[parts[1]], _GROUPS[parts[2]], lifetime=lifetime)


def phase2(name: str, lifetime: int = 28800) -> Phase2Proposal:
    """'aes128gcm16', 'aes256-sha1', '3des-md5', optionally '-modp2048' for PFS."""
    parts = name.lower().split("-")
    pfs = None
    if parts and parts[-1] in _GROUPS:
        pfs = _GROUPS[parts.pop()]
    if not parts or parts[0] not in _P2_CIPHERS:
        raise UnsupportedAlgorithm(f"phase 2 suite {name!r}: cipher must be one of {sorted(_P2_CIPHERS)}")
    tid, bits = _P2_CIPHERS[parts[0]]
    aead = tid == EspTransformId.AES_GCM_16
    if (aead and len(parts) != 1) or (not aead and (len(parts) != 2 or parts[1] not in _P2_AUTH)):
        raise UnsupportedAlgorithm(f"phase 2 suite {name!r}: GCM takes no integrity algorithm, CBC needs one "
                                   f"of {sorted(_P2_AUTH)}")
    return Phase2Proposal(tid, bits, None if aead else _P2_AUTH[parts[1]], pfs, lifetime)


def names_phase1(p: Phase1Proposal) -> str:
    c = next(k for k, v in _P1_CIPHERS.items() if v == (p.cipher, p.key_bits))
    h = next(k for k, v in _P1_HASHES.items() if v == p.hash)
    g = next(k for k, v in _GROUPS.items() if v == p.group)
    return f"{c}-{h}-{g}"
