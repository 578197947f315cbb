"""What becomes of a consumed message whose processing fails: retried with backoff, waited on
while infrastructure is away, parked on its topic's DLQ when it keeps failing."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError
from pymongo.errors import ConnectionFailure as MongoConnectionFailure
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.bus.health import ConsumerHealth
from shared.events import Envelope
from shared.settings import ServiceSettings
from shared.topics import Topic

log = logging.getLogger("handoff.bus")

T = TypeVar("T")
Handler = Callable[[Any], Awaitable[None]]

# The longest wait between two tries of a message whose infrastructure is away.
RETRY_CAP_S = 5.0


class Failed(Exception):
    """A message's processing failed every attempt; `error` goes to the DLQ record."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def is_outage(exc: BaseException) -> bool:
    """A store or the broker is unreachable (not a bad message, not a bug): retried until it
    is back instead of counting towards parking the message."""
    if isinstance(exc, MongoConnectionFailure | RedisConnectionError | RedisTimeoutError
                  | KafkaConnectionError | KafkaTimeoutError):
        return True
    return isinstance(exc, KafkaError) and bool(getattr(exc, "retriable", False))


class ProcessedEventsProto(Protocol):
    async def seen(self, consumer: str, event_id: str) -> bool: ...
    async def mark(self, consumer: str, event_id: str) -> None: ...


class Retry:
    """The retry rule of every consumed message (its dedupe check, handler and mark), and
    parking it through `dead_letter` (the bus's DLQ write) when it keeps failing."""

    def __init__(self, settings: ServiceSettings, dead_letter: Callable[..., Awaitable[None]]) -> None:
        self.settings = settings
        self._dead_letter = dead_letter

    def delay(self, attempt: int) -> float:
        return min(RETRY_CAP_S, self.settings.kafka_retry_backoff_s * 2 ** min(attempt - 1, 8))

    async def apply(self, event: Envelope, handler: Handler, processed: ProcessedEventsProto | None,
                    consumer: str, health: ConsumerHealth | None = None, failures: Any = None) -> str | None:
        """Apply `event` once: the dedupe check, the handler, the mark — each under the same
        retry rule (`run`), the handler never run again for a mark that failed. None
        when applied (or already applied); the error to park it with when it keeps failing.
        `failures` (a counter) counts the handler's failed attempts."""
        try:
            if processed is not None and await self.run(lambda: processed.seen(consumer, event.event_id), health):
                log.info("skipping already applied event %s", event.event_id)
                return None
            await self.run(lambda: handler(event), health, failures)
        except Failed as failed:
            return failed.error
        if processed is not None:
            try:
                await self.run(lambda: processed.mark(consumer, event.event_id), health)
            except Failed as failed:  # applied; only a redelivery would apply it again (idempotent)
                log.error("could not mark event %s as applied: %s", event.event_id, failed.error)
        return None

    async def run(self, op: Callable[[], Awaitable[T]], health: ConsumerHealth | None = None,
                  failure_count: Any = None) -> T:
        """Run `op`, retrying with backoff: up to `KAFKA_HANDLER_ATTEMPTS` times for a failure
        (then `Failed`), without limit while infrastructure is away (a store, the broker): the
        message is not the problem, and parking it would lose it for the flow; its offset stays
        uncommitted meanwhile, and the consumer's `health` shows the wait."""
        attempts = max(1, self.settings.kafka_handler_attempts)
        failures = outages = 0
        waiting = object()
        try:
            while True:
                try:
                    return await op()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - every failure is retried, then parked
                    if is_outage(exc):
                        outages += 1
                        delay = self.delay(outages)
                        log.warning("infrastructure unavailable (%r); waiting %.1fs, uncommitted", exc, delay)
                        if health is not None:
                            since = health.waits.get(id(waiting), (time.monotonic(), ""))[0]
                            health.waits[id(waiting)] = (since, repr(exc))
                        await asyncio.sleep(delay)
                        continue
                    failures += 1
                    if failure_count is not None:
                        failure_count.inc()
                    if failures >= attempts:
                        log.exception("failed %d times", failures)
                        raise Failed(repr(exc)) from exc
                    log.warning("failed (attempt %d/%d): %r", failures, attempts, exc)
                    await asyncio.sleep(self.delay(failures))
        finally:
            if health is not None:
                health.waits.pop(id(waiting), None)

    async def park(self, msg: Any, topic: Topic, consumer: str, raw: bytes, kind: str, error: str, where: dict) -> None:
        """Put a message on the DLQ, trying until that worked (the broker away): its offset is
        never committed before (a shutdown meanwhile leaves it uncommitted, redelivered)."""
        attempt = 0
        while True:
            try:
                await self._dead_letter(
                    topic, consumer=consumer, raw=raw, key=getattr(msg.raw_message, "key", None),
                    error_kind=kind, error=error, **where,
                )
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                attempt += 1
                log.exception("could not write to %s; trying again, uncommitted", topic.dlq)
                await asyncio.sleep(self.delay(attempt))
