"""The real queue and gateway served in-process for the browser tests, and helpers that act
as the other services do: seed a chatbot the queue's way, create agents with the gateway's
store, publish what channels publish (a visitor's message, a contact form), answer the AI
turns the queue asks for as intake would (a reply, a handoff), and publish what the
summarizer publishes (a summary)."""

from __future__ import annotations

import contextlib
from datetime import datetime
import json
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx
from aiokafka import AIOKafkaConsumer

from services.gateway.app import create_app as create_gateway
from services.gateway.domain import hash_password
from services.gateway.settings import GatewaySettings
from services.gateway.store import AgentStore
from services.queue.app import create_app as create_queue
from services.queue.settings import QueueSettings
from shared.bus import Bus, EventPublisher, ensure_topics
from shared.chatbots import ChatbotSettings, HumanHandoffSettings
from services.queue.incoming import handoff_id_for, visitor_message_id
from shared.events import (
    AiReply,
    AiTurnCompleted,
    DeliveryStatusChanged,
    HandoffAsked,
    HandoffSummaryReady,
    VisitorContactSubmitted,
    VisitorIdentity,
    VisitorMessageReceived,
)
from shared.ids import conversation_id_for, derived_id, new_id
from shared.settings import ServiceSettings
from shared.stores import open_mongo
from shared.topics import CONVERSATION_EVENTS, DELIVERY_STATUS, HANDOFF_SUMMARIES, OUTBOUND_MESSAGES, VISITOR_MESSAGES
from shared.views import Contact
from tests.conftest import Isolated
from tests.harness import RunningService, run_in_process, settings_from_env
from tests.intake.watch import TopicWatcher
from tests.support import eventually, next_instant

PASSWORD = "a good long password"


@dataclass
class Visitor:
    chatbot_id: str
    external_id: str
    channel: str
    name: str | None
    message_ids: list[str] = field(default_factory=list)  # the visitor's messages, oldest first

    @property
    def conversation_id(self) -> str:
        return conversation_id_for(self.chatbot_id, self.channel, self.external_id)

    @property
    def identity(self) -> VisitorIdentity:
        return VisitorIdentity(external_id=self.external_id, name=self.name)


@dataclass
class Stack:
    iso: Isolated
    queue: RunningService
    gateway: RunningService
    agents: AgentStore
    bus: Bus
    visitor_messages: EventPublisher
    conversation_events: EventPublisher
    summaries: EventPublisher
    delivery: EventPublisher
    turns: TopicWatcher  # the AI turns the queue asks intake for

    @property
    def url(self) -> str:
        return self.gateway.url

    @property
    def topic_prefix(self) -> str:
        return self.iso.topic_prefix

    async def seed_chatbot(self, chatbot_id: str, name: str, *, handoff: bool = True, timezone: str = "UTC") -> None:
        """The queue's own seeding path (what its CLI does): Mongo, then `chatbot.settings`."""
        settings = ChatbotSettings(chatbot_id=chatbot_id, name=name, timezone=timezone,
                                   human_handoff=HumanHandoffSettings(enabled=handoff))
        await self.queue.app.state.queue.chatbots.save(settings)
        # The gateway learns chatbots from `chatbot.settings`: wait until it knows this one.
        directory = self.gateway.app.state.gateway.directory
        await eventually(lambda: _known(directory, chatbot_id), timeout=20)

    async def team(self, shop: str, tag: str, first_name: str | None, **chatbot: object) -> tuple[str, str]:
        """A new chatbot named `shop` and one agent of it (`<tag>-<chatbot>@example.com`, signed
        in with PASSWORD): the chatbot id and the agent's e-mail."""
        bot = f"shop{uuid.uuid4().hex[:6]}"
        await self.seed_chatbot(bot, shop, **chatbot)  # type: ignore[arg-type]
        email = f"{tag}-{bot}@example.com"
        await self.create_agent(email, first_name, [bot])
        return bot, email

    async def create_agent(self, email: str, first_name: str | None, chatbots: list[str]) -> None:
        await self.agents.upsert_agent(email, hash_password(PASSWORD), first_name, chatbots)

    def visitor(self, chatbot_id: str, name: str | None, channel: str = "web") -> Visitor:
        return Visitor(chatbot_id, f"v-{uuid.uuid4().hex[:10]}", channel, name)

    async def visitor_writes(self, v: Visitor, text: str, at: datetime | None = None) -> None:
        """What channels publish when a visitor writes."""
        event = VisitorMessageReceived(chatbot_id=v.chatbot_id, conversation_id=v.conversation_id,
                                       channel=v.channel, visitor=v.identity, text=text, channel_message_id=new_id(),
                                       occurred_at=at or next_instant())
        await self.visitor_messages.publish(event)
        v.message_ids.append(visitor_message_id(v.conversation_id, event.channel_message_id))

    async def _answer_turn(self, v: Visitor, replies: list[str], handoff: HandoffAsked | None = None,
                           nth: int = -1) -> str:
        """Intake's outcome for the AI turn of the visitor's `nth` message (the latest by
        default); the turn id."""
        assert v.message_ids, "the visitor has not written yet"
        [turn] = await self.turns.wait_for("ai.turns", v.conversation_id, message_id=v.message_ids[nth], timeout=20)
        await self.conversation_events.publish(AiTurnCompleted(
            event_id=derived_id("ai_", turn["turn_id"]), chatbot_id=v.chatbot_id, conversation_id=v.conversation_id,
            turn_id=turn["turn_id"], version=turn["version"], handoff=handoff, occurred_at=next_instant(),
            replies=[AiReply(message_id=derived_id("m_", turn["message_id"], "ai", str(n)), text=t)
                     for n, t in enumerate(replies)]))
        return turn["turn_id"]

    async def ai_writes(self, v: Visitor, text: str, *, to: int = -1) -> None:
        """The AI answers the visitor's `to`-th message (the latest by default): a late answer
        to an earlier one is what the queue records as not sent."""
        await self._answer_turn(v, [text], nth=to)

    async def handed_off(self, chatbot_id: str, name: str | None, *, text: str, reason: str,
                         channel: str = "web") -> Visitor:
        """A new visitor writes `text`, then intake hands the conversation off with `reason`."""
        v = self.visitor(chatbot_id, name, channel)
        await self.visitor_writes(v, text)
        await self.handoff(v, reason)
        return v

    async def handoff(self, v: Visitor, reason: str) -> str:
        """The AI hands the conversation off on the visitor's latest message (no notice, so the
        transcript holds only what the test wrote); the handoff id."""
        turn_id = await self._answer_turn(v, [], HandoffAsked(reason=reason, source="ai_tool"))
        return handoff_id_for(turn_id)

    async def contact(self, v: Visitor, **fields: str) -> None:
        """The widget's contact form."""
        await self.visitor_messages.publish(VisitorContactSubmitted(
            chatbot_id=v.chatbot_id, conversation_id=v.conversation_id, contact=Contact(**fields),
            channel=v.channel, visitor=v.identity, occurred_at=next_instant()))

    async def summary(self, v: Visitor, handoff_id: str, text: str) -> None:
        await self.summaries.publish(HandoffSummaryReady(
            chatbot_id=v.chatbot_id, conversation_id=v.conversation_id, handoff_id=handoff_id,
            status="ready", text=text, mode="extractive"))

    async def delivery_failed(self, v: Visitor, message_id: str, error: str) -> None:
        """What channels publish when a message cannot be delivered."""
        await self.delivery_status(v, message_id, "failed", error=error, permanent=True)

    async def delivery_status(self, v: Visitor, message_id: str, status: str, **extra: object) -> None:
        """What channels publish as a platform reports on a message (sent, delivered, read…)."""
        await self.delivery.publish(DeliveryStatusChanged(
            chatbot_id=v.chatbot_id, conversation_id=v.conversation_id, message_id=message_id,
            status=status, **extra))  # type: ignore[arg-type]

    async def outbound_for(self, conversation_id: str, count: int, timeout: float = 15.0) -> list[dict]:
        """The first `count` records on `outbound.messages` about one conversation."""
        consumer = AIOKafkaConsumer(
            self.topic_prefix + OUTBOUND_MESSAGES.name, bootstrap_servers=self.iso.infra.kafka_bootstrap,
            group_id=f"reader-{uuid.uuid4().hex[:8]}", auto_offset_reset="earliest", enable_auto_commit=False,
            fetch_max_wait_ms=20, session_timeout_ms=3000, heartbeat_interval_ms=500)
        await consumer.start()
        found: list[dict] = []
        try:
            deadline = time.monotonic() + timeout
            while len(found) < count:
                if time.monotonic() > deadline:
                    raise AssertionError(f"only {len(found)} of {count} outbound messages for {conversation_id}: {found}")
                batch = await consumer.getmany(timeout_ms=300)
                for records in batch.values():
                    found += [m for m in (json.loads(r.value) for r in records) if m.get("conversation_id") == conversation_id]
            return found
        finally:
            await consumer.stop()

    async def snapshot(self, chatbot_id: str) -> dict:
        token = self.queue.app.state.queue.settings.queue_api_token.get_secret_value()
        async with httpx.AsyncClient(timeout=10, headers={"Authorization": f"Bearer {token}"}) as client:
            r = await client.get(f"{self.queue.url}/internal/chatbots/{chatbot_id}/snapshot")
            r.raise_for_status()
            return r.json()


async def _known(directory, chatbot_id: str) -> bool:
    return chatbot_id in directory.chatbots


@contextlib.asynccontextmanager
async def running_stack(iso: Isolated) -> AsyncIterator[Stack]:
    await ensure_topics(iso.infra.kafka_bootstrap, prefix=iso.topic_prefix)
    # Its own consumer group: a group shared with another stack on the broker would rebalance.
    queue_settings = settings_from_env(QueueSettings, iso.env("queue", QUEUE_CONSUMER_GROUP=f"queue-{iso.tag}"))
    async with run_in_process("queue", create_queue, queue_settings) as queue:
        # The browser talks plain http to 127.0.0.1: the explicit opt-out of Secure cookies.
        # Every test's agents sign in from 127.0.0.1: the per-address sign-in limit is lifted
        # (tests/gateway/test_login_limits.py tests it), the per-e-mail wait stays.
        gateway_settings = settings_from_env(GatewaySettings, iso.env(
            "gateway", QUEUE_URL=queue.url, COMMAND_TIMEOUT_S="10", COOKIE_SECURE="false",
            LOGIN_ATTEMPTS_PER_IP="100000/minute"))
        async with run_in_process("gateway", create_gateway, gateway_settings) as gateway:
            client, db = open_mongo(gateway_settings)
            agents = AgentStore(db)
            await agents.create_indexes()
            # Stand-ins for channels, intake and the summarizer: a plain bus that only publishes,
            # and a reader of the AI turns the queue asks for.
            bus = Bus(settings_from_env(ServiceSettings, iso.env("visitors")), client_id="dashboard-test")
            async with TopicWatcher(iso.infra.kafka_bootstrap, iso.topic_prefix, "ai.turns") as turns:
                stack = Stack(iso, queue, gateway, agents, bus,
                              visitor_messages=bus.publisher(VISITOR_MESSAGES),
                              conversation_events=bus.publisher(CONVERSATION_EVENTS),
                              summaries=bus.publisher(HANDOFF_SUMMARIES),
                              delivery=bus.publisher(DELIVERY_STATUS), turns=turns)
                await bus.broker.start()
                try:
                    yield stack
                finally:
                    await bus.broker.stop()
                    await client.close()
