"""Call admission for new phase 1 negotiations: who gets the responder's DH work while the internet floods it.

A first message (Aggressive or Main Mode, responder cookie zero) costs a DH key pair and, in Aggressive Mode, the
shared secret (about 0.8 ms here for MODP 2048) and a half-open SA. IKEv1 has no cookie exchange (IKEv2's
COOKIE), so a flood of valid-looking first messages cannot be told from clients before that work. What bounds it,
in the order a first message meets them (all O(1), before any DH):

- a half-open cap in all and per source address (`half_open_limit`, `half_open_per_source`: strongSwan's
  init_limit_half_open, Cisco's "call admission limit ike in-negotiation-sa"), in ConcentratorPolicy;
- a token bucket per source address: one address starts at most `per_source_rate` negotiations a second
  (bursts of `per_source_burst`), so a few hosts cannot take the whole budget;
- a token bucket in all: at most `rate` new negotiations a second (bursts of `burst`), which bounds the share
  of the event loop the flood can take whatever the number of sources;
- a reserve for newcomers: a source that holds no half-open SA and has been quiet for a moment (its own bucket
  full again) may still start one when the common bucket is empty, from a smaller bucket of its own
  (`newcomer_rate`). A flooding source never qualifies, so a client that starts while hundreds of sources
  flood still gets in at its first or second try.

When the half-open table is full, the oldest half-open SA gives way to a newcomer if it is older than
`evict_after` seconds (a real client finishes phase 1 in one round trip), so a full table does not lock clients
out until the flood's SAs time out.

Sans-IO: time comes in as an argument.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from enum import StrEnum


class Refusal(StrEnum):
    """Why a first message was dropped (the `status` counter names)."""

    RATE = "admission-rate"
    SOURCE_RATE = "admission-source-rate"


@dataclass(frozen=True)
class AdmissionSettings:
    rate: float = 400.0  # new negotiations per second, in all (about a third of one core here)
    burst: int = 40  # a tenth of a second's worth: a burst of DH never holds the loop long
    per_source_rate: float = 10.0
    per_source_burst: int = 20
    newcomer_rate: float = 100.0  # extra starts per second for sources holding no half-open SA
    evict_after: float = 2.0  # a full table: the oldest half-open SA gives way if it is older than this
    max_tracked_sources: int = 16384  # per-source buckets kept (least recently used forgotten: a full bucket)

    def __post_init__(self) -> None:
        for name in ("rate", "per_source_rate", "newcomer_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"admission {name} must be > 0")
        if self.burst < 1 or self.per_source_burst < 1:
            raise ValueError("admission bursts must be >= 1")
        if self.evict_after < 0:
            raise ValueError("admission evict_after must be >= 0")


class TokenBucket:
    __slots__ = ("burst", "last", "rate", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.last = float(burst), now

    def refill(self, now: float) -> None:
        if now > self.last:
            self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
            self.last = now

    @property
    def full(self) -> bool:
        return self.tokens >= self.burst

    def take(self, now: float) -> bool:
        self.refill(now)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class Admission:
    """Decides, per first message, whether a new negotiation may start. Holds only buckets: O(1) a call."""

    def __init__(self, settings: AdmissionSettings | None = None) -> None:
        self.settings = settings or AdmissionSettings()
        self._common: TokenBucket | None = None
        self._newcomers: TokenBucket | None = None
        self._sources: OrderedDict[str, TokenBucket] = OrderedDict()

    def admit(self, source: str, holding: int, now: float) -> Refusal | None:
        """None if a negotiation from `source` (which holds `holding` half-open SAs) may start now; else why not.
        A refused message takes no token from the common budget. A newcomer is a source that holds no half-open SA
        and has been quiet long enough for its own bucket to be full again: a flooding source never is, even
        when its half-open SAs were evicted, while a client retransmitting every few seconds always is."""
        s = self.settings
        if self._common is None or self._newcomers is None:
            self._common = TokenBucket(s.rate, s.burst, now)
            self._newcomers = TokenBucket(s.newcomer_rate, max(1.0, s.newcomer_rate / 4), now)
        bucket = self._sources.get(source)
        if bucket is None:
            bucket = self._sources[source] = TokenBucket(s.per_source_rate, s.per_source_burst, now)
            if len(self._sources) > s.max_tracked_sources:
                self._sources.popitem(last=False)
        else:
            self._sources.move_to_end(source)
            bucket.refill(now)
        newcomer = holding == 0 and bucket.full
        if not bucket.take(now):
            return Refusal.SOURCE_RATE
        if self._common.take(now):
            return None
        if newcomer and self._newcomers.take(now):
            return None
        return Refusal.RATE

    def tracked_sources(self) -> int:
        return len(self._sources)


OVERLOAD_INTERVAL = 10.0  # seconds summed up in one Overload event (one log line) while a flood lasts
TOP_SOURCES = 3
MAX_COUNTED_SOURCES = 4096  # distinct sources counted in one interval; more are only "others"


@dataclass(frozen=True)
class OverloadSummary:
    seconds: float
    dropped: dict[str, int]  # reason → first messages dropped
    evicted: int  # half-open SAs that gave way to newcomers
    sources: int  # distinct source addresses dropped (at most MAX_COUNTED_SOURCES, then "more")
    top: tuple[tuple[str, int], ...]  # the sources dropped most

    @property
    def total(self) -> int:
        return sum(self.dropped.values())


class OverloadWindow:
    """What call admission dropped since the last report: one summary an interval, never one line a packet."""

    def __init__(self, interval: float = OVERLOAD_INTERVAL) -> None:
        self.interval = interval
        self.started: float | None = None
        self._dropped: dict[str, int] = {}
        self._by_source: dict[str, int] = {}
        self._evicted = 0

    def note(self, reason: str, source: str, now: float) -> None:
        if self.started is None:
            self.started = now
        self._dropped[reason] = self._dropped.get(reason, 0) + 1
        count = self._by_source.get(source)
        if count is not None:
            self._by_source[source] = count + 1
        elif len(self._by_source) < MAX_COUNTED_SOURCES:
            self._by_source[source] = 1

    def note_evicted(self) -> None:
        self._evicted += 1

    @property
    def report_at(self) -> float | None:
        return None if self.started is None else self.started + self.interval

    def take(self, now: float) -> OverloadSummary | None:
        """The summary of the interval now over (and a fresh window), or None if nothing was dropped."""
        if self.started is None:
            return None
        top = sorted(self._by_source.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_SOURCES]
        summary = OverloadSummary(round(now - self.started, 1), dict(self._dropped), self._evicted,
                                  len(self._by_source), tuple(top))
        self.started, self._dropped, self._by_source, self._evicted = None, {}, {}, 0
        return summary
