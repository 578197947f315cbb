"""The queue's bus adapter: which topic goes to which use case, under which consumer group.
Handlers are thin and typed; the use cases live in `incoming` and `commands`."""

from __future__ import annotations

from services.queue.commands import AgentCommands
from services.queue.incoming import Incoming
from services.queue.settings import QueueSettings
from shared.bus import Bus
from shared.events import (
    AGENT_COMMAND_EVENT,
    CONVERSATION_EVENT,
    DELIVERY_EVENT,
    SUMMARY_EVENT,
    VISITOR_EVENT,
    AgentCommand,
    ChatbotSettingsUpdate,
    VisitorContactSubmitted,
    VisitorMessageReceived,
)
from shared.topics import AGENT_COMMANDS, CONVERSATION_EVENTS, DELIVERY_STATUS, HANDOFF_SUMMARIES, VISITOR_MESSAGES


def register(bus: Bus, incoming: Incoming, commands: AgentCommands, settings: QueueSettings) -> None:
    group = settings.queue_consumer_group

    async def on_visitor_event(event: VisitorMessageReceived | VisitorContactSubmitted) -> None:
        if isinstance(event, VisitorMessageReceived):
            await incoming.on_visitor_message(event)
        else:
            await incoming.on_contact_submitted(event)

    async def on_agent_command(event: AgentCommand | ChatbotSettingsUpdate) -> None:
        if isinstance(event, AgentCommand):
            await commands.on_agent_command(event)
        else:
            await commands.on_settings_update(event)

    # One consumer group per topic (FastStream runs one consumer per subscriber): members of
    # a shared group would force each other through a rebalance as each one joins.
    # Visitor messages first: the path a visitor's words take to an agent's screen.
    bus.consume(VISITOR_MESSAGES, VISITOR_EVENT, on_visitor_event, group_id=f"{group}-visitors",
                concurrency=settings.visitor_concurrency)
    bus.consume(CONVERSATION_EVENTS, CONVERSATION_EVENT, incoming.on_ai_outcome, group_id=group,
                concurrency=settings.visitor_concurrency)
    bus.consume(AGENT_COMMANDS, AGENT_COMMAND_EVENT, on_agent_command, group_id=f"{group}-commands")
    bus.consume(HANDOFF_SUMMARIES, SUMMARY_EVENT, incoming.on_summary, group_id=f"{group}-summaries")
    bus.consume(DELIVERY_STATUS, DELIVERY_EVENT, incoming.on_delivery_status, group_id=f"{group}-delivery")
