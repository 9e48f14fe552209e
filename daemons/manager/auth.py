"""Administrators' logins: server-side sessions, CSRF tokens and login throttling. Pure: times come in as `now`.

A session id is 256 random bits, sent only in an HttpOnly, Secure, SameSite=Strict cookie; what it grants is
kept here (login, CSRF token, when it began and was last used), so ending it on the server ends it. Each
session has its own CSRF token, compared in constant time on every state-changing request.

Failed logins are counted per source address and per login name: after `free` failures either one must wait
`backoff * 2**(n - free - 1)` seconds (at most `backoff_max`) before the next attempt is even checked. A success
clears the login's count and the source's.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass, field

from natt_daemons.manager.config import Throttle

MAX_SESSIONS = 1000  # logged-in administrators at once; the oldest goes first beyond it
MAX_TRACKED = 10000  # sources and logins with failures remembered; the stalest goes first beyond it


@dataclass
class AdminSession:
    id: str
    login: str
    csrf: str
    started: float
    last_seen: float
    flashes: list[tuple[str, str]] = field(default_factory=list)  # (kind, text) to show on the next page

    def flash(self, kind: str, text: str) -> None:
        self.flashes.append((kind, text))
        del self.flashes[:-10]

    def take_flashes(self) -> list[tuple[str, str]]:
        out, self.flashes = self.flashes, []
        return out


class Sessions:
    """The logged-in administrators, by session id."""

    def __init__(self, lifetime: float, idle_timeout: float) -> None:
        self.lifetime = lifetime
        self.idle_timeout = idle_timeout
        self._by_id: OrderedDict[str, AdminSession] = OrderedDict()

    def create(self, login: str, now: float) -> AdminSession:
        s = AdminSession(secrets.token_urlsafe(32), login, secrets.token_urlsafe(32), now, now)
        self._by_id[s.id] = s
        while len(self._by_id) > MAX_SESSIONS:
            self._by_id.popitem(last=False)
        return s

    def get(self, session_id: str | None, now: float, *, touch: bool = True) -> AdminSession | None:
        """The live session with this id, or None (unknown, ended or expired: an expired one is removed).
        `touch` marks it used now (a page or an action; the pages' own polling does not)."""
        if not session_id:
            return None
        s = self._by_id.get(session_id)
        if s is None:
            return None
        if self.expired(s, now):
            del self._by_id[session_id]
            return None
        if touch:
            s.last_seen = now
        return s

    def expired(self, s: AdminSession, now: float) -> bool:
        return now - s.started >= self.lifetime or now - s.last_seen >= self.idle_timeout

    def end(self, session_id: str) -> AdminSession | None:
        return self._by_id.pop(session_id, None)

    def __len__(self) -> int:
        return len(self._by_id)


def csrf_ok(session: AdminSession, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(session.csrf.encode(), str(token).encode())


class LoginCsrf:
    """CSRF protection for the login form itself, before there is a session: a random cookie and, in the form,
    its HMAC under a key of this process (double submit, signed: a forged cookie cannot be paired with a token)."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def new_cookie(self) -> str:
        return secrets.token_urlsafe(24)

    def token(self, cookie: str) -> str:
        return hmac.new(self._key, cookie.encode(), hashlib.sha256).hexdigest()

    def ok(self, cookie: str | None, token: str | None) -> bool:
        return bool(cookie) and bool(token) and hmac.compare_digest(self.token(str(cookie)), str(token))


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0


class LoginThrottle:
    """Failed logins per source address and per login name, and how long each must wait now."""

    def __init__(self, settings: Throttle) -> None:
        self.settings = settings
        self._failures: OrderedDict[tuple[str, str], _Failures] = OrderedDict()

    def _delay(self, f: _Failures) -> float:
        over = f.count - self.settings.free
        if over <= 0:
            return 0.0
        return min(self.settings.backoff * 2 ** (over - 1), self.settings.backoff_max)

    def _forget_stale(self, now: float) -> None:
        # A count whose wait, doubled, has passed since the last failure is forgotten: the backoff decays.
        horizon = 2 * self.settings.backoff_max
        for key in [k for k, f in self._failures.items() if now - f.last > max(horizon, 2 * self._delay(f))]:
            del self._failures[key]

    def wait(self, source: str, login: str, now: float) -> float:
        """Seconds before an attempt from `source` for `login` will be checked (0: now)."""
        self._forget_stale(now)
        left = 0.0
        for key in (("source", source), ("login", login)):
            f = self._failures.get(key)
            if f is not None:
                left = max(left, f.last + self._delay(f) - now)
        return max(0.0, left)

    def failed(self, source: str, login: str, now: float) -> None:
        for key in (("source", source), ("login", login)):
            f = self._failures.pop(key, None) or _Failures()
            f.count += 1
            f.last = now
            self._failures[key] = f  # most recent last: the stalest goes first when full
        while len(self._failures) > MAX_TRACKED:
            self._failures.popitem(last=False)

    def succeeded(self, source: str, login: str) -> None:
        self._failures.pop(("source", source), None)
        self._failures.pop(("login", login), None)

    def failures(self, kind: str, key: str) -> int:
        f = self._failures.get((kind, key))
        return f.count if f is not None else 0
