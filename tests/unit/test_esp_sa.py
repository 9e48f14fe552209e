"""EspSA: published ESP vectors, the persistent-CBC-context trick, round trips and every refusal."""

from __future__ import annotations

import hmac
import os
import random
import struct

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from natt.errors import (
    CryptoError,
    EspAuthFailed,
    EspBadPadding,
    EspError,
    EspReplay,
    EspSequenceOverflow,
    EspTruncated,
)
from natt.esp import SUPPORTED_TRANSFORMS, EspSA, EspTransform, make_transform, peek_spi
from natt.esp.sa import _GcmEngine
from natt.wire.constants import AuthAlgorithm, EspTransformId

pytestmark = pytest.mark.unit


def hx(text: str) -> bytes:
    """Hex as the RFCs print it, in whitespace-separated words."""
    return bytes.fromhex("".join(text.split()))


AES128_SHA1 = make_transform(EspTransformId.AES_CBC, 128, AuthAlgorithm.HMAC_SHA1)
AES128_GCM = make_transform(EspTransformId.AES_GCM_16, 128, None)
AES256_GCM = make_transform(EspTransformId.AES_GCM_16, 256, None)
CBC_TRANSFORMS = [t for t in SUPPORTED_TRANSFORMS if t.auth is not None]
HASH_NAMES = {AuthAlgorithm.HMAC_MD5: "md5", AuthAlgorithm.HMAC_SHA1: "sha1", AuthAlgorithm.HMAC_SHA2_256: "sha256"}
AUTH_KEY = bytes(range(0x40, 0x40 + 20))  # the RFC 3602 cases have no integrity: any key will do


# --- independent reference construction (fresh contexts, stdlib hmac) --------------------------


def reference_trailer(payload_len: int, next_header: int, align: int) -> bytes:
    """RFC 4303 2.4 padding 1, 2, 3, ... so that payload + padding + 2 is a multiple of align."""
    pad = 0
    while (payload_len + pad + 2) % align:
        pad += 1
    return bytes(range(1, pad + 1)) + bytes((pad, next_header))


def cbc_cipher(t: EspTransform, key: bytes, iv: bytes) -> Cipher:
    algorithm = TripleDES(key) if t.transform_id == EspTransformId.TRIPLE_DES else algorithms.AES(key)
    return Cipher(algorithm, modes.CBC(iv))


def reference_cbc_packet(t: EspTransform, keymat: bytes, spi: int, seq: int, iv: bytes, plaintext: bytes) -> bytes:
    """An ESP packet built the textbook way: a fresh CBC context per packet, then HMAC."""
    enc_key, auth_key = keymat[: t.enc_key_len], keymat[t.enc_key_len :]
    encryptor = cbc_cipher(t, enc_key, iv).encryptor()
    body = struct.pack(">II", spi, seq) + iv + encryptor.update(plaintext) + encryptor.finalize()
    assert t.auth is not None
    return body + hmac.digest(auth_key, body, HASH_NAMES[t.auth])[: t.icv_len]


def reference_gcm_packet(keymat: bytes, spi: int, seq: int, iv: bytes, plaintext: bytes) -> bytes:
    """RFC 4106: nonce = salt || IV, AAD = SPI || seq, ciphertext || 16-byte tag."""
    head = struct.pack(">II", spi, seq)
    return head + iv + AESGCM(keymat[:-4]).encrypt(keymat[-4:] + iv, plaintext, head)


def pair(t: EspTransform, spi: int = 0x1234, keymat: bytes | None = None, window: int = 128) -> tuple[EspSA, EspSA]:
    keymat = os.urandom(t.keymat_len) if keymat is None else keymat
    return (
        EspSA(spi, t, keymat, outbound=True),
        EspSA(spi, t, keymat, outbound=False, replay_window=window),
    )


# --- RFC 3602 section 4: ESP packets with AES-128-CBC -----------------------------------------

# Case #5: transport mode, ping 192.168.123.100; encryption only (no ICV: the outer IP total
# length 0x7c = 20 + 8 + 16 + 80 leaves no room for one).
CASE5 = {
    "key": hx("90d382b4 10eeba7a d938c46c ec1a82bf"),
    "spi": 0x4321,
    "seq": 1,
    "next_header": 1,  # ICMP
    "payload": hx(
        """08000ebd a70a0000 8e9c083d b95b0700 08090a0b 0c0d0e0f 10111213 14151617
           18191a1b 1c1d1e1f 20212223 24252627 28292a2b 2c2d2e2f 30313233 34353637"""
    ),
    "esp": hx(
        """00004321 00000001
           e96e8c08 ab465763 fd098d45 dd3ff893
           f663c25d 325c18c6 a9453e19 4e120849 a4870b66 cc6b9965 330013b4 898dc856
           a4699e52 3a55db08 0b59ec3a 8e4b7e52 775b07d1 db34ed9c 538ab50c 551b874a
           a269add0 47ad2d59 13ac19b7 cfbad4a6"""
    ),
}
# Case #7: tunnel mode, ping 192.168.123.200; encryption only (0x8c = 20 + 8 + 16 + 96).
CASE7 = {
    "key": hx("01234567 89abcdef 01234567 89abcdef"),
    "spi": 0x8765,
    "seq": 2,
    "next_header": 4,  # IP-in-IP
    "payload": hx(
        """45000054 09040000 4001f988 c0a87b03 c0a87bc8 08009f76 a90a0100 b49c083d
           02a20400 08090a0b 0c0d0e0f 10111213 14151617 18191a1b 1c1d1e1f 20212223
           24252627 28292a2b 2c2d2e2f 30313233 34353637"""
    ),
    "esp": hx(
        """00008765 00000002
           f4e76524 4f6407ad f13dc138 0f673f37
           773b5241 a4c44922 5e4f3ce5 ed611b0c 237ca96c f74a9301 3c1b0ea1 a0cf70f8
           e4ecaec7 8ac53aad 7a0f022b 859243c6 47752e94 a859352b 8a4d4d2d ecd136e5
           c177f132 ad3fbfb2 201ac990 4c74ee0a 109e0ca1 e4dfe9d5 a100b842 f1c22f0d"""
    ),
}


@pytest.mark.parametrize("case", [CASE5, CASE7], ids=["case5", "case7"])
def test_rfc3602_esp_packet_encrypt(case: dict) -> None:
    """RFC 3602 section 4 cases #5 and #7: with the published IV forced, SPI, sequence number,
    IV, the padding 01 02 03 ... and the ciphertext match byte for byte. The cases carry no
    ICV, so ours (HMAC-SHA1-96 under a key of our choosing) is checked against stdlib hmac."""
    keymat = case["key"] + AUTH_KEY
    sa = EspSA(case["spi"], AES128_SHA1, keymat, outbound=True)
    sa.seq = case["seq"] - 1
    sa._next_iv = case["esp"][8:24]  # test-only hook: the vector fixes the IV
    packet = sa.encrypt(case["payload"], next_header=case["next_header"])
    assert packet[:-12] == case["esp"]
    assert packet[-12:] == hmac.digest(AUTH_KEY, case["esp"], "sha1")[:12]
    assert sa._next_iv is None  # used once


@pytest.mark.parametrize("case", [CASE5, CASE7], ids=["case5", "case7"])
def test_rfc3602_esp_packet_decrypt(case: dict) -> None:
    """RFC 3602 section 4 cases #5 and #7, inbound: the published packet (plus an HMAC-SHA1-96
    ICV) decrypts to the published payload and next header through the persistent context."""
    keymat = case["key"] + AUTH_KEY
    sa = EspSA(case["spi"], AES128_SHA1, keymat, outbound=False)
    packet = case["esp"] + hmac.digest(AUTH_KEY, case["esp"], "sha1")[:12]
    assert sa.decrypt(packet) == (case["next_header"], case["payload"])
    assert (sa.seq, sa.packets, sa.bytes) == (case["seq"], 1, len(case["payload"]))


def test_rfc3602_case5_padding_is_the_published_one() -> None:
    """RFC 3602 case #5 lists padding 01..0e, pad length 0e and next header 01 for 64 bytes."""
    assert reference_trailer(64, 1, 16) == hx("01020304 05060708 090a0b0c 0d0e 0e 01")
    encryptor = cbc_cipher(AES128_SHA1, CASE5["key"], CASE5["esp"][8:24]).encryptor()
    plain = CASE5["payload"] + hx("01020304 05060708 090a0b0c 0d0e0e01")
    assert encryptor.update(plain) == CASE5["esp"][24:]


# --- AES-GCM: McGrew & Viega's GCM spec and the ESP packet vectors of draft-mcgrew-gcm-test ----

GCM_P = hx(
    """d9313225 f88406e5 a55909c5 aff5269a 86a7a953 1534f7da 2e4c303d 8a318a72
       1c3c0c95 95680953 2fcf0e24 49a6b525 b16aedf5 aa0de657 ba637b39 1aafd255"""
)
GCM_A = hx("feedface deadbeef feedface deadbeef abaddad2")
GCM_K = hx("feffe992 8665731c 6d6a8f94 67308308")
GCM_NONCE = hx("cafebabe facedbad decaf888")

# (test case, key, plaintext, aad, ciphertext || tag)
GCM_SPEC = [
    (
        3,
        GCM_K,
        GCM_P,
        b"",
        hx(
            """42831ec2 21777424 4b7221b7 84d0d49c e3aa212f 2c02a4e0 35c17e23 29aca12e
               21d514b2 5466931c 7d8f6a5a ac84aa05 1ba30b39 6a0aac97 3d58e091 473f5985
               4d5c2af3 27cd64a6 2cf35abd 2ba6fab4"""
        ),
    ),
    (
        4,
        GCM_K,
        GCM_P[:60],
        GCM_A,
        hx(
            """42831ec2 21777424 4b7221b7 84d0d49c e3aa212f 2c02a4e0 35c17e23 29aca12e
               21d514b2 5466931c 7d8f6a5a ac84aa05 1ba30b39 6a0aac97 3d58e091
               5bc94fbc 3221a5db 94fae95a e7121a47"""
        ),
    ),
    (
        15,
        GCM_K * 2,
        GCM_P,
        b"",
        hx(
            """522dc1f0 99567d07 f47f37a3 2a84427d 643a8cdc bfe5c0c9 7598a2bd 2555d1aa
               8cb08e48 590dbb3d a7b08b10 56828838 c5f61e63 93ba7a0a bcc9f662 898015ad
               b094dac5 d93471bd ec1a5022 70e3cc6c"""
        ),
    ),
    (
        16,
        GCM_K * 2,
        GCM_P[:60],
        GCM_A,
        hx(
            """522dc1f0 99567d07 f47f37a3 2a84427d 643a8cdc bfe5c0c9 7598a2bd 2555d1aa
               8cb08e48 590dbb3d a7b08b10 56828838 c5f61e63 93ba7a0a bcc9f662
               76fc6ece 0f4e1768 cddf8853 bb2d551b"""
        ),
    ),
]


@pytest.mark.parametrize(("case", "key", "plaintext", "aad", "sealed"), GCM_SPEC, ids=[f"tc{c[0]}" for c in GCM_SPEC])
def test_gcm_spec_vectors_through_the_sa_primitive(
    case: int, key: bytes, plaintext: bytes, aad: bytes, sealed: bytes
) -> None:
    """McGrew & Viega, "The Galois/Counter Mode of Operation", test cases 3, 4 (AES-128) and
    15, 16 (AES-256), 96-bit IV cafebabefacedbaddecaf888: the AEAD object an SA builds from
    KEYMAT = key || salt (RFC 4106 8.1: salt = the nonce's first 4 bytes) seals and opens them."""
    transform = AES128_GCM if len(key) == 16 else AES256_GCM
    sa = EspSA(0x100, transform, key + GCM_NONCE[:4], outbound=True)
    assert sa._engine is None  # contexts are built on the first packet
    engine = sa._start()
    assert isinstance(engine, _GcmEngine)
    nonce = engine._salt + GCM_NONCE[4:]
    assert nonce == GCM_NONCE
    assert engine._aead.encrypt(nonce, plaintext, aad or None) == sealed
    assert engine._aead.decrypt(nonce, sealed, aad or None) == plaintext


# draft-mcgrew-gcm-test-01 section 4 (the ESP companion of RFC 4106): full ESP packets.
GCM_ESP = [
    (
        AES128_GCM,
        hx("feffe992 8665731c 6d6a8f94 67308308 cafebabe"),
        hx(
            """0000a5f8 0000000a facedbad decaf888
               deb22cd9 b07c72c1 6e3a65be eb8df304 a5a5897d 33ae530f 1ba76d5d 114d2a5c
               3de81827 c10e9a4f 51330d0e ec416642 cfbb85a5 b47e48a4 ec3b9ba9 5d918bd1
               83b70d3a a8bc6ee4 c309e9d8 5a41ad4a"""
        ),
        # 62-byte IPv4/UDP DNS query; the trailer is pad length 00, next header 01.
        hx(
            """4500003e 698f0000 80114dcc c0a80102 c0a80101 0a980035 002a2343 b2d00100
               00010000 00000000 03736970 09637962 65726369 74790264 6b000001 0001"""
        ),
    ),
    (
        AES256_GCM,
        hx("abbccdde f0011223 34455667 78899aab abbccdde f0011223 34455667 78899aab 11223344"),
        hx(
            """4a2cbfe3 00000002 01020304 05060708
               ff425c9b 724599df 7a3bcd51 0194e00d 6a78107f 1b0b1cbf 06efae9d 65a5d763
               748a6379 85771d34 7f054565 9f14e99d ef842d8e b335f4ee cfdbf831 824b4c49
               15956c96"""
        ),
        # 48-byte IPv4/TCP SYN; the trailer is padding 01 02, pad length 02, next header 01.
        hx(
            """45000030 69a64000 80062690 c0a80102 9389155e 0a9e008b 2dc57ee0 00000000
               70024000 20bf0000 020405b4 01010402"""
        ),
    ),
]


@pytest.mark.parametrize(("transform", "keymat", "packet", "inner"), GCM_ESP, ids=["aes128", "aes256"])
def test_gcm_esp_packet_vectors(transform: EspTransform, keymat: bytes, packet: bytes, inner: bytes) -> None:
    """draft-mcgrew-gcm-test-01 section 4 packets: decrypt gives the published inner packet, and
    encrypt with the published IV and sequence number rebuilds the packet byte for byte
    (AAD = SPI || seq, nonce = salt || IV, 4-byte alignment padding: RFC 4106 3, 5)."""
    spi, seq = struct.unpack(">II", packet[:8])
    inbound = EspSA(spi, transform, keymat, outbound=False)
    assert inbound.decrypt(packet) == (1, inner)
    outbound = EspSA(spi, transform, keymat, outbound=True)
    outbound.seq = seq - 1
    outbound._next_iv = packet[8:16]  # test-only hook: the vector fixes the IV
    assert outbound.encrypt(inner, next_header=1) == packet


def test_gcm_iv_is_the_sequence_counter() -> None:
    """RFC 4106 3.1: the 8-byte IV must never repeat under a key; ours is the 64-bit counter,
    and the packet equals one sealed independently with AESGCM."""
    keymat = os.urandom(AES128_GCM.keymat_len)
    out, inbound = pair(AES128_GCM, keymat=keymat)
    inner = b"x" * 21
    for seq in range(1, 4):
        packet = out.encrypt(inner)
        assert packet[8:16] == seq.to_bytes(8, "big")
        plaintext = inner + reference_trailer(len(inner), 4, 4)
        assert packet == reference_gcm_packet(keymat, 0x1234, seq, packet[8:16], plaintext)
        assert inbound.decrypt(packet) == (4, inner)


# --- the persistent CBC contexts equal fresh per-packet contexts ------------------------------


@pytest.mark.parametrize("transform", CBC_TRANSFORMS, ids=lambda t: t.name)
def test_persistent_encryptor_equals_fresh_context(transform: EspTransform) -> None:
    """RFC 3602 / RFC 2451 CBC under the packet's own IV: every packet from the long-lived
    encryptor (counter block trick) equals the textbook packet a fresh context builds with the
    IV it carries, and no IV repeats."""
    keymat = os.urandom(transform.keymat_len)
    out = EspSA(0x5555, transform, keymat, outbound=True)
    rng = random.Random(3602)
    ivs = set()
    for seq in range(1, 60):
        inner = rng.randbytes(rng.randrange(0, 300))
        packet = out.encrypt(inner, next_header=seq % 256)
        iv = packet[8 : 8 + transform.iv_len]
        ivs.add(iv)
        plaintext = inner + reference_trailer(len(inner), seq % 256, transform.block_size)
        assert packet == reference_cbc_packet(transform, keymat, 0x5555, seq, iv, plaintext)
    assert len(ivs) == 59


@pytest.mark.parametrize("transform", CBC_TRANSFORMS, ids=lambda t: t.name)
def test_persistent_decryptor_equals_fresh_context(transform: EspTransform) -> None:
    """Packets built the textbook way (fresh context, random IV each) decrypt correctly in
    sequence through the long-lived decryptor: its garbage first block is dropped every time."""
    keymat = os.urandom(transform.keymat_len)
    inbound = EspSA(0x5555, transform, keymat, outbound=False)
    rng = random.Random(4303)
    for seq in range(1, 60):
        inner = rng.randbytes(rng.randrange(0, 300))
        plaintext = inner + reference_trailer(len(inner), 4, transform.block_size)
        iv = rng.randbytes(transform.iv_len)
        packet = reference_cbc_packet(transform, keymat, 0x5555, seq, iv, plaintext)
        assert inbound.decrypt(packet) == (4, inner)


def test_forced_iv_leaves_the_persistent_context_alone() -> None:
    """The test-only IV hook encrypts on a one-off context: the next packets are still right."""
    keymat = os.urandom(AES128_SHA1.keymat_len)
    out, inbound = pair(AES128_SHA1, keymat=keymat)
    assert inbound.decrypt(out.encrypt(b"a" * 30)) == (4, b"a" * 30)
    out._next_iv = bytes(16)
    forced = out.encrypt(b"b" * 30)
    assert forced[8:24] == bytes(16)
    assert inbound.decrypt(forced) == (4, b"b" * 30)
    assert inbound.decrypt(out.encrypt(b"c" * 30)) == (4, b"c" * 30)
    out._next_iv = b"short"
    with pytest.raises(CryptoError):
        out.encrypt(b"d")


# --- round trips and counters ---------------------------------------------------------------


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(SUPPORTED_TRANSFORMS), st.lists(st.binary(max_size=1500), min_size=1, max_size=8))
def test_round_trip_every_transform(transform: EspTransform, inners: list[bytes]) -> None:
    """RFC 4303 2: outbound then inbound gives back every inner packet and next header; the
    packet is 4-byte aligned with the transform's IV and ICV lengths; counters follow."""
    out, inbound = pair(transform)
    for n, inner in enumerate(inners, start=1):
        packet = out.encrypt(inner, next_header=n)
        assert len(packet) % 4 == 0
        body = len(packet) - 8 - transform.iv_len - transform.icv_len
        assert body % transform.block_size == 0
        assert len(inner) + 2 <= body < len(inner) + 2 + transform.block_size
        assert peek_spi(packet) == 0x1234
        assert inbound.decrypt(packet) == (n, inner)
    total = sum(map(len, inners))
    assert (out.packets, out.bytes, out.seq) == (len(inners), total, len(inners))
    assert (inbound.packets, inbound.bytes, inbound.seq) == (len(inners), total, len(inners))
    assert not any(out.errors.values()) and not any(inbound.errors.values())


@pytest.mark.parametrize("transform", SUPPORTED_TRANSFORMS, ids=lambda t: t.name)
def test_round_trip_all_sizes(transform: EspTransform) -> None:
    """Every inner length across two blocks of residues, including empty (RFC 4303 2.6 dummy)."""
    out, inbound = pair(transform)
    for size in [*range(0, 40), 1399, 1400, 1401]:
        inner = os.urandom(size)
        assert inbound.decrypt(out.encrypt(inner, next_header=59 if size == 0 else 4)) == (
            59 if size == 0 else 4,
            inner,
        )


@pytest.mark.parametrize("transform", [AES128_GCM, AES128_SHA1], ids=lambda t: t.name)
def test_decrypt_accepts_any_bytes_like(transform: EspTransform) -> None:
    """A daemon may hand over a bytearray or a memoryview of its receive buffer."""
    out, inbound = pair(transform)
    for wrap in (bytes, bytearray, memoryview):
        inner = os.urandom(100)
        assert inbound.decrypt(wrap(out.encrypt(inner))) == (4, inner)  # type: ignore[arg-type]


def test_keymat_length_and_spi_are_checked() -> None:
    """KEYMAT must be exactly enc_key_len + auth_key_len; SPI 0 is reserved (RFC 4303 2.1)."""
    with pytest.raises(CryptoError):
        EspSA(0x1234, AES128_SHA1, bytes(35), outbound=True)
    with pytest.raises(CryptoError):
        EspSA(0, AES128_SHA1, bytes(36), outbound=True)
    with pytest.raises(CryptoError):
        EspSA(1 << 32, AES128_SHA1, bytes(36), outbound=True)


def test_wrong_direction_is_a_programming_error() -> None:
    out, inbound = pair(AES128_GCM)
    with pytest.raises(CryptoError):
        inbound.encrypt(b"x")
    with pytest.raises(CryptoError):
        out.decrypt(out.encrypt(b"x"))


def test_next_header_must_fit_a_byte() -> None:
    out, _ = pair(AES128_SHA1)
    with pytest.raises(CryptoError):
        out.encrypt(b"x", next_header=256)


# --- sequence numbers and replay ------------------------------------------------------------


def test_sequence_overflow_before_wrapping() -> None:
    """RFC 4303 3.3.3: without ESN the counter must not cycle; 2^32-1 is the last number sent."""
    out, inbound = pair(AES128_GCM, window=64)
    out.seq = 0xFFFFFFFE
    last = out.encrypt(b"last")
    assert struct.unpack(">I", last[4:8])[0] == 0xFFFFFFFF
    with pytest.raises(EspSequenceOverflow):
        out.encrypt(b"one too many")
    assert out.errors["seq_overflow"] == 1
    assert (out.seq, out.packets) == (0xFFFFFFFF, 1)
    assert inbound.decrypt(last) == (4, b"last")
    assert inbound.seq == 0xFFFFFFFF


@pytest.mark.parametrize("transform", [AES128_GCM, AES128_SHA1], ids=lambda t: t.name)
def test_replay_refused_and_counted(transform: EspTransform) -> None:
    """RFC 4303 3.4.3: a duplicate and a packet left of the window are refused (EspReplay,
    counted); packets out of order inside the window are accepted."""
    out, inbound = pair(transform, window=32)
    packets = [out.encrypt(seq.to_bytes(4, "big")) for seq in range(1, 41)]
    for packet in packets[10:40]:
        inbound.decrypt(packet)
    inbound.decrypt(packets[9])  # seq 10: inside the window (40 - 31 = 9 is the left edge)
    with pytest.raises(EspReplay):
        inbound.decrypt(packets[39])  # duplicate
    with pytest.raises(EspReplay):
        inbound.decrypt(packets[7])  # seq 8: left of the window
    assert inbound.errors["replay"] == 2
    assert (inbound.packets, inbound.seq) == (31, 40)


def test_sequence_zero_refused() -> None:
    """RFC 4303 3.3.3: no valid packet carries sequence number 0, even with a good ICV."""
    keymat = os.urandom(AES128_SHA1.keymat_len)
    _, inbound = pair(AES128_SHA1, keymat=keymat)
    packet = reference_cbc_packet(AES128_SHA1, keymat, 0x1234, 0, bytes(16), reference_trailer(0, 59, 16))
    with pytest.raises(EspReplay):
        inbound.decrypt(packet)
    assert inbound.errors["replay"] == 1


def test_failed_icv_does_not_move_the_window() -> None:
    """RFC 4303 3.4.3: the window is updated only after the ICV verified."""
    out, inbound = pair(AES128_GCM)
    packet = out.encrypt(b"hello")
    forged = packet[:-1] + bytes((packet[-1] ^ 1,))
    with pytest.raises(EspAuthFailed):
        inbound.decrypt(forged)
    assert inbound.decrypt(packet) == (4, b"hello")
    assert inbound.errors["auth_failed"] == 1


# --- integrity, truncation, padding ---------------------------------------------------------


@pytest.mark.parametrize("transform", SUPPORTED_TRANSFORMS, ids=lambda t: t.name)
def test_every_flipped_bit_is_refused(transform: EspTransform) -> None:
    """RFC 4303 3.4.4: a flipped bit anywhere (SPI, sequence number, IV, ciphertext, ICV) fails
    the ICV (for GCM the tag: SPI and seq are its AAD). Sequence number 5 of a fresh SA keeps
    every flipped number nonzero and inside the window, so the ICV is what refuses it."""
    out, inbound = pair(transform)
    out.seq = 4
    inner = os.urandom(40)
    packet = out.encrypt(inner)
    for bit in range(len(packet) * 8):
        flipped = bytearray(packet)
        flipped[bit // 8] ^= 0x80 >> (bit % 8)
        with pytest.raises(EspAuthFailed):
            inbound.decrypt(bytes(flipped))
    assert inbound.errors["auth_failed"] == len(packet) * 8
    assert inbound.decrypt(packet) == (4, inner)


@pytest.mark.parametrize("transform", SUPPORTED_TRANSFORMS, ids=lambda t: t.name)
def test_truncated_refused(transform: EspTransform) -> None:
    """RFC 4303 3.4: too short for header, IV, one block and ICV, or not whole blocks /
    4-byte words: EspTruncated, counted, before any crypto."""
    out, inbound = pair(transform)
    inner = os.urandom(33)
    packet = out.encrypt(inner)
    # Header, IV, the smallest encrypted trailer (one block, or one 4-byte word for GCM), ICV.
    shortest = 8 + transform.iv_len + (4 if transform.auth is None else transform.block_size) + transform.icv_len
    cuts = [*range(0, shortest), len(packet) - 1, len(packet) - 2, len(packet) - 3]
    for cut in cuts:
        with pytest.raises(EspTruncated):
            inbound.decrypt(packet[:cut])
    assert inbound.errors["truncated"] == len(cuts)
    with pytest.raises(EspTruncated):
        peek_spi(packet[:7])
    assert inbound.decrypt(packet) == (4, inner)


def bad_padding_packets(transform: EspTransform, keymat: bytes) -> list[bytes]:
    """Well-authenticated packets whose decrypted trailer is wrong, built independently."""
    align = transform.block_size
    payload = b"p" * (3 * align - 5)  # 3 bytes of padding needed
    good = payload + bytes((1, 2, 3, 3, 4))
    trailers = [
        payload + bytes((1, 2, 4, 3, 4)),  # pad bytes not 1, 2, 3
        payload + bytes((0, 0, 0, 3, 4)),  # zero padding (some stacks send it: strict refusal)
        payload[:-1] + bytes((1, 2, 3, 4, 3, 4)),  # padding shifted by one byte: 2, 3, 4
        payload + bytes((1, 2, 3, 255, 4)),  # pad length longer than the whole payload
    ]
    assert len({len(t) for t in [good, *trailers]}) == 1
    if transform.auth is None:
        return [reference_gcm_packet(keymat, 0x77, n, n.to_bytes(8, "big"), t) for n, t in enumerate(trailers, 1)]
    return [
        reference_cbc_packet(transform, keymat, 0x77, n, os.urandom(transform.iv_len), t)
        for n, t in enumerate(trailers, 1)
    ]


@pytest.mark.parametrize("transform", SUPPORTED_TRANSFORMS, ids=lambda t: t.name)
def test_bad_padding_refused(transform: EspTransform) -> None:
    """RFC 4303 2.4: padding is 1, 2, 3, ... and the receiver may check it; a pad length larger
    than the payload is impossible. Both refused with EspBadPadding after the ICV passed; the
    window does not move (the same sequence number is later accepted)."""
    keymat = os.urandom(transform.keymat_len)
    inbound = EspSA(0x77, transform, keymat, outbound=False)
    for packet in bad_padding_packets(transform, keymat):
        with pytest.raises(EspBadPadding):
            inbound.decrypt(packet)
    assert inbound.errors["bad_padding"] == 4
    assert inbound.packets == 0
    out = EspSA(0x77, transform, keymat, outbound=True)
    assert inbound.decrypt(out.encrypt(b"fine")) == (4, b"fine")


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(SUPPORTED_TRANSFORMS), st.binary(max_size=120), st.booleans())
def test_decrypt_raises_only_esp_errors(transform: EspTransform, junk: bytes, own_spi: bool) -> None:
    """For any bytes at all, decrypt returns or raises an EspError subclass, and counts it."""
    inbound = EspSA(0x1234, transform, bytes(transform.keymat_len), outbound=False)
    packet = (b"\x00\x00\x12\x34" + junk) if own_spi else junk
    try:
        inbound.decrypt(packet)
    except EspError as exc:
        assert inbound.errors[exc.kind] == 1


def test_peek_spi() -> None:
    """The demux reads the SPI from the first 4 bytes (RFC 4303 2.1)."""
    assert peek_spi(hx("deadbeef 00000001")) == 0xDEADBEEF
    with pytest.raises(EspTruncated):
        peek_spi(b"")
