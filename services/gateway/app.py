"""Composition root: the gateway's stores, queue client, live hub, bus wiring and routes."""

from __future__ import annotations

import asyncio
import logging
import time

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from services.gateway.deps import Gateway
from services.gateway.domain import ChatbotDirectory, LoginBackoff, PendingCommands
from services.gateway.handlers import GatewayHandlers
from services.gateway.live import CLOSE_NO_SESSION, LiveHub
from services.gateway.presence import Presence, PresenceStore
from services.gateway.queue_client import QueueClient, QueueError
from services.gateway.routes import auth, chatbots, pages, summary, ws
from services.gateway.routes.pages import STATIC_DIR
from services.gateway.security import SecurityHeaders
from services.gateway.settings import GatewaySettings
from services.gateway.passwords import PasswordChecks
from services.gateway.store import AgentStore, LoginLimits
from shared.events import DASHBOARD_EVENT, PRESENCE_EVENT, SETTINGS_EVENT
from shared.http_limits import BodyLimit
from shared.ratelimit import RateLimits, rule
from shared.service import ServiceRuntime
from shared.topics import AGENT_COMMANDS, AGENT_PRESENCE, CHATBOT_SETTINGS, DASHBOARD_UPDATES

log = logging.getLogger("handoff.gateway")


def create_app(settings: GatewaySettings) -> FastAPI:
    runtime = ServiceRuntime(settings, name="gateway", title="Handoff gateway")
    store = AgentStore(runtime.db)
    hub = LiveHub(settings.ws_tick_s, settings.ws_frame_budget, settings.ws_catch_up_updates)
    pending = PendingCommands()
    directory = ChatbotDirectory()
    handlers = GatewayHandlers(hub, pending, directory)
    limits = RateLimits(settings.redis_url, f"{settings.redis_prefix}:")
    gateway = Gateway(
        settings=settings,
        store=store,
        login_limits=LoginLimits(
            limits, rule(settings.login_attempts_per_ip),
            LoginBackoff(settings.login_free_failures, settings.login_backoff_base_s, settings.login_backoff_max_s),
            settings.login_failures_window_s),
        passwords=PasswordChecks(settings.login_checks_at_once, settings.login_check_wait_s),
        queue=QueueClient(settings.queue_url, settings.queue_timeout_s, settings.queue_api_token),
        hub=hub,
        pending=pending,
        directory=directory,
        handlers=handlers,
        commands=runtime.bus.publisher(AGENT_COMMANDS),
    )

    # No consumer group: every gateway process sees every update for the sockets it holds.
    # Presence (who views / types where) likewise: every process hears every agent's, one
    # consumer for both topics.
    presence = Presence(PresenceStore(runtime.redis, settings.redis_prefix), runtime.bus.publisher(AGENT_PRESENCE),
                        hub, limits, rule(settings.presence_frames_per_agent), settings.presence_ttl_s)
    runtime.bus.consume_all([(DASHBOARD_UPDATES, DASHBOARD_EVENT, handlers.on_dashboard_event),
                             (AGENT_PRESENCE, PRESENCE_EVENT, presence.on_event)],
                            group_id=None, from_beginning=False)
    # The settings table, whole in every instance, read before serving: the first /api/me
    # after start-up already has the chatbots' names and Handoff switches.
    runtime.replicate(CHATBOT_SETTINGS, SETTINGS_EVENT, handlers.on_settings_changed,
                      timeout=settings.settings_preload_timeout_s)

    runtime.startup_hooks.append(store.create_indexes)
    runtime.started_hooks.append(lambda: _positioned(runtime, settings.kafka_topic_prefix + DASHBOARD_UPDATES.name))
    runtime.shutdown_hooks.append(gateway.queue.close)
    runtime.every("websocket revalidation", settings.ws_revalidate_s,
                  lambda: hub.revalidate(_memberships_of(store), CLOSE_NO_SESSION))
    runtime.health_details["websockets"] = lambda: len(hub.clients)
    runtime.health_details["chatbots_known"] = lambda: len(directory.chatbots)

    app = runtime.app
    app.state.gateway = gateway  # what the routers' dependencies read (deps.gateway)
    app.state.presence = presence  # what /ws hands presence frames to (routes/ws.py)
    app.state.summary_refresh_limit = summary.RefreshLimit(limits, rule(settings.summary_refreshes_per_conversation))
    install_error_handlers(app)
    for router in (auth.router, chatbots.router, summary.router, ws.router, pages.router):
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR, check_dir=False), name="static")
    # Outermost last: the headers go on the body limit's 413 as well.
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeaders)
    return app


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(QueueError)
    async def queue_error(_: Request, exc: QueueError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)


def _memberships_of(store: AgentStore):
    async def lookup(digest: str) -> set[str] | None:
        session = await store.session_by_digest(digest)
        return None if session is None else session.chatbot_ids
    return lookup


def _consumer_of(runtime: ServiceRuntime, topic: str):
    subscriber = next((s for s in runtime.bus.broker.subscribers
                       if topic in getattr(s, "topic_names_for_subscribe", [])), None)
    return getattr(subscriber, "consumer", None)


async def _positioned(runtime: ServiceRuntime, topic: str, timeout: float = 15.0) -> None:
    """Wait until the groupless `dashboard.updates` consumer has resolved "latest" on every
    partition: a command result published after start-up is then never missed."""
    consumer = _consumer_of(runtime, topic)
    if consumer is None:
        return
    deadline = time.monotonic() + timeout
    try:
        while not consumer.assignment():
            if time.monotonic() > deadline:
                raise TimeoutError
            await asyncio.sleep(0.02)
        for tp in consumer.assignment():
            await asyncio.wait_for(consumer.position(tp), max(0.1, deadline - time.monotonic()))
    except TimeoutError:
        log.warning("dashboard.updates consumer not positioned after %.0fs; continuing", timeout)
