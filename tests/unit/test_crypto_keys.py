"""RFC 2409 key derivation for pre-shared-key authentication.

Every expected value is written out as the RFC's formula with the standard library's
hmac.new / hashlib (a different entry point from the hmac.digest the code uses), never by
calling the function under test. The last test pins one full set of outputs as hex, so a
refactor that changes any of them fails even if the formulas in here were changed too.
"""

from __future__ import annotations

import hashlib
import hmac

import pytest

from natt.crypto import keys
from natt.crypto.prf import HashAlg, get_hash
from natt.errors import CryptoError
from natt.wire.constants import IkeHash

pytestmark = pytest.mark.unit

# One fixed set of exchange inputs, shaped like the real thing.
PSK = b"natt shared secret"
NI_B = bytes(range(0x10, 0x10 + 20))  # Ni_b: nonce payload body
NR_B = bytes(range(0x80, 0x80 + 24))
GXI = bytes([0x5A]) * 127 + b"\x01"  # g^xi as a 1024-bit KE payload body
GXR = bytes([0xA5]) * 127 + b"\x02"
GXY = bytes(range(128))
CKY_I = bytes.fromhex("0102030405060708")
CKY_R = bytes.fromhex("f1f2f3f4f5f6f7f8")
SAI_B = bytes.fromhex("00000001000000010000002c01010001")  # start of an SA body: DOI, situation, proposal
IDII_B = bytes.fromhex("01000000c0a80102")  # ID_IPV4_ADDR 192.168.1.2, proto/port 0
IDIR_B = bytes.fromhex("01000000cb007105")  # ID_IPV4_ADDR 203.0.113.5
MID = 0x9ABCDEF0
SPI = bytes.fromhex("c0ffee01")
ESP = 3  # IPSEC_ESP protocol id (RFC 2407 4.4.1)


def _prf(name: str, key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, name).digest()


ALGS = [(IkeHash.MD5, "md5"), (IkeHash.SHA1, "sha1"), (IkeHash.SHA2_256, "sha256"), (IkeHash.SHA2_512, "sha512")]


@pytest.fixture(params=ALGS, ids=[name for _, name in ALGS])
def alg(request: pytest.FixtureRequest) -> tuple[HashAlg, str]:
    hash_id, name = request.param
    return get_hash(hash_id), name


def test_skeyid_psk(alg: tuple[HashAlg, str]) -> None:
    """RFC 2409 section 5: SKEYID = prf(pre-shared-key, Ni_b | Nr_b)."""
    h, name = alg
    assert keys.skeyid_psk(h, PSK, NI_B, NR_B) == _prf(name, PSK, NI_B + NR_B)


def test_derive_phase1(alg: tuple[HashAlg, str]) -> None:
    """RFC 2409 section 5: SKEYID_d, _a, _e, each chained, with single-octet 0, 1, 2."""
    h, name = alg
    skeyid = _prf(name, PSK, NI_B + NR_B)
    d = _prf(name, skeyid, GXY + CKY_I + CKY_R + b"\x00")
    a = _prf(name, skeyid, d + GXY + CKY_I + CKY_R + b"\x01")
    e = _prf(name, skeyid, a + GXY + CKY_I + CKY_R + b"\x02")
    got = keys.derive_phase1(h, skeyid, GXY, CKY_I, CKY_R)
    assert (got.skeyid_d, got.skeyid_a, got.skeyid_e) == (d, a, e)
    assert "\\x" not in repr(got) and d.hex() not in repr(got)  # keys stay out of logs


def test_encryption_key_aes256_with_sha1_expands() -> None:
    """RFC 2409 appendix B: a 20-byte SHA1 SKEYID_e is expanded to a 32-byte AES-256 key."""
    skeyid_e = _prf("sha1", b"some skeyid", b"whatever")
    k1 = _prf("sha1", skeyid_e, b"\x00")
    k2 = _prf("sha1", skeyid_e, k1)
    key = keys.encryption_key(get_hash(IkeHash.SHA1), skeyid_e, 32)
    assert key == (k1 + k2)[:32]
    assert key[:20] != skeyid_e  # expanded, not SKEYID_e extended


def test_encryption_key_3des_with_md5_expands() -> None:
    """RFC 2409 appendix B: a 16-byte MD5 SKEYID_e is expanded to a 24-byte 3DES key."""
    skeyid_e = _prf("md5", b"some skeyid", b"whatever")
    k1 = _prf("md5", skeyid_e, b"\x00")
    k2 = _prf("md5", skeyid_e, k1)
    assert keys.encryption_key(get_hash(IkeHash.MD5), skeyid_e, 24) == (k1 + k2)[:24]


def test_encryption_key_needs_three_blocks() -> None:
    """RFC 2409 appendix B: a 40-byte key from 16-byte MD5 blocks takes K1 | K2 | K3."""
    skeyid_e = b"\x42" * 16
    k1 = _prf("md5", skeyid_e, b"\x00")
    k2 = _prf("md5", skeyid_e, k1)
    k3 = _prf("md5", skeyid_e, k2)
    assert keys.encryption_key(get_hash(IkeHash.MD5), skeyid_e, 40) == (k1 + k2 + k3)[:40]


@pytest.mark.parametrize(("hash_id", "key_len"), [(IkeHash.SHA1, 16), (IkeHash.SHA1, 20), (IkeHash.SHA2_256, 32)])
def test_encryption_key_truncates_when_long_enough(hash_id: int, key_len: int) -> None:
    """RFC 2409 appendix B: when SKEYID_e has enough bits, its first key_len bytes are the key."""
    h = get_hash(hash_id)
    skeyid_e = bytes(range(h.digest_size))
    assert keys.encryption_key(h, skeyid_e, key_len) == skeyid_e[:key_len]


@pytest.mark.parametrize("block_size", [8, 16])
def test_phase1_iv(alg: tuple[HashAlg, str], block_size: int) -> None:
    """RFC 2409 appendix B: IV = hash(g^xi | g^xr), truncated to the block size."""
    h, name = alg
    assert keys.phase1_iv(h, GXI, GXR, block_size) == hashlib.new(name, GXI + GXR).digest()[:block_size]


@pytest.mark.parametrize("block_size", [8, 16])
def test_phase2_iv(alg: tuple[HashAlg, str], block_size: int) -> None:
    """RFC 2409 appendix B: IV = hash(last phase 1 CBC block | M-ID), truncated."""
    h, name = alg
    last = bytes(range(200, 200 + block_size))
    expected = hashlib.new(name, last + MID.to_bytes(4, "big")).digest()[:block_size]
    assert keys.phase2_iv(h, last, MID, block_size) == expected


def test_hash_i_and_hash_r(alg: tuple[HashAlg, str]) -> None:
    """RFC 2409 section 5: HASH_I and HASH_R, both over SAi_b, the DH values and cookies swapped."""
    h, name = alg
    skeyid = _prf(name, PSK, NI_B + NR_B)
    expected_i = _prf(name, skeyid, GXI + GXR + CKY_I + CKY_R + SAI_B + IDII_B)
    expected_r = _prf(name, skeyid, GXR + GXI + CKY_R + CKY_I + SAI_B + IDIR_B)
    assert keys.hash_i(h, skeyid, GXI, GXR, CKY_I, CKY_R, SAI_B, IDII_B) == expected_i
    assert keys.hash_r(h, skeyid, GXR, GXI, CKY_R, CKY_I, SAI_B, IDIR_B) == expected_r
    assert expected_i != expected_r


def test_quick_mode_hashes(alg: tuple[HashAlg, str]) -> None:
    """RFC 2409 section 5.5: HASH(1), HASH(2), HASH(3) of Quick Mode."""
    h, name = alg
    skeyid_a = b"\x11" * h.digest_size
    rest = b"SA|Ni|IDci|IDcr payloads, with their generic headers"
    mid = MID.to_bytes(4, "big")
    assert keys.qm_hash1(h, skeyid_a, MID, rest) == _prf(name, skeyid_a, mid + rest)
    assert keys.qm_hash2(h, skeyid_a, MID, NI_B, rest) == _prf(name, skeyid_a, mid + NI_B + rest)
    assert keys.qm_hash3(h, skeyid_a, MID, NI_B, NR_B) == _prf(name, skeyid_a, b"\x00" + mid + NI_B + NR_B)


def test_info_hash(alg: tuple[HashAlg, str]) -> None:
    """RFC 2409 section 5.7: HASH(1) = prf(SKEYID_a, M-ID | N/D payload)."""
    h, name = alg
    skeyid_a = b"\x22" * h.digest_size
    rest = b"notify payload"
    assert keys.info_hash(h, skeyid_a, 1, rest) == _prf(name, skeyid_a, b"\x00\x00\x00\x01" + rest)


def test_message_id_bounds() -> None:
    """M-ID is four octets: 0 and 2^32-1 work, negative or 2^32 are CryptoError."""
    h = get_hash(IkeHash.SHA1)
    assert keys.info_hash(h, b"k", 0, b"") == _prf("sha1", b"k", bytes(4))
    assert keys.info_hash(h, b"k", 2**32 - 1, b"") == _prf("sha1", b"k", b"\xff" * 4)
    for bad in (-1, 2**32):
        with pytest.raises(CryptoError):
            keys.qm_hash1(h, b"k", bad, b"")


@pytest.mark.parametrize("pfs", [False, True], ids=["no-pfs", "pfs"])
@pytest.mark.parametrize("length", [16, 20, 36, 64, 100])
def test_keymat(alg: tuple[HashAlg, str], pfs: bool, length: int) -> None:
    """RFC 2409 section 5.5: KEYMAT = K1 | K2 | ..., Kn = prf(SKEYID_d, Kn-1 | [g^xy |] proto | SPI | Ni_b | Nr_b)."""
    h, name = alg
    skeyid_d = b"\x33" * h.digest_size
    gxy_qm = GXY if pfs else b""
    seed = gxy_qm + bytes([ESP]) + SPI + NI_B + NR_B
    blocks = [_prf(name, skeyid_d, seed)]
    while sum(map(len, blocks)) < length:
        blocks.append(_prf(name, skeyid_d, blocks[-1] + seed))
    expected = b"".join(blocks)[:length]
    got = keys.keymat(h, skeyid_d, ESP, SPI, NI_B, NR_B, length, GXY if pfs else None)
    assert got == expected
    assert len(got) == length


def test_keymat_directions_differ_by_spi() -> None:
    """The two SAs of a Quick Mode share everything but the SPI, which must change the keys."""
    h = get_hash(IkeHash.SHA1)
    inbound = keys.keymat(h, b"d" * 20, ESP, bytes.fromhex("00000001"), NI_B, NR_B, 36)
    outbound = keys.keymat(h, b"d" * 20, ESP, bytes.fromhex("00000002"), NI_B, NR_B, 36)
    assert inbound != outbound


def test_argument_errors() -> None:
    """Out-of-range protocol, negative lengths: CryptoError, not a silent wrong key."""
    h = get_hash(IkeHash.SHA1)
    with pytest.raises(CryptoError):
        keys.keymat(h, b"d", 256, SPI, NI_B, NR_B, 20)
    with pytest.raises(CryptoError):
        keys.keymat(h, b"d", ESP, SPI, NI_B, NR_B, -1)
    with pytest.raises(CryptoError):
        keys.encryption_key(h, b"e" * 20, -1)
    assert keys.keymat(h, b"d", ESP, SPI, NI_B, NR_B, 0) == b""


def test_pinned_known_answers_sha1_aes256() -> None:
    """Fixed inputs above, SHA1 and an AES-256 key: outputs computed once with this module and,
    separately, with a throwaway stdlib-only script of the RFC 2409 formulas; both agreed,
    and the values were pasted here so that any later drift shows up."""
    h = get_hash(IkeHash.SHA1)
    skeyid = keys.skeyid_psk(h, PSK, NI_B, NR_B)
    p1 = keys.derive_phase1(h, skeyid, GXY, CKY_I, CKY_R)
    got = {
        "skeyid": skeyid,
        "skeyid_d": p1.skeyid_d,
        "skeyid_a": p1.skeyid_a,
        "skeyid_e": p1.skeyid_e,
        "enc_key": keys.encryption_key(h, p1.skeyid_e, 32),
        "phase1_iv": keys.phase1_iv(h, GXI, GXR, 16),
        "phase2_iv": keys.phase2_iv(h, bytes(range(16)), MID, 16),
        "hash_i": keys.hash_i(h, skeyid, GXI, GXR, CKY_I, CKY_R, SAI_B, IDII_B),
        "hash_r": keys.hash_r(h, skeyid, GXR, GXI, CKY_R, CKY_I, SAI_B, IDIR_B),
        "qm_hash1": keys.qm_hash1(h, p1.skeyid_a, MID, b"rest"),
        "qm_hash2": keys.qm_hash2(h, p1.skeyid_a, MID, NI_B, b"rest"),
        "qm_hash3": keys.qm_hash3(h, p1.skeyid_a, MID, NI_B, NR_B),
        "info_hash": keys.info_hash(h, p1.skeyid_a, MID, b"rest"),
        "keymat": keys.keymat(h, p1.skeyid_d, ESP, SPI, NI_B, NR_B, 36),
        "keymat_pfs": keys.keymat(h, p1.skeyid_d, ESP, SPI, NI_B, NR_B, 36, GXY),
    }
    assert {name: value.hex() for name, value in got.items()} == PINNED_SHA1_AES256


PINNED_SHA1_AES256: dict[str, str] = {
    "skeyid": "a9ebfc0774b109df6abad2809dfce62852f02850",
    "skeyid_d": "204bec51cce85e2cd5d9be27ff1138321d095a1f",
    "skeyid_a": "3c3d447684de56c843533c4c2b816768c51e73c0",
    "skeyid_e": "14c03524480f649d95062b0763b0c9e9e44c27ba",
    "enc_key": "cc8f982015cddb8d340dbde131ba06ea0e082ea9d7770e7d2feb71ac92c2dfc9",
    "phase1_iv": "2ad7936e3c10b21900e9fb020b427013",
    "phase2_iv": "071a269231164e9878f5a6a1e4f0302a",
    "hash_i": "1ecb69942a742c2b684f06dcea8cc2cf560793fb",
    "hash_r": "faf4f25e4a8a68574c605b673cbdabfc8e4c762c",
    "qm_hash1": "0b328b93c0ad0375e8505fa006a5f7527d8697be",
    "qm_hash2": "48072f96c06b08ba79fd59c98111a2a18e8f400f",
    "qm_hash3": "57d75af16fc569cd82a0798f5aec4c9bad4fb822",
    "info_hash": "0b328b93c0ad0375e8505fa006a5f7527d8697be",  # same shape as HASH(1), same inputs
    "keymat": "fce021ebb417cca94ffa8cc22c2816f354cf829bbd1a3952df825aafc1985f34dab8094f",
    "keymat_pfs": "cca72d7b00c57c628e729f765e4e41e1f83efe7db962da75da104425093bc60d58422d35",
}
