"""Asking the AI: one `ai.turns` request per visitor message the AI is to answer, carrying
what the model needs (intake keeps no state), at the conversation's current version."""

from __future__ import annotations

import logging

from services.queue.chatbots import ChatbotCatalog
from services.queue.conversation import Conversation, transcript_of
from services.queue.recent import RecentMessages
from services.queue.store import QueueRecord
from shared.bus import EventPublisher
from shared.chatbots import ChatbotSettings
from shared.events import AiProfile, AiTurnRequested
from shared.ids import derived_id

log = logging.getLogger("handoff.queue.ai")


def turn_id_for(message_id: str) -> str:
    """One turn per visitor message, whichever path asks (the message itself, or a Return
    to AI that hands it over): a second ask is the same turn, answered once."""
    return derived_id("t_", message_id)


class AiTurns:
    def __init__(self, record: QueueRecord, chatbots: ChatbotCatalog, turns_out: EventPublisher,
                 context_messages: int) -> None:
        self.record = record
        self.chatbots = chatbots
        self.turns_out = turns_out
        self.context_messages = context_messages
        self.recent = RecentMessages(keep=context_messages)

    def counted(self, conv: Conversation, docs: list[dict]) -> None:
        """Messages just stored and counted in `conv` (as the store returned it): the next
        turn's context includes them without reading Mongo."""
        self.recent.added(conv.id, docs, conv.message_count)

    async def context(self, conv: Conversation) -> list[dict]:
        """The newest `context_messages` messages, oldest first."""
        found = self.recent.get(conv.id, conv.message_count, self.context_messages)
        if found is None:
            found, _ = await self.record.messages_before(conv.id, None, self.context_messages)
            self.recent.put(conv.id, conv.message_count, found)
        return found

    async def ask(self, conv: Conversation, message_id: str, text: str) -> None:
        chatbot = await self.chatbots.get(conv.chatbot_id)
        if chatbot is None:
            log.warning("no settings for chatbot %s; the AI answers with the defaults (Human Handoff off)",
                        conv.chatbot_id)
            chatbot = ChatbotSettings(chatbot_id=conv.chatbot_id, name=conv.chatbot_id)
        recent = await self.context(conv)
        turn_id = turn_id_for(message_id)
        await self.turns_out.publish(AiTurnRequested(
            event_id=turn_id, turn_id=turn_id, chatbot_id=conv.chatbot_id, conversation_id=conv.id,
            message_id=message_id, version=conv.version, channel=conv.channel, visitor=conv.visitor, text=text,
            transcript=transcript_of(recent), profile=AiProfile.of(chatbot), contact=conv.contact,
        ))
