"""Salted password hashes for XAUTH users: scrypt, stored as 'scrypt$N$r$p$salt$hash' (hex)."""

from __future__ import annotations

import hashlib
import hmac
import os
import threading

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


_dummy_hash: str | None = None
_dummy_lock = threading.Lock()


def dummy_hash() -> str:
    """A hash of a random password, made once per process with the same parameters as real ones: checking an
    unknown user against it costs what checking a known one does, so timing does not tell who exists."""
    global _dummy_hash
    with _dummy_lock:
        if _dummy_hash is None:
            _dummy_hash = hash_password(os.urandom(24).hex())
        return _dummy_hash


def verify_unknown_user(password: str) -> bool:
    """Spend one scrypt, as a known user's check would, and refuse."""
    verify_password(dummy_hash(), password)
    return False


class CachingVerifier:
    """verify_password, remembering successes so a user's next login costs one HMAC instead of one scrypt.

    scrypt is slow on purpose (tens of milliseconds); with thousands of clients logging in at once it would be
    the concentrator's whole CPU. After a successful check this keeps HMAC-SHA256(per-process random key,
    password) for (user, stored hash): a later login with the same password matches it, and a changed stored
    hash (reload) is looked up afresh. Failures are never remembered, and a password that does not match the
    remembered one still gets the full scrypt check: refusing it at once would tell a timing observer that
    the user exists and has logged in before. The key never leaves memory, so the entries are no use
    without the process's memory, which holds the passwords as they arrive anyway.
    """

    def __init__(self, max_entries: int = 200_000) -> None:
        self._key = os.urandom(32)
        self._ok: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()  # the daemon checks passwords on more than one worker thread
        self.max_entries = max_entries

    def verify(self, user: str, stored: str, password: str) -> bool:
        tag = hmac.new(self._key, password.encode(), hashlib.sha256).digest()
        with self._lock:
            known = self._ok.get((user, stored))
        if known is not None and hmac.compare_digest(known, tag):
            return True
        if not verify_password(stored, password):
            return False
        with self._lock:
            if len(self._ok) >= self.max_entries:
                self._ok.clear()
            self._ok[(user, stored)] = tag
        return True
