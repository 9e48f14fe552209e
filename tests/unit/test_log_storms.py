"""Log storms tamed the VPN 3000's way: past a rate per event (class/id), repeats are counted, not written, and
summed up in one entry per interval carrying their count and RPT (natt/events/store.py)."""

from __future__ import annotations

import pytest

from natt.events import catalog as C
from natt.events.store import RATE_BURST, SUPPRESSED_INTERVAL, EventLog

pytestmark = pytest.mark.unit


def _storm(log: EventLog, n: int, seconds: float, start: float = 1000.0) -> None:
    for i in range(n):
        log.emit(C.RETRANSMITTING, start + seconds * i / n, f"192.0.2.{i % 7}", exchange="AM", msgid=1, attempt=1)


def test_a_storm_is_cut_to_the_rate_and_summed_up_with_its_count_and_rpt() -> None:
    log = EventLog(1000, rate_limit=10)
    _storm(log, 5000, 1.0)  # 5,000 a second of one event from 7 peers
    written = len(log)
    assert written <= 10 * RATE_BURST + 10 + 1, written  # the burst, then the rate
    assert log.suppressed == 5000 - written
    log.flush(1001.0 + SUPPRESSED_INTERVAL)
    summary = list(log)[-1]
    assert "more RETRANSMITTING events" in summary.text and f"{5000 - written} more" in summary.text
    assert "from 7 peers" in summary.text and "192.0.2." in summary.text
    assert summary.repeat == 5000, "RPT counts every occurrence, written or not"
    assert (summary.cls, summary.event_id) == (C.RETRANSMITTING.cls, C.RETRANSMITTING.event_id)
    assert log.repeat_count(C.RETRANSMITTING.cls, C.RETRANSMITTING.event_id) == 5000


def test_one_summary_an_interval_while_the_storm_lasts_and_other_events_are_untouched() -> None:
    log = EventLog(100000, rate_limit=5)
    for second in range(35):
        _storm(log, 200, 1.0, start=1000.0 + second)
        log.emit(C.DPD_TIMEOUT, 1000.0 + second + 0.5, "198.51.100.9", detail="x")
        log.flush(1000.0 + second + 1)
    summaries = [e for e in log if "not logged one by one" in e.text]
    assert 3 <= len(summaries) <= 4, len(summaries)
    assert len([e for e in log if e.name == "DPD_TIMEOUT"]) == 35, "a quiet event is never held"
    told = sum(int(e.text.split(" more ")[0]) for e in summaries)
    written = len([e for e in log if e.name == "RETRANSMITTING" and "not logged" not in e.text])
    assert written + log.suppressed == 7000
    assert told <= log.suppressed and log.suppressed - told < 200 * 10, "at most one interval is still held"


def test_without_a_limit_everything_is_written() -> None:
    log = EventLog(10000)
    _storm(log, 3000, 1.0)
    assert len(log) == 3000 and log.suppressed == 0


def test_peers_counted_are_bounded() -> None:
    log = EventLog(1000, rate_limit=1)
    for i in range(5000):
        log.emit(C.RETRANSMITTING, 1000.0, f"10.{i // 65536}.{(i // 256) % 256}.{i % 256}", exchange="AM",
                 msgid=1, attempt=1)
    log.flush(1001.0 + SUPPRESSED_INTERVAL)
    summary = list(log)[-1]
    assert "from 1024+ peers" in summary.text
