"""Failed XAUTH logins slow down, then lock out, the user name and the source address they came from.

Two independent keys per attempt: the user name (one account guessed at from many addresses) and the
source address (many accounts sprayed from one address). The first `free_failures` failures of a key cost
nothing; each further one makes the key wait `backoff_base` seconds, doubling up to `backoff_max`; at
`lockout_failures` the key is locked out for `lockout_seconds` (0: until an operator clears it). A key
with no failure for `forget_after` seconds starts again from zero, and so does one whose lockout ran out.

Behind a PAT gateway many honest users share one source address: a success clears the source's count, so
their logins keep it from locking them all out.

Pure: the caller passes the time (the core's clock); nothing here sleeps, reads a clock or does I/O.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

USER = "user"
SOURCE = "source"
_EVICTION_SCAN = 64  # how many of the oldest keys to look at for one that is not locked out
_SWEEP_STEP = 32  # stale keys dropped per failure recorded, so that forgetting stays O(1)


@dataclass(frozen=True)
class ThrottleSettings:
    free_failures: int = 3  # failures per key before backoff starts
    backoff_base: float = 2.0  # first delay (s), doubling per further failure
    backoff_max: float = 60.0
    lockout_failures: int = 10  # this many failures lock the key out; 0 = never lock out
    lockout_seconds: float = 900.0  # 0 = locked until an operator clears it
    forget_after: float = 3600.0  # a key quiet this long starts again from 0
    max_keys: int = 100_000  # memory bound (oldest forgotten first)

    def __post_init__(self) -> None:
        if self.free_failures < 0:
            raise ValueError("free_failures must be >= 0")
        if not 0 < self.backoff_base <= self.backoff_max:
            raise ValueError("need 0 < backoff_base <= backoff_max")
        if self.lockout_failures < 0:
            raise ValueError("lockout_failures must be >= 0 (0: never lock out)")
        if self.lockout_seconds < 0:
            raise ValueError("lockout_seconds must be >= 0 (0: until cleared)")
        if self.forget_after <= 0:
            raise ValueError("forget_after must be > 0")
        if self.max_keys < 1:
            raise ValueError("max_keys must be >= 1")


@dataclass(frozen=True)
class Verdict:
    """May this login be checked now? If not, `kind`/`key` say which key refused and `wait` for how long
    (math.inf for a lockout only an operator ends)."""

    allowed: bool
    wait: float
    locked: bool
    kind: str = ""
    key: str = ""


@dataclass(frozen=True)
class Lockout:
    kind: str
    key: str
    failures: int
    until: float | None  # the caller's clock; None = until an operator clears it


_ALLOWED = Verdict(True, 0.0, False)


@dataclass
class _Record:
    failures: int = 0
    last: float = 0.0  # time of the last failure
    wait_until: float = 0.0
    locked_until: float | None = None  # math.inf: until cleared

    def locked(self, now: float) -> bool:
        return self.locked_until is not None and now < self.locked_until


class LoginThrottle:
    def __init__(self, settings: ThrottleSettings = ThrottleSettings()) -> None:
        self.settings = settings
        # (kind, key) -> record, oldest failure first: the order eviction and forgetting walk.
        self._keys: OrderedDict[tuple[str, str], _Record] = OrderedDict()

    # -- the login path ----------------------------------------------------------------------------

    def check(self, user: str, source: str, now: float) -> Verdict:
        """Refuses while either key is in backoff or locked out; a lockout wins over a backoff, then the
        longer wait."""
        refusals = [v for v in (self._verdict(USER, user, now), self._verdict(SOURCE, source, now)) if not v.allowed]
        if not refusals:
            return _ALLOWED
        return max(refusals, key=lambda v: (v.locked, v.wait))

    def failed(self, user: str, source: str, now: float) -> list[Lockout]:
        """Record one failure against both keys; returns the lockouts that start with this failure."""
        self._sweep(now)
        started = []
        for kind, key in ((USER, user), (SOURCE, source)):
            lockout = self._fail(kind, key, now)
            if lockout is not None:
                started.append(lockout)
        return started

    def succeeded(self, user: str, source: str, now: float) -> None:
        """A good login clears both keys' failure counts; a lockout stays (it ends by time or by an operator)."""
        for ident in ((USER, user), (SOURCE, source)):
            record = self._keys.get(ident)
            if record is not None and not record.locked(now):
                del self._keys[ident]

    # -- the operator ------------------------------------------------------------------------------

    def clear(self, user: str | None = None, source: str | None = None) -> int:
        """Forget the given keys (both None: every key), lockouts included; returns how many were known."""
        if user is None and source is None:
            count = len(self._keys)
            self._keys.clear()
            return count
        named = [(kind, key) for kind, key in ((USER, user), (SOURCE, source)) if key is not None]
        return sum(self._keys.pop(ident, None) is not None for ident in named)

    def lockouts(self, now: float) -> list[Lockout]:
        return [self._lockout(kind, key, r) for (kind, key), r in self._keys.items() if r.locked(now)]

    def status(self, now: float) -> dict[str, Any]:
        backoff = {USER: 0, SOURCE: 0}
        for (kind, _key), r in self._keys.items():
            if not r.locked(now) and now < r.wait_until:
                backoff[kind] += 1
        return {
            "keys": len(self._keys),
            "backoff": backoff,
            "lockouts": [{"kind": lo.kind, "key": lo.key, "failures": lo.failures, "until": lo.until}
                         for lo in self.lockouts(now)],
        }

    # -- internals ---------------------------------------------------------------------------------

    def _live(self, ident: tuple[str, str], now: float) -> _Record | None:
        """The key's record, or None once it is forgotten (quiet long enough, or its lockout ran out)."""
        record = self._keys.get(ident)
        if record is None:
            return None
        if self._stale(record, now):
            del self._keys[ident]
            return None
        return record

    def _stale(self, record: _Record, now: float) -> bool:
        if record.locked_until is not None:
            return now >= record.locked_until
        return now - record.last >= self.settings.forget_after

    def _verdict(self, kind: str, key: str, now: float) -> Verdict:
        record = self._live((kind, key), now)
        if record is None:
            return _ALLOWED
        if record.locked(now):
            assert record.locked_until is not None
            return Verdict(False, record.locked_until - now, True, kind, key)
        if now < record.wait_until:
            return Verdict(False, record.wait_until - now, False, kind, key)
        return _ALLOWED

    def _fail(self, kind: str, key: str, now: float) -> Lockout | None:
        s = self.settings
        ident = (kind, key)
        record = self._live(ident, now)
        if record is None:
            self._make_room()
            record = self._keys[ident] = _Record()
        else:
            self._keys.move_to_end(ident)
        record.failures += 1
        record.last = now
        beyond = record.failures - s.free_failures
        if beyond > 0:
            # min() first: 2.0 ** a large count would overflow a float.
            record.wait_until = now + min(s.backoff_base * 2.0 ** min(beyond - 1, 64), s.backoff_max)
        if record.locked_until is None and s.lockout_failures and record.failures >= s.lockout_failures:
            record.locked_until = now + s.lockout_seconds if s.lockout_seconds else math.inf
            return self._lockout(kind, key, record)
        return None

    def _make_room(self) -> None:
        """Keep at most max_keys: forget the oldest key that is not locked out (the very oldest if every key
        looked at is), so that flooding the table with new keys does not easily unlock a locked one."""
        while self._keys and len(self._keys) >= self.settings.max_keys:  # a loop: settings may shrink on reload
            victim = None
            for n, (ident, record) in enumerate(self._keys.items()):
                if n >= _EVICTION_SCAN:
                    break
                if record.locked_until is None:
                    victim = ident
                    break
            del self._keys[victim if victim is not None else next(iter(self._keys))]

    def _sweep(self, now: float) -> None:
        """Drop a few stale keys from the old end, so that memory follows forget_after, not max_keys."""
        for _ in range(_SWEEP_STEP):
            if not self._keys:
                return
            ident, record = next(iter(self._keys.items()))
            if self._stale(record, now):
                del self._keys[ident]
            elif record.locked(now):
                self._keys.move_to_end(ident)  # a long lockout must not stop the sweep behind it
            else:
                return

    @staticmethod
    def _lockout(kind: str, key: str, record: _Record) -> Lockout:
        until = record.locked_until
        return Lockout(kind, key, record.failures, None if until is None or math.isinf(until) else until)
