"""Background summary jobs: bounded concurrency, persisted in Mongo, resumed on restart.

The consumer only records the job and schedules it, so a slow or failing model never holds
up the partition (nor the next handoff). A job writes the summary (model, else extractive),
publishes `HandoffSummaryReady` with a deterministic event id, then marks itself done. A job
that fails before it is marked done stays pending and is picked up by the sweep or at the
next start; republishing is harmless (same event id)."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.summarizer import domain
from services.summarizer.model import LLMSummarizer
from services.summarizer.store import SummaryJobs, event_of
from services.summarizer.tasks import KeyedTasks
from shared.bus import EventPublisher
from shared.events import ConversationStateChanged, HandoffSummaryReady
from shared.ids import utcnow
from shared.logging import bind_event

log = logging.getLogger("handoff.summarizer")


class SummaryWorker:
    def __init__(self, *, jobs: SummaryJobs, publisher: EventPublisher, model: LLMSummarizer | None,
                 concurrency: int, lease_s: float) -> None:
        self.jobs = jobs
        self.publisher = publisher
        self.model = model
        self.lease_s = lease_s
        # Shared with the refreshes (refresh.py): at most this many model calls at once.
        self.slots = asyncio.Semaphore(max(1, concurrency))
        self._tasks = KeyedTasks("summary")

    # ------------------------------------------------------------ lifecycle
    async def stop(self) -> None:
        # Unfinished jobs stay pending in Mongo and are resumed by the next process.
        await self._tasks.stop()

    async def resume_pending(self) -> int:
        ids = await self.jobs.pending_ids()
        for handoff_id in ids:
            self.schedule(handoff_id)
        if ids:
            log.info("resumed %d pending summary job(s)", len(ids))
        return len(ids)

    # ------------------------------------------------------------ the consumer's entry
    async def accept(self, event: ConversationStateChanged) -> None:
        """Record a handoff (idempotent per handoff id) and schedule its summary."""
        assert event.handoff_id is not None
        if await self.jobs.add(event):
            self.schedule(event.handoff_id)
            return
        job = await self.jobs.get(event.handoff_id)
        if job is not None and job.get("state") == "pending":
            self.schedule(event.handoff_id)  # a no-op while it runs
        else:
            log.info("handoff %s already summarized; redelivery ignored", event.handoff_id)

    def schedule(self, handoff_id: str) -> None:
        self._tasks.start(handoff_id, lambda: self._run(handoff_id))

    # ------------------------------------------------------------ one job
    async def _run(self, handoff_id: str) -> None:
        async with self.slots:
            if not await self.jobs.claim(handoff_id, self.lease_s):
                return  # done already, or another instance is on it
            job = await self.jobs.get(handoff_id)
            if job is None:
                return
            event = event_of(job)
            with bind_event(event):
                try:
                    summary = await self._write(event)
                    await self.publisher.publish(summary)
                    await self.jobs.mark_done(handoff_id, status=summary.status, text=summary.text, mode=summary.mode,
                                              covers_until=summary.covers_until, made_at=summary.made_at)
                    log.info("summary of handoff %s published (%s, %s)", handoff_id, summary.status, summary.mode)
                except asyncio.CancelledError:
                    # Shutting down: hand the job back at once, so the next process takes it.
                    with contextlib.suppress(Exception):
                        await asyncio.shield(self.jobs.release(handoff_id))
                    raise
                except Exception as exc:  # noqa: BLE001 - stays pending; the sweep retries
                    log.exception("summary of handoff %s not published; will retry", handoff_id)
                    with contextlib.suppress(Exception):
                        await self.jobs.record_failure(handoff_id, repr(exc))

    async def _write(self, event: ConversationStateChanged) -> HandoffSummaryReady:
        assert event.handoff_id is not None
        text: str | None = None
        mode = "extractive"
        if self.model is not None:
            try:
                text, mode = await self.model.summarize(event), "llm"
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the documented fallback
                log.warning("the model could not summarize handoff %s (%r); using the extractive summary",
                            event.handoff_id, exc)
        if text is None:
            text = domain.extractive_summary(event)
        return HandoffSummaryReady(
            event_id=domain.summary_event_id(event.handoff_id), chatbot_id=event.chatbot_id,
            conversation_id=event.conversation_id, handoff_id=event.handoff_id,
            status="ready" if text else "unavailable", text=text, mode=mode if text else None,  # type: ignore[arg-type]
            covers_until=domain.covered_until(event.transcript, event.occurred_at), made_at=utcnow(),
        )
