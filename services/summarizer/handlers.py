"""The summarizer's bus handler: thin and typed; the work happens in background jobs."""

from __future__ import annotations

from services.summarizer.jobs import SummaryWorker
from shared.events import ConversationStateChanged


class SummarizerHandlers:
    def __init__(self, worker: SummaryWorker) -> None:
        self.worker = worker

    async def on_state_changed(self, event: ConversationStateChanged) -> None:
        if event.transition != "handoff":
            return
        if not event.handoff_id:
            # Raising parks it on the DLQ (after the bus's retries) with this error.
            raise ValueError("a handoff transition without a handoff_id")
        await self.worker.accept(event)
