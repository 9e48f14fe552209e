"""The event log itself: numbering, repeat counts, a bounded memory, filters and listeners.

RPT, the repeat count, follows the VPN 3000: "the number of times that this specific event
has occurred since the VPN Concentrator was last booted", counted per event, i.e. per class
and id, and not per peer. The seed shows it: IKEDBG/0 has RPT=9200 with peer 171.69.89.78
(seq 2847), RPT=9201 with no peer at all (2873, "pitcher: rcv KEY_UPDATE"), RPT=9202 with the
peer again (2882), and different texts of one id (IKEDBG/0 "RECEIVED Message",
"processing hash", "loading all IPSEC SAs") share that one counter. Counts survive the ring
buffer dropping old entries, as they survive the device's log wrapping.

Sequence numbers start at 1 and only grow, one per entry, so a follower can ask for
everything after the last number it saw. (The device's numbers skip, "sequential but not
consecutive", and wrap at 65536; neither helps a follower, so natt does not copy that.)
"""

from __future__ import annotations

import math
import re
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, overload

from natt.events.catalog import Message, tunnel_scope
from natt.events.model import (
    MASK,
    SEVERITY_MAX,
    SEVERITY_MIN,
    EventClass,
    LogEntry,
    check_severity,
    is_secret_field,
)

Listener = Callable[[LogEntry], None]


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


@overload
def printable(text: str) -> str: ...
@overload
def printable(text: None) -> None: ...
def printable(text: str | None) -> str | None:
    """Control characters (C0, DEL, C1, line separators, bidi overrides) as \\xNN / \\uNNNN: an ID or user name
    with escape codes, BEL or newlines can neither drive the reader's terminal nor forge a log line."""
    if text is None or not _UNPRINTABLE.search(text):
        return text
    return _UNPRINTABLE.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                            else f"\\u{ord(m.group()):04x}", text)


RATE_BURST = 5  # a rate-limited event may come this many seconds' worth at once
SUPPRESSED_INTERVAL = 10.0  # one summary of held repeats per event per this many seconds at most
SUPPRESSED_TEMPLATE = ("{count} more {name} events in {seconds} s not logged one by one (over {limit} a second); "
                       "from {peers} peers, most: {top}")
MAX_SUPPRESSED_PEERS = 1024


class _Suppressed:
    """Repeats of one event held back by the rate limit: their count and who sent them (bounded)."""

    __slots__ = ("count", "message", "overflow", "peers", "since")

    def __init__(self, message: Message, since: float) -> None:
        self.message, self.since = message, since
        self.count = 0
        self.peers: Counter[str] = Counter()
        self.overflow = False

    def note(self, peer: str | None) -> None:
        self.count += 1
        if peer is None:
            return
        if peer in self.peers or len(self.peers) < MAX_SUPPRESSED_PEERS:
            self.peers[peer] += 1
        else:
            self.overflow = True


class EventLog:
    """A sans-IO event log: the caller passes the time of every event."""

    def __init__(self, capacity: int = 10000, *, reveal_secrets: bool = False, max_severity: int = 13,
                 rate_limit: float = 0.0) -> None:
        if capacity < 1:
            raise ValueError("an event log holds at least one entry")
        if rate_limit < 0:
            raise ValueError("a log rate limit is >= 0 (0: none)")
        # Log storms: past `rate_limit` entries a second of one event (class/id; bursts of RATE_BURST times that),
        # repeats are counted, not written, and summed up in one entry (with its RPT) per SUPPRESSED_INTERVAL.
        self.rate_limit = rate_limit
        self._buckets: dict[tuple[EventClass, int], list[float]] = {}  # key → [tokens, last time]
        self._held: dict[tuple[EventClass, int], _Suppressed] = {}
        self.suppressed = 0
        self._summarising = False
        self.capacity = capacity
        # "Events to log" (VPN 3000: 1-5 by default): entries above it are counted, never rendered or kept.
        self.max_severity = max_severity
        self.filtered = 0
        self.reveal_secrets = reveal_secrets  # a debug switch: logs then hold keys and passwords
        self.listeners: list[Listener] = []
        self._entries: deque[LogEntry] = deque(maxlen=capacity)
        self._repeats: Counter[tuple[EventClass, int]] = Counter()
        self._last_seq = 0

    # ---- writing -------------------------------------------------------------------------------

    def emit(self, message: Message, time: float, /, peer: str | None = None, *,
             group: str | None = None, user: str | None = None, **fields: Any) -> LogEntry | None:
        """Log one event and tell the listeners.

        ``peer``, ``group`` and ``user`` are also template fields ("to {peer}",
        "for User ({user})"); a group or user also opens the text with the concentrator's
        "Group [g] User [u]" line, as tunnel events do in the seed.
        """
        if not math.isfinite(time):
            raise ValueError(f"event time must be a finite epoch time, not {time!r}")
        if message.severity > self.max_severity:
            self.filtered += 1
            self._repeats[(message.cls, message.event_id)] += 1
            return None
        # Peer-supplied text (IDs, user names, versions, banners, reasons) reaches a terminal: no control bytes.
        values = {k: printable(v) if isinstance(v, str) else v for k, v in fields.items()}
        group, user = printable(group), printable(user)
        for key, value in (("peer", peer), ("group", group), ("user", user)):
            if value is not None:
                values.setdefault(key, value)
        text = message.render(reveal_secrets=self.reveal_secrets, **values)
        scope = tunnel_scope(group, user)
        if scope is not None:
            text = f"{scope}\n{text}"
        key = (message.cls, message.event_id)
        if self._summarising:
            pass  # a summary of held repeats: they were counted as they came
        elif self.rate_limit and not self._allowed(key, message, peer, time):
            self._repeats[key] += 1
            return None
        else:
            self._repeats[key] += 1
        self._last_seq += 1
        entry = LogEntry(
            seq=self._last_seq, time=time, cls=message.cls, event_id=message.event_id,
            severity=message.severity, peer=peer, text=text, repeat=self._repeats[key],
            client_code=message.client_code, name=message.name, peer_shown=message.shows_peer,
            fields=self._structured(values),
        )
        self._entries.append(entry)
        for listener in list(self.listeners):  # a copy: a listener may unsubscribe itself
            listener(entry)
        return entry

    def _allowed(self, key: tuple[EventClass, int], message: Message, peer: str | None, time: float) -> bool:
        """The token bucket of this event: True if it may be written now. A held summary goes out first when its
        interval is over, so counts are told in order."""
        held = self._held.get(key)
        if held is not None and time - held.since >= SUPPRESSED_INTERVAL:
            self._write_summary(key, time)
        bucket = self._buckets.get(key)
        burst = self.rate_limit * RATE_BURST
        if bucket is None:
            bucket = self._buckets[key] = [burst, time]
        elif time > bucket[1]:
            bucket[0] = min(burst, bucket[0] + (time - bucket[1]) * self.rate_limit)
            bucket[1] = time
        if bucket[0] >= 1.0:
            bucket[0] -= 1.0
            return True
        held = self._held.get(key)
        if held is None:
            held = self._held[key] = _Suppressed(message, time)
        held.note(peer)
        self.suppressed += 1
        return False

    def flush(self, time: float) -> None:
        """Write the summaries whose interval is over (the daemons call this every few seconds)."""
        for key in [k for k, h in self._held.items() if time - h.since >= SUPPRESSED_INTERVAL]:
            self._write_summary(key, time)

    def _write_summary(self, key: tuple[EventClass, int], time: float) -> None:
        held = self._held.pop(key)
        top = ", ".join(f"{p} ({n})" for p, n in held.peers.most_common(3)) or "no peer"
        more = "+" if held.overflow else ""
        summary = Message(held.message.name, held.message.cls, held.message.event_id, held.message.severity,
                          SUPPRESSED_TEMPLATE, client_code=held.message.client_code, origin=held.message.origin,
                          shows_peer=False)
        self._summarising = True  # the summary itself is never held, nor counted again
        try:
            self.emit(summary, time, None, count=held.count, name=held.message.name,
                      seconds=round(time - held.since, 1), limit=f"{self.rate_limit:g}",
                      peers=f"{len(held.peers)}{more}", top=top)
        finally:
            self._summarising = False

    def _structured(self, values: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
        """The values kept for --json: plain scalars, bytes as hex, secrets masked."""
        out = []
        for name, value in values.items():
            if is_secret_field(name) and not self.reveal_secrets:
                value = MASK
            elif isinstance(value, bytes | bytearray):
                value = bytes(value).hex()
            elif not isinstance(value, str | int | float | bool | type(None)):
                value = str(value)
            out.append((name, value))
        return tuple(out)

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Add a listener (the daemons' --follow); returns the call that removes it."""
        self.listeners.append(listener)

        def unsubscribe() -> None:
            if listener in self.listeners:
                self.listeners.remove(listener)

        return unsubscribe

    def clear(self) -> None:
        """Forget the entries ("Clear Log"). Repeat counts and numbering go on, as RPT counts
        since boot and followers rely on numbers that only grow."""
        self._entries.clear()

    # ---- reading -------------------------------------------------------------------------------

    def filter(self, classes: Iterable[EventClass | str] | None = None,
               severity: tuple[int, int] | None = None, peer: str | None = None,
               since_seq: int | None = None) -> list[LogEntry]:
        """Entries matching every given criterion, oldest first.

        ``severity`` is an inclusive range like the device's "Severity 1-13" filter;
        ``since_seq`` keeps entries numbered strictly after it (for following a log).
        """
        wanted = None if classes is None else {EventClass(c) for c in classes}
        low, high = (check_severity(s) for s in (severity or (SEVERITY_MIN, SEVERITY_MAX)))
        if low > high:
            raise ValueError(f"severity range {low}-{high} is empty")
        return [
            e for e in self._entries
            if (wanted is None or e.cls in wanted)
            and low <= e.severity <= high
            and (peer is None or e.peer == peer)
            and (since_seq is None or e.seq > since_seq)
        ]

    @property
    def last_seq(self) -> int:
        """The number of the newest entry ever logged, 0 if none."""
        return self._last_seq

    def repeat_count(self, cls: EventClass, event_id: int) -> int:
        return self._repeats[(cls, event_id)]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[LogEntry]:
        return iter(list(self._entries))
