"""--follow for the event logs: new entries pushed to an asyncio queue as they are logged."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from natt.events.ikelog import IkeLogger
from natt.events.model import LogEntry

STDERR_MAX_SEVERITY = 5  # the event log keeps everything; stderr (journald) gets the operator-level events

MAX_BACKLOG = 10000  # a slow reader loses its stream rather than the daemon its memory


async def follow(logger: IkeLogger, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
    """The entries `args` selects that are in the log now, then each new one as it is logged.

    The listener is in place before the log is read, with no await in between, so an entry logged while the
    history is being sent is neither lost nor sent twice.
    """
    queue: asyncio.Queue[LogEntry] = asyncio.Queue(MAX_BACKLOG)
    overflow = asyncio.Event()

    def push(entry: LogEntry) -> None:
        if IkeLogger.log_filter_one(entry, args):
            try:
                queue.put_nowait(entry)
            except asyncio.QueueFull:
                overflow.set()

    unsubscribe = logger.log.subscribe(push)
    try:
        for item in logger.query(args):
            yield item
        while not overflow.is_set():
            entry = await queue.get()
            yield logger.as_item(entry)
    finally:
        unsubscribe()


def mirror_to_stderr(logger: logging.Logger) -> Callable[[LogEntry], None]:
    """A listener that repeats operator-level events on the daemon's log (stderr / journald)."""

    def mirror(entry: LogEntry) -> None:
        if entry.severity <= STDERR_MAX_SEVERITY:
            level = logging.WARNING if entry.severity <= 3 else logging.INFO
            text = " | ".join(line for line in entry.text.splitlines() if line)
            logger.log(level, "%s/%d %s%s", entry.cls.value, entry.event_id, f"{entry.peer} " if entry.peer else "",
                       text)

    return mirror
