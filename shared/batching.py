"""One round trip for many concurrent callers: the write-behind every handler shares.

Handlers of different conversations run concurrently (the bus's keyed dispatcher) and each
awaits its own writes. A `Coalescer` gathers what they submit while the previous batch is
in flight and writes it as one batch, so under load a store sees one request per batch
instead of one per message, and when idle a lone call goes out at once (no timer, no added
wait). Each caller gets its own item's outcome — a result, or the exception for that item or
for the whole batch — only after the batch is durable, so the bus still commits an event's
offset only after its effect is written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

log = logging.getLogger("handoff.batching")

T = TypeVar("T")
R = TypeVar("R")

# What a flush returns per item: its result, or the exception that item alone failed with.
Flush = Callable[[list[T]], Awaitable[Sequence[R | BaseException]]]


class Coalescer(Generic[T, R]):
    def __init__(self, flush: Flush[T, R], *, max_batch: int = 256, name: str = "batch") -> None:
        self._flush = flush
        self.max_batch = max_batch
        self.name = name
        self._pending: list[tuple[T, asyncio.Future[R]]] = []
        self._draining: asyncio.Task[None] | None = None
        self.batches = 0  # how many flushes, and how many items they carried (for benches/tests)
        self.items = 0

    async def submit(self, item: T) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if self._draining is None or self._draining.done():
            self._draining = asyncio.ensure_future(self._drain())
        return await future

    async def _drain(self) -> None:
        # One loop turn first: callers woken by the same fetch submit before the first flush.
        await asyncio.sleep(0)
        while self._pending:
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
            batch = [(item, future) for item, future in batch if not future.cancelled()]
            if not batch:
                continue
            self.batches += 1
            self.items += len(batch)
            try:
                outcomes = await self._flush([item for item, _ in batch])
                if len(outcomes) != len(batch):
                    raise RuntimeError(f"{self.name}: {len(outcomes)} outcomes for {len(batch)} items")
            except Exception as exc:  # noqa: BLE001 - every caller of the batch gets it, and retries
                outcomes = [exc] * len(batch)
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
