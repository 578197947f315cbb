"""A visitor message's writes on the way to the dashboard: the message and the conversation's
activity go out together (one round trip, not two), and the count stays exact whatever fails."""

from __future__ import annotations

import asyncio
import uuid

from faststream.kafka import TestKafkaBroker

from services.queue.parts import build_queue
from services.queue.settings import QueueSettings
from services.queue.store import HandoffIndex, QueueRecord
from shared.bus import Bus
from shared.chatbots import ChatbotSettings
from shared.stores import open_mongo, open_redis
from tests.queue.support import conv_id, visitor_message


class GatedRecord(QueueRecord):
    """The message insert waits until the activity update has started: it completes only
    if the two are in flight together. The count write can be made to fail once."""

    def __init__(self, db) -> None:  # noqa: ANN001
        super().__init__(db)
        self.activity_started = asyncio.Event()
        self.fail_count_write = False

    async def insert_message(self, doc: dict) -> bool:
        await asyncio.wait_for(self.activity_started.wait(), 5)
        return await super().insert_message(doc)

    async def record_activity(self, *args, **kwargs):  # noqa: ANN002, ANN003
        self.activity_started.set()
        return await super().record_activity(*args, **kwargs)

    async def record_known_activity(self, conv, set_fields, inc=None):  # noqa: ANN001
        if inc and self.fail_count_write:
            self.fail_count_write = False
            raise ConnectionError("Mongo went away")
        return await super().record_known_activity(conv, set_fields, inc)


async def _queue(infra):  # noqa: ANN001
    tag = uuid.uuid4().hex[:8]
    settings = QueueSettings(redis_url=infra.redis_url, mongodb_uri=infra.mongodb_uri, mongodb_db=f"t{tag}_path",
                             redis_prefix=f"t{tag}:queue")
    client, db = open_mongo(settings)
    redis = open_redis(settings)
    bus = Bus(settings, client_id="path-test")
    record = GatedRecord(db)
    await record.save_chatbot(ChatbotSettings(chatbot_id="b", name="B"))
    return build_queue(settings, bus, record, HandoffIndex(redis, settings.redis_prefix)), bus, record, client, redis


async def test_message_and_activity_are_written_together_and_counted_once(infra):
    queue, bus, record, client, redis = await _queue(infra)
    try:
        async with TestKafkaBroker(bus.broker):
            await queue.incoming.on_visitor_message(visitor_message("b", "v1", "hello"))
            await queue.incoming.on_visitor_message(visitor_message("b", "v1", "again"))
        conv = await record.get_conversation(conv_id("b", "v1"))
        assert conv is not None and conv.message_count == 2
        assert await record.count_messages(conv.id) == 2
    finally:
        await redis.aclose()
        await client.close()


async def test_a_failed_count_write_is_retried_into_an_exact_count(infra):
    queue, bus, record, client, redis = await _queue(infra)
    try:
        async with TestKafkaBroker(bus.broker):
            await queue.incoming.on_visitor_message(visitor_message("b", "v1", "first"))
            second = visitor_message("b", "v1", "second")
            record.fail_count_write = True
            try:
                await queue.incoming.on_visitor_message(second)
                raise AssertionError("the failed write must surface so the bus retries")
            except ConnectionError:
                pass
            await queue.incoming.on_visitor_message(second)  # the bus's retry: a replay, recounted
            await queue.incoming.on_visitor_message(second)  # and a later duplicate: nothing more
        conv = await record.get_conversation(conv_id("b", "v1"))
        assert conv is not None and conv.message_count == 2 == await record.count_messages(conv.id)
    finally:
        await redis.aclose()
        await client.close()
