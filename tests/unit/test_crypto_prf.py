"""HashAlg.hash and HashAlg.prf against published known-answer vectors."""

from __future__ import annotations

import pytest

from natt.crypto.prf import HASHES, get_hash
from natt.errors import UnsupportedAlgorithm
from natt.wire.constants import IkeHash

pytestmark = pytest.mark.unit

# RFC 2202 section 2 (HMAC-MD5) and section 3 (HMAC-SHA-1): (key, data, MD5 tag, SHA-1 tag).
# Cases 1, 3 and 5 use a 16-byte key with MD5 and a 20-byte one with SHA-1.
_LARGE_KEY_DATA = b"Test Using Larger Than Block-Size Key and Larger Than One Block-Size Data"
RFC2202 = [
    (
        (b"\x0b" * 16, b"\x0b" * 20),
        b"Hi There",
        "9294727a3638bb1c13f48ef8158bfc9d",
        "b617318655057264e28bc0b6fb378c8ef146be00",
    ),
    (
        (b"Jefe", b"Jefe"),
        b"what do ya want for nothing?",
        "750c783e6ab0b503eaa86e310a5db738",
        "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79",
    ),
    (
        (b"\xaa" * 16, b"\xaa" * 20),
        b"\xdd" * 50,
        "56be34521d144c88dbb8c733f0e8b3f6",
        "125d7342b9ac11cd91a39af48aa17b4f63f175d3",
    ),
    (
        (bytes(range(1, 26)), bytes(range(1, 26))),
        b"\xcd" * 50,
        "697eaf0aca3a3aea3a75164746ffaa79",
        "4c9007f4026250c6bc8414f9bf50c86c2d7235da",
    ),
    (
        (b"\x0c" * 16, b"\x0c" * 20),
        b"Test With Truncation",
        "56461ef2342edc00f9bab995690efd4c",
        "4c1a03424b55e07fe7f27be1d58bb9324a9a5a04",
    ),
    (
        (b"\xaa" * 80, b"\xaa" * 80),
        b"Test Using Larger Than Block-Size Key - Hash Key First",
        "6b1ab7fe4bd7bf8f0b62e6ce61b9d0cd",
        "aa4ae5e15272d00e95705637ce8a3b55ed402112",
    ),
    (
        (b"\xaa" * 80, b"\xaa" * 80),
        _LARGE_KEY_DATA,
        "6f630fad67cda0ee1fb1f562db3aa53e",
        "e8e99d0f45237d786d6bbaa7965c7808bbff1a91",
    ),
]


@pytest.mark.parametrize("case", range(1, 8))
def test_hmac_md5_rfc2202(case: int) -> None:
    """RFC 2202 section 2, test cases 1-7 (HMAC-MD5)."""
    (key, _), data, expected, _ = RFC2202[case - 1]
    assert get_hash(IkeHash.MD5).prf(key, data).hex() == expected


@pytest.mark.parametrize("case", range(1, 8))
def test_hmac_sha1_rfc2202(case: int) -> None:
    """RFC 2202 section 3, test cases 1-7 (HMAC-SHA-1)."""
    (_, key), data, _, expected = RFC2202[case - 1]
    assert get_hash(IkeHash.SHA1).prf(key, data).hex() == expected


# RFC 4231 section 4: (case, key, data, SHA-256 tag, SHA-384 tag, SHA-512 tag). Case 5
# (truncation) is below on its own: the RFC gives only the first 128 bits.
_RFC4231_LONG_DATA = (
    b"This is a test using a larger than block-size key and a larger than block-size data. "
    b"The key needs to be hashed before being used by the HMAC algorithm."
)
RFC4231 = [
    (
        1,
        b"\x0b" * 20,
        b"Hi There",
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
        "afd03944d84895626b0825f4ab46907f15f9dadbe4101ec682aa034c7cebc59cfaea9ea9076ede7f4af152e8b2fa9cb6",
        "87aa7cdea5ef619d4ff0b4241a1d6cb02379f4e2ce4ec2787ad0b30545e17cde"
        "daa833b7d6b8a702038b274eaea3f4e4be9d914eeb61f1702e696c203a126854",
    ),
    (
        2,
        b"Jefe",
        b"what do ya want for nothing?",
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
        "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e8e2240ca5e69e2c78b3239ecfab21649",
        "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554"
        "9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
    ),
    (
        3,
        b"\xaa" * 20,
        b"\xdd" * 50,
        "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
        "88062608d3e6ad8a0aa2ace014c8a86f0aa635d947ac9febe83ef4e55966144b2a5ab39dc13814b94e3ab6e101a34f27",
        "fa73b0089d56a284efb0f0756c890be9b1b5dbdd8ee81a3655f83e33b2279d39"
        "bf3e848279a722c806b485a47e67c807b946a337bee8942674278859e13292fb",
    ),
    (
        4,
        bytes(range(1, 26)),
        b"\xcd" * 50,
        "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
        "3e8a69b7783c25851933ab6290af6ca77a9981480850009cc5577c6e1f573b4e6801dd23c4a7d679ccf8a386c674cffb",
        "b0ba465637458c6990e5a8c5f61d4af7e576d97ff94b872de76f8050361ee3db"
        "a91ca5c11aa25eb4d679275cc5788063a5f19741120c4f2de2adebeb10a298dd",
    ),
    (
        6,
        b"\xaa" * 131,
        b"Test Using Larger Than Block-Size Key - Hash Key First",
        "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
        "4ece084485813e9088d2c63a041bc5b44f9ef1012a2b588f3cd11f05033ac4c60c2ef6ab4030fe8296248df163f44952",
        "80b24263c7c1a3ebb71493c1dd7be8b49b46d1f41b4aeec1121b013783f8f352"
        "6b56d037e05f2598bd0fd2215d6a1e5295e64f73f63f0aec8b915a985d786598",
    ),
    (
        7,
        b"\xaa" * 131,
        _RFC4231_LONG_DATA,
        "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
        "6617178e941f020d351e2f254e8fd32c602420feb0b8fb9adccebb82461e99c5a678cc31e799176d3860e6110c46523e",
        "e37b6a775dc87dbaa4dfa9f96e5e3ffddebd71f8867289865df5a32d20cdc944"
        "b6022cac3c4982b10d5eeb55c3e4de15134676fb6de0446065c97440fa8c6a58",
    ),
]
_RFC4231_IDS = [f"case{row[0]}" for row in RFC4231]


@pytest.mark.parametrize(("case", "key", "data", "sha256", "sha384", "sha512"), RFC4231, ids=_RFC4231_IDS)
def test_hmac_sha2_rfc4231(case: int, key: bytes, data: bytes, sha256: str, sha384: str, sha512: str) -> None:
    """RFC 4231 section 4, test cases 1, 2, 3, 4, 6 and 7 (HMAC-SHA-256/384/512)."""
    assert get_hash(IkeHash.SHA2_256).prf(key, data).hex() == sha256
    assert get_hash(IkeHash.SHA2_384).prf(key, data).hex() == sha384
    assert get_hash(IkeHash.SHA2_512).prf(key, data).hex() == sha512


def test_hmac_sha2_rfc4231_case5_truncated() -> None:
    """RFC 4231 section 4.6, test case 5: only the leftmost 128 bits are specified."""
    key, data = b"\x0c" * 20, b"Test With Truncation"
    assert get_hash(IkeHash.SHA2_256).prf(key, data)[:16].hex() == "a3b6167473100ee06e0c796c2955552b"
    assert get_hash(IkeHash.SHA2_384).prf(key, data)[:16].hex() == "3abf34c3503b2a23a46efc619baef897"
    assert get_hash(IkeHash.SHA2_512).prf(key, data)[:16].hex() == "415fad6271580a531d4179bc891d87a6"


@pytest.mark.parametrize(
    ("hash_id", "digest"),
    [
        (IkeHash.MD5, "900150983cd24fb0d6963f7d28e17f72"),
        (IkeHash.SHA1, "a9993e364706816aba3e25717850c26c9cd0d89d"),
        (IkeHash.SHA2_256, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"),
        (
            IkeHash.SHA2_384,
            "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed8086072ba1e7cc2358baeca134c825a7",
        ),
        (
            IkeHash.SHA2_512,
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"
            "2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        ),
    ],
)
def test_hash_of_abc(hash_id: int, digest: str) -> None:
    """The "abc" vectors of RFC 1321 appendix A.5 (MD5) and FIPS 180-2 appendices A-D (SHA)."""
    h = get_hash(hash_id)
    assert h.hash(b"abc").hex() == digest
    assert h.digest_size == len(digest) // 2


def test_registry_names_and_weakness() -> None:
    """The table the proposal code and the logs rely on: ids, display names, weak flags."""
    summary = {h.id: (h.name, h.digest_size, h.weak) for h in HASHES.values()}
    assert summary == {
        1: ("MD5", 16, True),
        2: ("SHA1", 20, True),
        4: ("SHA2-256", 32, False),
        5: ("SHA2-384", 48, False),
        6: ("SHA2-512", 64, False),
    }
    assert all(get_hash(hash_id) is h for hash_id, h in HASHES.items())


@pytest.mark.parametrize("hash_id", [0, IkeHash.TIGER, 7, 65535])
def test_unknown_hash_is_unsupported(hash_id: int) -> None:
    """Tiger (3) and unassigned values are refused with the typed error."""
    with pytest.raises(UnsupportedAlgorithm, match=str(int(hash_id))):
        get_hash(hash_id)
