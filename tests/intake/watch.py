"""A test-side reader that keeps collecting the records of some topics while a test runs,
so a test can wait for "the HandoffRequested of conversation X" among everything else."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer

from tests.support import eventually


class TopicWatcher:
    def __init__(self, bootstrap: str, prefix: str, *topics: str) -> None:
        self.prefix = prefix
        self.records: dict[str, list[dict[str, Any]]] = {t: [] for t in topics}
        self._consumer = AIOKafkaConsumer(
            *(prefix + t for t in topics), bootstrap_servers=bootstrap, group_id=None,
            auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=20,
        )
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> TopicWatcher:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                name = tp.topic[len(self.prefix):]
                for r in records:
                    try:
                        self.records[name].append(json.loads(r.value))
                    except ValueError:
                        self.records[name].append({"raw": r.value})

    def of(self, topic: str, conversation_id: str | None = None, **match: Any) -> list[dict[str, Any]]:
        out = self.records[topic]
        if conversation_id is not None:
            out = [r for r in out if r.get("conversation_id") == conversation_id]
        return [r for r in out if all(r.get(k) == v for k, v in match.items())]

    async def wait_for(self, topic: str, conversation_id: str | None = None, count: int = 1,
                       timeout: float = 15.0, **match: Any) -> list[dict[str, Any]]:
        async def check() -> list[dict[str, Any]] | None:
            found = self.of(topic, conversation_id, **match)
            return found if len(found) >= count else None

        return await eventually(check, timeout=timeout)

    async def wait_until_async(self, read: Callable[[], Awaitable[Any]], predicate: Callable[[Any], bool],
                               timeout: float = 15.0) -> None:
        async def check() -> bool:
            return predicate(await read())

        await eventually(check, timeout=timeout)

    async def wait_until(self, predicate: Callable[[], bool], timeout: float = 15.0) -> None:
        await eventually(lambda: asyncio.sleep(0, result=predicate()), timeout=timeout)
