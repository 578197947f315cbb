"""The summarizer's bus handler: thin and typed; the work happens in background jobs."""

from __future__ import annotations

from services.summarizer.jobs import SummaryWorker
from services.summarizer.refresh import SummaryRefresher
from shared.events import ConversationMessageAdded, ConversationStateChanged, SummaryRefreshRequested

# Whether the conversation waits for the team after a transition (only then is its summary
# kept current by itself).
WAITING_AFTER = {"handoff": True, "reopen": True, "close": False, "return_to_ai": False}


class SummarizerHandlers:
    def __init__(self, worker: SummaryWorker, refresher: SummaryRefresher) -> None:
        self.worker = worker
        self.refresher = refresher

    async def on_state_event(
            self, event: ConversationStateChanged | ConversationMessageAdded | SummaryRefreshRequested) -> None:
        if isinstance(event, ConversationMessageAdded):
            await self.refresher.on_message(event)
        elif isinstance(event, SummaryRefreshRequested):
            await self.refresher.want(event.handoff_id)
        else:
            await self.on_state_changed(event)

    async def on_state_changed(self, event: ConversationStateChanged) -> None:
        if event.transition != "handoff":
            if event.handoff_id:
                await self.worker.jobs.set_waiting(event.handoff_id, WAITING_AFTER[event.transition])
            return
        if not event.handoff_id:
            # Raising parks it on the DLQ (after the bus's retries) with this error.
            raise ValueError("a handoff transition without a handoff_id")
        await self.worker.accept(event)
