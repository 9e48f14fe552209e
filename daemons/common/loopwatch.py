"""A daemon's housekeeping tick: how late the event loop runs (the overload gauge), and periodic chores.

Every TICK seconds a task wakes; how much later than asked it wakes is the time some job held the loop. The
largest lateness is kept since start and per window, and shown in `status` (`loop_lag_ms`): the figure the
flood test reads, as "the loop never blocks for more than a few milliseconds".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

log = logging.getLogger(__name__)

TICK = 0.05
WINDOW = 10.0


class LoopWatch:
    def __init__(self, chores: list[Callable[[], None]] | None = None) -> None:
        self.chores = chores or []
        self.max_lag = 0.0
        self.window_max = 0.0  # the largest lateness in the window now running
        self.last_window_max = 0.0  # ... and in the one before it
        self._window_start = 0.0
        self.ticks = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="loopwatch")

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def note(self, lag: float, now: float) -> None:
        if now - self._window_start >= WINDOW:
            self.last_window_max, self.window_max, self._window_start = self.window_max, 0.0, now
        self.ticks += 1
        self.max_lag = max(self.max_lag, lag)
        self.window_max = max(self.window_max, lag)

    def status(self) -> dict[str, float]:
        return {"max": round(self.max_lag * 1000, 1),
                "recent_max": round(max(self.window_max, self.last_window_max) * 1000, 1)}

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        self._window_start = loop.time()
        while True:
            due = loop.time() + TICK
            await asyncio.sleep(TICK)
            now = loop.time()
            self.note(max(0.0, now - due), now)
            for chore in self.chores:
                try:
                    chore()
                except Exception:
                    log.exception("housekeeping chore failed")
