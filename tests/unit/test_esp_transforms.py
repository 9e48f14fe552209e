"""ESP transforms: the lengths each RFC fixes, names, refusals, and the backend report."""

from __future__ import annotations

import cryptography
import pytest

from natt.errors import UnsupportedAlgorithm
from natt.esp import SUPPORTED_TRANSFORMS, EspTransform, backend_info, make_transform
from natt.wire.constants import AuthAlgorithm, EspTransformId

pytestmark = pytest.mark.unit

GCM = EspTransformId.AES_GCM_16
CBC = EspTransformId.AES_CBC
TDES = EspTransformId.TRIPLE_DES
MD5 = AuthAlgorithm.HMAC_MD5
SHA1 = AuthAlgorithm.HMAC_SHA1
SHA256 = AuthAlgorithm.HMAC_SHA2_256

# (id, key bits, auth) -> (name, enc key, auth key, icv, iv, block, cipher, hash, weak)
EXPECTED = [
    ((GCM, 128, None), ("AES-128-GCM-16", 20, 0, 16, 8, 4, "AES-128", "AES-GCM", False)),
    ((GCM, 256, None), ("AES-256-GCM-16", 36, 0, 16, 8, 4, "AES-256", "AES-GCM", False)),
    ((CBC, 128, SHA1), ("AES-128-CBC/HMAC-SHA1-96", 16, 20, 12, 16, 16, "AES-128", "SHA1", False)),
    ((CBC, 192, SHA256), ("AES-192-CBC/HMAC-SHA2-256-128", 24, 32, 16, 16, 16, "AES-192", "SHA2-256", False)),
    ((CBC, 256, SHA1), ("AES-256-CBC/HMAC-SHA1-96", 32, 20, 12, 16, 16, "AES-256", "SHA1", False)),
    ((CBC, 256, MD5), ("AES-256-CBC/HMAC-MD5-96", 32, 16, 12, 16, 16, "AES-256", "MD5", True)),
    ((TDES, None, MD5), ("3DES-168/HMAC-MD5-96", 24, 16, 12, 8, 8, "3DES-168", "MD5", True)),
    ((TDES, 192, SHA1), ("3DES-168/HMAC-SHA1-96", 24, 20, 12, 8, 8, "3DES-168", "SHA1", True)),
]


@pytest.mark.parametrize(("args", "expected"), EXPECTED, ids=[e[1][0] for e in EXPECTED])
def test_transform_lengths(args: tuple[int, int | None, int | None], expected: tuple) -> None:
    """RFC 4106 8.1 (GCM KEYMAT = key + 4-byte salt, 8-byte IV, 16-byte ICV), RFC 3602 (16-byte
    IV and block), RFC 2451 (3DES: 24-byte key, 8-byte IV), RFC 2403/2404 (96-bit ICV),
    RFC 4868 2.3 (SHA2-256 truncated to 128 bits), RFC 2409 5.5 (KEYMAT: encryption key first)."""
    name, enc, auth, icv, iv, block, cipher, hash_name, weak = expected
    t = make_transform(*args)
    assert (t.name, t.enc_key_len, t.auth_key_len, t.icv_len, t.iv_len, t.block_size) == (
        name,
        enc,
        auth,
        icv,
        iv,
        block,
    )
    assert t.keymat_len == enc + auth
    assert (t.display_cipher, t.display_hash, t.weak) == (cipher, hash_name, weak)


def test_3des_key_length_spellings() -> None:
    """RFC 2451: 3DES has one key size; None, 168 and 192 all name it."""
    assert make_transform(TDES, None, SHA1) == make_transform(TDES, 168, SHA1) == make_transform(TDES, 192, SHA1)


@pytest.mark.parametrize(
    "args",
    [
        (GCM, 128, SHA1),  # RFC 4106 8.4: no separate integrity with an AEAD
        (GCM, 192, None),
        (GCM, None, None),  # RFC 4106 8.4: Key Length is mandatory
        (CBC, None, SHA1),  # RFC 3602 5: Key Length is mandatory
        (CBC, 512, SHA1),
        (CBC, 128, None),  # no ESP without integrity
        (CBC, 128, AuthAlgorithm.HMAC_SHA2_384),
        (TDES, None, SHA256),
        (TDES, 128, MD5),
        (EspTransformId.DES, None, MD5),
        (EspTransformId.NULL, None, SHA1),
        (EspTransformId.AES_GCM_8, 128, None),
        (99, 128, SHA1),
    ],
)
def test_unsupported(args: tuple[int, int | None, int | None]) -> None:
    """Anything outside GCM-16 128/256, AES-CBC 128/192/256 + MD5/SHA1/SHA2-256, 3DES + MD5/SHA1."""
    with pytest.raises(UnsupportedAlgorithm):
        make_transform(*args)


def test_supported_list_is_complete_and_frozen() -> None:
    """Every accepted (cipher, key, auth) combination is listed once; transforms are immutable."""
    assert len(SUPPORTED_TRANSFORMS) == 2 + 3 * 3 + 2
    assert len({t.name for t in SUPPORTED_TRANSFORMS}) == len(SUPPORTED_TRANSFORMS)
    t = SUPPORTED_TRANSFORMS[0]
    assert isinstance(t, EspTransform)
    with pytest.raises(AttributeError):
        t.key_bits = 512  # type: ignore[misc]


def test_backend_info_names_the_primitives() -> None:
    """The report names cryptography's OpenSSL, its version, and one primitive per transform."""
    info = backend_info()
    assert info["openssl"].startswith("OpenSSL")
    assert info["cryptography"] == cryptography.__version__
    for t in SUPPORTED_TRANSFORMS:
        assert t.name in info
    assert info["AES-128-GCM-16"] == "OpenSSL EVP aes-128-gcm (cryptography AESGCM)"
    assert info["AES-256-CBC/HMAC-SHA1-96"].startswith("OpenSSL EVP aes-256-cbc")
    assert "HMAC-SHA1" in info["AES-256-CBC/HMAC-SHA1-96"]
    assert "des-ede3-cbc" in info["3DES-168/HMAC-MD5-96"]
