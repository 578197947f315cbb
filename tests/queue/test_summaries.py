"""What the queue gives the summarizer to keep a summary current (services/queue/summaries.py):
news of every visitor's and agent's message while a conversation is handed off (not the AI's,
not before the handoff, not once closed), an agent's Refresh once the summary is written and
only while the conversation waits, and a refreshed summary stored and shown with what it covers."""

from __future__ import annotations

from datetime import UTC, datetime

from services.queue.summaries import NO_SUMMARY_YET, NOT_WAITING
from shared.events import HandoffSummaryReady
from shared.topics import AGENT_COMMANDS, CONVERSATION_STATE, HANDOFF_SUMMARIES
from tests.queue.support import command, conv_id, seed


async def test_messages_and_refreshes_go_to_the_summarizer_while_the_conversation_waits(queue):
    q = queue
    BOT = "sumfresh"
    seen = q.seen.for_chatbot(BOT)
    await seed(q, BOT)
    cid = conv_id(BOT, "v-sue")
    await q.visitor_says(BOT, "v-sue", "Hello bot")  # the AI's conversation: no news of it
    handoff_id = await q.hand_off(BOT, "v-sue", text="I need a person", name="Sue")

    def news() -> list[dict]:
        return [r for r in seen.of(CONVERSATION_STATE) if r["type"] == "conversation.message_added"]

    async def act(action: str, text: str | None = None) -> dict:
        cmd = command(BOT, cid, action, text, agent="alice")
        await q.send(AGENT_COMMANDS, cmd)
        return await seen.result(cmd.command_id)

    refused = await act("refresh_summary")  # the first summary is not written yet
    assert (refused["status_code"], refused["error"]) == (409, NO_SUMMARY_YET)
    await q.visitor_says(BOT, "v-sue", "Are you there?")
    await seen.wait_for(CONVERSATION_STATE, lambda r: (r.get("line") or {}).get("text") == "Are you there?")
    assert (await act("reply", "Yes, looking now"))["ok"]
    await seen.wait_for(CONVERSATION_STATE, lambda r: r["type"] == "conversation.message_added", count=2)
    assert [(n["line"]["sender"], n["line"]["text"], n["handoff_id"]) for n in news()] == [
        ("visitor", "Are you there?", handoff_id), ("agent", "Yes, looking now", handoff_id)]
    assert news()[1]["line"]["sender_name"] == "Alice"

    # The summary comes; the queue keeps and shows what it covers.
    covers = datetime.now(UTC).replace(microsecond=0)
    await q.send(HANDOFF_SUMMARIES, HandoffSummaryReady(
        chatbot_id=BOT, conversation_id=cid, handoff_id=handoff_id, status="ready", text="Sue wants a person.",
        mode="llm", covers_until=covers, made_at=covers, revision=2, refresh="failed"))

    async def summary() -> dict:
        return (await q.api(f"/internal/chatbots/{BOT}/conversations/{cid}")).json()["conversation"]["summary"]

    await seen.wait_for("dashboard.updates", lambda r: (r.get("summary") or {}).get("revision") == 2)
    shown = await summary()
    assert (shown["text"], shown["revision"], shown["refresh"]) == ("Sue wants a person.", 2, "failed")
    assert datetime.fromisoformat(shown["covers_until"]) == covers

    accepted = await act("refresh_summary")
    assert accepted["ok"]
    [asked] = await seen.wait_for(CONVERSATION_STATE, lambda r: r["type"] == "conversation.summary_refresh_requested")
    assert (asked["handoff_id"], asked["command_id"], asked["agent"]["agent_id"]) == (
        handoff_id, accepted["command_id"], "alice")

    # Closed: no longer waiting, so no refresh and no news of what the visitor writes.
    assert (await act("close"))["ok"]
    refused = await act("refresh_summary")
    assert (refused["status_code"], refused["error"]) == (409, NOT_WAITING)
    await q.visitor_says(BOT, "v-sue", "One more thing")
    await seen.wait_for("dashboard.updates", lambda r: (r.get("message") or {}).get("text") == "One more thing")
    assert len(news()) == 2
