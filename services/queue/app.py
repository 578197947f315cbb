"""Composition root: the queue service's runtime, stores, publishers, handlers and API."""

from __future__ import annotations

from fastapi import FastAPI

from services.queue.api import build_router
from services.queue.handlers import register
from services.queue.settings import QueueSettings
from services.queue.store import HandoffIndex, QueueRecord
from services.queue.workflow import HandoffQueue
from shared.service import ServiceRuntime
from shared.topics import CHATBOT_SETTINGS, CONVERSATION_STATE, DASHBOARD_UPDATES, OUTBOUND_MESSAGES


def create_app(settings: QueueSettings) -> FastAPI:
    runtime = ServiceRuntime(settings, name="queue")
    record = QueueRecord(runtime.db)
    index = HandoffIndex(runtime.redis, settings.redis_prefix)
    bus = runtime.bus
    queue = HandoffQueue(
        record, index,
        state_out=bus.publisher(CONVERSATION_STATE),
        dashboard_out=bus.publisher(DASHBOARD_UPDATES),
        outbound_out=bus.publisher(OUTBOUND_MESSAGES),
        settings_out=bus.publisher(CHATBOT_SETTINGS),
    )
    register(bus, queue, settings.queue_consumer_group)
    runtime.startup_hooks += [record.create_indexes, queue.load_chatbots]
    # After the broker started: the index check may publish nothing, settings do.
    runtime.started_hooks += [queue.check_index, queue.publish_all_settings]
    runtime.health_details["chatbots"] = lambda: len(queue.chatbots)
    runtime.app.state.queue = queue
    runtime.app.include_router(build_router(queue, settings.queue_max_page))
    return runtime.app
