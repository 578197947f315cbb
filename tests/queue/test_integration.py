"""The queue against the real broker, Redis and Mongo-wire server, served in-process:
events and commands go in over the bus, results come out on the bus and the internal API."""

from __future__ import annotations

import asyncio

from services.queue.domain import REPLY_NOT_ALLOWED, agent_message_id
from shared.topics import AGENT_COMMANDS, CONVERSATION_EVENTS, CONVERSATION_STATE, DASHBOARD_UPDATES, OUTBOUND_MESSAGES
from tests.queue.support import command, conv_id, handoff, message, queue_under_test, seed

BOT = "shop"


def _is_update_for(cid: str):
    return lambda r: r.get("type") == "dashboard.update" and r.get("conversation_id") == cid


async def test_every_transition_over_the_bus(isolated):
    async with queue_under_test(isolated) as q:
        await seed(q, BOT)
        cid = conv_id(BOT, "v-ann")
        await q.send(CONVERSATION_EVENTS, message(BOT, "v-ann", "Hi, my order is late", name="Ann"))
        await q.send(CONVERSATION_EVENTS, message(BOT, "v-ann", "Let me check that for you.", sender="ai"))
        first = handoff(BOT, "v-ann", "Topic is a refund")
        await q.send(CONVERSATION_EVENTS, first)

        state = (await q.seen.wait_for(CONVERSATION_STATE, lambda r: r["transition"] == "handoff"))[0]
        assert state["status"] == "handed_off" and state["previous_status"] == "active"
        assert state["handoff_id"] == first.event_id and state["reason"] == "Topic is a refund" and state["by"] == "ai"
        assert [line["text"] for line in state["transcript"]] == ["Hi, my order is late", "Let me check that for you."]
        up = (await q.seen.wait_for(DASHBOARD_UPDATES, lambda r: _is_update_for(cid)(r) and r.get("row_upserted") is not None
                                    and r["conversation"]["status"] == "handed_off"))[0]
        assert up["row_upserted"]["display_name"] == "Ann" and up["row_upserted"]["message_count"] == 2
        assert up["stats"]["open"] == 1 and up["stats"]["today"] == 1

        # A second HandoffRequested while handed off changes nothing.
        await q.send(CONVERSATION_EVENTS, handoff(BOT, "v-ann", "again"))

        # Reply: stored, sent once, shown.
        reply = command(BOT, cid, "reply", "  We are on it.  ", agent="alice")
        await q.send(AGENT_COMMANDS, reply)
        result = await q.seen.result(reply.command_id)
        assert result["ok"] and result["status_code"] == 200 and result["conversation"]["message_count"] == 3
        out = await q.seen.wait_for(OUTBOUND_MESSAGES, lambda r: r["message_id"] == agent_message_id(reply.command_id))
        assert out[0]["text"] == "We are on it." and out[0]["sender"] == "agent" and out[0]["sender_name"] == "Alice"
        shown = await q.seen.wait_for(DASHBOARD_UPDATES, lambda r: (r.get("message") or {}).get("sender") == "agent")
        assert shown[0]["message"]["delivery"] == "pending" and shown[0]["message"]["sender_name"] == "Alice"

        async def act(action: str, text: str | None = None, agent: str = "alice") -> dict:
            cmd = command(BOT, cid, action, text, agent=agent)
            await q.send(AGENT_COMMANDS, cmd)
            return await q.seen.result(cmd.command_id)

        refused = await act("reopen")
        assert (refused["status_code"], refused["ok"]) == (409, False)
        assert refused["error"] == "Cannot reopen a conversation that is handed off."
        assert (await act("return_to_ai"))["conversation"]["status"] == "active"
        assert (await act("close"))["status_code"] == 409
        not_allowed = await act("reply", "hello?")
        assert (not_allowed["status_code"], not_allowed["error"]) == (409, REPLY_NOT_ALLOWED)
        empty = await act("reply", "   ")
        assert empty["status_code"] == 422

        second = handoff(BOT, "v-ann", "User asked for a person")
        await q.send(CONVERSATION_EVENTS, second)
        await q.seen.wait_for(CONVERSATION_STATE, lambda r: r["handoff_id"] == second.event_id)
        closed = await act("close", agent="bob")
        assert closed["ok"] and closed["conversation"]["status"] == "closed"

        # The visitor writes to the closed conversation: stored and shown, it stays closed.
        await q.send(CONVERSATION_EVENTS, message(BOT, "v-ann", "Thanks! One more thing"))
        late = await q.seen.wait_for(DASHBOARD_UPDATES, lambda r: (r.get("message") or {}).get("text") == "Thanks! One more thing")
        assert late[0]["conversation"]["status"] == "closed"
        assert late[0]["stats"]["open"] == 0 and late[0]["stats"]["resolved_this_week"] == 1
        # A handoff request on a closed conversation is refused: it stays closed.
        await q.send(CONVERSATION_EVENTS, handoff(BOT, "v-ann", "third"))

        reopened = await act("reopen", agent="bob")
        assert reopened["ok"] and reopened["conversation"]["status"] == "handed_off"
        assert reopened["conversation"]["handoff_id"] == second.event_id
        assert reopened["conversation"]["waiting_since"] > closed["conversation"]["updated_at"][:19]

        transitions = [r["transition"] for r in q.seen.of(CONVERSATION_STATE)]
        assert transitions == ["handoff", "return_to_ai", "handoff", "close", "reopen"]
        # Every update of this chatbot numbered one by one within the epoch.
        updates = q.seen.updates(BOT)
        assert [u["seq"] for u in updates] == list(range(1, len(updates) + 1))
        assert len({u["epoch"] for u in updates}) == 1
        final = updates[-1]["stats"]
        assert (final["open"], final["resolved_this_week"]) == (1, 0)  # reopened: no longer resolved

        # History in Mongo, with who and when.
        record = q.queue.record
        h1, h2 = await record.get_handoff(first.event_id), await record.get_handoff(second.event_id)
        assert [e["transition"] for e in h1["history"]] == ["handoff", "return_to_ai"]
        assert h1["status"] == "returned_to_ai" and h1["reason"] == "Topic is a refund"
        assert [(e["transition"], e["by"]) for e in h2["history"]] == [
            ("handoff", "ai"), ("close", "agent:bob"), ("reopen", "agent:bob")]
        assert h2["closed_at"] is None and h2["status"] == "open"
        conv = await record.get_conversation(cid)
        assert conv["status"] == "handed_off" and conv["message_count"] == 4
