"""HTTPS for the manager: the configured certificate, or a self-signed one made at first start and kept.

The self-signed certificate names the listen address (subjectAltName IP), so a browser told to trust it once
keeps trusting it; it is made again only when it no longer covers that address or is about to expire. Its
SHA-256 fingerprint is logged at every start, for the administrator to compare with what the browser shows.
"""

from __future__ import annotations

import datetime
import ipaddress
import logging
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

log = logging.getLogger("natt.manager")

SELF_SIGNED_CERT = "manager-cert.pem"
SELF_SIGNED_KEY = "manager-key.pem"
VALIDITY = datetime.timedelta(days=825)  # the longest a browser accepts for a leaf certificate
RENEW_BEFORE = datetime.timedelta(days=30)


class TlsError(Exception):
    """The certificate or key cannot be read, made or used; the message says which file and why."""


@dataclass(frozen=True)
class Certificate:
    cert: Path
    key: Path
    fingerprint: str  # SHA-256, colon-separated hex, as browsers show it
    self_signed: bool


def _fingerprint(cert: x509.Certificate) -> str:
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def _covers(cert: x509.Certificate, address: str, now: datetime.datetime) -> bool:
    if cert.not_valid_after_utc - now < RENEW_BEFORE:
        return False
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    return ipaddress.ip_address(address) in san.get_values_for_type(x509.IPAddress)


def make_self_signed(address: str, now: datetime.datetime | None = None) -> tuple[bytes, bytes]:
    """A P-256 key and a certificate for `address` (PEM each)."""
    now = now or datetime.datetime.now(datetime.UTC)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"natt-manager {address}"),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "natt (self-signed)")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(address)),
                                                    x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=False, content_commitment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _write_private(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    tmp.replace(path)


def self_signed(state_dir: Path, address: str) -> Certificate:
    """The kept self-signed certificate for `address`, made (again) when missing, expiring or for another address."""
    cert_path, key_path = state_dir / SELF_SIGNED_CERT, state_dir / SELF_SIGNED_KEY
    now = datetime.datetime.now(datetime.UTC)
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if key_path.exists() and _covers(cert, address, now):
            return Certificate(cert_path, key_path, _fingerprint(cert), True)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as e:
        log.warning("%s: cannot use it (%s); making a new self-signed certificate", cert_path, e)
    try:
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        cert_pem, key_pem = make_self_signed(address, now)
        _write_private(key_path, key_pem, 0o600)  # the key first: a certificate never names a key not there
        _write_private(cert_path, cert_pem, 0o644)
    except OSError as e:
        raise TlsError(f"cannot write the self-signed certificate into {state_dir}: {e.strerror or e}") from e
    cert = x509.load_pem_x509_certificate(cert_pem)
    log.info("made a self-signed certificate for %s in %s", address, state_dir)
    return Certificate(cert_path, key_path, _fingerprint(cert), True)


def configured(cert_path: Path, key_path: Path) -> Certificate:
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except OSError as e:
        raise TlsError(f"tls_cert {cert_path}: {e.strerror or e}") from e
    except ValueError as e:
        raise TlsError(f"tls_cert {cert_path}: not a PEM certificate ({e})") from e
    return Certificate(cert_path, key_path, _fingerprint(cert), False)


def server_context(cert: Certificate) -> ssl.SSLContext:
    """TLS 1.2 and later, the library's default ciphers; the certificate and key must match."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert.cert), str(cert.key))
    except OSError as e:
        raise TlsError(f"{cert.cert} / {cert.key}: {e.strerror or e}") from e
    except ssl.SSLError as e:
        raise TlsError(f"{cert.cert} / {cert.key}: {e.reason or e} (do they belong together?)") from e
    return ctx
