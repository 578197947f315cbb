"""Intake's composition root: visitor messages in; transcript events, handoff requests
and AI replies out."""

from __future__ import annotations

import logging

from fastapi import FastAPI

from services.intake.handlers import Intake
from services.intake.responder import LLMResponder
from services.intake.settings import IntakeSettings
from services.intake.store import ChatbotTable, ConversationMemory
from shared.events import OUTBOUND_EVENT, SETTINGS_EVENT, STATE_EVENT, VISITOR_EVENT
from shared.service import ServiceRuntime
from shared.topics import (
    CHATBOT_SETTINGS,
    CONVERSATION_EVENTS,
    CONVERSATION_STATE,
    OUTBOUND_MESSAGES,
    VISITOR_MESSAGES,
)

log = logging.getLogger("handoff.intake")

# One consumer group per topic: members of a group shared across topics rebalance each
# other on every join, which on a busy broker delays start-up for no gain.
GROUP = "intake"
STATE_GROUP = "intake-state"
CONTEXT_GROUP = "intake-context"


def create_app(settings: IntakeSettings) -> FastAPI:
    runtime = ServiceRuntime(settings, name="intake")
    chatbots = ChatbotTable()
    responder = LLMResponder(settings) if settings.llm_configured else None
    intake = Intake(
        memory=ConversationMemory(runtime.redis, settings.redis_prefix, context_messages=settings.context_messages,
                                  ttl_s=settings.memory_ttl_s, statuses=runtime.db["conversation_status"]),
        chatbots=chatbots,
        conversation_events=runtime.bus.publisher(CONVERSATION_EVENTS),
        outbound=runtime.bus.publisher(OUTBOUND_MESSAGES),
        responder=responder,
        visitor_replay=runtime.bus.publisher(VISITOR_MESSAGES),
    )
    bus = runtime.bus
    bus.consume(VISITOR_MESSAGES, VISITOR_EVENT, intake.on_visitor_event, group_id=GROUP,
                concurrency=settings.visitor_concurrency)
    bus.consume(CONVERSATION_STATE, STATE_EVENT, intake.on_state_changed, group_id=STATE_GROUP)
    bus.consume(OUTBOUND_MESSAGES, OUTBOUND_EVENT, intake.on_outbound, group_id=CONTEXT_GROUP)
    # Every instance keeps the whole settings table: no group, from the beginning.
    bus.consume(CHATBOT_SETTINGS, SETTINGS_EVENT, intake.on_settings, group_id=None, from_beginning=True)

    async def announce_mode() -> None:
        if responder is None:
            log.warning("AI mode: offline (no OPENAI_API_KEY / OPENAI_BASE_URL): the offline responder answers")
        else:
            log.info("AI mode: llm (model %s at %s)", settings.openai_model, settings.openai_base_url or "api.openai.com")

    async def close_responder() -> None:
        if responder is not None:
            await responder.close()

    runtime.startup_hooks.append(announce_mode)
    # Before any consumer starts: the first messages after a restart see each chatbot's real
    # settings rather than the defaults (tool off).
    runtime.preload_table(CHATBOT_SETTINGS, SETTINGS_EVENT, lambda e: chatbots.apply(e.settings, e.deleted),
                          settings.settings_preload_timeout_s)
    runtime.shutdown_hooks.append(close_responder)
    runtime.health_details["ai_mode"] = lambda: intake.mode
    runtime.app.state.intake = intake
    return runtime.app
