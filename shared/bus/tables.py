"""Reading a topic whole, as a table, before a service consumes or serves anything."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from pydantic import TypeAdapter, ValidationError

from shared.settings import ServiceSettings
from shared.topics import Topic


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
