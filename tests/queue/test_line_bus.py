"""The line over the real broker: the queue publishes a chatbot's line on `visitor.line`
when it moves (a handoff, an agent's first reply, a close), and tells a Telegram visitor
their place in the handoff message."""

from __future__ import annotations

from services.queue.incoming import handoff_id_for
from shared.topics import AGENT_COMMANDS, CONVERSATION_STATE, OUTBOUND_MESSAGES, VISITOR_LINE
from tests.queue.support import command, conv_id, seed


def _places(record: dict) -> list[tuple[str, int]]:
    return [(p["visitor_id"], p["position"]) for p in record["places"]]


async def _with_waiting(q, bot: str, *visitors: str):
    """A seeded chatbot whose web `visitors` were handed off in this order; its records."""
    await seed(q, bot)
    for v in visitors:
        await q.hand_off(bot, v)
    return q.seen.for_chatbot(bot)


async def test_the_line_is_published_when_it_moves(queue):
    q = queue
    BOT = "liner"
    seen = await _with_waiting(q, BOT, "v1", "v2")
    await seen.wait_for(VISITOR_LINE, lambda r: _places(r) == [("v1", 1), ("v2", 2)])
    last = seen.of(VISITOR_LINE)[-1]
    assert last["places"][1]["text"] == "You're number 2 in line."  # no history yet: the position only

    reply = command(BOT, conv_id(BOT, "v1"), "reply", "Hi, I'm here")
    await _send_command(q, reply)
    # Answered: v1 left the line, v2 moved up.
    await seen.wait_for(VISITOR_LINE, lambda r: _places(r) == [("v2", 1)])
    await _send_command(q, command(BOT, conv_id(BOT, "v2"), "close"))
    await seen.wait_for(VISITOR_LINE, lambda r: r["places"] == [])


async def test_telegram_is_told_its_place_in_the_handoff_message(queue):
    q = queue
    BOT = "liner-tg"
    seen = await _with_waiting(q, BOT, "w-ahead")
    message = await q.visitor_says(BOT, "t1", "a person please", channel="telegram")
    turn = await q.turn_for(message)
    await q.ai_answers(turn, "I'm connecting you with a member of our team.", handoff="asked")
    await seen.wait_for(CONVERSATION_STATE, lambda r: r["handoff_id"] == handoff_id_for(turn["turn_id"]))
    [notice] = await seen.wait_for(OUTBOUND_MESSAGES, lambda r: r["conversation_id"] == conv_id(BOT, "t1", "telegram"))
    assert notice["text"] == "I'm connecting you with a member of our team.\n\nYou're number 2 in line."
    # The widget's line counts the Telegram visitor too, and carries web visitors only.
    await seen.wait_for(VISITOR_LINE, lambda r: _places(r) == [("w-ahead", 1)])


async def _send_command(q, cmd) -> None:
    await q.send(AGENT_COMMANDS, cmd)
    await q.seen.result(cmd.command_id)
