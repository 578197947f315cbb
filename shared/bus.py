"""The Kafka bus every service uses: one FastStream broker per service, typed publishers,
and consumers with the project's delivery rules built in.

Delivery rules (the same in every service, so nobody re-implements them):
- commit after the handler succeeded (manual ack; never FastStream's ACK_FIRST);
- a body that does not validate against the topic's schema goes to `<topic>.dlq` with the
  error, and the consumer moves on;
- a handler that keeps failing is retried with backoff, then parked on the DLQ too, so one
  poison event never stalls a partition; if even the DLQ cannot be written the message is
  not committed and is tried again — nothing is lost;
- events already applied (by event id, per consumer group) are skipped; the check and the
  mark go through the same retries as the handler;
- infrastructure that is away (Mongo, Redis, the broker) is waited for, with capped backoff,
  never counted towards parking: the offset is not committed past the message meanwhile.

Service code writes `async def on_x(event: SomeEvent) -> None` and registers it with
`bus.consume(...)`; it never sees offsets or raw bytes.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError, TopicAlreadyExistsError
from pymongo.errors import ConnectionFailure as MongoConnectionFailure
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from aiokafka.structs import TopicPartition
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy
from pydantic import BaseModel, TypeAdapter, ValidationError

from shared.events import Envelope
from shared.logging import bind_event
from shared.settings import ServiceSettings
from shared.topics import ALL_TOPICS, Topic

log = logging.getLogger("handoff.bus")

E = TypeVar("E", bound=Envelope)
T = TypeVar("T")
Handler = Callable[[Any], Awaitable[None]]


class Failed(Exception):
    """A message's processing failed every attempt; `error` goes to the DLQ record."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error

# The longest wait between two tries of a message whose infrastructure is away.
RETRY_CAP_S = 5.0


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


class EventPublisher:
    """A declared publisher for one topic; keys every event as the topic declares."""

    def __init__(self, broker: KafkaBroker, topic: Topic, prefix: str = "", schema: Any | None = None) -> None:
        self.topic = topic
        self.topic_name = prefix + topic.name
        self._publisher = broker.publisher(self.topic_name, title=f"{topic.name}:publish", schema=schema)

    async def publish(self, event: Envelope) -> None:
        await self._publisher.publish(
            event.model_dump_json().encode(),
            key=event.partition_key(self.topic.key),
            headers={"content-type": "application/json", "event-type": getattr(event, "type", "")},
        )


class Bus:
    def __init__(
        self,
        settings: ServiceSettings,
        *,
        client_id: str,
        processed: ProcessedEventsProto | None = None,
    ) -> None:
        self.settings = settings
        self.client_id = client_id
        self.processed = processed
        self._dispatchers: list[KeyedDispatcher] = []
        # Every topic this service reads or writes (prefixed): readiness checks they exist.
        self.topic_names: set[str] = set()
        self._admin: AIOKafkaAdminClient | None = None
        self.broker = KafkaBroker(
            settings.kafka_bootstrap_servers,
            client_id=client_id,
            enable_idempotence=settings.kafka_enable_idempotence,
            acks="all",
            request_timeout_ms=15000,
            linger_ms=0,
            graceful_timeout=settings.kafka_graceful_timeout_s,
        )

    # ------------------------------------------------------------------ publishing
    def publisher(self, topic: Topic, schema: Any | None = None) -> EventPublisher:
        self.topic_names.add(self.settings.kafka_topic_prefix + topic.name)
        return EventPublisher(self.broker, topic, self.settings.kafka_topic_prefix, schema)

    async def missing_topics(self) -> list[str]:
        """The topics this service uses that the broker does not have (e.g. a broker that
        restarted without its memory): its messages could not be written or read."""
        if self._admin is None:
            self._admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap_servers,
                                              request_timeout_ms=5000)
            await self._admin.start()
        existing = set(await self._admin.list_topics())
        return sorted(self.topic_names - existing)

    async def close(self) -> None:
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    async def dead_letter(
        self,
        topic: Topic,
        *,
        consumer: str,
        raw: bytes,
        key: bytes | None,
        error_kind: str,
        error: str,
        partition: int | None = None,
        offset: int | None = None,
    ) -> None:
        try:
            payload: Any = raw.decode("utf-8")
            encoding = "utf-8"
        except UnicodeDecodeError:
            payload, encoding = base64.b64encode(raw).decode(), "base64"
        record = {
            "source_topic": topic.name,
            "partition": partition,
            "offset": offset,
            "consumer": consumer,
            "error_kind": error_kind,
            "error": error[:4000],
            "payload": payload,
            "payload_encoding": encoding,
            "failed_at": datetime.now(UTC).isoformat(),
        }
        await self.broker.publish(json.dumps(record).encode(), topic=self.settings.kafka_topic_prefix + topic.dlq, key=key)

    # ------------------------------------------------------------------ consuming
    def consume(self, topic: Topic, adapter: TypeAdapter[Any] | type[BaseModel], handler: Handler,
                **options: Any) -> None:
        """Register `handler(event)` on `topic`: `consume_all` with one route."""
        self.consume_all([(topic, adapter, handler)], **options)

    def consume_all(
        self,
        routes: Sequence[tuple[Topic, TypeAdapter[Any] | type[BaseModel], Handler]],
        *,
        group_id: str | None,
        from_beginning: bool = True,
        fetch_max_wait_ms: int | None = None,
        dedupe: bool = True,
        idempotent: Collection[Topic] = (),
        concurrency: int = 1,
    ) -> None:
        """One consumer (one group membership, one fetch loop) for several topics, each with
        its schema and handler: a service reads what it needs with as few consumers as it has
        purposes, which costs the broker one poll loop instead of one per topic.

        group_id=None: every instance sees every message (dashboard fan-out, settings
        table); nothing is committed and `from_beginning` decides where a new instance
        starts. With a group, partitions are shared and offsets committed after success.

        concurrency > 1 (groups only): up to that many events are handled at once, events
        with the same key (one conversation, whichever of the topics it comes from) strictly
        one after another in offset order, and each partition is committed only up to its
        lowest unfinished offset. So one slow conversation does not hold up the others.

        `idempotent`: topics whose handlers are safe to run twice by themselves (ids derived
        from the input, conditional writes): they skip the processed-events check and mark,
        two store round trips per message on what may be the latency path.
        """
        grouped = group_id is not None
        processed = self.processed if (dedupe and grouped) else None
        table = {self.settings.kafka_topic_prefix + topic.name:
                 (topic, adapter if not isinstance(adapter, type) else TypeAdapter(adapter), handler,
                  None if topic in idempotent else processed)
                 for topic, adapter, handler in routes}
        names = [t.name for t, _, _ in routes]
        consumer_name = group_id or f"{self.client_id}:{'+'.join(names)}"
        self.topic_names.update(table)

        async def _process(msg: Any) -> None:
            """Handle one message until its offset may be committed: handled, skipped as
            already applied, or parked on the DLQ."""
            record = msg.raw_message
            topic, adapter, handler, dedupe_store = table[record.topic]
            raw: bytes = msg.body
            where = {"partition": getattr(record, "partition", None), "offset": getattr(record, "offset", None)}
            try:
                event = adapter.validate_json(raw)
            except ValidationError as exc:
                # Where and why, never the values: an invalid record may carry secrets (e.g. a
                # chatbot's channel tokens). The DLQ keeps the payload itself, as the topic did.
                errors = exc.errors(include_input=False, include_url=False, include_context=False)
                log.warning("invalid event on %s, sent to %s: %s", topic.name, topic.dlq, errors[:3])
                await self._park(msg, topic, consumer_name, raw, "invalid", json.dumps(errors, default=str), where)
                return
            with bind_event(event):
                failure = await self._apply(event, handler, dedupe_store, consumer_name)
                if failure is not None:
                    log.error("handler failed %d times on %s; parked on %s", self.settings.kafka_handler_attempts,
                              topic.name, topic.dlq)
                    await self._park(msg, topic, consumer_name, raw, "handler_failed", failure, where)

        if concurrency > 1 and grouped:
            dispatcher = KeyedDispatcher(concurrency, consumer_name)
            self._dispatchers.append(dispatcher)

            async def _consume(msg: KafkaMessage) -> None:
                await dispatcher.submit(msg, _process)
        else:

            async def _consume(msg: KafkaMessage) -> None:
                await _process(msg)
                await _ack(msg, grouped)

        _consume.__name__ = "consume_" + "_".join(n.replace(".", "_") for n in names)
        self.broker.subscriber(
            *table,
            group_id=group_id,
            auto_offset_reset="earliest" if from_beginning else "latest",
            ack_policy=AckPolicy.MANUAL,
            fetch_max_wait_ms=fetch_max_wait_ms or self.settings.kafka_fetch_max_wait_ms,
            session_timeout_ms=self.settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=self.settings.kafka_heartbeat_interval_ms,
            title=f"{'+'.join(names)}:{consumer_name}",
        )(_consume)

    def _retry_delay(self, attempt: int) -> float:
        return min(RETRY_CAP_S, self.settings.kafka_retry_backoff_s * 2 ** min(attempt - 1, 8))

    async def _apply(self, event: Envelope, handler: Handler, processed: ProcessedEventsProto | None,
                     consumer: str) -> str | None:
        """Apply `event` once: the dedupe check, the handler, the mark — each under the same
        retry rule (`_retrying`), the handler never run again for a mark that failed. None
        when applied (or already applied); the error to park it with when it keeps failing."""
        try:
            if processed is not None and await self._retrying(lambda: processed.seen(consumer, event.event_id)):
                log.info("skipping already applied event %s", event.event_id)
                return None
            await self._retrying(lambda: handler(event))
        except Failed as failed:
            return failed.error
        if processed is not None:
            try:
                await self._retrying(lambda: processed.mark(consumer, event.event_id))
            except Failed as failed:  # applied; only a redelivery would apply it again (idempotent)
                log.error("could not mark event %s as applied: %s", event.event_id, failed.error)
        return None

    async def _retrying(self, op: Callable[[], Awaitable[T]]) -> T:
        """Run `op`, retrying with backoff: up to `KAFKA_HANDLER_ATTEMPTS` times for a failure
        (then `Failed`), without limit while infrastructure is away (a store, the broker): the
        message is not the problem, and parking it would lose it for the flow; its offset stays
        uncommitted meanwhile."""
        attempts = max(1, self.settings.kafka_handler_attempts)
        failures = outages = 0
        while True:
            try:
                return await op()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - every failure is retried, then parked
                if is_outage(exc):
                    outages += 1
                    delay = self._retry_delay(outages)
                    log.warning("infrastructure unavailable (%r); waiting %.1fs, uncommitted", exc, delay)
                    await asyncio.sleep(delay)
                    continue
                failures += 1
                if failures >= attempts:
                    log.exception("failed %d times", failures)
                    raise Failed(repr(exc)) from exc
                log.warning("failed (attempt %d/%d): %r", failures, attempts, exc)
                await asyncio.sleep(self._retry_delay(failures))

    async def _park(self, msg: Any, topic: Topic, consumer: str, raw: bytes, kind: str, error: str, where: dict) -> None:
        """Put a message on the DLQ, trying until that worked (the broker away): its offset is
        never committed before (a shutdown meanwhile leaves it uncommitted, redelivered)."""
        attempt = 0
        while True:
            try:
                await self.dead_letter(
                    topic, consumer=consumer, raw=raw, key=getattr(msg.raw_message, "key", None),
                    error_kind=kind, error=error, **where,
                )
                return
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001
                attempt += 1
                log.exception("could not write to %s; trying again, uncommitted", topic.dlq)
                await asyncio.sleep(self._retry_delay(attempt))

    async def drain(self, timeout: float) -> None:
        """Before the broker stops: let concurrent handlers finish (up to `timeout`), cancel
        the rest uncommitted so they are redelivered."""
        await asyncio.gather(*(d.drain(timeout) for d in self._dispatchers))


class KeyedDispatcher:
    """Runs handlers concurrently across keys, in order within a key, and commits each
    partition up to its lowest offset still in flight (so a crash redelivers exactly the
    unfinished ones and possibly some finished after them — handlers are idempotent)."""

    def __init__(self, limit: int, name: str) -> None:
        self.name = name
        self._slots = asyncio.Semaphore(limit)
        self._tails: dict[Any, asyncio.Task] = {}
        self._tasks: set[asyncio.Task] = set()
        self._in_flight: dict[tuple[str, int], set[int]] = defaultdict(set)
        self._done_max: dict[tuple[str, int], int] = {}
        self._committed: dict[tuple[str, int], int] = {}
        self._closing = False

    async def submit(self, msg: Any, process: Callable[[Any], Awaitable[None]]) -> None:
        record = msg.raw_message
        tp = (record.topic, record.partition)
        # Registered before anything else: the commit watermark never passes it until it is done.
        self._in_flight[tp].add(record.offset)
        if self._closing:
            return  # left in flight, uncommitted: redelivered after the restart
        await self._slots.acquire()  # back-pressure: the fetch loop waits for a free slot
        key = record.key if record.key is not None else f"partition-{record.partition}"
        previous = self._tails.get(key)
        task = asyncio.create_task(self._run(previous, msg, process, tp, record.offset))
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
                   tp: tuple[str, int], offset: int) -> None:
        try:
            if previous is not None:
                await asyncio.wait([previous])  # same key: strictly after the one before
            await process(msg)  # handled or parked; until then it stays in flight, uncommitted
        finally:
            self._slots.release()
        await self._finished(msg, tp, offset)

    async def _finished(self, msg: Any, tp: tuple[str, int], offset: int) -> None:
        in_flight = self._in_flight[tp]
        in_flight.discard(offset)
        self._done_max[tp] = max(self._done_max.get(tp, -1), offset)
        watermark = min(in_flight) if in_flight else self._done_max[tp] + 1
        if watermark <= self._committed.get(tp, -1):
            return
        self._committed[tp] = watermark
        try:
            await msg.consumer.commit({TopicPartition(tp[0], tp[1]): watermark})
        except Exception as exc:  # noqa: BLE001 - e.g. the partition moved in a rebalance
            log.warning("%s: commit of %s@%d failed (%r); the new owner redelivers from its last commit",
                        self.name, tp, watermark, exc)

    async def drain(self, timeout: float) -> None:
        self._closing = True
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)


async def _ack(msg: Any, grouped: bool) -> None:
    # Without a consumer group there is nothing to commit.
    if grouped:
        await msg.ack()


# ---------------------------------------------------------------------- tables
async def read_table(settings: ServiceSettings, topic: Topic, adapter: TypeAdapter[Any],
                     apply: Callable[[Any], Awaitable[None]]) -> int:
    """Read `topic` from the beginning to its current end, calling `apply(event)` for each
    valid record; returns how many were applied. For tables such as `chatbot.settings` that
    a service must hold before it consumes or serves anything. Invalid records are skipped
    here: the service's live consumer of the same topic parks them on the DLQ."""
    name = settings.kafka_topic_prefix + topic.name
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms)
    await consumer.start()
    applied = 0
    try:
        await consumer.topics()  # fetches the cluster's metadata
        partitions = [TopicPartition(name, p) for p in (consumer.partitions_for_topic(name) or set())]
        if not partitions:
            return 0
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        while any([await consumer.position(tp) < ends[tp] for tp in partitions]):
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    try:
                        event = adapter.validate_json(record.value)
                    except ValidationError:
                        continue
                    await apply(event)
                    applied += 1
        return applied
    finally:
        await consumer.stop()


# ---------------------------------------------------------------------- admin
async def ensure_topics(
    bootstrap_servers: str, prefix: str = "", topics: tuple[Topic, ...] = ALL_TOPICS, replication: int = 1
) -> list[str]:
    """Create every topic and its DLQ explicitly (the embedded broker does not auto-create)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=15000)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted: list[NewTopic] = []
        for t in topics:
            configs = {"cleanup.policy": "compact"} if t.compacted else {}
            if prefix + t.name not in existing:
                wanted.append(NewTopic(prefix + t.name, t.partitions, replication, topic_configs=configs))
            if prefix + t.dlq not in existing:
                wanted.append(NewTopic(prefix + t.dlq, 1, replication))
        created: list[str] = []
        for nt in wanted:  # one at a time: a concurrent creator makes one fail, not all
            try:
                await admin.create_topics([nt])
                created.append(nt.name)
            except TopicAlreadyExistsError:
                pass
        return created
    finally:
        await admin.close()
