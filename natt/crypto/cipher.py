"""CBC encryption of IKEv1 messages after the header (RFC 2409 appendix B), not ESP.

IKEv1 carries no IV in the message: the first IV of phase 1 comes from the DH public
values (keys.phase1_iv), every later one is the last ciphertext block of the previous
message in the same exchange (iv_for_next), and each phase 2 exchange starts from
keys.phase2_iv. So these functions take the IV from the caller and do raw CBC.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import BlockCipherAlgorithm, Cipher, algorithms, modes

from natt.errors import CryptoError, DecryptionError, UnsupportedAlgorithm
from natt.wire.constants import IkeEncryption

try:
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES as _TripleDES
except ImportError:  # cryptography before 43 has it only in the main namespace
    from cryptography.hazmat.primitives.ciphers.algorithms import TripleDES as _TripleDES  # type: ignore[assignment]

__all__ = ["AES_128", "AES_192", "AES_256", "TRIPLE_DES", "IkeCipher", "get_cipher", "iv_for_next", "pad_ike"]


@dataclass(frozen=True)
class IkeCipher:
    """One negotiated IKE Encryption Algorithm (with its key length for AES)."""

    id: int
    key_len: int  # bytes
    block_size: int  # bytes
    name: str  # as the concentrator displays it
    weak: bool

    def encrypt(self, key: bytes, iv: bytes, plaintext: bytes) -> bytes:
        """Raw CBC; the caller pads first (pad_ike), so a partial block is a bug: CryptoError."""
        self._check_key_iv(key, iv)
        if not plaintext or len(plaintext) % self.block_size:
            raise CryptoError(
                f"{self.name}: plaintext of {len(plaintext)} bytes is not a positive multiple of {self.block_size}"
            )
        encryptor = Cipher(self._algorithm(key), modes.CBC(iv)).encryptor()
        return encryptor.update(plaintext) + encryptor.finalize()

    def decrypt(self, key: bytes, iv: bytes, ciphertext: bytes) -> bytes:
        """Raw CBC; padding stays on (the payload chain's lengths tell where the data ends)."""
        self._check_key_iv(key, iv)
        if not ciphertext or len(ciphertext) % self.block_size:
            # The peer's doing (or a wrong key length on the wire): a malformed message.
            raise DecryptionError(
                f"{self.name}: ciphertext of {len(ciphertext)} bytes is not a positive multiple of {self.block_size}"
            )
        decryptor = Cipher(self._algorithm(key), modes.CBC(iv)).decryptor()
        return decryptor.update(ciphertext) + decryptor.finalize()

    def _algorithm(self, key: bytes) -> BlockCipherAlgorithm:
        if self.id == IkeEncryption.TRIPLE_DES_CBC:
            return _TripleDES(key)
        return algorithms.AES(key)

    def _check_key_iv(self, key: bytes, iv: bytes) -> None:
        # Both come from our own key derivation, so a wrong length is our bug, not the peer's.
        if len(key) != self.key_len:
            raise CryptoError(f"{self.name}: key has {len(key)} bytes, expected {self.key_len}")
        if len(iv) != self.block_size:
            raise CryptoError(f"{self.name}: IV has {len(iv)} bytes, expected {self.block_size}")


# 3DES is weak by its 64-bit block (Sweet32), not by its key.
TRIPLE_DES = IkeCipher(int(IkeEncryption.TRIPLE_DES_CBC), 24, 8, "3DES-168", True)
AES_128 = IkeCipher(int(IkeEncryption.AES_CBC), 16, 16, "AES-128", False)
AES_192 = IkeCipher(int(IkeEncryption.AES_CBC), 24, 16, "AES-192", False)
AES_256 = IkeCipher(int(IkeEncryption.AES_CBC), 32, 16, "AES-256", False)

_AES_BY_BITS = {128: AES_128, 192: AES_192, 256: AES_256}


def get_cipher(cipher_id: int, key_bits: int | None) -> IkeCipher:
    """The cipher an Encryption Algorithm attribute (plus Key Length, for AES) names."""
    if cipher_id == IkeEncryption.TRIPLE_DES_CBC:
        return TRIPLE_DES  # fixed key length: the Key Length attribute does not apply
    if cipher_id == IkeEncryption.AES_CBC:
        # RFC 3602 makes Key Length mandatory for AES in IKE; peers that leave it out
        # mean the 128-bit default, which is what everyone else assumes too.
        cipher = _AES_BY_BITS.get(128 if key_bits is None else key_bits)
        if cipher is None:
            raise UnsupportedAlgorithm(f"AES-CBC with a {key_bits}-bit key is not supported")
        return cipher
    raise UnsupportedAlgorithm(f"encryption algorithm {_describe(cipher_id)} is not supported")


def _describe(cipher_id: int) -> str:
    try:
        return f"{cipher_id} ({IkeEncryption(cipher_id).name})"
    except ValueError:
        return str(cipher_id)


def pad_ike(payload: bytes, block_size: int) -> bytes:
    """Pad a message body to a whole number of blocks before encryption.

    RFC 2409 leaves the padding's content open and receivers must not check it (the
    payload chain's own lengths say where the data ends). We add 1..block_size bytes:
    zeros, the last one giving their count. strongSwan's IKEv1 code adds the same number
    of bytes but leaves them all zero; either form is fine for every receiver.
    """
    if not 0 < block_size < 256:
        raise CryptoError(f"block size {block_size} cannot be padded to with a one-byte count")
    count = block_size - len(payload) % block_size
    return payload + bytes(count - 1) + bytes([count])


def iv_for_next(ciphertext: bytes, block_size: int) -> bytes:
    """The IV for the next message of the exchange: the last ciphertext block of this one."""
    if block_size <= 0 or len(ciphertext) < block_size:
        raise CryptoError(f"ciphertext of {len(ciphertext)} bytes has no whole {block_size}-byte block")
    return ciphertext[-block_size:]
