"""Composition root: create_app(settings) wires the channels service onto a ServiceRuntime."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from services.channels.api import ChannelsApi, build_router
from services.channels.chatbots import ChatbotTable, TelegramWebhooks
from services.channels.handlers import ChannelsHandlers
from services.channels.inbound import InboundPublisher
from services.channels.limits import channel_body_limit
from services.channels.line import LineBoard
from services.channels.outbound import SWEEP_INTERVAL_S, OutboundDelivery
from services.channels.platforms import TelegramClient, WhatsAppClient
from services.channels.settings import ChannelsSettings
from services.channels.store import (
    DeliveryRecords,
    InboundDedupe,
    TelegramWebhookRegistry,
    WebOutbox,
    WhatsAppWindowStore,
)
from services.channels.visitors import NewestTokens, WidgetTokens, secret_or_random
from services.channels.web import WebHub
from services.channels.widget_api import WidgetApi, build_widget_router
from services.channels.widget_limits import WidgetLimiter
from shared.events import LINE_EVENT, OUTBOUND_EVENT, SETTINGS_EVENT
from shared.ratelimit import RateLimits, networks
from shared.service import ServiceRuntime
from shared.topics import CHATBOT_SETTINGS, DELIVERY_STATUS, OUTBOUND_MESSAGES, VISITOR_LINE, VISITOR_MESSAGES

log = logging.getLogger("handoff.channels.app")


def _quiet_secret_bearing_loggers() -> None:
    # httpx logs every request URL at INFO, and PTB logs its API URL at DEBUG: for Telegram
    # that URL contains the bot token. aiokafka's DEBUG lines carry raw records, and
    # chatbot.settings records carry the channel credentials. None of them may reach the logs.
    for name in ("httpx", "telegram", "httpcore", "aiokafka"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING or logger.level < logging.WARNING:
            logger.setLevel(logging.WARNING)


def create_app(settings: ChannelsSettings) -> FastAPI:
    _quiet_secret_bearing_loggers()
    runtime = ServiceRuntime(settings, name="channels", title="Handoff channels")
    prefix = settings.redis_prefix

    chatbots = ChatbotTable()
    records = DeliveryRecords(runtime.db)
    outbox = WebOutbox(runtime.redis, prefix, settings.widget_history_limit, settings.widget_history_ttl_s)
    window = WhatsAppWindowStore(runtime.redis, prefix)
    telegram = TelegramClient(settings.telegram_api_base_url, settings.http_timeout_s)
    whatsapp = WhatsAppClient(settings.graph_api_base_url, settings.graph_api_version, settings.http_timeout_s)

    visitor_pub = runtime.bus.publisher(VISITOR_MESSAGES)
    status_pub = runtime.bus.publisher(DELIVERY_STATUS)

    webhooks = TelegramWebhooks(telegram, TelegramWebhookRegistry(runtime.redis, prefix), settings.channels_public_url,
                                backoff_s=settings.delivery_backoff_s, max_backoff_s=settings.delivery_max_backoff_s)
    delivery = OutboundDelivery(
        chatbots=chatbots, records=records, statuses=status_pub, telegram=telegram, whatsapp=whatsapp,
        window=window, outbox=outbox, attempts=settings.delivery_attempts, backoff_s=settings.delivery_backoff_s,
        max_backoff_s=settings.delivery_max_backoff_s,
        # Longer than one send attempt can take (connect, write and read timeouts each).
        lease_s=max(120.0, 4 * settings.http_timeout_s),
    )
    line = LineBoard(runtime.redis, prefix, outbox.live_channel)
    hub = WebHub(outbox, status_pub, max_frame_bytes=settings.widget_max_frame_bytes, max_json_depth=settings.max_json_depth,
                 line=line)
    handlers = ChannelsHandlers(chatbots, webhooks, delivery, line)

    # The settings table, whole in every instance, read before serving: a webhook or widget
    # message right after start-up finds its chatbot instead of a 404 (which a platform may
    # not retry).
    runtime.replicate(CHATBOT_SETTINGS, SETTINGS_EVENT, handlers.on_chatbot_settings,
                      timeout=settings.settings_preload_timeout_s)
    # Outbound messages and the visitors' line are shared between instances (one consumer);
    # web ones reach the socket's holder via Redis.
    runtime.bus.consume_all([(OUTBOUND_MESSAGES, OUTBOUND_EVENT, handlers.on_outbound),
                             (VISITOR_LINE, LINE_EVENT, handlers.on_line)],
                            group_id=settings.outbound_group_id, concurrency=settings.outbound_concurrency,
                            # The delivery record's claim on the message id is the dedupe; a
                            # line is whole state, the newest wins.
                            idempotent=[OUTBOUND_MESSAGES, VISITOR_LINE])

    runtime.startup_hooks.append(records.create_indexes)
    runtime.started_hooks.append(hub.start)
    runtime.shutdown_hooks += [telegram.close, whatsapp.close, webhooks.close, hub.close]
    # Settles deliveries whose sender died mid-send; registered last, so it stops first.
    runtime.every("delivery sweep", SWEEP_INTERVAL_S, delivery.sweep)
    runtime.health_details["chatbots"] = lambda: len(chatbots)
    runtime.health_details["widget_connections"] = lambda: hub.connections

    app = runtime.app
    # Added before CORS, so CORS wraps it: the widget can read a 413 / 400 too.
    app.add_middleware(channel_body_limit, api_cap=settings.widget_max_body_bytes, webhook_cap=settings.webhook_max_body_bytes,
                       max_depth=settings.max_json_depth)
    origins = [o.strip() for o in settings.widget_allowed_origins.split(",") if o.strip()]
    app.add_middleware(CORSMiddleware, allow_origins=origins, allow_methods=["GET", "POST"],
                       allow_headers=["Content-Type", "Authorization"], expose_headers=["Retry-After"], allow_credentials=False,
                       max_age=600)
    inbound = InboundPublisher(InboundDedupe(runtime.redis, prefix, settings.inbound_dedupe_ttl_s), visitor_pub,
                               timeout_s=settings.publish_timeout_s)
    api = ChannelsApi(chatbots, inbound, status_pub, window, records, settings.max_json_depth, telegram)
    app.include_router(build_router(api))
    tokens = WidgetTokens(secret_or_random(settings.widget_token_secret), NewestTokens(runtime.redis, prefix),
                          ttl_s=settings.widget_token_ttl_s, grace_s=settings.widget_token_renew_grace_s)
    limiter = WidgetLimiter(RateLimits(settings.redis_url, f"{prefix}:"), networks(settings.trusted_proxies))
    widget = WidgetApi(chatbots, inbound, outbox, hub, tokens, limiter, settings.widget_socket_auth_timeout_s)
    app.include_router(build_widget_router(widget))
    app.state.channels = handlers
    app.state.channels_api = api
    app.state.widget_api = widget
    return app
