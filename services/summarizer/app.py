"""The summarizer's composition root: handoffs in (conversation.state), summaries out
(handoff.summaries)."""

from __future__ import annotations

import logging
from datetime import timedelta

from fastapi import FastAPI

from services.summarizer.handlers import SummarizerHandlers
from services.summarizer.jobs import SummaryWorker
from services.summarizer.domain import RefreshPolicy
from services.summarizer.model import LLMSummarizer
from services.summarizer.refresh import SummaryRefresher
from services.summarizer.settings import SummarizerSettings
from services.summarizer.store import SummaryJobs
from shared.events import STATE_TOPIC_EVENT
from shared.llm import log_ai_mode
from shared.service import ServiceRuntime
from shared.topics import CONVERSATION_STATE, HANDOFF_SUMMARIES

log = logging.getLogger("handoff.summarizer")

GROUP = "summarizer"


def create_app(settings: SummarizerSettings) -> FastAPI:
    runtime = ServiceRuntime(settings, name="summarizer")
    jobs = SummaryJobs(runtime.db)
    model = LLMSummarizer(settings) if settings.llm_configured else None
    worker = SummaryWorker(jobs=jobs, publisher=runtime.bus.publisher(HANDOFF_SUMMARIES), model=model,
                           concurrency=settings.summary_concurrency,
                           lease_s=settings.summary_lease_s)
    refresher = SummaryRefresher(
        jobs=jobs, publisher=worker.publisher, model=model, slots=worker.slots,
        policy=RefreshPolicy(settings.summary_refresh_after_messages,
                             timedelta(minutes=settings.summary_refresh_after_minutes)),
        keep_lines=settings.summary_refresh_max_lines, lease_s=settings.summary_lease_s)
    handlers = SummarizerHandlers(worker, refresher)
    # Every handler is safe to repeat by itself (a job per handoff id, a message once per id,
    # flags set, not toggled): no processed-events check, which would cost two Mongo round trips
    # on each of the handed-off conversations' messages.
    runtime.bus.consume(CONVERSATION_STATE, STATE_TOPIC_EVENT, handlers.on_state_event, group_id=GROUP,
                        idempotent=[CONVERSATION_STATE])

    async def announce_mode() -> None:
        log_ai_mode(log, settings, offline="summaries are extractive")

    runtime.startup_hooks += [announce_mode, jobs.create_indexes]
    # Resume what a previous process left pending (publishing needs the broker), then keep
    # picking up pending jobs that are not running (e.g. their publish failed).
    runtime.started_hooks.append(worker.resume_pending)
    if model is not None:
        runtime.shutdown_hooks.append(model.close)
    runtime.shutdown_hooks += [worker.stop, refresher.stop]  # hooks run in reverse: jobs stop before the model closes
    runtime.every("summary sweep", settings.summary_sweep_interval_s, worker.resume_pending)  # stops first
    # Summaries whose new messages waited long enough, and wanted refreshes left unfinished.
    runtime.every("summary refresh sweep", settings.summary_sweep_interval_s, refresher.sweep)
    runtime.health_details["ai_mode"] = lambda: "llm" if model is not None else "offline"
    runtime.app.state.summarizer_worker = worker
    runtime.app.state.summary_refresher = refresher
    return runtime.app
