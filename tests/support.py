"""Helpers for tests: read a topic with a bare aiokafka consumer, wait for a condition."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from aiokafka import AIOKafkaConsumer

from shared.ids import utcnow

_last_instant: datetime | None = None


def next_instant() -> datetime:
    """Now, but at least a millisecond after the previous call: the time for events a test
    builds in a row. The store keeps milliseconds (BSON dates, index scores) and orders ties
    by conversation id, while two sends to the local broker take well under a millisecond, so
    events built with plain `utcnow()` can tie and a test of "oldest first" would then pass
    or fail by the ids' hash."""
    global _last_instant
    at = utcnow()
    if _last_instant is not None and at < _last_instant + timedelta(milliseconds=1):
        at = _last_instant + timedelta(milliseconds=1)
    _last_instant = at
    return at


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
