"""What the summarizer needs from the queue to keep a handoff's summary current: the messages
that join a handed-off conversation, and an agent's "Refresh" (the `refresh_summary` command).
Both go on `conversation.state` (keyed by conversation, after the handoff that started it),
which the summarizer reads; it owns the summaries and decides when to write them again."""

from __future__ import annotations

from typing import Any

from services.queue.conversation import Conversation
from services.queue.domain import CommandRefused, derived_event_id
from shared.bus import EventPublisher
from shared.events import AgentCommand, ConversationMessageAdded, SummaryRefreshRequested, TranscriptLine

# Who writes what a summary must keep up with: the AI's lines after a handoff are its notice
# and contact questions (or late answers never sent), nothing the agent needs recapped.
SUMMARIZED_SENDERS = ("visitor", "agent")

NOT_WAITING = "Only a conversation waiting for the team has its summary refreshed."
NO_SUMMARY_YET = "The summary is still being written; try again in a moment."


async def message_added(state_out: EventPublisher, conv: Conversation, doc: dict[str, Any]) -> None:
    """A visitor's or an agent's message on a handed-off conversation: tell the summarizer
    (one publish, no read: `conv` and `doc` are what the caller has)."""
    if conv.status != "handed_off" or not conv.handoff_id or doc.get("sender") not in SUMMARIZED_SENDERS:
        return
    await state_out.publish(ConversationMessageAdded(
        event_id=derived_event_id(doc["_id"], "summary-line"), chatbot_id=conv.chatbot_id, conversation_id=conv.id,
        handoff_id=conv.handoff_id, message_id=doc["_id"],
        line=TranscriptLine(sender=doc["sender"], text=doc["text"], at=doc["created_at"],
                            sender_name=doc.get("sender_name"))))


async def request_refresh(state_out: EventPublisher, cmd: AgentCommand, conv: Conversation) -> Conversation:
    """An agent's Refresh: refused (409) unless the conversation waits for the team and its
    summary is written; else handed to the summarizer, which shows it in flight."""
    if conv.status != "handed_off" or not conv.handoff_id:
        raise CommandRefused(NOT_WAITING, 409)
    if conv.summary is None or conv.summary.handoff_id != conv.handoff_id or conv.summary.status == "pending":
        raise CommandRefused(NO_SUMMARY_YET, 409)
    await state_out.publish(SummaryRefreshRequested(
        event_id=derived_event_id(cmd.command_id, "summary-refresh"), chatbot_id=conv.chatbot_id,
        conversation_id=conv.id, handoff_id=conv.handoff_id, command_id=cmd.command_id, agent=cmd.agent))
    return conv

