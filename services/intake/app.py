"""Intake's composition root: visitor messages in; transcript events, handoff requests
and AI replies out."""

from __future__ import annotations

import asyncio
import logging

from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import FastAPI
from pydantic import ValidationError

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

    async def preload_settings() -> None:
        # Before the visitor consumer starts, so the first messages after a restart see
        # each chatbot's real settings rather than the defaults.
        try:
            await asyncio.wait_for(_read_settings_table(settings, chatbots), settings.settings_preload_timeout_s)
            log.info("chatbot settings loaded: %d chatbot(s)", len(chatbots))
        except Exception as exc:  # noqa: BLE001 - the live consumer fills the table anyway
            log.warning("could not preload chatbot settings (%r); continuing with the live consumer", exc)

    async def close_responder() -> None:
        if responder is not None:
            await responder.close()

    runtime.startup_hooks += [announce_mode, preload_settings]
    runtime.shutdown_hooks.append(close_responder)
    runtime.health_details["ai_mode"] = lambda: intake.mode
    runtime.app.state.intake = intake
    return runtime.app


async def _read_settings_table(settings: IntakeSettings, chatbots: ChatbotTable) -> None:
    """Read `chatbot.settings` from the beginning to its current end into the table."""
    topic = settings.kafka_topic_prefix + CHATBOT_SETTINGS.name
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms)
    await consumer.start()
    try:
        await consumer.topics()  # fetches the cluster's metadata
        partitions = [TopicPartition(topic, p) for p in (consumer.partitions_for_topic(topic) or set())]
        if not partitions:
            return
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        ends = await consumer.end_offsets(partitions)
        while True:
            positions = [await consumer.position(tp) for tp in partitions]
            if all(pos >= ends[tp] for pos, tp in zip(positions, partitions, strict=True)):
                break
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                for record in records:
                    try:
                        event = SETTINGS_EVENT.validate_json(record.value)
                    except ValidationError:
                        continue  # the live consumer parks it on the DLQ
                    chatbots.apply(event.settings, event.deleted)
    finally:
        await consumer.stop()
