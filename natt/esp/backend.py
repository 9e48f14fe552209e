"""What actually runs the ESP crypto: for the daemons' startup log and the benchmark report."""

from __future__ import annotations

import cryptography
from cryptography.hazmat.backends.openssl import backend as _openssl

from natt.esp.transforms import SUPPORTED_TRANSFORMS, EspTransform
from natt.wire.constants import AuthAlgorithm, EspTransformId

__all__ = ["backend_info"]

# OpenSSL's own names for the EVP ciphers and HMAC digests sa.py asks cryptography for.
_HMAC_NAMES = {
    AuthAlgorithm.HMAC_MD5: "HMAC-MD5",
    AuthAlgorithm.HMAC_SHA1: "HMAC-SHA1",
    AuthAlgorithm.HMAC_SHA2_256: "HMAC-SHA256",
}


def backend_info() -> dict[str, str]:
    """The OpenSSL behind `cryptography`, its version, and the primitive of each transform."""
    info = {
        "openssl": _openssl.openssl_version_text(),
        "cryptography": cryptography.__version__,
    }
    for transform in SUPPORTED_TRANSFORMS:
        info[transform.name] = _primitive(transform)
    return info


def _primitive(transform: EspTransform) -> str:
    if transform.auth is None:
        return f"OpenSSL EVP aes-{transform.key_bits}-gcm (cryptography AESGCM)"
    if transform.transform_id == EspTransformId.TRIPLE_DES:
        cipher = "OpenSSL EVP des-ede3-cbc (cryptography TripleDES)"
    else:
        cipher = f"OpenSSL EVP aes-{transform.key_bits}-cbc (cryptography Cipher)"
    # The HMAC is cryptography's too (faster here than hashlib's hmac.digest: see sa.py).
    return f"{cipher} + OpenSSL {_HMAC_NAMES[AuthAlgorithm(transform.auth)]} (cryptography HMAC)"
