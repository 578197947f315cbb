"""A bus's consumers: registering each on the broker with the delivery rules (validate,
dedupe, retry, park, commit after success), committing their offsets, and pausing, draining
and restarting them."""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import TYPE_CHECKING, Any

from aiokafka import ConsumerRebalanceListener
from aiokafka.structs import TopicPartition
from faststream.kafka.annotations import KafkaMessage
from faststream.middlewares import AckPolicy
from pydantic import BaseModel, TypeAdapter, ValidationError

from shared.bus.dispatch import KeyedDispatcher
from shared.bus.health import ConsumerHealth, FaultRun, partition_name
from shared.bus.metrics import CONSUMER_LAG, TopicMetrics
from shared.bus.pacing import FetchPacing
from shared.bus.retry import Handler, Retry
from shared.logging import bind_event
from shared.topics import Topic

if TYPE_CHECKING:
    from shared.bus.core import Bus

log = logging.getLogger("handoff.bus")


class Consumers:
    """Every consumer of one bus, with its health."""

    def __init__(self, bus: Bus) -> None:
        self.bus = bus
        self.health: list[ConsumerHealth] = []
        self.fetch_faults = FaultRun()
        self.retry = Retry(bus.settings, bus.dead_letter)
        self._dispatchers: list[KeyedDispatcher] = []
        # Goes up when the broker is found to have lost logs (`stop_committing`): offsets of
        # messages read before are never committed (they would skip the recreated log's first).
        self.generation = 0
        self._commits: set[asyncio.Future] = set()
        CONSUMER_LAG.track(self)  # its consumers' lag, read at scrape time

    def add(
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
        settings = self.bus.settings
        grouped = group_id is not None
        processed = self.bus.processed if (dedupe and grouped) else None
        table = {settings.kafka_topic_prefix + topic.name:
                 (topic, adapter if not isinstance(adapter, type) else TypeAdapter(adapter), handler,
                  None if topic in idempotent else processed)
                 for topic, adapter, handler in routes}
        names = [t.name for t, _, _ in routes]
        consumer_name = group_id or f"{self.bus.client_id}:{'+'.join(names)}"
        self.bus.topics.update({name: route[0] for name, route in table.items()})
        wait_ms = fetch_max_wait_ms or settings.kafka_fetch_max_wait_ms
        health = ConsumerHealth(consumer_name, group_id)
        health.pacing = pacing = FetchPacing(
            wait_ms, settings.kafka_idle_fetch_max_wait_ms, settings.kafka_idle_after_s, lambda: health.consumer,
            doorbell=self.bus.doorbell, topics=tuple(table), poll_s=settings.kafka_sleep_poll_s)
        self.health.append(health)
        metrics = {name: TopicMetrics(route[0].name, group_id) for name, route in table.items()}

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
            counts = metrics[record.topic]
            started = time.perf_counter()
            raw: bytes = msg.body
            where = {"partition": getattr(record, "partition", None), "offset": getattr(record, "offset", None)}
            try:
                event = adapter.validate_json(raw)
            except ValidationError as exc:
                # Where and why, never the values: an invalid record may carry secrets (e.g. a
                # chatbot's channel tokens). The DLQ keeps the payload itself, as the topic did.
                errors = exc.errors(include_input=False, include_url=False, include_context=False)
                log.warning("invalid event on %s, sent to %s: %s", topic.name, topic.dlq, errors[:3])
                await self.retry.park(msg, topic, consumer_name, raw, "invalid", json.dumps(errors, default=str), where)
                counts.dead_lettered("invalid")
                return
            with bind_event(event):
                failure = await self.retry.apply(event, handler, dedupe_store, consumer_name, health, counts.failed)
                if failure is not None:
                    log.error("handler failed %d times on %s; parked on %s", settings.kafka_handler_attempts,
                              topic.name, topic.dlq)
                    await self.retry.park(msg, topic, consumer_name, raw, "handler_failed", failure, where)
                    counts.dead_lettered("handler_failed")
                    return
            counts.handled.inc()
            counts.handle_seconds.observe(time.perf_counter() - started)

        if concurrency > 1 and grouped:
            dispatcher = KeyedDispatcher(concurrency, consumer_name, functools.partial(self.commit, health),
                                         commit_interval_s=settings.kafka_commit_interval_ms / 1000)
            self._dispatchers.append(dispatcher)

            async def _consume(msg: KafkaMessage) -> None:
                pacing.record_seen()
                generation = self.generation
                await dispatcher.submit(msg, lambda m: _process(m, generation), generation)
        else:

            async def _consume(msg: KafkaMessage) -> None:
                pacing.record_seen()
                generation = self.generation
                await _process(msg, generation)
                if grouped:  # without a consumer group there is nothing to commit
                    record = msg.raw_message
                    await self.commit(health, generation, {TopicPartition(record.topic, record.partition):
                                                           record.offset + 1}, msg.ack)

        _consume.__name__ = "consume_" + "_".join(n.replace(".", "_") for n in names)
        subscriber = self.bus.broker.subscriber(
            *table,
            group_id=group_id,
            auto_offset_reset="earliest" if from_beginning else "latest",
            ack_policy=AckPolicy.MANUAL,
            fetch_max_wait_ms=wait_ms,
            session_timeout_ms=settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=settings.kafka_heartbeat_interval_ms,
            listener=_RewindPastEnd(self, health) if grouped else None,
            title=f"{'+'.join(names)}:{consumer_name}",
            decoder=_the_message,
        )
        subscriber(_consume)
        health.subscriber = subscriber

    def pace(self, now: float) -> None:
        """Idle consumers to their long fetch wait (a record brings the short one back)."""
        for health in self.health:
            health.pacing.tick(now)

    def problems(self, now: float, after_s: float) -> list[str]:
        """Fetches failing, or a consumer's commit or handler stuck, each for `after_s`."""
        problems = []
        if self.health and (fetching := self.fetch_faults.problem(now, after_s)):
            problems.append(fetching)
        return problems + [p for h in self.health if (p := h.problem(now, after_s))]

    # ------------------------------------------------------------------ commits
    def stop_committing(self) -> None:
        """Nothing read until now is committed any more: it was read from a log the broker
        lost (a commit found its topic gone, or a recovery began), and its offset would skip
        the recreated log's first messages — even a commit aiokafka is still retrying."""
        self.generation += 1
        for commit in list(self._commits):
            commit.cancel()

    async def commit(self, health: ConsumerHealth, generation: int, offsets: dict[TopicPartition, int],
                     commit: Callable[[], Awaitable[Any]]) -> None:
        """Commit `offsets` (per partition the next to read) through `commit()`. Skipped for
        messages of a lost log; a commit aiokafka keeps retrying shows in the consumer's health,
        and a recovery cancels it. A failure is logged: the messages are redelivered, never lost."""
        if generation != self.generation:
            return
        task = asyncio.ensure_future(commit())
        self._commits.add(task)
        where = ", ".join(f"{partition_name(tp)}@{offset}" for tp, offset in offsets.items())
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
        for tp, offset in offsets.items():
            health.committed[tp] = max(offset, health.committed.get(tp, 0))
        health.commit_error = ""

    # ------------------------------------------------------------------ stopping and restarting
    def pause(self) -> None:
        """Nothing more is read from the lost logs until the consumers start again."""
        for health in self.health:
            consumer = health.consumer
            if consumer is not None:
                consumer.pause(*consumer.assignment())

    async def restart(self) -> None:
        """Fresh consumers: positions from the lost log would skip the new one's messages."""
        subscribers = [h.subscriber for h in self.health if h.subscriber is not None]
        await asyncio.gather(*(s.stop() for s in subscribers))
        await asyncio.gather(*(d.reset(self.bus.settings.kafka_graceful_timeout_s) for d in self._dispatchers))
        for health in self.health:
            health.forget_log()
            health.pacing.restarted()
        await asyncio.gather(*(s.start() for s in subscribers))

    async def drain(self, timeout: float) -> None:
        """Before the broker stops: let concurrent handlers finish (up to `timeout`), cancel
        the rest uncommitted so they are redelivered."""
        await asyncio.gather(*(d.drain(timeout) for d in self._dispatchers))


class _RewindPastEnd(ConsumerRebalanceListener):
    """After a recovery, a committed offset past a partition's end belongs to a lost log
    (committed before this process noticed): Kafka would answer OffsetOutOfRange and reset,
    the embedded broker just waits there, silently skipping the new log's first messages."""

    def __init__(self, consumers: Consumers, health: ConsumerHealth) -> None:
        self.consumers, self.health = consumers, health

    async def on_partitions_revoked(self, revoked: Any) -> None:
        return None

    async def on_partitions_assigned(self, assigned: Any) -> None:
        consumer = self.health.consumer
        if not self.consumers.generation or not assigned or consumer is None:
            return
        ends = await consumer.end_offsets(list(assigned))
        for tp in assigned:
            committed = await consumer.committed(tp)
            if committed is not None and committed > ends[tp]:
                log.warning("%s: committed offset %d is past the end (%d) of %s; reading it from the start",
                            self.health.name, committed, ends[tp], partition_name(tp))
                consumer.seek(tp, 0)


async def _the_message(msg: KafkaMessage) -> KafkaMessage:
    """The handler's argument: the message itself, body undecoded (`_handle` validates the
    raw bytes against the topic's schema once; FastStream's own decoding parsed it as JSON
    first, for nothing)."""
    return msg
