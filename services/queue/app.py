"""Composition root: the queue service's runtime, stores, parts, bus handlers and internal API."""

from __future__ import annotations

from fastapi import FastAPI

from services.queue.api import router
from services.queue.handlers import QueueHandlers
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
    runtime = ServiceRuntime(settings, name="queue")
    queue = build_queue(settings, runtime.bus, QueueRecord(runtime.db), HandoffIndex(runtime.redis, settings.redis_prefix))
    subscribe(runtime.bus, QueueHandlers(queue.incoming, queue.commands), settings)
    runtime.startup_hooks += [queue.record.create_indexes, queue.chatbots.load]
    # Other queue instances' changes keep this one's cache current (Mongo is the record).
    runtime.replicate(CHATBOT_SETTINGS, SETTINGS_EVENT, queue.chatbots.apply, owner=True)
    # After the broker started: the index check may publish nothing, settings do.
    runtime.started_hooks += [queue.feed.check_index, queue.chatbots.publish_all]
    runtime.health_details["chatbots"] = lambda: len(queue.chatbots)
    runtime.app.state.queue = queue
    runtime.app.include_router(router)
    return runtime.app


def subscribe(bus: Bus, handlers: QueueHandlers, settings: QueueSettings) -> None:
    """Which topic goes to which handler, under which consumer group. One group per topic
    (FastStream runs one consumer per subscriber): members of a shared group would force each
    other through a rebalance as each one joins."""
    group, concurrency = settings.queue_consumer_group, settings.visitor_concurrency
    # Visitor messages first: the path a visitor's words take to an agent's screen.
    bus.consume(VISITOR_MESSAGES, VISITOR_EVENT, handlers.on_visitor_event, group_id=f"{group}-visitors",
                concurrency=concurrency)
    bus.consume(CONVERSATION_EVENTS, CONVERSATION_EVENT, handlers.on_ai_outcome, group_id=group,
                concurrency=concurrency)
    bus.consume(AGENT_COMMANDS, AGENT_COMMAND_EVENT, handlers.on_agent_command, group_id=f"{group}-commands")
    bus.consume(HANDOFF_SUMMARIES, SUMMARY_EVENT, handlers.on_summary, group_id=f"{group}-summaries")
    bus.consume(DELIVERY_STATUS, DELIVERY_EVENT, handlers.on_delivery_status, group_id=f"{group}-delivery")
