"""IKEv1 key material for pre-shared-key authentication (RFC 2409 section 5 and appendix B).

Pure functions of the negotiated hash: the state machines keep the values, this module
only computes them. "|" in the docstrings is concatenation, "_b" means a payload's body
without its generic header, as in the RFC.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from natt.crypto.prf import HashAlg
from natt.errors import CryptoError

__all__ = [
    "Phase1Keys",
    "derive_phase1",
    "encryption_key",
    "hash_i",
    "hash_r",
    "info_hash",
    "keymat",
    "phase1_iv",
    "phase2_iv",
    "qm_hash1",
    "qm_hash2",
    "qm_hash3",
    "skeyid_psk",
]


@dataclass(frozen=True)
class Phase1Keys:
    """The three keys RFC 2409 section 5 derives from SKEYID."""

    skeyid_d: bytes  # keys for phase 2 (keymat)
    skeyid_a: bytes  # integrity of phase 2 and informational messages
    skeyid_e: bytes  # encryption of the ISAKMP SA (expanded by encryption_key)

    def __repr__(self) -> str:
        # Keys must not reach a log through repr(); the lengths are what debugging needs.
        return f"Phase1Keys(<{len(self.skeyid_d)}/{len(self.skeyid_a)}/{len(self.skeyid_e)} bytes>)"


def _mid(message_id: int) -> bytes:
    """M-ID as it stands in the ISAKMP header: four octets, network order."""
    if not 0 <= message_id < 2**32:
        raise CryptoError(f"message ID {message_id} does not fit in 32 bits")
    return message_id.to_bytes(4, "big")


def skeyid_psk(h: HashAlg, psk: bytes, ni_b: bytes, nr_b: bytes) -> bytes:
    """SKEYID = prf(pre-shared-key, Ni_b | Nr_b)."""
    return h.prf(psk, ni_b + nr_b)


def derive_phase1(h: HashAlg, skeyid: bytes, gxy: bytes, cky_i: bytes, cky_r: bytes) -> Phase1Keys:
    """SKEYID_d, SKEYID_a and SKEYID_e, each chained on the one before it."""
    tail = gxy + cky_i + cky_r
    skeyid_d = h.prf(skeyid, tail + b"\x00")
    skeyid_a = h.prf(skeyid, skeyid_d + tail + b"\x01")
    skeyid_e = h.prf(skeyid, skeyid_a + tail + b"\x02")
    return Phase1Keys(skeyid_d, skeyid_a, skeyid_e)


def encryption_key(h: HashAlg, skeyid_e: bytes, key_len: int) -> bytes:
    """The cipher key from SKEYID_e (RFC 2409 appendix B).

    SKEYID_e is truncated when it is long enough; otherwise it is expanded as
    Ka = K1 | K2 | ..., K1 = prf(SKEYID_e, 0), Kn = prf(SKEYID_e, Kn-1), where "0" is a
    single zero octet, the reading strongSwan's IKEv1 key derivation shares.
    """
    if key_len < 0:
        raise CryptoError(f"negative key length {key_len}")
    if len(skeyid_e) >= key_len:
        return skeyid_e[:key_len]
    return _feedback(lambda previous: h.prf(skeyid_e, previous), b"\x00", key_len)


def _feedback(step: Callable[[bytes], bytes], seed: bytes, length: int) -> bytes:
    """Blocks K1 = step(seed), Kn = step(Kn-1), concatenated and cut to `length`."""
    blocks: list[bytes] = []
    block = seed
    total = 0
    while total < length:
        block = step(block)
        blocks.append(block)
        total += len(block)
    return b"".join(blocks)[:length]


def phase1_iv(h: HashAlg, gxi: bytes, gxr: bytes, block_size: int) -> bytes:
    """First IV of phase 1: hash(g^xi | g^xr), cut to the cipher's block size."""
    return h.hash(gxi + gxr)[:block_size]


def phase2_iv(h: HashAlg, last_phase1_block: bytes, message_id: int, block_size: int) -> bytes:
    """First IV of a Quick Mode, Informational or Transaction exchange.

    hash(last CBC block of phase 1 | M-ID), cut to the block size (RFC 2409 appendix B).
    """
    return h.hash(last_phase1_block + _mid(message_id))[:block_size]


def hash_i(
    h: HashAlg,
    skeyid: bytes,
    gxi: bytes,
    gxr: bytes,
    cky_i: bytes,
    cky_r: bytes,
    sai_b: bytes,
    idii_b: bytes,
) -> bytes:
    """HASH_I = prf(SKEYID, g^xi | g^xr | CKY-I | CKY-R | SAi_b | IDii_b)."""
    return h.prf(skeyid, gxi + gxr + cky_i + cky_r + sai_b + idii_b)


def hash_r(
    h: HashAlg,
    skeyid: bytes,
    gxr: bytes,
    gxi: bytes,
    cky_r: bytes,
    cky_i: bytes,
    sai_b: bytes,
    idir_b: bytes,
) -> bytes:
    """HASH_R = prf(SKEYID, g^xr | g^xi | CKY-R | CKY-I | SAi_b | IDir_b).

    Note SAi_b: both sides hash the initiator's SA offer, not the responder's choice.
    """
    return h.prf(skeyid, gxr + gxi + cky_r + cky_i + sai_b + idir_b)


def qm_hash1(h: HashAlg, skeyid_a: bytes, mid: int, rest: bytes) -> bytes:
    """Quick Mode HASH(1) = prf(SKEYID_a, M-ID | every payload after HASH)."""
    return h.prf(skeyid_a, _mid(mid) + rest)


def empty_info_hash(h: HashAlg, skeyid_a: bytes, mid: int) -> bytes:
    """HASH(1) of an Informational with no payload after the HASH, as vpnc computes it: prf(SKEYID_a, 0x00 | M-ID).

    RFC 2409 gives no form for an empty exchange; vpnc sends one every 9 s as an IKE keepalive in Cisco
    IPsec-over-UDP mode and hashes one zero byte before the M-ID.
    """
    return h.prf(skeyid_a, b"\x00" + _mid(mid))


def qm_hash2(h: HashAlg, skeyid_a: bytes, mid: int, ni_b: bytes, rest: bytes) -> bytes:
    """Quick Mode HASH(2) = prf(SKEYID_a, M-ID | Ni_b | every payload after HASH)."""
    return h.prf(skeyid_a, _mid(mid) + ni_b + rest)


def qm_hash3(h: HashAlg, skeyid_a: bytes, mid: int, ni_b: bytes, nr_b: bytes) -> bytes:
    """Quick Mode HASH(3) = prf(SKEYID_a, 0 | M-ID | Ni_b | Nr_b), "0" a single zero octet."""
    return h.prf(skeyid_a, b"\x00" + _mid(mid) + ni_b + nr_b)


def info_hash(h: HashAlg, skeyid_a: bytes, mid: int, rest: bytes) -> bytes:
    """HASH(1) of an Informational or Transaction exchange = prf(SKEYID_a, M-ID | rest).

    RFC 2409 section 5.7; the Transaction exchange (XAUTH, Mode Config) uses the same form.
    """
    return h.prf(skeyid_a, _mid(mid) + rest)


def keymat(
    h: HashAlg,
    skeyid_d: bytes,
    protocol: int,
    spi: bytes,
    ni_b: bytes,
    nr_b: bytes,
    length: int,
    gxy_qm: bytes | None = None,
) -> bytes:
    """KEYMAT for one direction of one phase 2 SA (RFC 2409 section 5.5).

    K1 = prf(SKEYID_d, [g(qm)^xy |] protocol | SPI | Ni_b | Nr_b),
    Kn = prf(SKEYID_d, Kn-1 | [g(qm)^xy |] protocol | SPI | Ni_b | Nr_b),
    KEYMAT = K1 | K2 | ... cut to `length` bytes. g(qm)^xy is present only with PFS.
    `spi` is the SPI of the SA the keys are for, i.e. the one its receiver chose.
    """
    if not 0 <= protocol < 256:
        raise CryptoError(f"protocol {protocol} does not fit in one octet")
    if length < 0:
        raise CryptoError(f"negative KEYMAT length {length}")
    tail = (gxy_qm or b"") + bytes([protocol]) + spi + ni_b + nr_b
    return _feedback(lambda previous: h.prf(skeyid_d, previous + tail), b"", length)
