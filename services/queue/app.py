"""Composition root: the queue service's runtime, stores, parts, bus handlers and internal API."""

from __future__ import annotations

from fastapi import FastAPI

from services.queue.api import router
from services.queue.auth import service_token
from services.queue.handlers import QueueHandlers
from services.queue.metrics import OpenHandoffsGauge
from services.queue.parts import build_queue
from services.queue.settings import QueueSettings
from services.queue.store import HandoffIndex, QueueRecord
from shared.events import (
    AGENT_COMMAND_EVENT,
    CONVERSATION_EVENT,
    DELIVERY_EVENT,
    SETTINGS_EVENT,
    SUMMARY_EVENT,
    VISITOR_EVENT,
)
from shared.bus import Bus
from shared.service import ServiceRuntime
from shared.topics import (
    AGENT_COMMANDS,
    CHATBOT_SETTINGS,
    CONVERSATION_EVENTS,
    DELIVERY_STATUS,
    HANDOFF_SUMMARIES,
    VISITOR_MESSAGES,
)


def create_app(settings: QueueSettings) -> FastAPI:
    token = service_token(settings)  # before anything starts: no token, no queue
    runtime = ServiceRuntime(settings, name="queue")
    index = HandoffIndex(runtime.redis, settings.redis_prefix)
    queue = build_queue(settings, runtime.bus, QueueRecord(runtime.db), index)
    subscribe(runtime.bus, QueueHandlers(queue.incoming, queue.commands), settings)
    runtime.startup_hooks += [queue.record.create_indexes, queue.line.record.create_indexes, queue.chatbots.load]
    # Other queue instances' changes keep this one's cache current (Mongo is the record).
    runtime.replicate(CHATBOT_SETTINGS, SETTINGS_EVENT, queue.chatbots.apply, owner=True)
    # After the broker started: the index check may publish nothing, settings do.
    runtime.started_hooks += [queue.feed.check_index, queue.chatbots.publish_all]
    # A broker that lost chatbot.settings (the embedded one keeps it in memory only) gets it
    # back from Mongo: the other services' replicas read the recreated topic from its start.
    runtime.recovered_hooks.append(queue.chatbots.publish_all)
    runtime.every("index check", settings.index_check_interval_s, queue.feed.check_index)
    runtime.every("line refresh", settings.line_refresh_s, queue.line.refresh)
    runtime.shutdown_hooks.append(queue.line.close)
    runtime.health_details["chatbots"] = lambda: len(queue.chatbots)
    runtime.metrics_hooks.append(OpenHandoffsGauge(queue.chatbots, index).refresh)
    runtime.app.state.queue = queue
    runtime.app.state.queue_api_token = token
    runtime.app.include_router(router)
    return runtime.app


def subscribe(bus: Bus, handlers: QueueHandlers, settings: QueueSettings) -> None:
    """Everything the queue reads, in one consumer group: one fetch loop and one group
    membership per instance instead of five. Keyed by conversation on every topic, so one
    conversation's visitor messages, AI outcomes, agents' commands, summaries and delivery
    statuses are handled one at a time, in order per topic, and different conversations in
    parallel (`VISITOR_CONCURRENCY`)."""
    bus.consume_all([
        (VISITOR_MESSAGES, VISITOR_EVENT, handlers.on_visitor_event),
        (CONVERSATION_EVENTS, CONVERSATION_EVENT, handlers.on_ai_outcome),
        (AGENT_COMMANDS, AGENT_COMMAND_EVENT, handlers.on_agent_command),
        (HANDOFF_SUMMARIES, SUMMARY_EVENT, handlers.on_summary),
        (DELIVERY_STATUS, DELIVERY_EVENT, handlers.on_delivery_status),
    ], group_id=settings.queue_consumer_group, concurrency=settings.visitor_concurrency,
       # Handlers that are safe to repeat skip the processed-events check and mark (two Mongo
       # round trips per event). A replayed visitor message finds its message stored (its id is
       # derived from the edge's dedupe key) and asks the same AI turn again, which the queue
       # applies once; an AI outcome's replies have ids of their own (stored once, sent once:
       # channels delivers one message id once) and its handoff is guarded by the version; a
       # delivery status only moves a message forward; a summary is set, not added.
       idempotent=[VISITOR_MESSAGES, CONVERSATION_EVENTS, DELIVERY_STATUS, HANDOFF_SUMMARIES])
