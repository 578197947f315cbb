"""The AI-context cache (services/queue/recent.py): used only at the message count it saw,
in the order Mongo gives, and against the real queue: the context a turn carries is the
stored one, also after messages this process did not see."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.queue.domain import to_us
from services.queue.recent import RecentMessages
from shared.topics import AI_TURNS
from tests.queue.support import conv_id, message_id_of, seed

T0 = datetime(2026, 12, 3, 9, 0, tzinfo=UTC)


def _msg(n: int, at: datetime, **kw) -> dict:
    return {"_id": f"m{n:02d}", "sender": "visitor", "sender_name": None, "text": f"text {n}", "created_at": at,
            "delivery": None, "conversation_id": "cv", **kw}


def test_used_only_at_the_count_it_saw_and_kept_in_stored_order():
    recent = RecentMessages(keep=3)
    assert recent.get("cv", 0, 3) is None
    stored = [{**_msg(n, T0 + timedelta(seconds=n)), "at_us": to_us(T0 + timedelta(seconds=n))} for n in range(2)]
    recent.put("cv", 2, stored)
    assert [m["text"] for m in recent.get("cv", 2, 3)] == ["text 0", "text 1"]
    assert recent.get("cv", 3, 3) is None  # something was counted that it did not see
    # A message that happened earlier but arrived later goes where Mongo sorts it; the oldest drops out.
    recent.added("cv", [_msg(5, T0 + timedelta(seconds=9)), _msg(4, T0 + timedelta(milliseconds=500))], 4)
    assert [m["text"] for m in recent.get("cv", 4, 3)] == ["text 4", "text 1", "text 5"]
    assert [m["text"] for m in recent.get("cv", 4, 1)] == ["text 5"]
    assert recent.get("cv", 4, 4) is None  # more than it keeps
    # Added at a count it was not at (another instance wrote meanwhile): dropped, not extended.
    recent.added("cv", [_msg(6, T0 + timedelta(seconds=10))], 7)
    assert recent.get("cv", 7, 3) is None and recent.get("cv", 4, 3) is None
    # Bounded: the least recently used conversation goes first.
    small = RecentMessages(keep=2, conversations=2)
    for cid in ("a", "b", "c"):
        small.put(cid, 0, [])
    assert small.get("a", 0, 1) is None and small.get("c", 0, 1) == [] and len(small) == 2


async def test_turns_carry_the_stored_context_read_from_mongo_only_when_needed(queue):
    q = queue
    BOT = "ctx"
    await seed(q, BOT)
    cid = conv_id(BOT, "v-ctx")
    ai = q.queue.incoming.ai
    first = await q.visitor_says(BOT, "v-ctx", "one")
    answered = await q.ai_answers(await q.turn_for(first), "answer one")
    await q.handled(answered.event_id)  # the answer is stored before the next message comes
    second = await q.visitor_says(BOT, "v-ctx", "two")
    misses = ai.recent.misses
    turn = await q.turn_for(second)
    assert [line["text"] for line in turn["transcript"]] == ["one", "answer one", "two"]
    assert ai.recent.misses == misses  # the context came from what this process stored
    # Another instance stores and counts a message (a rebalance): the next turn reads Mongo.
    record = q.queue.record
    other = {"_id": "m-other", "conversation_id": cid, "chatbot_id": BOT, "sender": "agent", "sender_name": "Eve",
             "text": "from elsewhere", "created_at": datetime.now(UTC), "delivery": "pending"}
    assert await record.insert_message(other)
    await record.conversations.update_one({"_id": cid}, {"$inc": {"message_count": 1}})
    third = await q.visitor_says(BOT, "v-ctx", "three")
    turn = await q.turn_for(third)
    assert [line["text"] for line in turn["transcript"]] == ["one", "answer one", "two", "from elsewhere", "three"]
    assert ai.recent.misses == misses + 1
    assert [r["message_id"] for r in q.seen.of(AI_TURNS) if r["conversation_id"] == cid] == [
        message_id_of(first), message_id_of(second), message_id_of(third)]
