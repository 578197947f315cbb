"""One channels service per test module, in process, against the real broker, Redis and
Mongo-wire server, with the fake Telegram Bot API and Graph API beside it. Tests stay apart
by using their own chatbot ids; topic watchers collect everything published."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest_asyncio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from services.channels.app import create_app
from services.channels.settings import ChannelsSettings
from shared.bus import ensure_topics
from shared.chatbots import ChannelCredentials, ChatbotSettings, WidgetLimits
from shared.events import ChatbotSettingsChanged, Envelope
from shared.topics import CHATBOT_SETTINGS, DELIVERY_STATUS, OUTBOUND_MESSAGES, VISITOR_MESSAGES
from tests.conftest import Isolated
from tests.fakes.telegram_api import FakeTelegram
from tests.fakes.whatsapp_api import FakeGraph
from tests.harness import RunningService, run_in_process, settings_from_env
from tests.support import eventually

PUBLIC_URL = "https://channels.example.test"

Record = dict[str, Any]


class TopicWatch:
    """Everything on one topic since the beginning, collected in the background."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.topic = topic
        self.records: list[Record] = []
        self._consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                          auto_offset_reset="earliest", fetch_max_wait_ms=20)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            for records in batch.values():
                self.records.extend(json.loads(r.value) for r in records)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        await self._consumer.stop()

    def matching(self, pred: Callable[[Record], bool]) -> list[Record]:
        return [r for r in self.records if pred(r)]

    async def wait_for(self, pred: Callable[[Record], bool], count: int = 1, timeout: float = 15.0) -> list[Record]:
        async def check() -> list[Record] | None:
            found = self.matching(pred)
            return found if len(found) >= count else None
        return await eventually(check, timeout=timeout)


@dataclass
class ChannelsStack:
    iso: Isolated
    service: RunningService
    settings: ChannelsSettings
    telegram: FakeTelegram
    graph: FakeGraph
    visitor_messages: TopicWatch
    delivery_status: TopicWatch
    producer: AIOKafkaProducer

    @property
    def url(self) -> str:
        return self.service.url

    @property
    def handlers(self) -> Any:
        return self.service.app.state.channels

    async def window(self, chatbot_id: str, conversation_id: str) -> dict[str, Any]:
        """The WhatsApp 24-hour window as channels' delivery sees it."""
        from datetime import UTC, datetime

        from services.channels.domain import whatsapp_window

        last = await self.service.app.state.channels_api.window.last_inbound(chatbot_id, conversation_id)
        state = whatsapp_window(last, datetime.now(UTC))
        return {"open": state.open, "ends_at": state.ends_at.isoformat() if state.ends_at else None}

    async def publish(self, topic: str, event: Envelope) -> None:
        await self.producer.send_and_wait(self.iso.topic_prefix + topic, event.model_dump_json().encode(),
                                          key=event.partition_key())

    async def add_chatbot(self, chatbot_id: str | None = None, widget: WidgetLimits | None = None,
                          **creds: Any) -> ChatbotSettings:
        """Publish a chatbot's settings as the queue does, and wait until channels knows it."""
        chatbot_id = chatbot_id or f"bot_{uuid.uuid4().hex[:10]}"
        settings = ChatbotSettings(chatbot_id=chatbot_id, name=f"Bot {chatbot_id}", channels=ChannelCredentials(**creds),
                                   widget=widget or WidgetLimits())
        await self.publish(CHATBOT_SETTINGS.name, ChatbotSettingsChanged(chatbot_id=chatbot_id, settings=settings))
        await eventually(lambda: asyncio.sleep(0, result=self.handlers.chatbots.get(chatbot_id) == settings))
        return settings

    async def outbound(self, event: Envelope) -> None:
        await self.publish(OUTBOUND_MESSAGES.name, event)

    def visitor(self, chatbot_id: str, visitor_id: str | None = None) -> WidgetVisitor:
        return widget_visitor(self.service.app, chatbot_id, visitor_id)


@dataclass(frozen=True)
class WidgetVisitor:
    """A widget visitor with its token, minted by the service's own signer (no session
    request, so the per-IP session limit of 127.0.0.1 is left to the tests about it)."""

    visitor_id: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def auth_frame(self) -> str:
        return json.dumps({"type": "auth", "token": self.token})


def widget_visitor(app: Any, chatbot_id: str, visitor_id: str | None = None) -> WidgetVisitor:
    session = app.state.widget_api.tokens.issue(chatbot_id, visitor_id=visitor_id)
    return WidgetVisitor(session.visitor_id, session.token)


@pytest_asyncio.fixture(scope="module")
async def stack(infra):
    iso = Isolated(infra, uuid.uuid4().hex[:8])
    await ensure_topics(infra.kafka_bootstrap, prefix=iso.topic_prefix)
    async with FakeTelegram() as telegram, FakeGraph() as graph:
        env = iso.env("channels", TELEGRAM_API_BASE_URL=telegram.base_url, GRAPH_API_BASE_URL=graph.base_url,
                      CHANNELS_PUBLIC_URL=PUBLIC_URL, DELIVERY_BACKOFF_S="0.05", DELIVERY_ATTEMPTS="4",
                      WIDGET_TOKEN_SECRET=f"widget-secret-{uuid.uuid4().hex}",
                      LOG_LEVEL="DEBUG")
        settings = settings_from_env(ChannelsSettings, env)
        visitor = TopicWatch(infra.kafka_bootstrap, iso.topic_prefix + VISITOR_MESSAGES.name)
        delivery = TopicWatch(infra.kafka_bootstrap, iso.topic_prefix + DELIVERY_STATUS.name)
        producer = AIOKafkaProducer(bootstrap_servers=infra.kafka_bootstrap, enable_idempotence=False)
        await visitor.start()
        await delivery.start()
        await producer.start()
        try:
            async with run_in_process("channels", create_app, settings) as service:
                yield ChannelsStack(iso, service, settings, telegram, graph, visitor, delivery, producer)
        finally:
            await producer.stop()
            await visitor.stop()
            await delivery.stop()
