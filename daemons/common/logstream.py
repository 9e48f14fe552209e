"""--follow for the event logs: new entries pushed to an asyncio queue as they are logged."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from natt.events.ikelog import IkeLogger
from natt.events.model import LogEntry

MAX_BACKLOG = 10000  # a slow reader loses its stream rather than the daemon its memory


async def follow(logger: IkeLogger, args: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
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
        while not overflow.is_set():
            entry = await queue.get()
            yield logger.as_item(entry)
    finally:
        unsubscribe()
