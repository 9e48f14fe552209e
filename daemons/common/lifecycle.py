"""The life of a daemon: start, serve until SIGTERM/SIGINT, reload on SIGHUP, shut down cleanly."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable


async def serve_until_stopped(start: Callable[[], Awaitable[None]], shutdown: Callable[[], Awaitable[None]],
                              reload: Callable[[], None]) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reload)
    await start()
    await stop.wait()
    await shutdown()
