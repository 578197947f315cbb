"""Keeping a handoff's summary current while the conversation waits for the team.

The queue tells the summarizer every visitor's and agent's message on a handed-off
conversation (`ConversationMessageAdded`) and every agent's Refresh (`SummaryRefreshRequested`),
on `conversation.state` after the handoff itself. The job document keeps the messages the
summary does not cover yet; a refresh is wanted after `SUMMARY_REFRESH_AFTER_MESSAGES` new
visitor messages, once the oldest uncovered message is `SUMMARY_REFRESH_AFTER_MINUTES` old
(the sweep), or on an agent's Refresh.

A refresh is incremental: the previous summary and only the new messages go to the model
(offline: the previous extractive summary merged with the new messages' extract). Every
dashboard sees it: first the current summary marked `refresh="running"`, then the new one
(its `revision` one higher, `covers_until` its last message); a model that fails leaves the
current summary, marked `refresh="failed"`. A wanted refresh is persisted and leased like a job,
so a restart or another instance picks it up."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

from services.summarizer import domain
from services.summarizer.model import LLMSummarizer
from services.summarizer.store import SummaryJobs, lines_of
from services.summarizer.tasks import KeyedTasks
from shared.bus import EventPublisher
from shared.events import ConversationMessageAdded, HandoffSummaryReady, TranscriptLine
from shared.ids import utcnow

log = logging.getLogger("handoff.summarizer.refresh")


class SummaryRefresher:
    def __init__(self, *, jobs: SummaryJobs, publisher: EventPublisher, model: LLMSummarizer | None,
                 slots: asyncio.Semaphore, policy: domain.RefreshPolicy, keep_lines: int, lease_s: float,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.jobs = jobs
        self.publisher = publisher
        self.model = model
        self.slots = slots
        self.policy = policy
        self.keep_lines = keep_lines
        self.lease_s = lease_s
        self.clock = clock
        self._tasks = KeyedTasks("summary-refresh")

    async def stop(self) -> None:
        await self._tasks.stop()  # a wanted refresh stays wanted: the next process runs it

    # ------------------------------------------------------------ what the consumer hands in
    async def on_message(self, event: ConversationMessageAdded) -> None:
        job = await self.jobs.add_line(event.handoff_id, event.message_id, event.line, self.keep_lines)
        if job is None:
            return  # a replay, or a handoff this summarizer never saw
        if self._due(job):
            await self.want(event.handoff_id)

    async def want(self, handoff_id: str) -> None:
        if await self.jobs.want_refresh(handoff_id):
            self._tasks.start(handoff_id, lambda: self._run(handoff_id))
        else:
            log.info("no summary of handoff %s to refresh yet; its first one will be current", handoff_id)

    async def sweep(self) -> None:
        """Summaries whose oldest uncovered message has waited long enough, and wanted
        refreshes no process is running (a restart, a failed publish)."""
        for job in await self.jobs.waiting_done():
            if self._due(job):
                await self.jobs.want_refresh(job["_id"])
        for handoff_id in await self.jobs.wanted_ids():
            self._tasks.start(handoff_id, lambda h=handoff_id: self._run(h))

    def _due(self, job: dict[str, Any]) -> bool:
        if job.get("state") != "done" or not job.get("waiting") or job.get("refresh") is not None:
            return False
        new = domain.uncovered(lines_of(job), job.get("covers_until"))
        return self.policy.due(new, self.clock(), job.get("refresh_failed_at"))

    # ------------------------------------------------------------ one refresh
    async def _run(self, handoff_id: str) -> None:
        async with self.slots:
            if not await self.jobs.claim_refresh(handoff_id, self.lease_s):
                return  # done meanwhile, or another instance is on it
            job = await self.jobs.get(handoff_id)
            if job is None:
                return
            current = _current(job)
            new = domain.uncovered(lines_of(job), job.get("covers_until"))
            try:
                await self.publisher.publish(_marked(current, "running"))
                try:
                    summary = await self._write(current, new)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # noqa: BLE001 - the model failed: keep the summary
                    log.warning("the model could not refresh the summary of handoff %s (%r); keeping it",
                                handoff_id, exc)
                    await self.publisher.publish(_marked(current, "failed"))
                    await self.jobs.refresh_failed(handoff_id, repr(exc), self.clock())
                    return
                await self.publisher.publish(summary)
                await self.jobs.refreshed(handoff_id, text=summary.text, mode=summary.mode,
                                          covers_until=summary.covers_until, made_at=summary.made_at,
                                          revision=summary.revision)
                log.info("summary of handoff %s refreshed (revision %d, %d new messages)",
                         handoff_id, summary.revision, len(new))
                # Enough may have come while the model wrote (a refresh was wanted then): wanted
                # again, the sweep runs it.
                if (job := await self.jobs.get(handoff_id)) is not None and self._due(job):
                    await self.jobs.want_refresh(handoff_id)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.jobs.release_refresh(handoff_id))
                raise
            except Exception:  # noqa: BLE001 - stays wanted; the sweep runs it again
                log.exception("refresh of the summary of handoff %s not published; will retry", handoff_id)
                with contextlib.suppress(Exception):
                    await self.jobs.release_refresh(handoff_id)

    async def _write(self, current: HandoffSummaryReady, new: list[TranscriptLine]) -> HandoffSummaryReady:
        """The next revision from the current text and the new messages (nothing new: the
        current one, no longer marked). Raises when the model fails."""
        if not new:
            return current
        if self.model is not None:
            text, mode = await self.model.refresh(current.text, new), "llm"
        else:
            text, mode = domain.extractive_refresh(current.text, new), "extractive"
        revision = current.revision + 1
        return current.model_copy(update={
            "event_id": domain.refreshed_event_id(current.handoff_id, revision), "occurred_at": self.clock(),
            "status": "ready" if text else "unavailable", "text": text, "mode": mode if text else None,
            "covers_until": new[-1].at, "made_at": self.clock(), "revision": revision, "refresh": None})


def _current(job: dict[str, Any]) -> HandoffSummaryReady:
    """The summary as it stands (what the dashboards show)."""
    event = job["event"]
    revision = job.get("revision") or 0
    return HandoffSummaryReady(
        event_id=domain.refreshed_event_id(job["_id"], revision, "current"), chatbot_id=event["chatbot_id"],
        conversation_id=event.get("conversation_id"), handoff_id=job["_id"], status=job.get("status") or "unavailable",
        text=job.get("text"), mode=job.get("mode"), covers_until=job.get("covers_until"), made_at=job.get("made_at"),
        revision=revision)


def _marked(current: HandoffSummaryReady, refresh: str) -> HandoffSummaryReady:
    return current.model_copy(update={
        "event_id": domain.refreshed_event_id(current.handoff_id, current.revision, refresh),
        "occurred_at": utcnow(), "refresh": refresh})
