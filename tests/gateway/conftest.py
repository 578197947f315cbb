"""Gateway test stack: the real broker, Redis and Mongo-wire server (session fixtures), a
fake queue (its internal query API plus a command responder on the real bus) and one or
more gateways served in-process."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import HTTPException, Query
from fastapi.responses import JSONResponse

from services.gateway.app import create_app
from services.gateway.domain import hash_password
from services.gateway.settings import GatewaySettings
from services.gateway.store import AgentStore
from shared.chatbots import ChannelCredentials, ChatbotSettings, ChatbotView, HumanHandoffSettings
from shared.events import (
    AGENT_COMMAND_EVENT,
    AgentCommand,
    ChatbotSettingsChanged,
    CommandResult,
    DashboardUpdate,
    HumanHandoffUpdate,
)
from shared.service import ServiceRuntime
from shared.settings import ServiceSettings
from shared.stores import open_mongo
from shared.topics import AGENT_COMMANDS, CHATBOT_SETTINGS, DASHBOARD_UPDATES
from shared.views import ConversationDetail, ConversationView, HandoffRow, MessageView, Page, Snapshot, Stats
from tests.harness import RunningService, run_in_process, settings_from_env

PASSWORD = "correct horse 1"
NOW = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
# Conversation ids the fake queue answers commands for in a particular way.
CONV_ACTIVE = "cv_active"      # 409, as the real queue answers a reply to an active conversation
CONV_UNKNOWN = "cv_unknown"    # 404
CONV_SILENT = "cv_silent"      # no answer at all -> the gateway answers 202


def stats(chatbot_id: str) -> Stats:
    return Stats(chatbot_id=chatbot_id, open=1, oldest_waiting_since=NOW, today=1, resolved_this_week=0,
                 computed_at=NOW, today_ends_at=NOW + timedelta(hours=15))


def conversation(chatbot_id: str, cid: str = "cv_1") -> ConversationView:
    return ConversationView(conversation_id=cid, chatbot_id=chatbot_id, status="handed_off", channel="web",
                            visitor_id="v1", display_name="Ada", created_at=NOW, updated_at=NOW)


def chatbot_settings(chatbot_id: str) -> ChatbotSettings:
    return ChatbotSettings(chatbot_id=chatbot_id, name=f"Bot {chatbot_id}", timezone="Europe/Paris",
                           human_handoff=HumanHandoffSettings(enabled=True),
                           channels=ChannelCredentials(telegram_bot_token="123:SECRET-TOKEN",
                                                       whatsapp_access_token="EAAG-SECRET",
                                                       whatsapp_phone_number_id="555", whatsapp_app_secret="appsecret"))


def update(chatbot_id: str, seq: int, epoch: str = "e1") -> DashboardUpdate:
    return DashboardUpdate(chatbot_id=chatbot_id, epoch=epoch, seq=seq, stats=stats(chatbot_id),
                           row_upserted=HandoffRow(conversation_id=f"cv_{seq}", chatbot_id=chatbot_id,
                                                   display_name="Ada", waiting_since=NOW, channel="web",
                                                   message_count=seq))


def fake_queue_app(settings: ServiceSettings, token: str):
    runtime = ServiceRuntime(settings, name="fakequeue")
    app = runtime.app
    app.state.seen = {"requests": [], "commands": []}
    known = {"alpha", "beta"}
    results = runtime.bus.publisher(DASHBOARD_UPDATES)

    def check(chatbot_id: str) -> None:
        if chatbot_id not in known:
            raise HTTPException(404, f"Unknown chatbot: {chatbot_id}")

    @app.middleware("http")
    async def record(request, call_next):
        app.state.seen["requests"].append(request.url.path + ("?" + request.url.query if request.url.query else ""))
        # As the real queue: no service token, no answer (so every test checks the gateway sends it).
        if request.url.path.startswith("/internal") and request.headers.get("authorization") != f"Bearer {token}":
            return JSONResponse({"detail": "The internal API needs the queue's service token."}, status_code=401)
        return await call_next(request)

    @app.get("/internal/chatbots/{chatbot_id}/snapshot")
    async def snapshot(chatbot_id: str, limit: int = Query(50, ge=1)) -> Snapshot:
        check(chatbot_id)
        return Snapshot(chatbot_id=chatbot_id, epoch="e1", seq=7, stats=stats(chatbot_id),
                        handoffs=Page(items=[]))

    @app.get("/internal/chatbots/{chatbot_id}/stats")
    async def get_stats(chatbot_id: str) -> Stats:
        check(chatbot_id)
        return stats(chatbot_id)

    @app.get("/internal/chatbots/{chatbot_id}/handoffs")
    async def handoffs(chatbot_id: str, cursor: str | None = None, limit: int = 50) -> Page[HandoffRow]:
        check(chatbot_id)
        return Page(items=[update(chatbot_id, 1).row_upserted], next_cursor=None, total=1)

    @app.get("/internal/chatbots/{chatbot_id}/conversations")
    async def conversations(chatbot_id: str, status: str = "all", q: str | None = None, cursor: str | None = None,
                            limit: int = 50) -> Page[ConversationView]:
        check(chatbot_id)
        return Page(items=[conversation(chatbot_id)], total=1)

    @app.get("/internal/chatbots/{chatbot_id}/conversations/{conversation_id}")
    async def detail(chatbot_id: str, conversation_id: str, before: str | None = None, limit: int = 100):
        check(chatbot_id)
        if conversation_id != "cv_1":
            raise HTTPException(404, "Conversation not found.")
        msg = MessageView(message_id="m1", conversation_id="cv_1", sender="visitor", text="hi", created_at=NOW)
        return ConversationDetail(conversation=conversation(chatbot_id), messages=Page(items=[msg]))

    @app.get("/internal/chatbots/{chatbot_id}/settings")
    async def settings_(chatbot_id: str) -> ChatbotView:
        check(chatbot_id)
        return chatbot_settings(chatbot_id).view()

    async def on_command(event: AgentCommand | HumanHandoffUpdate) -> None:
        app.state.seen["commands"].append(event)
        if event.conversation_id == CONV_SILENT:
            return
        if isinstance(event, AgentCommand) and event.conversation_id == CONV_ACTIVE:
            result = CommandResult(chatbot_id=event.chatbot_id, conversation_id=event.conversation_id,
                                   command_id=event.command_id, ok=False, status_code=409,
                                   error="Can only reply to handed-off conversations.")
        elif isinstance(event, AgentCommand) and event.conversation_id == CONV_UNKNOWN:
            result = CommandResult(chatbot_id=event.chatbot_id, conversation_id=event.conversation_id,
                                   command_id=event.command_id, ok=False, status_code=404,
                                   error="Conversation not found.")
        elif isinstance(event, HumanHandoffUpdate):
            saved = chatbot_settings(event.chatbot_id).model_copy(update={
                "human_handoff": event.human_handoff, "version": event.based_on_version + 1})
            result = CommandResult(chatbot_id=event.chatbot_id, command_id=event.command_id, ok=True,
                                   settings=saved.view())
        else:
            result = CommandResult(chatbot_id=event.chatbot_id, conversation_id=event.conversation_id,
                                   command_id=event.command_id, ok=True,
                                   conversation=conversation(event.chatbot_id, event.conversation_id or "cv_1"))
        await results.publish(result)

    runtime.bus.consume(AGENT_COMMANDS, AGENT_COMMAND_EVENT, on_command, group_id="fakequeue", from_beginning=True)
    return app


@dataclass
class Stack:
    isolated: Any
    queue: RunningService

    def gateway_settings(self, **extra: str | None) -> GatewaySettings:
        """The gateway's settings; an `extra` of None leaves that variable out (its default)."""
        # The tests talk plain http to 127.0.0.1: the explicit opt-out of Secure cookies.
        defaults = {"QUEUE_URL": self.queue.url, "COMMAND_TIMEOUT_S": "3",
                    "ALLOWED_ORIGINS": "https://dash.example.com", "COOKIE_SECURE": "false"}
        merged = {**defaults, **extra}
        env = self.isolated.env("gateway", **{k: v for k, v in merged.items() if v is not None})
        return settings_from_env(GatewaySettings, env)

    @property
    def queue_seen(self) -> dict[str, Any]:
        return self.queue.app.state.seen


async def add_agent(settings: GatewaySettings, email: str, chatbots: list[str], first_name: str | None = "Dana") -> str:
    client, db = open_mongo(settings)
    try:
        store = AgentStore(db)
        await store.create_indexes()
        return (await store.upsert_agent(email, hash_password(PASSWORD), first_name, chatbots)).agent_id
    finally:
        await client.close()


@pytest.fixture
async def stack(isolated) -> AsyncIterator[Stack]:
    qsettings = settings_from_env(ServiceSettings, isolated.env("fakequeue"))
    async with run_in_process("fakequeue", lambda s: fake_queue_app(s, isolated.queue_api_token), qsettings) as queue:
        yield Stack(isolated, queue)


@contextlib.asynccontextmanager
async def gateway(stack: Stack, **extra: str | None) -> AsyncIterator[RunningService]:
    async with run_in_process("gateway", create_app, stack.gateway_settings(**extra)) as gw:
        yield gw


async def login(client: httpx.AsyncClient, email: str, password: str = PASSWORD) -> str:
    r = await client.post("/api/login", json={"email": email, "password": password})
    assert r.status_code == 200, r.text
    return r.json()["csrf_token"]


async def publish_settings(stack: Stack, chatbot_id: str, enabled: bool = True, name: str | None = None) -> None:
    """Publish a chatbot.settings event as the queue would, with a throwaway bus."""
    from shared.bus import Bus

    settings = settings_from_env(ServiceSettings, stack.isolated.env("settingspub"))
    bus = Bus(settings, client_id="settingspub")
    pub = bus.publisher(CHATBOT_SETTINGS)
    await bus.broker.start()
    try:
        s = chatbot_settings(chatbot_id).model_copy(update={
            "human_handoff": HumanHandoffSettings(enabled=enabled), "name": name or f"Bot {chatbot_id}"})
        await pub.publish(ChatbotSettingsChanged(chatbot_id=chatbot_id, settings=s))
    finally:
        await bus.broker.stop()


async def publish_dashboard(stack: Stack, *events: Any) -> None:
    from shared.bus import Bus

    settings = settings_from_env(ServiceSettings, stack.isolated.env("dashpub"))
    bus = Bus(settings, client_id="dashpub")
    pub = bus.publisher(DASHBOARD_UPDATES)
    await bus.broker.start()
    try:
        for e in events:
            await pub.publish(e)
    finally:
        await bus.broker.stop()
