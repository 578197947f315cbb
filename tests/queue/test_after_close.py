"""A visitor who writes to a closed conversation: the message is stored and the conversation
stays closed (the product documentation), but the team is told: the conversation is marked
("new message after close", with how many and since when), counted in the stats the
dashboard shows beside Conversations, until an agent reopens it or marks it seen."""

from __future__ import annotations

from services.queue.domain import MARK_SEEN_NOT_CLOSED
from shared.topics import AGENT_COMMANDS, DASHBOARD_UPDATES, VISITOR_MESSAGES
from tests.queue.support import command, conv_id, message_id_of, seed


async def test_a_message_to_a_closed_conversation_is_marked_counted_and_cleared(queue):
    q = queue
    BOT = "afterclose"
    seen = q.seen.for_chatbot(BOT)
    await seed(q, BOT)
    cid = conv_id(BOT, "v-cal")
    await q.hand_off(BOT, "v-cal", text="Where is my parcel?", name="Cal")

    async def act(action: str) -> dict:
        cmd = command(BOT, cid, action, agent="alice")
        await q.send(AGENT_COMMANDS, cmd)
        return await seen.result(cmd.command_id)

    async def stats() -> dict:
        return (await q.api(f"/internal/chatbots/{BOT}/stats")).json()

    async def view() -> dict:
        return (await q.api(f"/internal/chatbots/{BOT}/conversations/{cid}")).json()["conversation"]

    refused = await act("mark_seen")  # nothing to mark while handed off
    assert (refused["status_code"], refused["error"]) == (409, MARK_SEEN_NOT_CLOSED)
    closed = await act("close")
    assert closed["conversation"]["new_after_close"] == 0 and (await stats())["closed_with_new_messages"] == 0

    first = await q.visitor_says(BOT, "v-cal", "Thanks! One more thing…")
    update = (await seen.wait_for(DASHBOARD_UPDATES, lambda r: (r.get("message") or {}).get("text")
                                  == "Thanks! One more thing…"))[0]
    # Stored, still closed, and marked: the update the dashboard alerts on carries it all.
    assert update["conversation"]["status"] == "closed" and update["conversation"]["new_after_close"] == 1
    assert update["conversation"]["new_after_close_at"] is not None
    assert update["stats"]["closed_with_new_messages"] == 1 and update["stats"]["open"] == 0
    marked_at = update["conversation"]["new_after_close_at"]

    second = await q.visitor_says(BOT, "v-cal", "Can I change the address?")
    await q.send(VISITOR_MESSAGES, first)  # a redelivery of the first: counted once
    await q.handled(first.event_id)
    await q.handled(second.event_id)
    now = await view()
    assert (now["status"], now["new_after_close"], now["new_after_close_at"]) == ("closed", 2, marked_at)
    assert (await stats())["closed_with_new_messages"] == 1  # one conversation, two messages
    conv = await q.queue.record.get_conversation(cid)
    assert conv.unseen_after_close == [message_id_of(first), message_id_of(second)]
    # Listed in Conversations (Closed) with the mark; the open list does not have it.
    closed_page = (await q.api(f"/internal/chatbots/{BOT}/conversations", status="closed")).json()
    assert [(c["conversation_id"], c["new_after_close"]) for c in closed_page["items"]] == [(cid, 2)]

    # The count survives an index rebuild (it is derived from Mongo like the rest).
    await q.queue.feed.rebuild(BOT)
    assert (await stats())["closed_with_new_messages"] == 1

    seen_result = await act("mark_seen")
    assert seen_result["ok"] and seen_result["conversation"]["status"] == "closed"
    assert seen_result["conversation"]["new_after_close"] == 0
    assert (await stats())["closed_with_new_messages"] == 0

    # A later message starts a new burst (a new time: the dashboard alerts once per burst).
    third = await q.visitor_says(BOT, "v-cal", "Hello again")
    await q.handled(third.event_id)
    again = await view()
    assert again["new_after_close"] == 1 and again["new_after_close_at"] != marked_at
    assert (await stats())["closed_with_new_messages"] == 1

    reopened = await act("reopen")  # Reopen: the team has the conversation again
    assert reopened["conversation"]["status"] == "handed_off" and reopened["conversation"]["new_after_close"] == 0
    assert (await stats())["closed_with_new_messages"] == 0
    # While handed off, a message is just a message (no mark).
    fourth = await q.visitor_says(BOT, "v-cal", "Thanks for reopening")
    await q.handled(fourth.event_id)
    assert (await view())["new_after_close"] == 0
