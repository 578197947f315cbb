"""The wait clock against the real queue (docs/contracts.md, "The wait clock"): the table of
cases, each a fresh conversation taken through its steps; then the list's order by the
clock, kept by a rebuild of the index from Mongo, while "Oldest waiting" keeps the seed's
meaning (the oldest open handoff)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import pytest

from shared.topics import AGENT_COMMANDS, DASHBOARD_UPDATES
from tests.queue.support import QueueUnderTest, command, conv_id, seed

BOT = "waitclock"

# Each case: the steps, then what the row says (None: no row), and which step's time the
# clock starts at ("handoff", "reopen", "wrote again" ...; None while replied).
#   (steps, wait_state, clock starts at, nudges, loop)
CASES: dict[str, tuple[list[str], str | None, str | None, int, int]] = {
    "handoff": (["handoff"], "waiting", "handoff", 0, 0),
    "bot message": (["late ai answer"], "waiting", "handoff", 0, 0),
    "visitor nudge": (["handoff", "nudge", "nudge"], "waiting", "handoff", 2, 0),
    "agent reply": (["handoff", "nudge", "reply"], "replied", None, 0, 0),
    "visitor writes again": (["handoff", "reply", "wrote again", "nudge"], "waiting", "wrote again", 2, 0),
    "close": (["handoff", "reply", "wrote again", "close"], None, None, 0, 0),
    "reopen": (["handoff", "reply", "close", "reopen"], "waiting", "reopen", 0, 0),
    "return to AI and a new handoff": (["handoff", "reply", "return", "handoff"], "waiting", "handoff", 0, 2),
}


class Walk:
    """One conversation taken through a case's steps, noting when each happened."""

    def __init__(self, q: QueueUnderTest, visitor: str) -> None:
        self.q, self.visitor, self.cid = q, visitor, conv_id(BOT, visitor)
        self.at: dict[str, datetime] = {}

    async def state(self) -> dict[str, Any]:
        conv = await self.q.queue.record.get_conversation(self.cid)
        assert conv is not None
        return {"conv": conv, "row": conv.row() if conv.status == "handed_off" else None}

    async def act(self, action: str, text: str | None = None) -> dict:
        cmd = command(BOT, self.cid, action, text)
        await self.q.send(AGENT_COMMANDS, cmd)
        result = await self.q.seen.for_chatbot(BOT).result(cmd.command_id)
        assert result["ok"], result
        return result["conversation"]

    async def step(self, name: str) -> None:
        q = self.q
        if name == "handoff":
            await q.hand_off(BOT, self.visitor, text="I want a refund")
            self.at[name] = (await self.state())["conv"].waiting_since
        elif name == "late ai answer":
            # The AI answers a first message only after a second one was handed off: its
            # answer is recorded (not sent) while the visitor waits. A bot message.
            first = await q.visitor_says(BOT, self.visitor, "Hello")
            first_turn = await q.turn_for(first)
            await q.hand_off(BOT, self.visitor, text="A person please")
            self.at["handoff"] = (await self.state())["conv"].waiting_since
            late = await q.ai_answers(first_turn, "Hi! How can I help?")
            await q.handled(late.event_id)
            assert [m for m in (await q.queue.record.messages_before(self.cid, None, 50))[0]
                    if m["text"] == "Hi! How can I help?"][0]["delivery"] == "not_sent"
        elif name in ("nudge", "wrote again"):
            message = await q.visitor_says(BOT, self.visitor, f"{name}?")
            await q.handled(message.event_id)
            self.at[name] = message.occurred_at
        elif name == "reply":
            self.at[name] = datetime.fromisoformat((await self.act("reply", "On it."))["last_agent_reply_at"])
        elif name == "return":
            await self.act("return_to_ai")
        elif name in ("close", "reopen"):
            view = await self.act(name)
            self.at[name] = datetime.fromisoformat(view["updated_at"])


def _ms(at: datetime | None) -> int | None:
    return None if at is None else int(at.timestamp() * 1000)


@pytest.mark.parametrize("case", CASES)
async def test_the_wait_clock_case_by_case(queue, case):
    steps, wait_state, starts_at, nudges, loop = CASES[case]
    await seed(queue, BOT)
    walk = Walk(queue, "v-" + case.replace(" ", "-"))
    for step in steps:
        await walk.step(step)
    now = await walk.state()
    row, conv = now["row"], now["conv"]
    if wait_state is None:
        assert row is None and conv.view().wait_state is None and conv.view().nudges == 0
        return
    assert row is not None
    assert (row.wait_state, _ms(row.wait_started_at), row.nudges, row.loop) == (
        wait_state, _ms(walk.at.get(starts_at)) if starts_at else None, nudges, loop)
    # The row the index holds (what the dashboard lists) says the same.
    listed = {r["conversation_id"]: r for r in
              (await queue.api(f"/internal/chatbots/{BOT}/handoffs", limit=200)).json()["items"]}[walk.cid]
    assert (listed["wait_state"], listed["nudges"], listed["loop"]) == (wait_state, nudges, loop)
    if wait_state == "replied":
        assert listed["wait_started_at"] is None and _ms(row.last_agent_reply_at) == _ms(walk.at["reply"])
    # The clock is not the handoff period: "waiting_since" (Today, Oldest waiting) stays put.
    if starts_at == "wrote again":
        assert _ms(row.waiting_since) == _ms(walk.at["handoff"]) < _ms(row.wait_started_at)


async def test_the_open_list_is_ordered_by_the_clock_and_rebuilt_so(queue):
    q = queue
    bot = "waitorder"
    await seed(q, bot)
    cids = {name: conv_id(bot, f"v-{name}") for name in ("ann", "ben", "cat")}
    for name in cids:  # handed off in this order: ann waits longest
        await q.hand_off(bot, f"v-{name}")

    async def listed() -> list[tuple[str, str]]:
        items = (await q.api(f"/internal/chatbots/{bot}/handoffs")).json()["items"]
        names = {c: n for n, c in cids.items()}
        return [(names[r["conversation_id"]], r["wait_state"]) for r in items]

    assert await listed() == [("ann", "waiting"), ("ben", "waiting"), ("cat", "waiting")]
    oldest = (await q.api(f"/internal/chatbots/{bot}/stats")).json()["oldest_waiting_since"]
    reply = command(bot, cids["ann"], "reply", "Hello Ann")
    await q.send(AGENT_COMMANDS, reply)
    await q.seen.for_chatbot(bot).result(reply.command_id)
    # Answered: in conversation, below everyone still waiting.
    assert await listed() == [("ben", "waiting"), ("cat", "waiting"), ("ann", "replied")]
    again = await q.visitor_says(bot, "v-ann", "Thanks, and…")
    await q.handled(again.event_id)
    # Waiting again, from now: the newest waiter.
    assert await listed() == [("ben", "waiting"), ("cat", "waiting"), ("ann", "waiting")]
    update = (await q.seen.wait_for(DASHBOARD_UPDATES, lambda r: (r.get("message") or {}).get("text") == "Thanks, and…"))[0]
    assert update["row_upserted"]["nudges"] == 1 and update["row_upserted"]["wait_started_at"] is not None
    # "Oldest waiting" keeps the seed's meaning: the oldest open handoff (Ann's), not the clock.
    stats = (await q.api(f"/internal/chatbots/{bot}/stats")).json()
    assert stats["oldest_waiting_since"] == oldest and stats["open"] == 3
    before = (await q.api(f"/internal/chatbots/{bot}/handoffs")).json()["items"]
    await q.queue.feed.rebuild(bot)  # the index from Mongo: the same rows, the same order
    assert (await q.api(f"/internal/chatbots/{bot}/handoffs")).json()["items"] == before


async def test_a_nudge_rides_on_the_visitor_messages_writes(infra):
    """Issue #10: the clock adds no Mongo round trip to a visitor message. A message to a
    handed-off conversation makes the same commands as without the clock (the insert, the
    activity update and its read, the count, the pending mark), and the nudge is counted."""
    from faststream.kafka import TestKafkaBroker

    from shared.events import AiTurnCompleted, HandoffAsked
    from tests.queue.support import visitor_message
    from tests.queue.test_write_path import _Commands, _queue

    listener = _Commands()
    q, bus, record, client, redis = await _queue(infra, listener)
    try:
        async with TestKafkaBroker(bus.broker):
            first = visitor_message("b", "v1", "I need a person")
            await q.incoming.on_visitor_message(first)
            cid = conv_id("b", "v1")
            await q.incoming.on_ai_outcome(AiTurnCompleted(
                chatbot_id="b", conversation_id=cid, turn_id="t1", version=0,
                handoff=HandoffAsked(reason="User asked for a person", source="explicit_request")))
            await asyncio.sleep(1.5)  # the visitors' line, told of the handoff, reads in the background
            listener.sent.clear()
            await q.incoming.on_visitor_message(visitor_message("b", "v1", "Hello? Anyone?"))
        # (The insert and the activity update go out together, in either order.)
        assert sorted(listener.sent) == sorted([("insert", "messages"), ("update", "conversations"),
                                                ("find", "conversations"), ("update", "conversations"),
                                                ("update", "conversations")]), "\n".join(map(str, listener.sent))
        conv = await record.get_conversation(cid)
        assert conv is not None and (conv.status, conv.message_count) == ("handed_off", 2)
        assert (conv.row().wait_state, conv.nudges, conv.row().nudges) == ("waiting", 1, 1)
    finally:
        await redis.aclose()
        await client.close()
