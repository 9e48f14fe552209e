"""XAUTH password checks cost the same whoever asks, and the concentrator's throttle keys load and validate.

Cost is counted in scrypt calls (hashlib.scrypt wrapped), never timed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from natt.ike.throttle import ThrottleSettings
from natt_daemons.common import passwords
from natt_daemons.common.config import ConfigError
from natt_daemons.common.passwords import CachingVerifier, hash_password
from natt_daemons.concentrator import config as conc_config

pytestmark = pytest.mark.unit

BASE = '[concentrator]\naddress = "198.51.100.50"\n{extra}\n[groups.g]\npsk = "k"\n[users]\nbob = "{bob}"\n'


@pytest.fixture
def scrypt_calls(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """Counts hashlib.scrypt calls from now on (the dummy hash is made before counting starts)."""
    passwords.dummy_hash()
    calls = [0]
    real = hashlib.scrypt

    def counting(*args: Any, **kwargs: Any) -> bytes:
        calls[0] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", counting)
    return lambda: calls[0]


def _load(tmp_path: Path, extra: str = "") -> conc_config.ConcentratorSettings:
    p = tmp_path / "c.toml"
    p.write_text(BASE.format(extra=extra, bob=hash_password("right")))
    return conc_config.load(p)


def test_unknown_user_costs_one_scrypt(tmp_path: Path, scrypt_calls: Callable[[], int]) -> None:
    verify = _load(tmp_path).policy.verify_user
    before = scrypt_calls()
    assert verify("mallory", "right") is False
    assert scrypt_calls() - before == 1


def test_known_user_costs_one_scrypt_then_none_once_cached(tmp_path: Path, scrypt_calls: Callable[[], int]) -> None:
    verify = _load(tmp_path).policy.verify_user
    before = scrypt_calls()
    assert verify("bob", "right")
    assert scrypt_calls() - before == 1, "first login: the full check"
    assert verify("bob", "right")
    assert scrypt_calls() - before == 1, "a cached success costs no scrypt"


def test_wrong_password_after_a_cached_success_costs_one_scrypt(tmp_path: Path,
                                                                scrypt_calls: Callable[[], int]) -> None:
    """No fast refusal that would tell a timing observer 'this user exists and logged in before'."""
    verify = _load(tmp_path).policy.verify_user
    assert verify("bob", "right")
    before = scrypt_calls()
    assert verify("bob", "wrong") is False
    assert scrypt_calls() - before == 1
    assert verify("bob", "right"), "the refusal did not spoil the cache entry"
    assert scrypt_calls() - before == 1


def test_caching_verifier_alone(scrypt_calls: Callable[[], int]) -> None:
    v = CachingVerifier()
    stored = hash_password("right")
    before = scrypt_calls()
    assert not v.verify("bob", stored, "wrong")
    assert v.verify("bob", stored, "right")
    assert v.verify("bob", stored, "right")
    assert not v.verify("bob", stored, "wrong")
    assert scrypt_calls() - before == 3  # wrong, first right, wrong again: never the cached right


def test_unparseable_stored_hash_costs_one_scrypt_and_refuses(tmp_path: Path,
                                                             scrypt_calls: Callable[[], int]) -> None:
    p = tmp_path / "c.toml"
    p.write_text(BASE.format(extra="", bob="scrypt$broken"))
    verify = conc_config.load(p).policy.verify_user
    before = scrypt_calls()
    assert verify("bob", "anything") is False
    assert scrypt_calls() - before == 1


def test_dummy_hash_is_made_once_with_the_real_parameters() -> None:
    first = passwords.dummy_hash()
    assert first is passwords.dummy_hash()
    assert first.split("$")[1:4] == [str(passwords.N), str(passwords.R), str(passwords.P)]


# ---- [concentrator] xauth_* keys → ThrottleSettings ----------------------------------------------------


def test_throttle_defaults_and_keys(tmp_path: Path) -> None:
    assert _load(tmp_path).policy.xauth_throttle == ThrottleSettings()
    s = _load(tmp_path, "xauth_free_failures = 5\nxauth_backoff = 1.5\nxauth_backoff_max = 30\n"
                        "xauth_lockout_failures = 20\nxauth_lockout_seconds = 0\n").policy.xauth_throttle
    assert (s.free_failures, s.backoff_base, s.backoff_max, s.lockout_failures, s.lockout_seconds) == (
        5, 1.5, 30.0, 20, 0.0)


@pytest.mark.parametrize(("extra", "key"), [
    ("xauth_free_failures = -1", "xauth_free_failures"),
    ("xauth_free_failures = 2.5", "xauth_free_failures"),
    ("xauth_free_failures = true", "xauth_free_failures"),
    ("xauth_backoff = 0", "xauth_backoff"),
    ('xauth_backoff = "2s"', "xauth_backoff"),
    ("xauth_backoff_max = 1e9", "xauth_backoff_max"),
    ("xauth_backoff = 10\nxauth_backoff_max = 5", "xauth_backoff_max"),
    ("xauth_lockout_failures = -3", "xauth_lockout_failures"),
    ("xauth_lockout_seconds = -1", "xauth_lockout_seconds"),
])
def test_throttle_keys_are_validated(tmp_path: Path, extra: str, key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        _load(tmp_path, extra)
