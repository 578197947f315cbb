"""Round trips on the message path: a visitor message's conversation write goes first and its
history's insert beside the dashboard update (one write at a time on the way to the agent),
and the count stays exact whatever fails; a reply's 'sent' report is one conditional write,
nothing read."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest
from faststream.kafka import TestKafkaBroker
from pymongo import AsyncMongoClient, monitoring

from services.queue.parts import build_queue
from services.queue.settings import QueueSettings
from services.queue.store import HandoffIndex, QueueRecord
from shared.bus import Bus
from shared.chatbots import ChatbotSettings
from shared.events import DeliveryStatusChanged
from shared.stores import open_mongo, open_redis
from tests.queue.support import ai_outcome, conv_id, message_id_of, visitor_message

NOW = datetime(2026, 12, 3, 10, 0, tzinfo=UTC)


class GatedRecord(QueueRecord):
    """The message insert waits until the activity update has started, and until
    `insert_waits_for` is set when a test gives one (a handoff's record until
    `handoff_waits_for`). Either write can be made to fail once after the server applied the
    activity (the answer lost on the way back), or before the insert."""

    def __init__(self, db) -> None:  # noqa: ANN001
        super().__init__(db)
        self.activity_started = asyncio.Event()
        self.activity_done = asyncio.Event()
        self.insert_waits_for: asyncio.Event | None = None
        self.handoff_waits_for: asyncio.Event | None = None
        self.fail_activity_answer = False
        self.fail_insert = False

    async def insert_message(self, doc: dict) -> bool:
        await asyncio.wait_for(self.activity_started.wait(), 5)
        if self.insert_waits_for is not None:
            await asyncio.wait_for(self.insert_waits_for.wait(), 5)
        if self.fail_insert:
            self.fail_insert = False
            await asyncio.wait_for(self.activity_done.wait(), 5)  # the activity (and its count) went through
            raise ConnectionError("Mongo went away before the insert")
        return await super().insert_message(doc)

    async def create_handoff(self, doc: dict) -> None:
        if self.handoff_waits_for is not None:
            await asyncio.wait_for(self.handoff_waits_for.wait(), 5)
        await super().create_handoff(doc)

    async def record_activity(self, *args, **kwargs):  # noqa: ANN002, ANN003
        self.activity_started.set()
        conv = await super().record_activity(*args, **kwargs)
        self.activity_done.set()
        if self.fail_activity_answer:
            self.fail_activity_answer = False
            raise ConnectionError("Mongo went away after the update")
        return conv


class _Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.sent: list[tuple[str, str]] = []  # (command, collection)

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent.append((event.command_name, str(event.command.get(event.command_name))))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def _queue(infra, listener: _Commands | None = None):  # noqa: ANN001
    tag = uuid.uuid4().hex[:8]
    settings = QueueSettings(redis_url=infra.redis_url, mongodb_uri=infra.mongodb_uri, mongodb_db=f"t{tag}_path",
                             redis_prefix=f"t{tag}:queue")
    if listener is None:
        client, db = open_mongo(settings)
    else:
        client = AsyncMongoClient(infra.mongodb_uri, event_listeners=[listener], tz_aware=True)
        db = client[settings.mongodb_db]
    redis = open_redis(settings)
    bus = Bus(settings, client_id="path-test")
    record = GatedRecord(db)
    await record.save_chatbot(ChatbotSettings(chatbot_id="b", name="B"))
    return build_queue(settings, bus, record, HandoffIndex(redis, settings.redis_prefix)), bus, record, client, redis


def _set_when_done(feed, method: str) -> asyncio.Event:  # noqa: ANN001
    """An event set once a call of the feed's `method` (a dashboard update going out) returns."""
    done = asyncio.Event()
    original = getattr(feed, method)

    async def call_then_set(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        result = await original(*args, **kwargs)
        done.set()
        return result

    setattr(feed, method, call_then_set)
    return done


async def test_message_and_activity_are_written_and_counted_once(infra):
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


async def test_the_dashboard_update_does_not_wait_for_the_message_insert(infra):
    """The conversation's write decides and is read back for the update; the history's insert
    goes beside the update, so the agent sees the message one write sooner. The insert here
    completes only once the update is out."""
    queue, bus, record, client, redis = await _queue(infra)
    try:
        async with TestKafkaBroker(bus.broker):
            await queue.incoming.on_visitor_message(visitor_message("b", "v1", "hello"))
            record.insert_waits_for = published = _set_when_done(queue.incoming.feed, "conversation_changed")
            await queue.incoming.on_visitor_message(visitor_message("b", "v1", "again"))
        assert published.is_set()
        conv = await record.get_conversation(conv_id("b", "v1"))
        assert conv is not None and conv.message_count == 2 == await record.count_messages(conv.id)
    finally:
        await redis.aclose()
        await client.close()


async def test_a_new_handoff_reaches_the_dashboard_without_waiting_for_its_record(infra):
    """The saved transition decides; the handoff's record, the transcript for the summarizer
    and the dashboard update go out together, not one after the other (the record here is
    written only once the update is out)."""
    queue, bus, record, client, redis = await _queue(infra)
    try:
        async with TestKafkaBroker(bus.broker):
            hello = visitor_message("b", "v1", "I want a person")
            await queue.incoming.on_visitor_message(hello)
            turn = {"chatbot_id": "b", "conversation_id": conv_id("b", "v1"), "turn_id": "t1", "version": 0,
                    "message_id": message_id_of(hello)}
            record.handoff_waits_for = _set_when_done(queue.incoming.feed, "publish")
            await queue.incoming.on_ai_outcome(ai_outcome(turn, "Connecting you", handoff="asked for a person"))
        conv = await record.get_conversation(conv_id("b", "v1"))
        assert conv is not None and conv.status == "handed_off"
        assert await record.get_handoff(conv.handoff_id or "") is not None
    finally:
        await redis.aclose()
        await client.close()


@pytest.mark.parametrize("failure", ["fail_activity_answer", "fail_insert"])
async def test_a_write_that_fails_after_the_count_went_through_is_retried_into_an_exact_count(infra, failure):
    """The count rides on the activity write. Its answer lost (the insert went through: the
    retry is a replay, recounted), or the insert failing after it (the retry inserts the
    message for the first time: the count must not go up again)."""
    queue, bus, record, client, redis = await _queue(infra)
    try:
        async with TestKafkaBroker(bus.broker):
            await queue.incoming.on_visitor_message(visitor_message("b", "v1", "first"))
            second = visitor_message("b", "v1", "second")
            setattr(record, failure, True)
            record.activity_done.clear()
            with pytest.raises(ConnectionError):  # the failure surfaces, so the bus retries
                await queue.incoming.on_visitor_message(second)
            await asyncio.sleep(0.2)  # whatever was still in flight lands
            await queue.incoming.on_visitor_message(second)  # the bus's retry
            conv = await record.get_conversation(conv_id("b", "v1"))
            assert conv is not None and conv.message_count == 2 == await record.count_messages(conv.id)
            await queue.incoming.on_visitor_message(second)  # and a later duplicate: nothing more
            await queue.incoming.on_visitor_message(visitor_message("b", "v1", "third"))
        conv = await record.get_conversation(conv_id("b", "v1"))
        assert conv is not None and conv.message_count == 3 == await record.count_messages(conv.id)
    finally:
        await redis.aclose()
        await client.close()


async def test_a_visitor_message_to_a_conversation_with_the_ai_writes_the_conversation_once(infra):
    """The count is in the activity write: one update of the conversation, not two; a new
    conversation's first too (its display name comes with its creation)."""
    listener = _Commands()
    queue, bus, record, client, redis = await _queue(infra, listener)
    try:
        async with TestKafkaBroker(bus.broker):
            await queue.incoming.on_visitor_message(visitor_message("b", "v1", "first"))
            await asyncio.sleep(0.1)
            first = [c for name, c in listener.sent if name == "update" and c == "conversations"]
            assert len(first) == 1, listener.sent
            listener.sent.clear()
            await queue.incoming.on_visitor_message(visitor_message("b", "v1", "second"))
            await asyncio.sleep(0.1)
        updates = [c for name, c in listener.sent if name == "update" and c == "conversations"]
        assert len(updates) == 1, listener.sent
        conv = await record.get_conversation(conv_id("b", "v1"))
        assert conv is not None and conv.message_count == 2
    finally:
        await redis.aclose()
        await client.close()


async def test_a_sent_report_is_one_conditional_write_and_moves_only_a_pending_reply(infra):
    listener = _Commands()
    queue, bus, record, client, redis = await _queue(infra, listener)
    try:
        base = {"conversation_id": "c1", "chatbot_id": "b", "sender": "ai", "text": "hi", "created_at": NOW}
        record.activity_started.set()  # the gate is for the visitor path only
        for mid, delivery in (("m-pending", "pending"), ("m-read", "read"), ("m-not-sent", "not_sent")):
            assert await record.insert_message({"_id": mid, **base, "delivery": delivery})
        listener.sent.clear()
        async with TestKafkaBroker(bus.broker):
            for mid in ("m-pending", "m-read", "m-not-sent", "m-unknown"):
                await queue.incoming.on_delivery_status(DeliveryStatusChanged(
                    chatbot_id="b", conversation_id="c1", message_id=mid, status="sent", channel_message_id="x"))
        assert [name for name, _ in listener.sent] == ["update"] * 4  # no find: nothing read
        stored = {m["_id"]: m["delivery"] async for m in record.messages.find({})}
        assert stored == {"m-pending": "sent", "m-read": "read", "m-not-sent": "not_sent"}
    finally:
        await redis.aclose()
        await client.close()
