"""One ESP security association: the per-packet userspace data path (RFC 4303, RFC 4106, RFC 3602).

Per-packet cost for a 1400-byte inner packet, measured with a scratch script (batches of
2000 packets through EspSA.encrypt then EspSA.decrypt, best of 3 x 30 batches) on the
2-core dev machine, Python 3.11, cryptography 50 on OpenSSL 4; microseconds per packet:

    transform                      encrypt  decrypt
    AES-128-GCM-16                     2.5      3.0
    AES-256-GCM-16                     2.6      3.0
    AES-128-CBC/HMAC-SHA1-96           4.5      4.1
    AES-128-CBC/HMAC-SHA2-256-128      4.6      4.1
    AES-128-CBC/HMAC-MD5-96            6.0      5.4
    AES-192-CBC/HMAC-SHA1-96           4.8      4.0
    AES-192-CBC/HMAC-SHA2-256-128      4.8      4.1
    AES-192-CBC/HMAC-MD5-96            6.1      5.3
    AES-256-CBC/HMAC-SHA1-96           5.0      4.0
    AES-256-CBC/HMAC-SHA2-256-128      5.1      4.1
    AES-256-CBC/HMAC-MD5-96            6.4      5.5
    3DES-168/HMAC-MD5-96              57.4     56.5   (3DES itself: ~56 us for 1.4 kB)
    3DES-168/HMAC-SHA1-96             56.1     55.3

For scale, on the same machine: AESGCM.encrypt alone 2.4 us, AESGCM.decrypt 1.5 us, a
1456-byte update on a live AES-CBC encryptor 1.65 us (decryptor 0.8 us), a keyed
HMAC-SHA1 copy over 1440 bytes 1.6 us, and creating a fresh Cipher context 5.6 us.

Everything that costs more than the packet itself is built once per SA: creating a
`cryptography` Cipher context costs more than encrypting 1400 bytes, so the CBC contexts
live as long as the SA (see _CbcEngine for why that is still correct CBC with fresh IVs),
the AESGCM object is keyed once, and the HMAC is keyed once and copied per packet
(`HMAC.copy()` measured 1.6 us for SHA1 against 2.9 us for the one-shot `hmac.digest`,
whose hashlib sits on the slower system OpenSSL 3.0 here).
"""

from __future__ import annotations

import functools
import struct
from hmac import compare_digest

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from natt.errors import (
    CryptoError,
    EspAuthFailed,
    EspBadPadding,
    EspError,
    EspSequenceOverflow,
    EspTruncated,
)
from natt.esp.replay import ReplayWindow
from natt.esp.transforms import GCM_SALT_LEN, EspTransform
from natt.wire.constants import AuthAlgorithm, EspTransformId

try:
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES as _TripleDES
except ImportError:  # cryptography before 43 has it only in the main namespace
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES as _TripleDES  # type: ignore[assignment]

__all__ = ["ESP_HEADER_LEN", "EspSA", "peek_spi"]

ESP_HEADER_LEN = 8  # SPI + sequence number
_IPV4 = 4  # next header of a tunnelled IPv4 packet
_HEADER = struct.Struct(">II")
_SPI = _SEQ = struct.Struct(">I")
_MAX_SEQ = 0xFFFFFFFF  # no ESN: the counter must not cycle (RFC 4303 3.3.3)
# RFC 4303 2.4: padding bytes are 1, 2, 3, ...; _PADS[n] is the padding of length n.
_PADS: tuple[bytes, ...] = tuple(bytes(range(1, n + 1)) for n in range(256))

_HMAC_HASHES: dict[int, type[hashes.HashAlgorithm]] = {
    AuthAlgorithm.HMAC_MD5: hashes.MD5,
    AuthAlgorithm.HMAC_SHA1: hashes.SHA1,
    AuthAlgorithm.HMAC_SHA2_256: hashes.SHA256,
}


def peek_spi(packet: bytes) -> int:
    """The SPI of an ESP packet, for the demux to find its SA."""
    if len(packet) < ESP_HEADER_LEN:
        raise EspTruncated(f"ESP packet of {len(packet)} bytes has no header")
    spi: int = _SPI.unpack_from(packet)[0]
    return spi


@functools.lru_cache(maxsize=64)
def _trailer_table(align: int, next_header: int) -> tuple[bytes, ...]:
    """Padding + Pad Length + Next Header, indexed by len(payload) % align.

    The trailer depends on nothing else, so one table per (alignment, next header) is shared
    by every SA (thousands on a concentrator) and the data path only indexes it.
    """
    if not 0 <= next_header <= 255:
        raise CryptoError(f"next header {next_header} does not fit a byte")
    # Smallest padding making payload + padding + 2 a multiple of the alignment.
    pads = ((-(residue + 2)) % align for residue in range(align))
    return tuple(_PADS[p] + bytes((p, next_header)) for p in pads)


def _bad_padding(plain: bytes, start: int) -> EspBadPadding:
    """The refusal of a decrypted trailer (kept off the data path, which tests it inline).

    Strict, as RFC 4303 2.4 allows: the pad length must fit and the pad bytes must be
    1, 2, 3, ... (a wrong pattern means a wrong key or a broken peer, never valid data).
    """
    pad_len = plain[-2]
    if len(plain) - 2 - pad_len < start:
        return EspBadPadding(f"pad length {pad_len} is larger than the payload")
    return EspBadPadding("padding bytes are not 1, 2, 3, ...")


class _GcmEngine:
    """AES-GCM-16 ESP (RFC 4106): nonce = salt || IV, AAD = SPI || sequence number."""

    __slots__ = ("_aead", "_salt", "_trailers", "forced_iv", "min_len")

    def __init__(self, transform: EspTransform, enc_key: bytes) -> None:
        self._aead = AESGCM(enc_key[:-GCM_SALT_LEN])
        self._salt = enc_key[-GCM_SALT_LEN:]
        self._trailers = _trailer_table(4, _IPV4)  # tunnel mode: the next header is almost always IPv4
        # Header, IV, the 4 aligned bytes holding at least pad length + next header, tag.
        self.min_len = ESP_HEADER_LEN + 8 + 4 + 16
        self.forced_iv: bytes | None = None  # tests only: see EspSA._next_iv

    def seal(self, spi: int, seq: int, inner: bytes, next_header: int) -> bytes:
        table = self._trailers if next_header == _IPV4 else _trailer_table(4, next_header)
        head = _HEADER.pack(spi, seq)
        # RFC 4106 3.1: the IV must never repeat under a key; the sequence number, which
        # the SA refuses to wrap, is a counter that does not.
        iv = seq.to_bytes(8, "big") if self.forced_iv is None else self._take_forced_iv()
        sealed = self._aead.encrypt(self._salt + iv, inner + table[len(inner) & 3], head)
        return b"".join((head, iv, sealed))  # one copy where chained + makes two

    def open(self, packet: bytes) -> tuple[int, bytes]:
        # AES-GCM needs no block alignment, but RFC 4303 2.4 still asks for 4-byte words.
        if len(packet) & 3:
            raise EspTruncated(f"ESP packet of {len(packet)} bytes is not 4-byte aligned")
        # Slices of bytes, not memoryviews: cryptography takes bytes faster than it
        # acquires a buffer (measured), and copying 1400 bytes costs less than the difference.
        try:
            plain = self._aead.decrypt(self._salt + packet[8:16], packet[16:], packet[:8])
        except InvalidTag:
            raise EspAuthFailed("AES-GCM tag mismatch") from None
        pad_len = plain[-2]
        end = len(plain) - 2 - pad_len
        if end < 0 or plain[end : end + pad_len] != _PADS[pad_len]:
            raise _bad_padding(plain, 0)
        return plain[-1], plain[:end]

    def _take_forced_iv(self) -> bytes:
        iv, self.forced_iv = self.forced_iv, None
        if iv is None or len(iv) != 8:
            raise CryptoError("a forced AES-GCM IV must have 8 bytes")
        return iv


class _CbcEngine:
    """AES-CBC or 3DES-CBC with a truncated HMAC, on contexts that live as long as the SA.

    Why a persistent context is still correct CBC with a fresh, unpredictable IV:

    CBC computes C[i] = E(P[i] XOR C[i-1]); a context that outlives one packet simply keeps
    the last ciphertext block as its chaining value. To encrypt a packet, the outbound
    context is fed one extra leading block (a counter) before the real plaintext. Its
    output C[0] = E(counter XOR previous chaining value) is sent as the packet's IV: every
    following block is then chained from C[0] exactly as a fresh context built with
    IV = C[0] would chain it. C[0] is the block cipher's output under the SA's secret key
    on an input (a counter XOR an earlier cipher output) that an attacker cannot choose and
    that repeats an earlier input only by chance, so without the key C[0] is unpredictable:
    what RFC 3602 3 asks of a CBC IV, and the "encrypt a nonce" method of NIST SP 800-38A
    appendix C. A per-packet context would cost more than the encryption itself.

    Inbound, the context is fed IV || ciphertext: P[i] = D(C[i]) XOR C[i-1] only looks one
    block back, so every block after the IV decrypts correctly; the first output block is
    D(IV) XOR the previous packet's last block, garbage, and is dropped.

    Both only hold if every call feeds whole blocks (a partial block would stay buffered
    inside the context and shift every later packet), which the length checks guarantee.
    """

    __slots__ = ("_algorithm", "_block", "_ctx", "_icv_len", "_mac", "_trailers", "forced_iv", "min_len")

    def __init__(self, transform: EspTransform, enc_key: bytes, auth_key: bytes, outbound: bool) -> None:
        self._block = transform.block_size
        self._icv_len = transform.icv_len
        self._algorithm = _cbc_algorithm(transform, enc_key)
        # The initial chaining value may be public: the first IV is E(counter XOR 0).
        cipher = Cipher(self._algorithm, modes.CBC(bytes(self._block)))
        self._ctx = cipher.encryptor() if outbound else cipher.decryptor()
        if transform.auth is None:
            raise CryptoError(f"{transform.name}: CBC without an HMAC is not supported")
        # Keyed once; each packet copies it (cheaper than a one-shot HMAC: see the top).
        self._mac = crypto_hmac.HMAC(auth_key, _HMAC_HASHES[transform.auth]())
        self._trailers = _trailer_table(self._block, _IPV4)
        # Header, IV, one block holding at least pad length + next header, ICV.
        self.min_len = ESP_HEADER_LEN + 2 * self._block + self._icv_len
        self.forced_iv: bytes | None = None  # tests only: see EspSA._next_iv

    def seal(self, spi: int, seq: int, inner: bytes, next_header: int) -> bytes:
        block = self._block
        table = self._trailers if next_header == _IPV4 else _trailer_table(block, next_header)
        trailer = table[len(inner) % block]
        if self.forced_iv is None:
            # The counter block's ciphertext becomes the IV (see the class docstring).
            body = self._ctx.update(b"".join((seq.to_bytes(block, "big"), inner, trailer)))
        else:
            body = self._seal_forced_iv(inner + trailer)
        packet = _HEADER.pack(spi, seq) + body
        mac = self._mac.copy()
        mac.update(packet)
        return packet + mac.finalize()[: self._icv_len]

    def open(self, packet: bytes) -> tuple[int, bytes]:
        block = self._block
        icv_at = len(packet) - self._icv_len
        if (icv_at - ESP_HEADER_LEN) % block:
            raise EspTruncated(f"ESP ciphertext of {icv_at - ESP_HEADER_LEN} bytes is not whole blocks")
        mac = self._mac.copy()
        mac.update(packet[:icv_at])
        # RFC 4303 3.4.4.1: verify the ICV before decrypting, in constant time.
        if not compare_digest(mac.finalize()[: self._icv_len], packet[icv_at:]):
            raise EspAuthFailed("ICV mismatch")
        plain = self._ctx.update(packet[ESP_HEADER_LEN:icv_at])
        pad_len = plain[-2]
        end = len(plain) - 2 - pad_len
        if end < block or plain[end : end + pad_len] != _PADS[pad_len]:
            raise _bad_padding(plain, block)
        return plain[-1], plain[block:end]

    def _seal_forced_iv(self, data: bytes) -> bytes:
        # Tests only (known-answer vectors fix the IV): a one-off context, leaving the
        # persistent one untouched.
        iv, self.forced_iv = self.forced_iv, None
        if iv is None or len(iv) != self._block:
            raise CryptoError(f"a forced CBC IV must have {self._block} bytes")
        encryptor = Cipher(self._algorithm, modes.CBC(iv)).encryptor()
        return iv + encryptor.update(data) + encryptor.finalize()


def _cbc_algorithm(transform: EspTransform, enc_key: bytes) -> BlockCipherAlgorithm:
    if transform.transform_id == EspTransformId.TRIPLE_DES:
        return _TripleDES(enc_key)
    return algorithms.AES(enc_key)


class EspSA:
    """One direction of an ESP SA: `encrypt` if outbound, `decrypt` if inbound.

    Counters are plain ints for the daemons' session views: `packets` and `bytes` (inner
    bytes) of accepted traffic, `errors` per EspError kind, `seq` the last sequence number
    sent (outbound) or the highest received (inbound). Not thread-safe: the CBC contexts
    carry state from packet to packet.
    """

    __slots__ = ("_engine", "_keys", "_outbound", "_replay", "bytes", "errors", "packets", "seq", "spi", "transform")

    def __init__(
        self,
        spi: int,
        transform: EspTransform,
        keymat: bytes,
        *,
        outbound: bool,
        replay_window: int = 128,
    ) -> None:
        # Both come from our own negotiation and key derivation: a wrong one is our bug.
        if not 0 < spi <= 0xFFFFFFFF:
            raise CryptoError(f"SPI {spi} is not a nonzero 32-bit value")
        if len(keymat) != transform.keymat_len:
            raise CryptoError(f"{transform.name}: KEYMAT has {len(keymat)} bytes, expected {transform.keymat_len}")
        self.spi = spi
        self.transform = transform
        self._outbound = outbound
        self.packets = 0
        self.bytes = 0
        self.seq = 0
        self.errors: dict[str, int] = {}  # filled on the first error of each kind (most SAs never see one)
        self._replay = ReplayWindow(replay_window)
        if not transform.is_aead and transform.auth is None:
            raise CryptoError(f"{transform.name}: CBC without an HMAC is not supported")
        # The cipher and MAC contexts (about 3 KB of OpenSSL memory per SA, more than everything else a
        # session holds) are built on the SA's first packet: a concentrator's many idle sessions, and the
        # SAs a client never sends on, do not pay for them. The KEYMAT itself stays (tens of bytes): the root-only
        # Wireshark key export (natt.wireshark) reads it.
        self._keys = bytes(keymat)
        self._engine: _GcmEngine | _CbcEngine | None = None

    def __repr__(self) -> str:
        direction = "out" if self._outbound else "in"
        return f"EspSA(spi=0x{self.spi:08x}, {self.transform.name}, {direction}, seq={self.seq})"

    @property
    def outbound(self) -> bool:
        return self._outbound

    def _start(self) -> _GcmEngine | _CbcEngine:
        """The contexts, on first use (see __init__)."""
        keymat, t = self._keys, self.transform
        enc_key, auth_key = keymat[: t.enc_key_len], keymat[t.enc_key_len :]
        engine = self._engine = (
            _GcmEngine(t, enc_key) if t.is_aead else _CbcEngine(t, enc_key, auth_key, self._outbound))
        return engine

    @property
    def keymat(self) -> bytes:
        """The KEYMAT this direction was built from: encryption key (with the GCM salt), then authentication key
        (RFC 2409 5.5). Read only by the Wireshark key export; never logged or shown."""
        return self._keys

    @property
    def _next_iv(self) -> bytes | None:
        """TESTS ONLY: the IV the next `encrypt` uses instead of its own (then cleared).

        Known-answer vectors (RFC 3602 4, the GCM ESP vectors) fix the IV; the data path
        never sets this.
        """
        return (self._engine or self._start()).forced_iv

    @_next_iv.setter
    def _next_iv(self, iv: bytes | None) -> None:
        (self._engine or self._start()).forced_iv = iv

    def encrypt(self, inner: bytes, next_header: int = 4) -> bytes:
        """The ESP packet (header, IV, ciphertext, ICV) carrying `inner`; 4 = IPv4 in tunnel mode."""
        if not self._outbound:
            raise CryptoError(f"{self!r} is inbound: it cannot encrypt")
        seq = self.seq
        if seq >= _MAX_SEQ:
            # RFC 4303 3.3.3: without ESN the SA must be rekeyed before the counter cycles.
            self.errors[EspSequenceOverflow.kind] = self.errors.get(EspSequenceOverflow.kind, 0) + 1
            raise EspSequenceOverflow(f"SPI 0x{self.spi:08x} has sent 2^32-1 packets: rekey")
        packet = (self._engine or self._start()).seal(self.spi, seq + 1, inner, next_header)
        self.seq = seq + 1
        self.packets += 1
        self.bytes += len(inner)
        return packet

    def decrypt(self, packet: bytes) -> tuple[int, bytes]:
        """(next header, inner packet) of an ESP packet; an EspError (counted) if refused."""
        if self._outbound:
            raise CryptoError(f"{self!r} is outbound: it cannot decrypt")
        # RFC 4303 3.4: lengths, SA, replay check, ICV, decrypt, then the window moves.
        engine = self._engine or self._start()
        try:
            if len(packet) < engine.min_len:
                raise EspTruncated(f"ESP packet of {len(packet)} bytes is shorter than {engine.min_len}")
            # The SPI already chose this SA (the demux's lookup, RFC 4303 3.4.2); it is
            # covered by the ICV, so a packet handed to the wrong SA fails authentication.
            seq = _SEQ.unpack_from(packet, 4)[0]
            replay = self._replay
            if seq <= replay.top:  # in-order traffic skips the call
                replay.check(seq)
            next_header, inner = engine.open(packet)
        except EspError as exc:
            self.errors[exc.kind] = self.errors.get(exc.kind, 0) + 1
            raise
        replay.update(seq)
        if seq > self.seq:
            self.seq = seq
        self.packets += 1
        self.bytes += len(inner)
        return next_header, inner
