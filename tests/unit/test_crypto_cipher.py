"""IkeCipher (raw CBC for IKEv1 messages), padding and IV chaining."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from natt.crypto.cipher import AES_128, AES_192, AES_256, TRIPLE_DES, IkeCipher, get_cipher, iv_for_next, pad_ike
from natt.errors import CryptoError, DecryptionError, UnsupportedAlgorithm
from natt.wire.constants import IkeEncryption

pytestmark = pytest.mark.unit

# RFC 3602 section 4, cases 1-4 (AES-128-CBC, no padding): (case, key, IV, plaintext, ciphertext).
RFC3602 = [
    (
        1,
        "06a9214036b8a15b512e03d534120006",
        "3dafba429d9eb430b422da802c9fac41",
        b"Single block msg".hex(),
        "e353779c1079aeb82708942dbe77181a",
    ),
    (
        2,
        "c286696d887c9aa0611bbb3e2025a45a",
        "562e17996d093d28ddb3ba695a2e6f58",
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "d296cd94c2cccf8a3a863028b5e1dc0a7586602d253cfff91b8266bea6d61ab1",
    ),
    (
        3,
        "6c3ea0477630ce21a2ce334aa746c2cd",
        "c782dc4c098c66cbd9cd27d825682c81",
        b"This is a 48-byte message (exactly 3 AES blocks)".hex(),
        "d0a02b3836451753d493665d33f0e8862dea54cdb293abc7506939276772f8d5021c19216bad525c8579695d83ba2684",
    ),
    (
        4,
        "56e47a38c5598974bc46903dba290349",
        "8ce82eefbea0da3c44699ed7db51b7d9",
        "a0a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4b5b6b7b8b9babbbcbdbebf"
        "c0c1c2c3c4c5c6c7c8c9cacbcccdcecfd0d1d2d3d4d5d6d7d8d9dadbdcdddedf",
        "c30e32ffedc0774e6aff6af0869f71aa0f3af07a9a31a9c684db207eb0ef8e4e"
        "35907aa632c3ffdf868bb7b29d3d46ad83ce9f9a102ee99d49a53e87f4c3da55",
    ),
]


@pytest.mark.parametrize(
    ("case", "key", "iv", "plaintext", "ciphertext"), RFC3602, ids=[f"case{r[0]}" for r in RFC3602]
)
def test_aes128_cbc_rfc3602(case: int, key: str, iv: str, plaintext: str, ciphertext: str) -> None:
    """RFC 3602 section 4, test cases 1-4, through encrypt and decrypt."""
    cipher = get_cipher(IkeEncryption.AES_CBC, 128)
    k, i, p, c = (bytes.fromhex(v) for v in (key, iv, plaintext, ciphertext))
    assert cipher.encrypt(k, i, p) == c
    assert cipher.decrypt(k, i, c) == p


# NIST SP 800-38A appendix F.2: the same four plaintext blocks under CBC with each key size.
_SP800_38A_IV = "000102030405060708090a0b0c0d0e0f"
_SP800_38A_PLAINTEXT = (
    "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
)


@pytest.mark.parametrize(
    ("bits", "key", "ciphertext"),
    [
        (
            192,
            "8e73b0f7da0e6452c810f32b809079e562f8ead2522c6b7b",
            "4f021db243bc633d7178183a9fa071e8b4d9ada9ad7dedf4e5e738763f69145a"
            "571b242012fb7ae07fa9baac3df102e008b0e27988598881d920a9e64f5615cd",
        ),
        (
            256,
            "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
            "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d"
            "39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b",
        ),
    ],
)
def test_aes192_aes256_cbc_sp800_38a(bits: int, key: str, ciphertext: str) -> None:
    """NIST SP 800-38A F.2.3/F.2.4 (CBC-AES192) and F.2.5/F.2.6 (CBC-AES256)."""
    cipher = get_cipher(IkeEncryption.AES_CBC, bits)
    k, iv, p = bytes.fromhex(key), bytes.fromhex(_SP800_38A_IV), bytes.fromhex(_SP800_38A_PLAINTEXT)
    assert cipher.encrypt(k, iv, p).hex() == ciphertext
    assert cipher.decrypt(k, iv, bytes.fromhex(ciphertext)) == p


# NIST SP 800-67 Rev. 1 (TDEA), its worked example: three independent keys, ECB.
_TDEA_KEY = bytes.fromhex("0123456789ABCDEF23456789ABCDEF01456789ABCDEF0123")
_TDEA_PLAINTEXT = b"The qufck brown fox jump"  # the misspelling is the standard's
_TDEA_ECB = bytes.fromhex("A826FD8CE53B855FCCE21C8112256FE668D5C05DD9B6B900")


def test_3des_sp800_67_example_block_by_block() -> None:
    """NIST SP 800-67 Rev. 1 example: CBC of one block under an all-zero IV is plain ECB."""
    for n in range(3):
        block = _TDEA_PLAINTEXT[8 * n : 8 * n + 8]
        expected = _TDEA_ECB[8 * n : 8 * n + 8]
        assert TRIPLE_DES.encrypt(_TDEA_KEY, bytes(8), block) == expected
        assert TRIPLE_DES.decrypt(_TDEA_KEY, bytes(8), expected) == block


def _cbc_by_hand(key: bytes, iv: bytes, plaintext: bytes) -> bytes:
    """CBC built from single-block ECB and XOR: an independent path to the expected value."""
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES

    ecb = Cipher(TripleDES(key), modes.ECB()).encryptor()
    previous, out = iv, b""
    for n in range(0, len(plaintext), 8):
        block = bytes(a ^ b for a, b in zip(plaintext[n : n + 8], previous, strict=True))
        previous = ecb.update(block)
        out += previous
    return out


def test_3des_cbc_multi_block_against_ecb_and_xor() -> None:
    """Three-block 3DES-CBC with a non-zero IV, expected value from ECB + manual chaining."""
    iv = bytes.fromhex("1f2e3d4c5b6a7988")
    expected = _cbc_by_hand(_TDEA_KEY, iv, _TDEA_PLAINTEXT)
    # Pinned too (computed once with the helper), so neither side can drift unnoticed.
    assert expected.hex() == "2012466a2a7d73e8377aa35c271f58fe557ff103f96fe3b8"
    assert TRIPLE_DES.encrypt(_TDEA_KEY, iv, _TDEA_PLAINTEXT) == expected
    assert TRIPLE_DES.decrypt(_TDEA_KEY, iv, expected) == _TDEA_PLAINTEXT


@pytest.mark.parametrize("cipher", [TRIPLE_DES, AES_128, AES_192, AES_256], ids=lambda c: c.name)
def test_round_trip_of_a_padded_message(cipher: IkeCipher) -> None:
    """Whatever the cipher, pad_ike + encrypt + decrypt gives back the padded message."""
    key = bytes(range(cipher.key_len))
    iv = bytes(range(100, 100 + cipher.block_size))
    message = pad_ike(b"an ISAKMP payload chain, 43 bytes long......", cipher.block_size)
    ciphertext = cipher.encrypt(key, iv, message)
    assert ciphertext != message
    assert len(ciphertext) == len(message)
    assert cipher.decrypt(key, iv, ciphertext) == message


def test_iv_chaining_across_messages_is_one_long_cbc() -> None:
    """RFC 2409 appendix B: the next message's IV is the previous message's last block.

    Encrypting two messages that way must equal CBC over their concatenation.
    """
    key, iv = bytes(range(16)), bytes(16)
    first, second = b"A" * 32, b"B" * 48
    c1 = AES_128.encrypt(key, iv, first)
    c2 = AES_128.encrypt(key, iv_for_next(c1, 16), second)
    assert c1 + c2 == AES_128.encrypt(key, iv, first + second)
    assert iv_for_next(c1, 16) == c1[-16:]


def test_get_cipher_registry() -> None:
    """Encryption ids map to the concentrator's display names, key and block sizes."""
    assert get_cipher(IkeEncryption.TRIPLE_DES_CBC, None) is TRIPLE_DES
    assert get_cipher(IkeEncryption.TRIPLE_DES_CBC, 192) is TRIPLE_DES  # Key Length does not apply
    assert (TRIPLE_DES.name, TRIPLE_DES.key_len, TRIPLE_DES.block_size, TRIPLE_DES.weak) == ("3DES-168", 24, 8, True)
    for bits, name in ((128, "AES-128"), (192, "AES-192"), (256, "AES-256")):
        cipher = get_cipher(IkeEncryption.AES_CBC, bits)
        assert (cipher.id, cipher.name, cipher.key_len, cipher.block_size, cipher.weak) == (
            7,
            name,
            bits // 8,
            16,
            False,
        )
    assert get_cipher(IkeEncryption.AES_CBC, None) is AES_128


@pytest.mark.parametrize(
    ("cipher_id", "bits"),
    [
        (IkeEncryption.AES_CBC, 64),
        (IkeEncryption.AES_CBC, 512),
        (IkeEncryption.AES_CBC, 0),
        (IkeEncryption.DES_CBC, None),
        (IkeEncryption.BLOWFISH_CBC, 128),
        (IkeEncryption.CAST_CBC, None),
        (99, None),
    ],
)
def test_get_cipher_refuses_what_we_lack(cipher_id: int, bits: int | None) -> None:
    """DES, Blowfish, CAST, unknown ids and odd AES key lengths are UnsupportedAlgorithm."""
    with pytest.raises(UnsupportedAlgorithm):
        get_cipher(cipher_id, bits)


@pytest.mark.parametrize("cipher", [TRIPLE_DES, AES_128], ids=lambda c: c.name)
def test_length_errors(cipher: IkeCipher) -> None:
    """Partial blocks, empty input, wrong key or IV lengths: the right typed error each."""
    key, iv, bs = bytes(cipher.key_len), bytes(cipher.block_size), cipher.block_size
    with pytest.raises(CryptoError):
        cipher.encrypt(key, iv, bytes(bs + 1))
    with pytest.raises(CryptoError):
        cipher.encrypt(key, iv, b"")
    with pytest.raises(DecryptionError):
        cipher.decrypt(key, iv, bytes(bs - 1))
    with pytest.raises(DecryptionError):
        cipher.decrypt(key, iv, bytes(2 * bs + 3))
    with pytest.raises(DecryptionError):
        cipher.decrypt(key, iv, b"")
    with pytest.raises(CryptoError, match="key"):
        cipher.encrypt(bytes(cipher.key_len - 1), iv, bytes(bs))
    with pytest.raises(CryptoError, match="IV"):
        cipher.decrypt(key, bytes(bs + 1), bytes(bs))


def test_encrypt_length_error_is_not_a_peer_error() -> None:
    """Our own unpadded plaintext is a CryptoError, but never the peer-facing DecryptionError."""
    with pytest.raises(CryptoError) as info:
        AES_128.encrypt(bytes(16), bytes(16), bytes(17))
    assert not isinstance(info.value, DecryptionError)


@pytest.mark.parametrize(
    ("length", "block", "expected_pad"),
    [
        (0, 8, "0000000000000008"),
        (1, 8, "00000000000007"),
        (7, 8, "01"),
        (8, 8, "0000000000000008"),
        (43, 16, "0000000005"),
        (47, 16, "01"),
        (48, 16, "00000000000000000000000000000010"),
    ],
)
def test_pad_ike(length: int, block: int, expected_pad: str) -> None:
    """1..block_size bytes are added: zeros, the last byte counting them all."""
    payload = bytes([0xEE]) * length
    padded = pad_ike(payload, block)
    assert padded[:length] == payload
    assert padded[length:].hex() == expected_pad
    assert len(padded) % block == 0


def test_pad_and_iv_argument_errors() -> None:
    """Impossible block sizes, and ciphertext shorter than a block, are CryptoError."""
    with pytest.raises(CryptoError):
        pad_ike(b"x", 0)
    with pytest.raises(CryptoError):
        pad_ike(b"x", 256)
    with pytest.raises(CryptoError):
        iv_for_next(bytes(7), 8)
    assert iv_for_next(bytes(range(24)), 8) == bytes(range(16, 24))
