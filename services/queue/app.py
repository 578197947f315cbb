"""Composition root: the queue service's runtime, stores, parts, bus handlers and internal API."""

from __future__ import annotations

from fastapi import FastAPI

from services.queue.api import router
from services.queue.handlers import register
from services.queue.parts import build_queue
from services.queue.settings import QueueSettings
from services.queue.store import HandoffIndex, QueueRecord
from shared.events import SETTINGS_EVENT
from shared.service import ServiceRuntime
from shared.topics import CHATBOT_SETTINGS


def create_app(settings: QueueSettings) -> FastAPI:
    runtime = ServiceRuntime(settings, name="queue")
    queue = build_queue(settings, runtime.bus, QueueRecord(runtime.db), HandoffIndex(runtime.redis, settings.redis_prefix))
    register(runtime.bus, queue.incoming, queue.commands, settings)
    runtime.startup_hooks += [queue.record.create_indexes, queue.chatbots.load]
    # Other queue instances' changes keep this one's cache current (Mongo is the record).
    runtime.replicate(CHATBOT_SETTINGS, SETTINGS_EVENT, queue.chatbots.apply, owner=True)
    # After the broker started: the index check may publish nothing, settings do.
    runtime.started_hooks += [queue.feed.check_index, queue.chatbots.publish_all]
    runtime.health_details["chatbots"] = lambda: len(queue.chatbots)
    runtime.app.state.queue = queue
    runtime.app.include_router(router)
    return runtime.app
