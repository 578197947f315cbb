"""Bus handlers: thin and typed. Each one hands the event to the queue's use cases."""

from __future__ import annotations

from shared.bus import Bus
from shared.events import (
    AGENT_COMMAND_EVENT,
    CONVERSATION_EVENT,
    DELIVERY_EVENT,
    SETTINGS_EVENT,
    SUMMARY_EVENT,
    AgentCommand,
    ChatbotSettingsChanged,
    ChatbotSettingsUpdate,
    ContactCaptured,
    DeliveryStatusChanged,
    HandoffRequested,
    HandoffSummaryReady,
    MessageAppended,
)
from shared.topics import AGENT_COMMANDS, CHATBOT_SETTINGS, CONVERSATION_EVENTS, DELIVERY_STATUS, HANDOFF_SUMMARIES
from services.queue.workflow import HandoffQueue


def register(bus: Bus, queue: HandoffQueue, group_id: str) -> None:
    async def on_conversation_event(event: MessageAppended | HandoffRequested | ContactCaptured) -> None:
        if isinstance(event, MessageAppended):
            await queue.on_message_appended(event)
        elif isinstance(event, HandoffRequested):
            await queue.on_handoff_requested(event)
        else:
            await queue.on_contact_captured(event)

    async def on_agent_command(event: AgentCommand | ChatbotSettingsUpdate) -> None:
        if isinstance(event, AgentCommand):
            await queue.on_agent_command(event)
        else:
            await queue.on_settings_update(event)

    async def on_summary(event: HandoffSummaryReady) -> None:
        await queue.on_summary(event)

    async def on_delivery_status(event: DeliveryStatusChanged) -> None:
        await queue.on_delivery_status(event)

    async def on_settings_changed(event: ChatbotSettingsChanged) -> None:
        await queue.on_settings_changed(event)

    # One consumer group per topic (FastStream runs one consumer per subscriber): members of
    # a shared group would force each other through a rebalance as each one joins.
    bus.consume(CONVERSATION_EVENTS, CONVERSATION_EVENT, on_conversation_event, group_id=group_id)
    bus.consume(AGENT_COMMANDS, AGENT_COMMAND_EVENT, on_agent_command, group_id=f"{group_id}-commands")
    bus.consume(HANDOFF_SUMMARIES, SUMMARY_EVENT, on_summary, group_id=f"{group_id}-summaries")
    bus.consume(DELIVERY_STATUS, DELIVERY_EVENT, on_delivery_status, group_id=f"{group_id}-delivery")
    # No group: every instance sees every change; from the latest (Mongo gave it the rest).
    bus.consume(CHATBOT_SETTINGS, SETTINGS_EVENT, on_settings_changed, group_id=None, from_beginning=False)
