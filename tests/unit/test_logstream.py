"""`log-follow`: what the log holds, then each new entry, none lost or sent twice."""

from __future__ import annotations

import asyncio

import pytest

from natt.events import catalog
from natt.events.ikelog import IkeLogger
from natt_daemons.common.logstream import follow

pytestmark = pytest.mark.unit


async def test_follow_sends_the_history_then_new_entries() -> None:
    logger = IkeLogger(role="concentrator")
    for i in range(3):
        logger.log.emit(catalog.DIAGNOSIS, 1000.0 + i, text=f"old {i}")
    stream = follow(logger, {})
    first = [await anext(stream) for _ in range(2)]
    # Logged while the history is still being read: it must come after the history, exactly once.
    logger.log.emit(catalog.DIAGNOSIS, 2000.0, text="new while reading")
    rest = [await anext(stream) for _ in range(2)]
    texts = [item["text"].splitlines()[-1] for item in first + rest]
    assert texts == ["old 0", "old 1", "old 2", "new while reading"]
    logger.log.emit(catalog.DIAGNOSIS, 2001.0, text="later")
    assert (await asyncio.wait_for(anext(stream), 1.0))["text"].endswith("later")
    await stream.aclose()
    assert not logger.log.listeners, "closing the stream unsubscribes"
