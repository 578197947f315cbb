"""A rebuild on one queue instance while another applies a change: the change is never lost.

Instance A rebuilds (startup check, `rebuild-index`); instance B writes a handoff to Mongo
after A has read Mongo, and applies it to the index before A replaces the index. Real
Redis and Mongo-wire server; two DashboardFeed objects stand for the two instances (their
asyncio locks are separate, the Redis rebuild lock is shared)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime

import pytest

from services.queue.chatbots import ChatbotCatalog
from services.queue.conversation import Conversation
from services.queue.feed import DashboardFeed
from services.queue.store import HandoffIndex, IndexChange, QueueRecord
from shared.settings import ServiceSettings
from shared.stores import open_mongo, open_redis

NOW = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)


class _Sink:
    def __init__(self) -> None:
        self.events: list = []

    async def publish(self, event) -> None:  # noqa: ANN001
        self.events.append(event)

    async def enqueue(self, event):  # noqa: ANN001, ANN201 - the EventPublisher's shape
        self.events.append(event)
        return asyncio.sleep(0)


def _feed(record: QueueRecord, index: HandoffIndex) -> DashboardFeed:
    return DashboardFeed(record, index, ChatbotCatalog(record, _Sink()), _Sink(), clock=lambda: NOW)


@pytest.fixture
async def backends(infra):
    tag = uuid.uuid4().hex[:8]
    settings = ServiceSettings(redis_url=infra.redis_url, mongodb_uri=infra.mongodb_uri, mongodb_db=f"t{tag}_race",
                               redis_prefix=f"t{tag}:queue")
    client, db = open_mongo(settings)
    redis = open_redis(settings)
    try:
        yield db, redis, settings.redis_prefix
    finally:
        await redis.aclose()
        await client.close()


async def test_change_applied_during_another_instances_rebuild_is_kept(backends):
    db, redis, prefix = backends
    record_a, record_b = QueueRecord(db), QueueRecord(db)
    index_a, index_b = HandoffIndex(redis, prefix), HandoffIndex(redis, prefix)
    a, b = _feed(record_a, index_a), _feed(record_b, index_b)
    first_epoch = await a.rebuild("b")

    b_applied = asyncio.Event()
    b_apply = index_b.apply

    async def apply_and_tell(*args, **kwargs):  # noqa: ANN002, ANN003
        state = await b_apply(*args, **kwargs)
        b_applied.set()
        return state

    index_b.apply = apply_and_tell  # type: ignore[method-assign]
    conv = {"_id": "c1", "chatbot_id": "b", "status": "handed_off", "version": 1, "channel": "web",
            "visitor_id": "v1", "created_at": NOW, "waiting_since": NOW, "reason": "User asked for a person",
            "message_count": 1}
    b_task: asyncio.Task | None = None
    a_read = record_a.open_conversations

    async def read_then_b_hands_off(chatbot_id: str) -> list[Conversation]:
        nonlocal b_task
        found = await a_read(chatbot_id)  # A has read Mongo ...
        await record_b.conversations.insert_one(conv)  # ... then B writes and applies
        row = Conversation.model_validate(conv).row()
        b_task = asyncio.create_task(b.publish("b", IndexChange(upsert_row=row), event_id="e-b-handoff"))
        await asyncio.wait_for(b_applied.wait(), 10)
        return found

    record_a.open_conversations = read_then_b_hands_off  # type: ignore[method-assign]
    second_epoch = await a.rebuild("b")
    assert b_task is not None
    update = await asyncio.wait_for(b_task, 15)

    rows, _, total = await index_a.page("b", None, 10)
    assert [r.conversation_id for r in rows] == ["c1"] and total == 1
    assert second_epoch != first_epoch
    # B's update is numbered in the rebuilt index and shows the handoff.
    assert update.epoch == await index_a.epoch("b") and update.stats.open == 1
    assert b.dashboard_out.events == [update]  # published once, after the rebuild


async def test_reader_waiting_on_a_rebuild_does_not_rebuild_again(backends):
    db, redis, prefix = backends
    a, b = _feed(QueueRecord(db), HandoffIndex(redis, prefix)), _feed(QueueRecord(db), HandoffIndex(redis, prefix))
    await a.rebuild("b")
    async with a.index.rebuild_lock("b"):
        await a.index.invalidate("b")  # as a rebuild in progress on A looks to B
        waiting = asyncio.create_task(b.ensure_index("b"))
        await asyncio.sleep(0.3)
        assert not waiting.done()  # B waits for A's rebuild ...
        await a.index.rebuild("b", [], [])
        epoch = await a.index.epoch("b")
    await asyncio.wait_for(waiting, 10)
    assert await b.index.epoch("b") == epoch  # ... and keeps its result instead of rebuilding again


async def test_one_chatbots_updates_leave_in_seq_order_without_waiting_for_each_ack(backends):
    """The per-chatbot lock orders updates; it is not held for the broker's round trip, so a
    busy chatbot's updates are not one acknowledgement apart (they used to be serial)."""
    db, redis, prefix = backends

    class HeldAcks(_Sink):
        def __init__(self) -> None:
            super().__init__()
            self.release = asyncio.Event()

        async def enqueue(self, event):  # noqa: ANN001, ANN201
            self.events.append(event)
            return asyncio.ensure_future(self.release.wait())

    out = HeldAcks()
    feed = DashboardFeed(QueueRecord(db), HandoffIndex(redis, prefix), ChatbotCatalog(QueueRecord(db), _Sink()), out,
                         clock=lambda: NOW)
    await feed.rebuild("b")
    publishing = [asyncio.create_task(feed.publish("b", event_id=f"e{i}")) for i in range(5)]
    for _ in range(100):
        if len(out.events) == 5:
            break
        await asyncio.sleep(0.01)
    assert [e.seq for e in out.events] == sorted(e.seq for e in out.events) and len(out.events) == 5
    assert not any(t.done() for t in publishing)  # each waits for its own acknowledgement
    out.release.set()
    assert sorted(u.seq for u in await asyncio.gather(*publishing)) == [e.seq for e in out.events]
