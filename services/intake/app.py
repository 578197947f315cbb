"""Intake's composition root: a stateless AI worker. AI turns in (`ai.turns`), their outcomes
out (`conversation.events`); no store, no conversation status — the queue owns those."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from services.intake.handlers import IntakeHandlers
from services.intake.responder import LLMResponder
from services.intake.settings import IntakeSettings
from services.intake.turns import AiWorker
from shared.events import AI_TURN_EVENT
from shared.llm import log_ai_mode
from shared.service import ServiceRuntime
from shared.topics import AI_TURNS, CONVERSATION_EVENTS

log = logging.getLogger("handoff.intake")

GROUP = "intake"


def create_app(settings: IntakeSettings) -> FastAPI:
    runtime = ServiceRuntime(settings, name="intake", stateless=True)
    responder = LLMResponder(settings) if settings.llm_configured else None
    worker = AiWorker(responder)
    handlers = IntakeHandlers(worker, runtime.bus.publisher(CONVERSATION_EVENTS))
    # Turns of different conversations in parallel, each conversation's strictly in order, so
    # one slow model answer holds up only its own conversation. No processed-events check: a
    # redelivered turn is answered again under the same ids, and the queue keeps the first.
    runtime.bus.consume(AI_TURNS, AI_TURN_EVENT, handlers.on_turn, group_id=GROUP,
                        concurrency=settings.turn_concurrency, dedupe=False)

    async def announce_mode() -> None:
        log_ai_mode(log, settings, offline="the offline responder answers")

    runtime.startup_hooks.append(announce_mode)
    if responder is not None:
        runtime.shutdown_hooks.append(responder.close)
    runtime.health_details["ai_mode"] = lambda: worker.mode
    runtime.app.state.intake = worker
    return runtime.app
