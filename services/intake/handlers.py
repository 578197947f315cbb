"""Intake's bus adapter: an AI turn in (`ai.turns`), its outcome out (`conversation.events`)."""

from __future__ import annotations

from services.intake.turns import AiWorker
from shared.bus import EventPublisher
from shared.events import AiTurnRequested


class IntakeHandlers:
    def __init__(self, worker: AiWorker, outcomes: EventPublisher) -> None:
        self.worker = worker
        self.outcomes = outcomes

    async def on_turn(self, turn: AiTurnRequested) -> None:
        await self.outcomes.publish(await self.worker.take_turn(turn))
