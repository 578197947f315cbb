"""Background tasks by key (a handoff id): one at a time per key, and all of them stopped at
shutdown (what they left unfinished stays wanted in Mongo for the next process)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine
from typing import Any


class KeyedTasks:
    def __init__(self, name: str) -> None:
        self.name = name
        self._running: dict[str, asyncio.Task] = {}

    def start(self, key: str, work: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run `work()` unless this key's task is running (then it is a no-op)."""
        if key in self._running:
            return
        task = asyncio.create_task(work(), name=f"{self.name}-{key}")
        self._running[key] = task
        task.add_done_callback(lambda _t: self._running.pop(key, None))

    def __contains__(self, key: str) -> bool:
        return key in self._running

    async def stop(self) -> None:
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
