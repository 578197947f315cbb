"""Intake's bus handlers: thin, typed; the rules live in domain.py, the memory in store.py."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from services.intake import domain
from services.intake.responder import LLMResponder, ModelFailed, ModelReply, ModelWantsHandoff
from services.intake.store import ChatbotTable, ConversationMemory
from shared.bus import EventPublisher
from shared.chatbots import ChatbotSettings, ContactField
from shared.events import (
    ChatbotSettingsChanged,
    ContactCaptured,
    ConversationStateChanged,
    HandoffRequested,
    MessageAppended,
    OutboundMessage,
    VisitorContactSubmitted,
    VisitorMessageReceived,
)
from shared.ids import utcnow
from shared.views import ConversationStatus

log = logging.getLogger("handoff.intake")


class Intake:
    def __init__(
        self,
        *,
        memory: ConversationMemory,
        chatbots: ChatbotTable,
        conversation_events: EventPublisher,
        outbound: EventPublisher,
        responder: LLMResponder | None,
        clock: Callable[[], datetime] = utcnow,
        visitor_replay: EventPublisher | None = None,
    ) -> None:
        self.memory = memory
        self.chatbots = chatbots
        self.conversation_events = conversation_events
        self.outbound = outbound
        self.responder = responder
        self.clock = clock
        # visitor.messages: a message handled before the Return to AI that preceded it is
        # handed back to the visitor consumer (see on_state_changed).
        self.visitor_replay = visitor_replay

    @property
    def mode(self) -> domain.Mode:
        return "llm" if self.responder is not None else "offline"

    # ------------------------------------------------------------ visitor.messages
    async def on_visitor_event(self, event: VisitorMessageReceived | VisitorContactSubmitted) -> None:
        if isinstance(event, VisitorContactSubmitted):
            await self.on_contact_submitted(event)
        else:
            await self.on_visitor_message(event)

    async def on_contact_submitted(self, event: VisitorContactSubmitted) -> None:
        if event.conversation_id is None:  # channels always set it; an event without one is malformed
            raise ValueError("contact form without a conversation id")
        if domain.contact_is_empty(event.contact):
            log.info("empty contact form ignored")
            return
        await self.conversation_events.publish(ContactCaptured(
            event_id="c_" + domain.derived_id(event.event_id, "contact"),
            chatbot_id=event.chatbot_id, conversation_id=event.conversation_id,
            contact=event.contact, channel=event.channel, visitor=event.visitor,
        ))
        wanted = await self.memory.wanted_contact(event.conversation_id)
        await self.memory.set_wanted_contact(event.conversation_id, domain.remaining_fields(wanted, event.contact))

    async def on_visitor_message(self, event: VisitorMessageReceived) -> None:
        conversation_id = event.conversation_id
        if conversation_id is None:  # channels always set it; an event without one is malformed
            raise ValueError("visitor message without a conversation id")
        msg_id = domain.visitor_message_id(conversation_id, event.channel_message_id)
        await self.conversation_events.publish(MessageAppended(
            event_id="e_" + msg_id, message_id=msg_id, chatbot_id=event.chatbot_id,
            conversation_id=conversation_id, sender="visitor", text=event.text,
            channel=event.channel, visitor=event.visitor,
        ))
        await self.memory.remember(conversation_id, msg_id, "user", event.text)
        await self._collect_contact(event, msg_id)

        chatbot = self.chatbots.get(event.chatbot_id)
        status = await self.memory.status(conversation_id)
        if status == "handed_off":
            origin = await self.memory.handoff_origin(conversation_id)
            if origin is not None and origin["message_id"] == msg_id:
                # This very message asked for the handoff and the handler is being retried:
                # finish it (same ids, so nothing is duplicated downstream).
                fields = list(chatbot.human_handoff.contact_fields)
                await self._complete_handoff(event, msg_id, fields, origin["reason"], origin["source"])
                return
            status = await self._status_after_holding(event)
        if status != "active":
            log.info("conversation is %s: the AI stays silent", status)
            return

        tool = chatbot.human_handoff
        if tool.enabled and domain.is_explicit_request(event.text):
            await self._request_handoff(event, msg_id, chatbot, domain.EXPLICIT_REQUEST_REASON, "explicit_request")
            return
        if self.responder is None:
            await self._reply(event, msg_id, domain.offline_responder_reply(chatbot))
            return
        outcome = await self.responder.respond(chatbot, await self.memory.context(conversation_id))
        if isinstance(outcome, ModelWantsHandoff) and tool.enabled:
            await self._request_handoff(event, msg_id, chatbot, outcome.reason, "ai_tool")
        elif isinstance(outcome, ModelReply):
            await self._reply(event, msg_id, outcome.text)
        else:
            # The visitor's message is already appended; they get a short apology.
            error = outcome.error if isinstance(outcome, ModelFailed) else "tool call while the tool is off"
            log.warning("answering with an apology: %s", error)
            await self._reply(event, msg_id, domain.LLM_APOLOGY)

    async def _status_after_holding(self, event: VisitorMessageReceived) -> ConversationStatus:
        """Handed off as far as intake knows — but conversation.state is another topic, and a
        Return to AI may be on its way. Hold the message: if the Return to AI is applied
        after this, on_state_changed hands the message back to be answered when it was written
        after the return; if it was applied meanwhile, this message is answered now on the same
        condition. Either way at most once in effect: every id is derived from the message."""
        assert event.conversation_id is not None
        held = event.model_dump_json()
        await self.memory.hold_unanswered(event.conversation_id, held)
        status = await self.memory.status(event.conversation_id)
        if status != "active":
            return status
        await self.memory.drop_unanswered(event.conversation_id, held)
        returned_at = await self.memory.returned_at(event.conversation_id)
        if returned_at is not None and event.occurred_at > returned_at:
            log.info("Return to AI applied while this message was handled: the AI answers it")
            return "active"
        return "handed_off"  # written before the return: it was the team's to answer

    async def _collect_contact(self, event: VisitorMessageReceived, msg_id: str) -> None:
        """After a contact question (Telegram, WhatsApp, or typed into the widget), pick the
        fields out of the visitor's messages, whatever the conversation's status."""
        assert event.conversation_id is not None
        wanted = await self.memory.wanted_contact(event.conversation_id)
        if not wanted:
            return
        found = domain.extract_contact(event.text, wanted)
        if domain.contact_is_empty(found):
            return
        await self.conversation_events.publish(ContactCaptured(
            event_id="c_" + domain.derived_id(msg_id, "contact"),
            chatbot_id=event.chatbot_id, conversation_id=event.conversation_id,
            contact=found, channel=event.channel, visitor=event.visitor,
        ))
        await self.memory.set_wanted_contact(event.conversation_id, domain.remaining_fields(wanted, found))

    async def _request_handoff(self, event: VisitorMessageReceived, msg_id: str, chatbot: ChatbotSettings,
                               reason: str, source: str) -> None:
        assert event.conversation_id is not None
        decision = domain.decide_handoff(chatbot.human_handoff, self.clock())
        if not decision.hand_off:
            log.info("handoff requested (%s) outside business hours: offline message sent", source)
            await self._reply(event, msg_id, decision.reply)
            return
        # Handed off from this moment on, so the next message does not race the queue's confirmation.
        await self.memory.mark_handoff(event.conversation_id, msg_id, reason, source)
        await self._complete_handoff(event, msg_id, decision.ask_contact, reason, source)

    async def _complete_handoff(self, event: VisitorMessageReceived, msg_id: str, fields: list[ContactField],
                                reason: str, source: str) -> None:
        """Ask the queue, tell the visitor, ask for the contact fields. Every id is derived
        from the visitor's message, so running this again for it duplicates nothing."""
        assert event.conversation_id is not None
        await self.conversation_events.publish(HandoffRequested(
            event_id=domain.handoff_event_id(msg_id), chatbot_id=event.chatbot_id,
            conversation_id=event.conversation_id, reason=reason, source=source,  # type: ignore[arg-type]
            channel=event.channel, visitor=event.visitor,
        ))
        log.info("handoff requested (%s): %s", source, reason)
        if fields and event.channel == "web":
            # The widget shows a contact form for these fields with the notice.
            await self._reply(event, msg_id, domain.HANDOFF_NOTICE, request_contact_fields=fields)
        else:
            await self._reply(event, msg_id, domain.HANDOFF_NOTICE)
            if fields:
                await self._reply(event, msg_id, domain.contact_question(fields), n=1)
        await self.memory.set_wanted_contact(event.conversation_id, fields)

    async def _reply(self, event: VisitorMessageReceived, msg_id: str, text: str, *, n: int = 0,
                     request_contact_fields: list[ContactField] | None = None) -> None:
        assert event.conversation_id is not None
        reply_id = domain.reply_message_id(msg_id, n)
        common = dict(chatbot_id=event.chatbot_id, conversation_id=event.conversation_id,
                      channel=event.channel, visitor=event.visitor)
        await self.conversation_events.publish(MessageAppended(
            event_id="e_" + reply_id, message_id=reply_id, sender="ai", text=text, **common))
        await self.outbound.publish(OutboundMessage(
            event_id="o_" + reply_id, message_id=reply_id, sender="ai", text=text,
            request_contact_fields=request_contact_fields or [], **common))
        await self.memory.remember(event.conversation_id, reply_id, "assistant", text)

    # ------------------------------------------------------------ conversation.state
    async def on_state_changed(self, event: ConversationStateChanged) -> None:
        if event.conversation_id is None:
            raise ValueError("state change without a conversation id")
        if event.status == "active":
            # Before the status: whoever sees 'active' also sees when it became so.
            await self.memory.set_returned_at(event.conversation_id, event.occurred_at)
        await self.memory.set_status(event.conversation_id, event.status)
        if event.status == "active":
            # Back with the AI: a contact question asked at the handoff is over.
            await self.memory.set_wanted_contact(event.conversation_id, [])
            await self._answer_held(event)

    async def _answer_held(self, event: ConversationStateChanged) -> None:
        """A visitor message written after the Return to AI but handled before this event (the
        two travel on different topics) found the conversation still handed off. Hand it back
        to the visitor consumer, in the conversation's order there, so the AI answers it.
        Compared by time: the visitor's message (channels' or the platform's clock, Telegram
        and WhatsApp to the second) against the queue's Return to AI; a message of the same
        second as the return counts as before it and stays the team's."""
        assert event.conversation_id is not None
        held = await self.memory.held_unanswered(event.conversation_id)
        if held is None:
            return
        message = VisitorMessageReceived.model_validate_json(held)
        if message.occurred_at > event.occurred_at and self.visitor_replay is not None:
            log.info("a visitor message arrived before its Return to AI was known: answering it now")
            await self.visitor_replay.publish(message.model_copy(
                update={"event_id": "r_" + domain.derived_id(message.event_id, event.event_id)}))
        await self.memory.drop_unanswered(event.conversation_id, held)

    # ------------------------------------------------------------ outbound.messages
    async def on_outbound(self, event: OutboundMessage) -> None:
        """Agent replies become part of the AI's context (for after Return to AI)."""
        if event.sender != "agent" or event.conversation_id is None:
            return
        who = event.sender_name or "a team member"
        await self.memory.remember(event.conversation_id, event.message_id, "assistant",
                                   f"[Reply from {who}, a human team member] {event.text}")

    # ------------------------------------------------------------ chatbot.settings
    async def on_settings(self, event: ChatbotSettingsChanged) -> None:
        self.chatbots.apply(event.settings, event.deleted)
