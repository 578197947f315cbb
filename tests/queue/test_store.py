"""The stores against the real Redis and Mongo-wire server: the index's paging is exact
with equal scores and removals between pages; seq/epoch behave; the record's
compare-and-set `save` of a conversation's transition lets exactly one of two racers
through, and activity writes never touch a conversation's state."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pymongo import AsyncMongoClient, monitoring

from services.queue.conversation import Conversation
from services.queue.domain import stats_window, to_ms
from services.queue.store import HandoffIndex, IndexChange, QueueRecord
from shared.events import VisitorIdentity
from shared.settings import ServiceSettings
from shared.stores import open_mongo, open_redis
from shared.views import HandoffRow

NOW = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)
VISITOR = VisitorIdentity(external_id="v1")


def _row(i: int, waiting: datetime) -> HandoffRow:
    return HandoffRow(conversation_id=f"c{i:03d}", chatbot_id="b", display_name=f"V{i}", waiting_since=waiting,
                      channel="web", message_count=i)


@pytest.fixture
async def stores(infra):
    tag = uuid.uuid4().hex[:8]
    settings = ServiceSettings(redis_url=infra.redis_url, mongodb_uri=infra.mongodb_uri, mongodb_db=f"t{tag}_store",
                               redis_prefix=f"t{tag}:queue")
    client, db = open_mongo(settings)
    redis = open_redis(settings)
    try:
        yield QueueRecord(db), HandoffIndex(redis, settings.redis_prefix)
    finally:
        await redis.aclose()
        await client.close()


async def test_paging_is_exact_with_ties_and_removals(stores):
    _, index = stores
    # Ten rows, pairs share a waiting_since: order is (waiting_since, conversation id).
    rows = [_row(i, NOW - timedelta(minutes=10 - i // 2)) for i in range(10)]
    await index.rebuild("b", rows, [])
    seen, cursor = [], None
    while True:
        page, cursor, total = await index.page("b", cursor, 3)
        assert total == 10 - (1 if seen else 0) - (1 if len(seen) >= 6 else 0)
        seen += [r.conversation_id for r in page]
        if len(seen) == 3:  # a row already shown leaves, and one not yet shown
            await index.apply("b", IndexChange(remove_row="c001"), stats_window(NOW, "UTC"), bump_seq=False)
        if len(seen) == 6:
            await index.apply("b", IndexChange(remove_row="c008"), stats_window(NOW, "UTC"), bump_seq=False)
        if cursor is None:
            break
    assert seen == ["c000", "c001", "c002", "c003", "c004", "c005", "c006", "c007", "c009"]


async def test_seq_epoch_and_stats_in_one_step(stores):
    _, index = stores
    window = stats_window(NOW, "Europe/Berlin")
    epoch = await index.rebuild("b", [_row(1, NOW - timedelta(days=2))], [("h-old", NOW - timedelta(days=7, seconds=1))])
    first = await index.apply("b", IndexChange(upsert_row=_row(2, NOW - timedelta(minutes=5))), window)
    second = await index.apply("b", IndexChange(remove_row="c001", closed_add=("h1", NOW)), window)
    assert (first.epoch, first.seq, second.seq) == (epoch, 1, 2)
    assert (first.counts.open, first.counts.today, first.counts.resolved_this_week) == (2, 1, 0)
    assert (second.counts.open, second.counts.resolved_this_week) == (1, 1)
    reopened = await index.apply("b", IndexChange(upsert_row=_row(1, NOW), closed_remove="h1"), window)
    assert (reopened.counts.open, reopened.counts.resolved_this_week, reopened.seq) == (2, 0, 3)
    assert await index.rebuild("b", [], []) != epoch
    assert (await index.stats("b", window)).seq == 0


async def _handed_off(record: QueueRecord, conv_id: str = "c1") -> Conversation:
    """A conversation as a visitor's first message creates it, then handed off (version 1)."""
    conv = await record.record_activity(conv_id, Conversation.new_fields("b", "web", VISITOR, NOW),
                                        {"updated_at": NOW}, inc={"message_count": 1})
    saved = await record.save(conv_id, conv.hand_off("h1", "User asked for a person", NOW, ["email"]))
    assert saved is not None
    return saved


async def test_save_lets_one_racer_through(stores):
    record, _ = stores
    conv = await _handed_off(record)
    changes = [conv.agent_transition("close", NOW, f"cmd-{n}") for n in range(5)]
    results = await asyncio.gather(*(record.save("c1", change) for change in changes))
    winners = [r for r in results if r is not None]
    assert len(winners) == 1 and winners[0].status == "closed" and winners[0].version == conv.version + 1
    stored = await record.get_conversation("c1")
    assert stored is not None and stored.last_command_id == winners[0].last_command_id
    # A change planned on the old version is refused for good.
    assert await record.save("c1", conv.agent_transition("return_to_ai", NOW, "cmd-late")) is None
    assert (await record.get_conversation("c1")).status == "closed"


async def test_activity_never_overwrites_state(stores):
    """A visitor message on a handed-off conversation counts and shows, but its
    `$setOnInsert` of a new conversation's state leaves the handoff as it is."""
    record, _ = stores
    conv = await _handed_off(record)
    later = NOW + timedelta(minutes=1)
    after = await record.record_activity("c1", Conversation.new_fields("b", "web", VISITOR, later),
                                         {"updated_at": later, "last_message_preview": "still there?"},
                                         inc={"message_count": 1})
    assert (after.status, after.version, after.handoff_id, after.waiting_since) == ("handed_off", 1, "h1", NOW)
    assert after.contact_wanted == ["email"] and after.created_at == conv.created_at
    assert (after.message_count, after.last_message_preview, after.updated_at) == (2, "still there?", later)


async def test_pending_message_is_set_only_at_the_version_and_guards_return_to_ai(stores):
    record, _ = stores
    conv = await _handed_off(record)
    assert not await record.set_pending("c1", conv.version - 1, "m-stale")  # planned before the handoff
    back = conv.agent_transition("return_to_ai", NOW, "cmd-1")  # planned while nothing is pending ...
    assert await record.set_pending("c1", conv.version, "m2")  # ... then the visitor writes
    assert await record.save("c1", back) is None  # the message must not be dropped
    fresh = await record.get_conversation("c1")
    assert fresh is not None and fresh.pending_message_id == "m2"
    returned = await record.save("c1", fresh.agent_transition("return_to_ai", NOW, "cmd-1"))
    assert returned is not None and returned.status == "active" and returned.version == 2
    assert (returned.returned_message_id, returned.pending_message_id, returned.contact_wanted) == ("m2", None, [])
    assert not await record.set_pending("c1", returned.version, "m3")  # with the AI now: nothing waits


async def test_conversation_stored_before_versions_is_at_version_0(stores):
    record, _ = stores
    await record.conversations.insert_one({"_id": "old", "chatbot_id": "b", "channel": "web", "visitor_id": "v1",
                                           "created_at": NOW, "status": "active"})
    old = await record.get_conversation("old")
    assert old is not None and old.version == 0
    saved = await record.save("old", old.hand_off("h-old", "Refund", NOW, []))
    assert saved is not None and (saved.status, saved.version) == ("handed_off", 1)


async def test_messages_page_back_in_exact_order(stores):
    record, _ = stores
    base = NOW
    # Same millisecond, different microseconds: BSON alone could not order these.
    for i, us in enumerate((300, 100, 200, 900)):
        await record.insert_message({"_id": f"m{i}", "conversation_id": "c1", "chatbot_id": "b", "sender": "visitor",
                                     "text": f"t{us}", "created_at": base + timedelta(microseconds=us)})
    assert not await record.insert_message({"_id": "m0", "conversation_id": "c1", "chatbot_id": "b", "sender": "visitor",
                                            "text": "dup", "created_at": base})
    last, cursor = await record.messages_before("c1", None, 2)
    older, end = await record.messages_before("c1", cursor, 2)
    assert [m["text"] for m in older + last] == ["t100", "t200", "t300", "t900"] and end is None


@pytest.mark.parametrize("timezone", ["UTC", "America/New_York", "Asia/Kolkata"])
async def test_stats_boundaries_in_redis_at_local_midnight_and_the_7_day_edge(stores, timezone):
    """On the real index: "Today" starts exactly at local midnight in the chatbot's timezone
    and "Resolved this week" covers exactly the last 7 days there (today and the six before:
    closed at that first local midnight still counts, a millisecond earlier does not)."""
    _, index = stores
    window = stats_window(NOW, timezone)
    midnight = window.today_starts_at
    ms = timedelta(milliseconds=1)
    rows = [
        _row(1, midnight - ms),   # yesterday, by a millisecond
        _row(2, midnight),        # today, at the first instant
        _row(3, midnight + ms),   # today
        _row(4, NOW),             # today, just now
    ]
    week_edge = window.week_starts_at
    assert week_edge == midnight - timedelta(days=6)  # no DST change in these zones that week
    closed = [("h-in", week_edge), ("h-late", NOW - ms), ("h-out", week_edge - ms), ("h-old", NOW - timedelta(days=30))]
    await index.rebuild("b", rows, closed)

    state = await index.stats("b", window)
    assert state.counts.open == 4
    assert state.counts.today == 3
    assert state.counts.resolved_this_week == 2
    assert state.counts.oldest_waiting_ms == (midnight - ms - datetime(1970, 1, 1, tzinfo=UTC)) // ms

    # The next local midnight starts a new "Today": the same index, a window one day on.
    tomorrow = stats_window(window.today_ends_at + timedelta(minutes=1), timezone)
    assert (await index.stats("b", tomorrow)).counts.today == 0


# The boundary tables, on the real index (ZCARD / ZCOUNT over millisecond scores).
@pytest.mark.parametrize(("now", "tz", "waiting", "today"), [
    # UTC: midnight itself counts for the new day, one ms before does not.
    (datetime(2026, 11, 25, 10, tzinfo=UTC), "UTC", datetime(2026, 11, 25, 0, tzinfo=UTC), 1),
    (datetime(2026, 11, 25, 10, tzinfo=UTC), "UTC", datetime(2026, 11, 24, 23, 59, 59, 999000, tzinfo=UTC), 0),
    # Berlin (UTC+1 in November): local midnight is 23:00 UTC the day before.
    (datetime(2026, 11, 25, 10, tzinfo=UTC), "Europe/Berlin", datetime(2026, 11, 24, 23, 0, tzinfo=UTC), 1),
    (datetime(2026, 11, 25, 10, tzinfo=UTC), "Europe/Berlin", datetime(2026, 11, 24, 22, 59, 59, 999000, tzinfo=UTC), 0),
    # 23:30 UTC is already tomorrow in Berlin: a handoff at 23:10 UTC is "today" there, not in UTC terms.
    (datetime(2026, 11, 24, 23, 30, tzinfo=UTC), "Europe/Berlin", datetime(2026, 11, 24, 23, 10, tzinfo=UTC), 1),
    (datetime(2026, 11, 24, 23, 30, tzinfo=UTC), "UTC", datetime(2026, 11, 24, 0, 10, tzinfo=UTC), 1),
    (datetime(2026, 11, 24, 23, 30, tzinfo=UTC), "Europe/Berlin", datetime(2026, 11, 24, 22, 50, tzinfo=UTC), 0),
    # New York (UTC-5): 03:00 UTC on Nov 25 is still Nov 24 there.
    (datetime(2026, 11, 25, 3, tzinfo=UTC), "America/New_York", datetime(2026, 11, 24, 5, tzinfo=UTC), 1),
    (datetime(2026, 11, 25, 3, tzinfo=UTC), "America/New_York", datetime(2026, 11, 24, 4, 59, tzinfo=UTC), 0),
])
async def test_today_starts_at_local_midnight_on_the_index(stores, now, tz, waiting, today):
    _, index = stores
    await index.rebuild("b", [_row(1, waiting)], [])
    counts = (await index.stats("b", stats_window(now, tz))).counts
    assert counts.open == 1
    assert counts.today == today


# NOW is Wednesday Nov 25, 15:30 in Berlin: the last 7 days there began on Thursday Nov 19 at
# 00:00 Berlin time (Nov 18, 23:00 UTC).
@pytest.mark.parametrize(("closed_at", "counted"), [
    (NOW, 1),
    (datetime(2026, 11, 18, 23, 0, tzinfo=UTC), 1),  # the first instant of the 7 days
    (datetime(2026, 11, 18, 22, 59, 59, 999000, tzinfo=UTC), 0),
    (NOW - timedelta(days=6, hours=23, minutes=59), 0),  # within 7 x 24 h, but on the eighth day there
    (NOW - timedelta(days=8), 0),
])
async def test_resolved_this_week_edge_on_the_index(stores, closed_at, counted):
    _, index = stores
    await index.rebuild("b", [], [("h1", closed_at)])
    counts = (await index.stats("b", stats_window(NOW, "Europe/Berlin"))).counts
    assert counts.resolved_this_week == counted


async def test_oldest_and_open_on_the_index(stores):
    _, index = stores
    window = stats_window(NOW, "UTC")
    await index.rebuild("b", [_row(1, NOW - timedelta(hours=3)), _row(2, NOW - timedelta(days=2))], [])
    counts = (await index.stats("b", window)).counts
    assert counts.open == 2
    assert counts.oldest_waiting_ms == to_ms(NOW - timedelta(days=2))
    assert counts.today == 1
    await index.rebuild("b", [], [])
    empty = (await index.stats("b", window)).counts
    assert empty.open == 0 and empty.oldest_waiting_ms is None


async def test_concurrent_handlers_share_one_round_trip_and_each_gets_its_own_outcome(stores):
    """What conversations write at the same time goes to Mongo as one batch; a replayed
    message (same id, in the batch or stored before) is reported as such, the others stored."""
    record, _ = stores
    await record.insert_message({"_id": "m-old", "conversation_id": "c0", "created_at": NOW, "text": "before"})
    batches = record._message_inserts.batches
    docs = [{"_id": f"m{i}", "conversation_id": f"c{i}", "created_at": NOW, "text": str(i)} for i in range(20)]
    outcomes = await asyncio.gather(*(record.insert_message(d) for d in
                                      [*docs, {**docs[3]}, {"_id": "m-old", "conversation_id": "c0", "created_at": NOW}]))
    assert outcomes == [True] * 20 + [False, False]
    assert record._message_inserts.batches == batches + 1
    assert await record.messages.count_documents({}) == 21

    activities = await asyncio.gather(*(record.record_activity(
        f"c{i}", Conversation.new_fields("b", "web", VISITOR, NOW), {"updated_at": NOW}, inc={"message_count": 1})
        for i in range(10)))
    assert [(c.id, c.message_count) for c in activities] == [(f"c{i}", 1) for i in range(10)]
    again = await asyncio.gather(*(record.record_activity(f"c{i}", {}, {}, inc={"message_count": i}) for i in range(10)))
    assert [c.message_count for c in again] == [1 + i for i in range(10)]

    read = await asyncio.gather(*(record.get_conversation(f"c{i}") for i in (0, 1, 99)), record.get_message("m5"))
    assert [c and c.id for c in read[:3]] == ["c0", "c1", None] and read[3]["text"] == "5"
    await asyncio.gather(record.update_message("m1", {"delivery": "sent"}), record.update_message("nope", {"delivery": "sent"}))
    assert (await record.get_message("m1"))["delivery"] == "sent" and await record.get_message("nope") is None


class _Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
async def watched(infra):
    """A record on a fresh database whose client reports every command it sends."""
    listener = _Commands()
    client = AsyncMongoClient(infra.mongodb_uri, event_listeners=[listener], tz_aware=True)
    try:
        yield QueueRecord(client[f"t{uuid.uuid4().hex[:8]}_cmds"]), listener
    finally:
        await client.close()


async def test_transitions_use_commands_that_do_not_scan_the_collection(watched):
    """findAndModify and distinct make the Mongo-wire server scan the whole collection (0.8 s
    per call at 50,000 conversations, growing with the data): transitions, agent replies and
    the index check use conditional updates, reads by _id and indexed counts instead."""
    record, listener = watched
    conv = await _handed_off(record)
    listener.names.clear()
    closed = await record.save("c1", conv.agent_transition("close", NOW, "cmd-1"))
    assert closed is not None and closed.status == "closed" and closed.version == conv.version + 1
    assert await record.save("c1", conv.agent_transition("close", NOW, "cmd-2")) is None  # stale version
    replied = await record.update_conversation("c1", {"$inc": {"message_count": 1}}, expected_status="closed")
    assert replied is not None and replied.message_count == closed.message_count + 1
    assert await record.update_conversation("c1", {"$set": {"x": 1}}, expected_status="handed_off") is None
    assert await record.count_closed_since("b", NOW - timedelta(days=7)) == 0
    assert listener.names and not {"findAndModify", "distinct"} & set(listener.names), listener.names


async def test_a_message_update_is_one_write_and_nothing_read_back(watched):
    """A delivery status changes a message its handler has just read: the update goes out
    (batched with concurrent ones) and nothing is read back."""
    record, listener = watched
    ids = [f"m{i}" for i in range(5)]
    for i in ids:
        assert await record.insert_message({"_id": i, "conversation_id": "c1", "chatbot_id": "b", "sender": "ai",
                                            "text": "hi", "created_at": NOW, "delivery": "pending"})
    listener.names.clear()
    await asyncio.gather(*(record.update_message(i, {"delivery": "sent"}) for i in ids))
    assert set(listener.names) == {"update"} and len(listener.names) <= 2, listener.names
    assert {m["delivery"] for m in await record.messages.find({"_id": {"$in": ids}}).to_list()} == {"sent"}


async def test_known_activity_is_written_and_computed_not_read_back(watched):
    """The AI's replies count on a conversation the handler holds: one update goes out, and
    what it returns is what Mongo now has."""
    record, listener = watched
    conv = await _handed_off(record)
    listener.names.clear()
    later = NOW + timedelta(minutes=1)
    after = await record.record_known_activity(conv, {"last_message_at": later, "last_message_preview": "ok",
                                                      "updated_at": later}, inc={"message_count": 2})
    assert listener.names == ["update"], listener.names
    stored = await record.get_conversation("c1")
    assert after.model_dump() == stored.model_dump()
    assert (after.message_count, after.last_message_preview, after.version) == (conv.message_count + 2, "ok",
                                                                               conv.version)
