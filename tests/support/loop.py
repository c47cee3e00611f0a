"""How free an event loop stayed: a task that wakes every 20 ms counts its turns.

A loop held by blocking work (an engine built on it, a long prompt scanned inline) gets
to the task once or twice in that time; a free loop, all along. Tests compare the count
with a generous floor, never with a time.
"""

from __future__ import annotations

import asyncio
from typing import Optional


class LoopTicks:
    """``async with LoopTicks() as loop:``; then ``loop.ticks``."""

    PERIOD_S = 0.02

    def __init__(self) -> None:
        self.ticks = 0
        self._task: Optional[asyncio.Task] = None

    async def _run(self) -> None:
        while True:
            self.ticks += 1
            await asyncio.sleep(self.PERIOD_S)

    async def __aenter__(self) -> "LoopTicks":
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_exc) -> None:
        self._task.cancel()
