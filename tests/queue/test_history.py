"""Handoff history and loop detection as rules (fixed times, no I/O), then against the real
queue: every handoff of a conversation kept (why, who ended it, first reply, wait) and a
bounce flagged on the row."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.queue import waitclock
from services.queue.history import LoopRule, PastHandoff, history_items, loop_count, loop_rule_of
from services.queue.settings import QueueSettings
from shared.topics import AGENT_COMMANDS
from tests.queue.support import command, conv_id, seed

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
RULE = LoopRule()


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


@pytest.mark.parametrize(("past", "now", "expected"), [
    ([], at(0), 0),  # a first handoff
    ([PastHandoff(at(0))], at(60), 0),  # two in a day, none returned: no loop yet
    ([PastHandoff(at(0)), PastHandoff(at(60))], at(120), 3),  # the 3rd within 24 h
    ([PastHandoff(at(0)), PastHandoff(at(60)), PastHandoff(at(70))], at(80), 4),
    ([PastHandoff(at(-24 * 60)), PastHandoff(at(-60))], at(0), 0),  # the first is 24 h old: out
    ([PastHandoff(at(-24 * 60 + 1)), PastHandoff(at(-60))], at(0), 3),  # just inside
    ([PastHandoff(at(0), returned_at=at(4))], at(9), 2),  # 5 min after Return to AI
    ([PastHandoff(at(0), returned_at=at(4))], at(14), 2),  # exactly 10 min: still a loop
    ([PastHandoff(at(0), returned_at=at(4))], at(15), 0),  # 11 min: the bot coped a while
    ([PastHandoff(at(-30 * 60), returned_at=at(-2))], at(0), 2),  # a day-old handoff returned just now
])
def test_loop_detection(past, now, expected):
    assert loop_count(past, now, RULE) == expected


def test_loop_rule_from_settings():
    rule = loop_rule_of(QueueSettings(loop_handoffs=2, loop_window_h=1, loop_return_min=0))
    assert rule == LoopRule(2, timedelta(hours=1), timedelta(0))
    assert loop_count([PastHandoff(at(0))], at(59), rule) == 2
    assert loop_count([PastHandoff(at(0), returned_at=at(1))], at(61), rule) == 0


def test_history_items_say_when_why_who_and_how_long():
    docs = [
        {"_id": "h2", "reason": "still no refund", "requested_at": at(9), "waiting_since": at(9), "status": "open",
         "loop": 2},
        {"_id": "h1", "reason": "refund", "requested_at": at(0), "waiting_since": at(0), "status": "returned_to_ai",
         "ended_at": at(4), "ended_by": "Alice", "first_reply_at": at(3)},
    ]
    first, second = history_items(docs, current_id="h2", current_first_reply_at=None)
    assert (first.handoff_id, first.status, first.ended_at, first.ended_by, first.waited_s) == (
        "h1", "returned_to_ai", at(4), "Alice", 180)
    assert (second.reason, second.first_reply_at, second.waited_s, second.loop) == ("still no refund", None, None, 2)
    # The open handoff's first reply is the conversation's until the handoff ends.
    assert history_items(docs, current_id="h2", current_first_reply_at=at(11))[1].waited_s == 120


@pytest.mark.parametrize(("status", "clock", "replied", "wrote", "expected"), [
    ("active", None, None, at(1), ({}, 0)),  # the AI has it: no clock
    ("closed", None, at(0), at(1), ({}, 0)),
    ("handed_off", at(0), None, at(1), ({}, 1)),  # a nudge while waiting
    ("handed_off", at(5), None, at(1), ({}, 0)),  # older than the clock (a replay)
    ("handed_off", None, at(2), at(3), ({"wait_started_at": at(3)}, 1)),  # writes again after a reply
    ("handed_off", None, at(2), at(1), ({}, 0)),  # the reply came after it (a replay)
])
def test_what_a_visitor_message_does_to_the_clock(status, clock, replied, wrote, expected):
    assert waitclock.visitor_wrote(status, clock, replied, wrote) == expected


def test_replied_rows_sort_after_every_waiting_row():
    waiting_long = waitclock.order_score(at(0), None, at(0))
    waiting_years = waitclock.order_score(at(60 * 24 * 365 * 50), None, at(0))
    replied_early = waitclock.order_score(None, at(-60), at(-120))
    replied_later = waitclock.order_score(None, at(-30), at(-120))
    assert waiting_long < waiting_years < replied_early < replied_later < 2 ** 53


async def test_every_handoff_is_kept_and_a_bounce_is_flagged(queue):
    q = queue
    bot = "history"
    await seed(q, bot)
    cid = conv_id(bot, "v-dora")

    async def act(action: str, text: str | None = None) -> dict:
        cmd = command(bot, cid, action, text, agent="alice")
        await q.send(AGENT_COMMANDS, cmd)
        return await q.seen.for_chatbot(bot).result(cmd.command_id)

    await q.hand_off(bot, "v-dora", "Topic is a refund")
    await act("reply", "Let me look")
    await act("return_to_ai")
    await q.hand_off(bot, "v-dora", "still no refund")  # minutes after the return: a loop
    rows = (await q.api(f"/internal/chatbots/{bot}/handoffs")).json()["items"]
    assert [(r["conversation_id"], r["loop"]) for r in rows] == [(cid, 2)]
    await act("close")
    await act("reopen")
    detail = (await q.api(f"/internal/chatbots/{bot}/conversations/{cid}")).json()
    first, second = detail["handoffs"]
    assert (first["reason"], first["status"], first["ended_by"]) == ("Topic is a refund", "returned_to_ai", "Alice")
    assert first["first_reply_at"] is not None and first["waited_s"] is not None
    # Reopened: open again, a new waiting period (its first reply not yet given).
    assert (second["reason"], second["status"], second["loop"], second["first_reply_at"]) == (
        "still no refund", "open", 2, None)
    assert detail["conversation"]["loop"] == 2
    # (A third handoff within 24 h, "loop ×3": tests/dashboard/test_wait_clock.py.)
