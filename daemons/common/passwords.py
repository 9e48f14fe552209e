"""Salted password hashes for XAUTH users: scrypt, stored as 'scrypt$N$r$p$salt$hash' (hex)."""

from __future__ import annotations

import hashlib
import hmac
import os

N, R, P = 2**14, 8, 1


class PasswordFormatError(ValueError):
    """A stored hash is not in the form this module writes."""


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=32)
    return f"scrypt${N}${R}${P}${salt.hex()}${digest.hex()}"


def verify_password(stored: str, password: str) -> bool:
    try:
        kind, n, r, p, salt, digest = stored.split("$")
        if kind != "scrypt":
            raise PasswordFormatError(f"unknown hash kind {kind!r}")
        want = bytes.fromhex(digest)
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(want), maxmem=2**27)
    except ValueError as e:
        raise PasswordFormatError(str(e)) from e
    return hmac.compare_digest(got, want)
