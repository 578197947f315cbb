"""Helpers for tests: read a topic with a bare aiokafka consumer, wait for a condition."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer


async def read_topic(bootstrap: str, topic: str, count: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    """The first `count` JSON records of `topic` (from the beginning), or fail after `timeout`."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=f"reader-{uuid.uuid4().hex[:8]}",
        auto_offset_reset="earliest", enable_auto_commit=False, fetch_max_wait_ms=20,
        session_timeout_ms=3000, heartbeat_interval_ms=500,
    )
    await consumer.start()
    out: list[dict[str, Any]] = []
    try:
        deadline = time.monotonic() + timeout
        while len(out) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"only {len(out)} of {count} records on {topic} after {timeout}s: {out}")
            batch = await consumer.getmany(timeout_ms=int(min(left, 0.5) * 1000))
            for records in batch.values():
                out.extend(json.loads(r.value) for r in records)
        return out
    finally:
        await consumer.stop()


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 15.0, interval: float = 0.05) -> Any:
    """Poll `check` until it returns a truthy value (returned) or raise with its last error."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            result = await check()
            if result:
                return result
            last = result
        except AssertionError as exc:
            last = exc
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s; last: {last!r}")
