"""Concurrent handling within one consumer: in order per key, committed per partition only
up to the lowest offset still in flight."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka.structs import TopicPartition

log = logging.getLogger("handoff.bus")

# Commits offsets (the next to read, per partition) of messages read at a bus generation,
# through a callable.
Committer = Callable[[int, dict[TopicPartition, int], Callable[[], Awaitable[Any]]], Awaitable[None]]

class KeyedDispatcher:
    """Runs handlers concurrently across keys, in order within a key, and commits each
    partition up to its lowest offset still in flight (so a crash redelivers exactly the
    unfinished ones and possibly some finished after them — handlers are idempotent)."""

    def __init__(self, limit: int, name: str, commit: Committer, *, commit_interval_s: float = 0.0) -> None:
        self.name = name
        self._commit = commit
        self._commit_interval_s = commit_interval_s
        self._last_commit = float("-inf")  # monotonic time the latest commit went out
        self._slots = asyncio.Semaphore(limit)
        self._tails: dict[Any, asyncio.Task] = {}
        self._tasks: set[asyncio.Task] = set()
        self._in_flight: dict[tuple[str, int], set[int]] = defaultdict(set)
        self._done_max: dict[tuple[str, int], int] = {}
        self._committed: dict[tuple[str, int], int] = {}
        # What the next commit carries, gathered while one is in flight: per partition the mark,
        # the generation it was read at and the consumer that read it.
        self._wanted: dict[tuple[str, int], tuple[int, int, Any]] = {}
        self._committing = False
        self._commit_task: asyncio.Future | None = None
        self._hurry = asyncio.Event()  # set by a drain: commit what finished now
        self._closing = False

    async def submit(self, msg: Any, process: Callable[[Any], Awaitable[None]], generation: int) -> None:
        record = msg.raw_message
        tp = (record.topic, record.partition)
        # Registered before anything else: the commit watermark never passes it until it is done.
        self._in_flight[tp].add(record.offset)
        if self._closing:
            return  # left in flight, uncommitted: redelivered after the restart
        await self._slots.acquire()  # back-pressure: the fetch loop waits for a free slot
        key = record.key if record.key is not None else f"partition-{record.partition}"
        previous = self._tails.get(key)
        task = asyncio.create_task(self._run(previous, msg, process, tp, record.offset, generation))
        self._tails[key] = task
        self._tasks.add(task)
        task.add_done_callback(lambda t, k=key: self._forget(k, t))

    def _forget(self, key: Any, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if self._tails.get(key) is task:
            del self._tails[key]
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: handler task failed: %r", self.name, task.exception())

    async def _run(self, previous: asyncio.Task | None, msg: Any, process: Callable[[Any], Awaitable[None]],
                   tp: tuple[str, int], offset: int, generation: int) -> None:
        try:
            if previous is not None:
                await asyncio.wait([previous])  # same key: strictly after the one before
            await process(msg)  # handled or parked; until then it stays in flight, uncommitted
        finally:
            self._slots.release()
        await self._finished(msg, tp, offset, generation)

    async def _finished(self, msg: Any, tp: tuple[str, int], offset: int, generation: int) -> None:
        in_flight = self._in_flight[tp]
        in_flight.discard(offset)
        self._done_max[tp] = max(self._done_max.get(tp, -1), offset)
        watermark = min(in_flight) if in_flight else self._done_max[tp] + 1
        if watermark <= self._committed.get(tp, -1):
            return
        # One commit in flight per consumer; what finishes meanwhile, on any of its partitions,
        # is committed by the next one, each partition at its highest watermark by then, and
        # no sooner than the commit interval after the one before: under load one OffsetCommit
        # per interval for all partitions, not one per message or per partition (each is a
        # broker request); after a quiet spell, at once.
        self._committed[tp] = watermark
        self._wanted[tp] = (watermark, generation, msg.consumer)
        if self._committing:
            return
        self._committing = True
        # Its own task: the handler's task ends now, so the key's next message never waits
        # for a commit (nor for the interval before it).
        self._commit_task = asyncio.ensure_future(self._commit_wanted())
        self._commit_task.add_done_callback(self._commit_ended)

    def _commit_ended(self, task: asyncio.Future) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("%s: commit task failed: %r", self.name, task.exception())  # the next finish commits again

    async def _commit_wanted(self) -> None:
        try:
            while self._wanted:
                wait = self._last_commit + self._commit_interval_s - time.monotonic()
                if wait > 0 and not self._closing:
                    # What finishes meanwhile joins this commit; a drain cuts the pause short.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._hurry.wait(), wait)
                self._last_commit = time.monotonic()
                wanted, self._wanted = self._wanted, {}
                for gen in sorted({g for _, g, _ in wanted.values()}):
                    offsets = {TopicPartition(*t): mark for t, (mark, g, _) in wanted.items() if g == gen}
                    consumer = next(c for _, g, c in wanted.values() if g == gen)
                    await self._commit(gen, offsets, lambda o=offsets, c=consumer: c.commit(o))
        finally:
            self._committing = False

    async def drain(self, timeout: float) -> None:
        self._closing = True
        self._hurry.set()
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        commit = self._commit_task
        if commit is not None and not commit.done():  # what finished is committed (no interval now)
            _, late = await asyncio.wait({commit}, timeout=timeout)
            for task in late:
                task.cancel()

    async def reset(self, timeout: float) -> None:
        """Between a lost log and its recreation (consumers stopped): the handlers under way
        finish (their offsets are not committed), then nothing of the old log is remembered."""
        await self.drain(timeout)
        self._tails.clear()
        self._in_flight.clear()
        self._done_max.clear()
        self._committed.clear()
        self._wanted.clear()
        self._hurry.clear()
        self._closing = False
