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
  never counted towards parking: the offset is not committed past the message meanwhile;
- every consumer's health (commits, fetches, handlers waiting on infrastructure) is kept for
  readiness, and a broker that lost this service's topics (the embedded broker keeps them in
  memory only) is noticed and recovered from: topics recreated, consumers restarted, the
  `recovered_hooks` run, and one loud report of what was lost.

Service code writes `async def on_x(event: SomeEvent) -> None` and registers it with
`bus.consume(...)`; it never sees offsets or raw bytes.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import inspect
import json
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    TopicAlreadyExistsError,
    for_code,
)
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
# Commits an offset of a partition for a message read at a bus generation, through a callable.
Committer = Callable[[int, TopicPartition, int, Callable[[], Awaitable[Any]]], Awaitable[None]]


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


# A consumer that cannot commit, whose fetches keep failing, or whose handler has waited on
# infrastructure for this long is not ready (a blip is not worth an alarm; a stuck one is).
CONSUMER_FAULT_AFTER_S = 15.0
# How often the bus asks the broker whether it still has this service's topics.
WATCH_INTERVAL_S = 2.0
# aiokafka retries a failed fetch every ~0.1 s: a pause this long ends a run of failures.
_FAULT_QUIET_S = 3.0
# The first words of each ERROR report of a recovery (one per recovery; operators grep it).
LOSS_REPORT = "BROKER LOST DATA"


class BrokerLost(KafkaError):
    """Nothing is written while the bus recreates the topics the broker lost: the write would
    land in a log about to be wiped. Retriable, so handlers wait and HTTP callers answer 503."""

    retriable = True


def _where(tp: TopicPartition) -> str:
    return f"{tp.topic}[{tp.partition}]"


@dataclass
class ConsumerHealth:
    """What readiness and a loss report need to know about one consumer."""

    name: str
    group: str | None
    subscriber: Any = None
    # Per partition of the current log: the highest offset handled, the next offset committed,
    # the highest log end seen (a log end below what was handled means the log was lost).
    handled: dict[TopicPartition, int] = field(default_factory=dict)
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    ends: dict[TopicPartition, int] = field(default_factory=dict)
    # Commits under way (aiokafka retries e.g. UnknownTopicOrPartition for ever): since when,
    # of what; and the last error aiokafka reported for this group's commits.
    commits: dict[int, tuple[float, str]] = field(default_factory=dict)
    commit_error: str = ""
    # What aiokafka said when a commit found its topic gone (the broker lost it).
    topic_gone: str = ""
    # Handlers waiting for infrastructure: since when, and why.
    waits: dict[int, tuple[float, str]] = field(default_factory=dict)

    def problem(self, now: float, after_s: float) -> str | None:
        if self.topic_gone:
            return f"consumer {self.name}: offset commits fail, the broker lost the topic ({self.topic_gone})"
        if self.commits:
            since, where = min(self.commits.values())
            if now - since >= after_s:
                return (f"consumer {self.name}: offset commit of {where} failing for {now - since:.0f}s "
                        f"({self.commit_error or 'no answer'})")
        if self.waits:
            since, error = min(self.waits.values())
            if now - since >= after_s:
                return f"consumer {self.name}: a handler has waited {now - since:.0f}s for infrastructure ({error})"
        return None

    def regressions(self) -> list[str]:
        """Assigned partitions whose log now ends at or below an offset this consumer handled:
        the log was lost (and maybe recreated by another process). Records the log ends seen."""
        consumer = getattr(self.subscriber, "consumer", None)
        if consumer is None:
            return []
        found = []
        for tp in consumer.assignment():
            end = consumer.highwater(tp)
            if end is None:
                continue
            last = self.handled.get(tp)
            if last is not None and end <= last:
                found.append(f"{_where(tp)} ends at {end}, {self.name} had handled offset {last}")
            else:
                self.ends[tp] = max(self.ends.get(tp, 0), end)
        return found

    def forget_log(self) -> None:
        self.handled.clear()
        self.committed.clear()
        self.ends.clear()
        self.commit_error = self.topic_gone = ""


@dataclass
class FaultRun:
    """A fault aiokafka reports over and over (each failed fetch): since when, and its words."""

    first: float = 0.0
    last: float = float("-inf")
    text: str = ""

    def seen(self, text: str, now: float) -> None:
        if now - self.last > _FAULT_QUIET_S:
            self.first = now
        self.last, self.text = now, text

    def problem(self, now: float, after_s: float) -> str | None:
        if now - self.last <= _FAULT_QUIET_S and self.last - self.first >= after_s:
            return f"fetches failing for {self.last - self.first:.0f}s ({self.text})"
        return None


class _AiokafkaFaults(logging.Handler):
    """aiokafka retries failing offset commits and fetches inside its own loops and reports
    them only in its log ('OffsetCommit failed for group g on partition … : UnknownTopicOr
    PartitionError', 'Failed fetch messages from 1: …'): this hands them to the bus."""

    COMMIT = "OffsetCommit failed for group"
    FETCH = "Failed fetch messages from"

    def __init__(self, bus: Bus) -> None:
        super().__init__(logging.WARNING)
        self.bus = bus

    def emit(self, record: logging.LogRecord) -> None:
        text = record.msg if isinstance(record.msg, str) else ""
        if text.startswith(self.COMMIT) and record.args:
            group = record.args[0] if isinstance(record.args, tuple) else None
            message = record.getMessage()
            for health in self.bus.consumers:
                if health.group == group:
                    health.commit_error = message
                    if "UnknownTopicOrPartition" in message:
                        health.topic_gone = message
                        self.bus.stop_committing()
        elif text.startswith(self.FETCH):
            self.bus.fetch_faults.seen(record.getMessage(), time.monotonic())


class _RewindPastEnd(ConsumerRebalanceListener):
    """After a recovery, a committed offset past a partition's end belongs to a lost log
    (committed before this process noticed): Kafka would answer OffsetOutOfRange and reset,
    the embedded broker just waits there, silently skipping the new log's first messages."""

    def __init__(self, bus: Bus, health: ConsumerHealth) -> None:
        self.bus, self.health = bus, health

    async def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        consumer = getattr(self.health.subscriber, "consumer", None)
        if not self.bus.generation or not assigned or consumer is None:
            return
        ends = await consumer.end_offsets(list(assigned))
        for tp in assigned:
            committed = await consumer.committed(tp)
            if committed is not None and committed > ends[tp]:
                log.warning("%s: committed offset %d is past the end (%d) of %s; reading it from the start",
                            self.health.name, committed, ends[tp], _where(tp))
                consumer.seek(tp, 0)


class EventPublisher:
    """A declared publisher for one topic; keys every event as the topic declares."""

    def __init__(self, broker: KafkaBroker, topic: Topic, prefix: str = "", schema: Any | None = None,
                 bus: Bus | None = None) -> None:
        self.topic = topic
        self.topic_name = prefix + topic.name
        self._bus = bus
        self._publisher = broker.publisher(self.topic_name, title=f"{topic.name}:publish", schema=schema)

    async def publish(self, event: Envelope) -> None:
        """Written when this returns: the broker acknowledged it (acks=all)."""
        await (await self.enqueue(event))

    async def enqueue(self, event: Envelope) -> asyncio.Task[None]:
        """Hand the event to the producer and return at once with the broker's acknowledgement
        to await. Events enqueued one after another keep that order in their partition (the
        producer has one request per partition in flight), so a caller holds a lock only while
        it orders, not for the round trip; it still awaits the acknowledgement before it
        commits what led to the event."""
        if self._bus is not None:
            self._bus.check_writable()
        sent = await self._publisher.publish(
            event.model_dump_json().encode(),
            key=event.partition_key(self.topic.key),
            headers={"content-type": "application/json", "event-type": getattr(event, "type", "")},
            no_confirm=True,
        )
        return asyncio.ensure_future(self._acknowledged(sent))

    async def _acknowledged(self, sent: Any) -> None:
        # A real producer gives a future; FastStream's test broker has handled it already.
        written = await sent if inspect.isawaitable(sent) else sent
        if self._bus is not None:
            self._bus.acked(written)


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
        # Every topic this service reads or writes, by prefixed name: readiness checks they
        # exist, recovery recreates them (and their DLQs) with these partition counts.
        self._topics: dict[str, Topic] = {}
        self._admin: AIOKafkaAdminClient | None = None
        self.consumers: list[ConsumerHealth] = []
        self.fetch_faults = FaultRun()
        self.fault_after_s = CONSUMER_FAULT_AFTER_S
        self.watch_interval_s = WATCH_INTERVAL_S
        # Run after a recovery from a broker that lost its topics (e.g. republish a table).
        self.recovered_hooks: list[Callable[[], Awaitable[Any]]] = []
        # Goes up when the broker is found to have lost logs (`stop_committing`): offsets of
        # messages read before are never committed (they would skip the recreated log's first).
        self.generation = 0
        self._recovering_since: float | None = None
        self._writes_blocked = False
        self._had_all_topics = False
        self._commits: set[asyncio.Future] = set()
        # Acked writes of this process per partition (count, highest offset), for a loss report.
        self._acked: dict[TopicPartition, tuple[int, int]] = {}
        self._faults = _AiokafkaFaults(self)
        self._watch: asyncio.Task | None = None
        self.broker = KafkaBroker(
            settings.kafka_bootstrap_servers,
            client_id=client_id,
            enable_idempotence=settings.kafka_enable_idempotence,
            acks="all",
            request_timeout_ms=15000,
            linger_ms=0,
            graceful_timeout=settings.kafka_graceful_timeout_s,
        )

    @property
    def topic_names(self) -> set[str]:
        return set(self._topics)

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Start the broker's producer and consumers, the health reports and the watch."""
        logging.getLogger("aiokafka").addHandler(self._faults)
        try:
            await self.broker.start()
        except BaseException:
            logging.getLogger("aiokafka").removeHandler(self._faults)
            raise
        self._watch = asyncio.create_task(self._watch_loop(), name=f"{self.client_id} bus watch")

    async def stop(self, graceful_timeout: float) -> None:
        """Stop watching, let handlers finish (up to `graceful_timeout`), stop the broker."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        await self.drain(graceful_timeout)
        await self.broker.stop()
        await self.close()

    async def close(self) -> None:
        logging.getLogger("aiokafka").removeHandler(self._faults)
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    # ------------------------------------------------------------------ publishing
    def publisher(self, topic: Topic, schema: Any | None = None) -> EventPublisher:
        self._topics[self.settings.kafka_topic_prefix + topic.name] = topic
        return EventPublisher(self.broker, topic, self.settings.kafka_topic_prefix, schema, bus=self)

    def check_writable(self) -> None:
        if self._writes_blocked:
            raise BrokerLost("the broker lost its topics; writes wait until they are recreated")

    def acked(self, written: Any) -> None:
        """Count a write the broker acknowledged (for the loss report)."""
        tp, offset = getattr(written, "topic_partition", None), getattr(written, "offset", None)
        if isinstance(tp, TopicPartition) and isinstance(offset, int):
            count, _ = self._acked.get(tp, (0, -1))
            self._acked[tp] = (count + 1, offset)

    async def _admin_client(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            self._admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap_servers,
                                              request_timeout_ms=5000)
            await self._admin.start()
        return self._admin

    async def missing_topics(self) -> list[str]:
        """The topics this service uses that the broker does not have (e.g. a broker that
        restarted without its memory): its messages could not be written or read."""
        existing = set(await (await self._admin_client()).list_topics())
        return sorted(self.topic_names - existing)

    # ------------------------------------------------------------------ health and recovery
    def consumer_problems(self) -> list[str]:
        """Why this service's consumers cannot do their work, if they cannot: a commit or
        fetches failing, a handler stuck on infrastructure (each for `fault_after_s`), or a
        recovery under way. Empty when they can."""
        now = time.monotonic()
        problems = []
        if self._recovering_since is not None:
            problems.append(f"recovering for {now - self._recovering_since:.0f}s: the broker lost this "
                            "service's topics; recreating them and restarting the consumers")
        if self.consumers and (fetching := self.fetch_faults.problem(now, self.fault_after_s)):
            problems.append(fetching)
        problems += [p for h in self.consumers if (p := h.problem(now, self.fault_after_s))]
        return problems

    def _wanted_topics(self) -> dict[str, int]:
        """Every topic this service uses and its DLQ, with its partition count."""
        prefix = self.settings.kafka_topic_prefix
        wanted = {prefix + t.dlq: 1 for t in self._topics.values()}
        return wanted | {name: t.partitions for name, t in self._topics.items()}

    async def lost_topics(self) -> list[str]:
        """This service's topics the broker lost, once it had them all: missing, or with fewer
        partitions than declared (recreated by a client's metadata request; Kafka never
        shrinks a topic). Empty until the broker first had them all: topics never created
        are readiness's to report, not the bus's to invent."""
        counts = await _partition_counts(await self._admin_client())
        lost = sorted(name for name, n in self._wanted_topics().items() if counts.get(name, 0) < n)
        self._had_all_topics = self._had_all_topics or not lost
        return lost if self._had_all_topics else []

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.watch_interval_s)
            try:
                await self.check_broker()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the broker away: readiness says so; next round
                recovering = self._recovering_since is not None
                log.log(logging.WARNING if recovering else logging.DEBUG, "bus watch%s: %r",
                        " (recovery unfinished; trying again)" if recovering else "", exc)

    async def check_broker(self) -> None:
        """Recover if the broker lost this service's topics, a consumed log shrank, or a commit
        found its topic gone (or a recovery did not finish: its consumers wait for one)."""
        signs = [r for h in self.consumers for r in h.regressions()]
        signs += [f"commit failed: {h.topic_gone}" for h in self.consumers if h.topic_gone]
        lost = await self.lost_topics()
        if lost or signs or self._recovering_since is not None:
            await self._recover(lost, signs)

    def stop_committing(self) -> None:
        """Nothing read until now is committed any more: it was read from a log the broker
        lost (a commit found its topic gone, or a recovery began), and its offset would skip
        the recreated log's first messages — even a commit aiokafka is still retrying."""
        self.generation += 1
        for commit in list(self._commits):
            commit.cancel()

    async def _recover(self, lost: list[str], signs: list[str]) -> None:
        """Recreate what the broker lost and start this service's consumers again on the new
        logs; then one ERROR report of what was lost, and the `recovered_hooks`."""
        started = time.monotonic()
        if self._recovering_since is None:
            log.warning("the broker lost topics %s%s; recovering", lost or "(recreated elsewhere)",
                        f" ({'; '.join(signs)})" if signs else "")
        self._recovering_since = started
        self._writes_blocked = True
        self.stop_committing()
        self._pause_consumers()
        report = loss_report(lost, signs, self.consumers, self._acked)
        try:
            remade = await self._remake(self._wanted_topics())
            await self._refresh_producer()
        finally:
            self._writes_blocked = False  # in-flight handlers may write their results (or retry)
        await self._restart_consumers()
        self._recovering_since = None
        self._acked.clear()
        log.error("%s (recovered in %.1fs; topics recreated here: %s)\n%s", LOSS_REPORT,
                  time.monotonic() - started, ", ".join(remade) or "none", report)
        for hook in self.recovered_hooks:
            try:
                await hook()
            except Exception:  # noqa: BLE001 - one failed hook must not stop the others
                log.exception("recovered hook %s failed", getattr(hook, "__qualname__", hook))

    def _pause_consumers(self) -> None:
        """Nothing more is read from the lost logs until the consumers start again."""
        for health in self.consumers:
            consumer = getattr(health.subscriber, "consumer", None)
            if consumer is not None:
                consumer.pause(*consumer.assignment())

    async def _remake(self, wanted: dict[str, int]) -> list[str]:
        admin = await self._admin_client()
        counts = await _partition_counts(admin)
        remade = []
        for name, partitions in wanted.items():
            if counts.get(name, 0) != partitions:
                topic = self._topics.get(name)
                await _remake_topic(admin, name, partitions, compacted=bool(topic and topic.compacted))
                remade.append(name)
        return remade

    async def _refresh_producer(self) -> None:
        """The producer's cached metadata may still describe the lost topics."""
        producer = getattr(getattr(self.broker.config.broker_config.producer, "_producer", None), "producer", None)
        if producer is not None:
            await producer.client.force_metadata_update()

    async def _restart_consumers(self) -> None:
        """Fresh consumers: positions from the lost log would skip the new one's messages."""
        subscribers = [h.subscriber for h in self.consumers if h.subscriber is not None]
        await asyncio.gather(*(s.stop() for s in subscribers))
        await asyncio.gather(*(d.reset(self.settings.kafka_graceful_timeout_s) for d in self._dispatchers))
        for health in self.consumers:
            health.forget_log()
        await asyncio.gather(*(s.start() for s in subscribers))

    async def _commit(self, health: ConsumerHealth, generation: int, tp: TopicPartition, offset: int,
                      commit: Callable[[], Awaitable[Any]]) -> None:
        """Commit `offset` (the next to read) of `tp` through `commit()`. Skipped for a message
        of a lost log; a commit aiokafka keeps retrying shows in the consumer's health, and a
        recovery cancels it. A failure is logged: the message is redelivered, never lost."""
        if generation != self.generation:
            return
        task = asyncio.ensure_future(commit())
        self._commits.add(task)
        where = f"{_where(tp)}@{offset}"
        health.commits[id(task)] = (time.monotonic(), where)
        try:
            await task
        except asyncio.CancelledError:
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise
            return  # cancelled by a recovery
        except Exception as exc:  # noqa: BLE001 - e.g. the partition moved in a rebalance
            health.commit_error = repr(exc)
            log.warning("%s: commit of %s failed (%r); the new owner redelivers from its last commit",
                        health.name, where, exc)
            return
        finally:
            self._commits.discard(task)
            health.commits.pop(id(task), None)
        health.committed[tp] = max(offset, health.committed.get(tp, 0))
        health.commit_error = ""

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
        self.check_writable()
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
        self._topics.update({name: route[0] for name, route in table.items()})
        health = ConsumerHealth(consumer_name, group_id)
        self.consumers.append(health)

        async def _process(msg: Any, generation: int) -> None:
            """Handle one message until its offset may be committed: handled, skipped as
            already applied, or parked on the DLQ."""
            await _handle(msg)
            record = msg.raw_message
            if generation == self.generation:  # an offset of a lost log says nothing of the new one
                tp = TopicPartition(record.topic, record.partition)
                health.handled[tp] = max(record.offset, health.handled.get(tp, -1))

        async def _handle(msg: Any) -> None:
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
                failure = await self._apply(event, handler, dedupe_store, consumer_name, health)
                if failure is not None:
                    log.error("handler failed %d times on %s; parked on %s", self.settings.kafka_handler_attempts,
                              topic.name, topic.dlq)
                    await self._park(msg, topic, consumer_name, raw, "handler_failed", failure, where)

        if concurrency > 1 and grouped:
            dispatcher = KeyedDispatcher(concurrency, consumer_name, functools.partial(self._commit, health))
            self._dispatchers.append(dispatcher)

            async def _consume(msg: KafkaMessage) -> None:
                generation = self.generation
                await dispatcher.submit(msg, lambda m: _process(m, generation), generation)
        else:

            async def _consume(msg: KafkaMessage) -> None:
                generation = self.generation
                await _process(msg, generation)
                if grouped:  # without a consumer group there is nothing to commit
                    record = msg.raw_message
                    await self._commit(health, generation, TopicPartition(record.topic, record.partition),
                                       record.offset + 1, msg.ack)

        _consume.__name__ = "consume_" + "_".join(n.replace(".", "_") for n in names)
        subscriber = self.broker.subscriber(
            *table,
            group_id=group_id,
            auto_offset_reset="earliest" if from_beginning else "latest",
            ack_policy=AckPolicy.MANUAL,
            fetch_max_wait_ms=fetch_max_wait_ms or self.settings.kafka_fetch_max_wait_ms,
            session_timeout_ms=self.settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=self.settings.kafka_heartbeat_interval_ms,
            listener=_RewindPastEnd(self, health) if grouped else None,
            title=f"{'+'.join(names)}:{consumer_name}",
        )
        subscriber(_consume)
        health.subscriber = subscriber

    def _retry_delay(self, attempt: int) -> float:
        return min(RETRY_CAP_S, self.settings.kafka_retry_backoff_s * 2 ** min(attempt - 1, 8))

    async def _apply(self, event: Envelope, handler: Handler, processed: ProcessedEventsProto | None,
                     consumer: str, health: ConsumerHealth | None = None) -> str | None:
        """Apply `event` once: the dedupe check, the handler, the mark — each under the same
        retry rule (`_retrying`), the handler never run again for a mark that failed. None
        when applied (or already applied); the error to park it with when it keeps failing."""
        try:
            if processed is not None and await self._retrying(lambda: processed.seen(consumer, event.event_id), health):
                log.info("skipping already applied event %s", event.event_id)
                return None
            await self._retrying(lambda: handler(event), health)
        except Failed as failed:
            return failed.error
        if processed is not None:
            try:
                await self._retrying(lambda: processed.mark(consumer, event.event_id), health)
            except Failed as failed:  # applied; only a redelivery would apply it again (idempotent)
                log.error("could not mark event %s as applied: %s", event.event_id, failed.error)
        return None

    async def _retrying(self, op: Callable[[], Awaitable[T]], health: ConsumerHealth | None = None) -> T:
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
                        delay = self._retry_delay(outages)
                        log.warning("infrastructure unavailable (%r); waiting %.1fs, uncommitted", exc, delay)
                        if health is not None:
                            since = health.waits.get(id(waiting), (time.monotonic(), ""))[0]
                            health.waits[id(waiting)] = (since, repr(exc))
                        await asyncio.sleep(delay)
                        continue
                    failures += 1
                    if failures >= attempts:
                        log.exception("failed %d times", failures)
                        raise Failed(repr(exc)) from exc
                    log.warning("failed (attempt %d/%d): %r", failures, attempts, exc)
                    await asyncio.sleep(self._retry_delay(failures))
        finally:
            if health is not None:
                health.waits.pop(id(waiting), None)

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

    def __init__(self, limit: int, name: str, commit: Committer) -> None:
        self.name = name
        self._commit = commit
        self._slots = asyncio.Semaphore(limit)
        self._tails: dict[Any, asyncio.Task] = {}
        self._tasks: set[asyncio.Task] = set()
        self._in_flight: dict[tuple[str, int], set[int]] = defaultdict(set)
        self._done_max: dict[tuple[str, int], int] = {}
        self._committed: dict[tuple[str, int], int] = {}
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
        self._committed[tp] = watermark
        partition = TopicPartition(tp[0], tp[1])
        await self._commit(generation, partition, watermark, lambda: msg.consumer.commit({partition: watermark}))

    async def drain(self, timeout: float) -> None:
        self._closing = True
        if not self._tasks:
            return
        _, pending = await asyncio.wait(set(self._tasks), timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    async def reset(self, timeout: float) -> None:
        """Between a lost log and its recreation (consumers stopped): the handlers under way
        finish (their offsets are not committed), then nothing of the old log is remembered."""
        await self.drain(timeout)
        self._tails.clear()
        self._in_flight.clear()
        self._done_max.clear()
        self._committed.clear()
        self._closing = False


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
        wanted = [(prefix + t.name, t.partitions, t.compacted) for t in topics]
        wanted += [(prefix + t.dlq, 1, False) for t in topics]
        created: list[str] = []
        for name, partitions, compacted in wanted:  # one at a time: a concurrent creator makes one fail, not all
            if name not in existing and await _create_topic(admin, name, partitions, compacted, replication):
                created.append(name)
        return created
    finally:
        await admin.close()


async def _create_topic(admin: AIOKafkaAdminClient, name: str, partitions: int, compacted: bool,
                        replication: int = 1) -> bool:
    """Create a topic; False if it exists already."""
    configs = {"cleanup.policy": "compact"} if compacted else {}
    try:
        response = await admin.create_topics([NewTopic(name, partitions, replication, topic_configs=configs)])
    except TopicAlreadyExistsError:
        return False
    for _, code, message in response.topic_errors:
        if code == TopicAlreadyExistsError.errno:
            return False
        if code:
            raise for_code(code)(f"creating {name}: {message}")
    return True


async def _partition_counts(admin: AIOKafkaAdminClient) -> dict[str, int]:
    """Every topic and its partition count. One metadata request for all topics: naming a
    missing topic would make the embedded broker create it, with its default count."""
    return {t["topic"]: len(t["partitions"]) for t in await admin.describe_topics()}


async def _remake_topic(admin: AIOKafkaAdminClient, name: str, partitions: int, compacted: bool) -> None:
    """Make `name` exist, empty, with `partitions` partitions. A topic this creates is deleted
    and created once more: the embedded broker keeps what clients wrote to a topic it did not
    know, and under a plain create those partitions refuse writes (their offsets start again
    at 0 below the old records). One another process made with the right count is kept."""
    for _ in range(3):
        if not await _create_topic(admin, name, partitions, compacted):
            if (await _partition_counts(admin)).get(name) == partitions:
                return
        await admin.delete_topics([name])
        if await _create_topic(admin, name, partitions, compacted):
            return
    raise KafkaError(f"could not recreate {name} with {partitions} partitions")


# ---------------------------------------------------------------------- loss report
def loss_report(lost: list[str], signs: list[str], consumers: Sequence[ConsumerHealth],
                acked: dict[TopicPartition, tuple[int, int]]) -> str:
    """What is knowable of what a broker that lost its logs took with it, in this process's
    view: per consumed partition, the messages written but never handled here (log end seen
    minus the offset handled); per written topic, the writes acked here since the start or the
    last recovery (those not yet consumed elsewhere are gone)."""
    lines = [f"topics lost: {', '.join(lost) or 'none missing here (recreated by another process)'}"]
    if signs:
        lines.append(f"seen by this process's consumers: {'; '.join(signs)}")
    for health in consumers:
        lines += _consumer_losses(health)
    by_topic: dict[str, list[str]] = defaultdict(list)
    totals: dict[str, int] = defaultdict(int)
    for tp, (count, highest) in sorted(acked.items()):
        by_topic[tp.topic].append(f"[{tp.partition}] up to offset {highest}")
        totals[tp.topic] += count
    lines += [f"written by this process and acked: {topic}: {totals[topic]} messages ({', '.join(parts)})"
              for topic, parts in by_topic.items()]
    lines.append("whatever any client wrote between the broker's restart and this recovery is gone "
                 "too; the broker keeps no count of it")
    return "\n".join("  " + line for line in lines)


def _consumer_losses(health: ConsumerHealth) -> list[str]:
    """Per partition with a log: where it ended, what was handled and committed here, and how
    many messages after the last one handled were never handled (lost with the log)."""
    parts, total = [], 0
    for tp in sorted(set(health.ends) | set(health.handled)):
        end, last, committed = health.ends.get(tp, 0), health.handled.get(tp), health.committed.get(tp)
        if last is None and end == 0:
            continue  # an empty log, nothing to lose
        if last is None:
            parts.append(f"{_where(tp)} log end {end}, none handled here")
            continue
        never = max(0, end - last - 1)
        total += never
        done = f", committed through {committed - 1}" if committed else ""
        parts.append(f"{_where(tp)} log end {end}, handled through {last}{done}: "
                     f"{never} after offset {last} never handled")
    if not parts:
        return []
    return [f"consumer {health.name}: {total} messages never handled, lost; " + "; ".join(parts)]
