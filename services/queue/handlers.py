"""The queue's bus adapter: typed handlers that hand each event to its use case (`incoming`,
`commands`); the composition root (app.py) subscribes them."""

from __future__ import annotations

from services.queue.commands import AgentCommands
from services.queue.incoming import Incoming
from shared.events import (
    AgentCommand,
    AiTurnCompleted,
    DeliveryStatusChanged,
    HandoffSummaryReady,
    HumanHandoffUpdate,
    VisitorContactSubmitted,
    VisitorMessageReceived,
)


class QueueHandlers:
    def __init__(self, incoming: Incoming, commands: AgentCommands) -> None:
        self.incoming = incoming
        self.commands = commands

    async def on_visitor_event(self, event: VisitorMessageReceived | VisitorContactSubmitted) -> None:
        if isinstance(event, VisitorMessageReceived):
            await self.incoming.on_visitor_message(event)
        else:
            await self.incoming.on_contact_submitted(event)

    async def on_ai_outcome(self, event: AiTurnCompleted) -> None:
        await self.incoming.on_ai_outcome(event)

    async def on_agent_command(self, event: AgentCommand | HumanHandoffUpdate) -> None:
        if isinstance(event, AgentCommand):
            await self.commands.on_agent_command(event)
        else:
            await self.commands.on_human_handoff_update(event)

    async def on_summary(self, event: HandoffSummaryReady) -> None:
        await self.incoming.on_summary(event)

    async def on_delivery_status(self, event: DeliveryStatusChanged) -> None:
        await self.incoming.on_delivery_status(event)
