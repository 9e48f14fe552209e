"""LoginThrottle: backoff, lockout, forgetting and the memory bound, on a clock the test turns by hand."""

from __future__ import annotations

import math

import pytest

from natt.ike.throttle import Lockout, LoginThrottle, ThrottleSettings, Verdict

pytestmark = pytest.mark.unit

SRC = "192.0.2.10"


def _fail(t: LoginThrottle, n: int, now: float, user: str = "bob", source: str = SRC) -> list[Lockout]:
    started: list[Lockout] = []
    for _ in range(n):
        started += t.failed(user, source, now)
    return started


def test_free_failures_then_backoff_doubles_and_caps() -> None:
    t = LoginThrottle(ThrottleSettings(free_failures=3, backoff_base=2.0, backoff_max=10.0, lockout_failures=0))
    _fail(t, 3, 0.0)
    assert t.check("bob", SRC, 0.0).allowed, "the first three failures are free"
    waits = []
    for _ in range(5):
        t.failed("bob", SRC, 100.0)
        waits.append(t.check("bob", SRC, 100.0).wait)
    assert waits == [2.0, 4.0, 8.0, 10.0, 10.0]


def test_backoff_refuses_until_it_runs_out_and_names_the_key() -> None:
    t = LoginThrottle(ThrottleSettings(free_failures=0, backoff_base=5.0, lockout_failures=0))
    t.failed("bob", SRC, 10.0)
    v = t.check("bob", SRC, 12.0)
    assert v == Verdict(False, 3.0, False, "user", "bob") or v == Verdict(False, 3.0, False, "source", SRC)
    assert not v.locked
    assert t.check("bob", SRC, 15.0).allowed


def test_user_and_source_keys_are_independent() -> None:
    t = LoginThrottle(ThrottleSettings(free_failures=0, lockout_failures=0))
    for i in range(3):  # one user, many sources: the user key stops it
        t.failed("alice", f"198.51.100.{i}", 0.0)
    v = t.check("alice", "203.0.113.99", 0.5)
    assert (v.allowed, v.kind, v.key) == (False, "user", "alice")
    for i in range(3):  # many users, one source: the source key stops it
        t.failed(f"user{i}", "203.0.113.7", 0.0)
    v = t.check("carol", "203.0.113.7", 0.5)
    assert (v.allowed, v.kind, v.key) == (False, "source", "203.0.113.7")
    assert t.check("carol", "203.0.113.8", 0.5).allowed, "neither key has failed"


def test_lockout_starts_once_and_expires() -> None:
    t = LoginThrottle(ThrottleSettings(free_failures=100, lockout_failures=4, lockout_seconds=900.0))
    assert _fail(t, 3, 0.0) == []
    started = t.failed("bob", SRC, 50.0)
    assert sorted(started, key=lambda lo: lo.kind) == [Lockout("source", SRC, 4, 950.0),
                                                       Lockout("user", "bob", 4, 950.0)]
    assert t.failed("bob", SRC, 60.0) == [], "a lockout is reported when it starts, not again"
    v = t.check("bob", SRC, 100.0)
    assert (v.allowed, v.locked, v.wait) == (False, True, 850.0)
    assert len(t.lockouts(100.0)) == 2
    assert t.check("bob", SRC, 950.0).allowed
    assert t.lockouts(950.0) == []
    assert t.failed("bob", SRC, 951.0) == [], "after the lockout the key starts again from zero"


def test_lockout_seconds_zero_lasts_until_cleared() -> None:
    t = LoginThrottle(ThrottleSettings(free_failures=100, lockout_failures=2, lockout_seconds=0))
    started = _fail(t, 2, 0.0)
    assert {lo.until for lo in started} == {None}
    v = t.check("bob", SRC, 1e9)
    assert (v.allowed, v.locked, v.wait) == (False, True, math.inf)
    assert t.status(1e9)["lockouts"] == [{"kind": "user", "key": "bob", "failures": 2, "until": None},
                                         {"kind": "source", "key": SRC, "failures": 2, "until": None}]
    assert t.clear(user="bob") == 1
    v = t.check("bob", SRC, 1e9)
    assert (v.allowed, v.kind) == (False, "source"), "the source is still locked"
    assert t.clear(source=SRC) == 1
    assert t.check("bob", SRC, 1e9).allowed


def test_clear_counts_and_all() -> None:
    t = LoginThrottle(ThrottleSettings(free_failures=0, lockout_failures=0))
    t.failed("a", "192.0.2.1", 0.0)
    t.failed("b", "192.0.2.2", 0.0)
    assert t.clear(user="nobody") == 0
    assert t.clear(user="a", source="192.0.2.1") == 2
    assert t.clear() == 2  # b and its source
    assert t.status(0.0)["keys"] == 0
    assert t.check("b", "192.0.2.2", 0.0).allowed


def test_success_clears_counts_but_not_a_lockout() -> None:
    t = LoginThrottle(ThrottleSettings(free_failures=2, lockout_failures=0))
    _fail(t, 2, 0.0)
    t.succeeded("bob", SRC, 1.0)
    t.failed("bob", SRC, 2.0)
    assert t.check("bob", SRC, 2.0).allowed, "the success reset the count: this is a free failure again"

    locking = LoginThrottle(ThrottleSettings(free_failures=100, lockout_failures=1, lockout_seconds=60))
    locking.failed("bob", SRC, 0.0)
    locking.succeeded("bob", SRC, 1.0)  # a login that was already in flight when the lockout began
    assert locking.check("bob", SRC, 2.0).locked


def test_quiet_keys_are_forgotten() -> None:
    t = LoginThrottle(ThrottleSettings(free_failures=2, lockout_failures=0, forget_after=100.0))
    _fail(t, 2, 0.0)
    t.failed("bob", SRC, 99.0)  # within forget_after of the last failure: third failure, backoff
    assert not t.check("bob", SRC, 99.5).allowed
    t.failed("bob", SRC, 300.0)  # quiet for 201 s: counts as the first failure
    assert t.check("bob", SRC, 300.0).allowed
    assert t.status(300.0)["keys"] == 2


def test_stale_keys_are_swept_as_failures_arrive() -> None:
    t = LoginThrottle(ThrottleSettings(free_failures=5, lockout_failures=0, forget_after=10.0))
    for i in range(10):
        t.failed(f"u{i}", f"192.0.2.{i}", 0.0)
    assert t.status(0.0)["keys"] == 20
    t.failed("late", "198.51.100.1", 50.0)  # never looked up again, the 20 old keys still go
    assert t.status(50.0)["keys"] == 2


def test_max_keys_forgets_the_oldest_unlocked_key() -> None:
    t = LoginThrottle(ThrottleSettings(free_failures=0, lockout_failures=3, lockout_seconds=0, max_keys=3))
    _fail(t, 3, 0.0, user="victim", source="192.0.2.1")  # two keys, both locked out for good
    t.failed("a", "192.0.2.1", 1.0)  # a third key, not locked
    t.failed("b", "192.0.2.1", 2.0)  # a fourth: the oldest unlocked one ("a") makes room, not "victim"
    assert t.status(2.0)["keys"] == 3
    assert t.check("victim", "203.0.113.1", 3.0).locked
    assert t.check("a", "203.0.113.1", 3.0).allowed, "a was forgotten"
    assert not t.check("b", "203.0.113.1", 3.0).allowed

    every_key_locked = LoginThrottle(ThrottleSettings(free_failures=0, lockout_failures=1, lockout_seconds=0,
                                                      max_keys=2))
    every_key_locked.failed("victim", "192.0.2.1", 0.0)
    every_key_locked.failed("c", "192.0.2.1", 1.0)  # no unlocked key to drop: the oldest goes
    assert every_key_locked.status(1.0)["keys"] == 2
    assert every_key_locked.check("victim", "203.0.113.1", 2.0).allowed

    small = LoginThrottle(ThrottleSettings(free_failures=0, lockout_failures=0, max_keys=3))
    for i in range(10):
        small.failed(f"u{i}", SRC, float(i))
    assert small.status(10.0)["keys"] == 3
    assert not small.check("u9", "203.0.113.1", 9.5).allowed, "the newest user is kept"
    assert small.check("u0", "203.0.113.1", 9.5).allowed, "the oldest user was forgotten"


def test_settings_are_validated() -> None:
    for bad in ({"free_failures": -1}, {"backoff_base": 0}, {"backoff_base": 10, "backoff_max": 5},
                {"lockout_failures": -1}, {"lockout_seconds": -1}, {"forget_after": 0}, {"max_keys": 0}):
        with pytest.raises(ValueError):
            ThrottleSettings(**bad)  # type: ignore[arg-type]


def test_smaller_max_keys_after_a_reload_takes_effect_at_the_next_failure() -> None:
    t = LoginThrottle(ThrottleSettings(free_failures=0, lockout_failures=0, max_keys=100))
    for i in range(10):
        t.failed(f"u{i}", f"192.0.2.{i}", float(i))
    t.settings = ThrottleSettings(free_failures=0, lockout_failures=0, max_keys=4)
    t.failed("new", "198.51.100.1", 20.0)
    assert t.status(20.0)["keys"] == 4
