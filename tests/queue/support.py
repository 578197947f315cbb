"""The queue under test: served in this event loop against the real broker, Redis and
Mongo-wire server, with a raw producer for input events (acting as channels, intake, the
gateway and the summarizer) and a collector that records every event the queue publishes
(a plain aiokafka consumer, no group)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from services.queue.app import create_app
from services.queue.incoming import handoff_id_for, visitor_message_id
from services.queue.parts import Queue
from services.queue.settings import QueueSettings
from shared.chatbots import ChatbotSettings, ContactField
from shared.events import (
    AgentCommand,
    AgentRef,
    AiReply,
    AiTurnCompleted,
    Envelope,
    HandoffAsked,
    VisitorIdentity,
    VisitorMessageReceived,
)
from shared.ids import conversation_id_for, derived_id, new_id
from shared.topics import (
    AI_TURNS,
    CHATBOT_SETTINGS,
    CONVERSATION_EVENTS,
    CONVERSATION_STATE,
    DASHBOARD_UPDATES,
    OUTBOUND_MESSAGES,
    VISITOR_LINE,
    VISITOR_MESSAGES,
    Topic,
    by_name,
)
from tests.harness import run_in_process, settings_from_env
from tests.support import next_instant

WATCHED = (CONVERSATION_STATE, DASHBOARD_UPDATES, OUTBOUND_MESSAGES, CHATBOT_SETTINGS, AI_TURNS, VISITOR_LINE)


@dataclass
class Collector:
    prefix: str
    records: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    # The partition each record was read from, in the same order as `records`.
    partitions: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    chatbot_id: str | None = None  # a view that only sees this chatbot's records

    def for_chatbot(self, chatbot_id: str) -> Collector:
        return Collector(self.prefix, self.records, self.partitions, chatbot_id)

    def of(self, topic: Topic | str) -> list[dict[str, Any]]:
        found = self.records[topic if isinstance(topic, str) else topic.name]
        if self.chatbot_id is None:
            return list(found)
        return [r for r in found if r.get("chatbot_id") == self.chatbot_id]

    async def wait_for(self, topic: Topic | str, pred: Callable[[dict], bool], count: int = 1,
                       timeout: float = 15.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            found = [r for r in self.of(topic) if pred(r)]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                name = topic if isinstance(topic, str) else topic.name
                raise AssertionError(f"{len(found)}/{count} matching records on {name} after {timeout}s")
            await asyncio.sleep(0.02)

    async def result(self, command_id: str, timeout: float = 15.0) -> dict[str, Any]:
        found = await self.wait_for(DASHBOARD_UPDATES, lambda r: r.get("type") == "dashboard.command_result"
                                    and r["command_id"] == command_id, timeout=timeout)
        return found[0]

    def with_partitions(self, topic: Topic) -> list[tuple[dict[str, Any], int]]:
        pairs = zip(self.records[topic.name], self.partitions[topic.name], strict=True)
        return [(r, p) for r, p in pairs if self.chatbot_id is None or r.get("chatbot_id") == self.chatbot_id]

    def updates(self, chatbot_id: str) -> list[dict[str, Any]]:
        return [r for r in self.for_chatbot(chatbot_id).of(DASHBOARD_UPDATES) if r.get("type") == "dashboard.update"]


async def _collect(bootstrap: str, prefix: str, topics: list[str], sink: Collector, ready: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=20)
    await consumer.start()
    try:
        parts: list[TopicPartition] = []
        for name in topics:
            full = prefix + name
            pids = None
            for _ in range(100):
                pids = consumer.partitions_for_topic(full)
                if pids:
                    break
                await consumer._client.force_metadata_update()  # noqa: SLF001 - topics created just before
            parts += [TopicPartition(full, p) for p in sorted(pids or [])]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ready.set()
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for tp, records in batch.items():
                for r in records:
                    sink.records[tp.topic[len(prefix):]].append(json.loads(r.value))
                    sink.partitions[tp.topic[len(prefix):]].append(tp.partition)
    finally:
        await consumer.stop()


@dataclass
class QueueUnderTest:
    settings: QueueSettings
    url: str
    queue: Queue
    producer: AIOKafkaProducer
    seen: Collector
    http: httpx.AsyncClient
    prefix: str

    sent: dict[str, TopicPartition] = field(default_factory=dict)
    offsets: dict[str, int] = field(default_factory=dict)

    async def send(self, topic: Topic, event: Envelope | bytes, key: bytes | None = None) -> None:
        if isinstance(event, Envelope):
            value, key = event.model_dump_json().encode(), event.partition_key(topic.key)
        else:
            value = event
        written = await self.producer.send_and_wait(self.prefix + topic.name, value, key=key or b"k")
        if isinstance(event, Envelope):
            self.sent[event.event_id], self.offsets[event.event_id] = written.topic_partition, written.offset

    async def handled(self, event_id: str, timeout: float = 15.0) -> None:
        """Wait until the queue has handled an event this test sent: its consumer group has
        committed past it (the bus commits only after the handler succeeded)."""
        tp, offset = self.sent[event_id], self.offsets[event_id]
        admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap_servers)
        await admin.start()
        try:
            deadline = time.monotonic() + timeout
            while True:
                committed = await admin.list_consumer_group_offsets(self.settings.queue_consumer_group,
                                                                    partitions=[tp])
                meta = committed.get(tp)
                if meta is not None and meta.offset > offset:
                    return
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the queue did not handle {event_id} ({tp} @ {offset}) in {timeout}s")
                await asyncio.sleep(0.05)
        finally:
            await admin.close()

    async def api(self, path: str, **params: Any) -> httpx.Response:
        return await self.http.get(self.url + path, params={k: v for k, v in params.items() if v is not None})

    # ---------------------------------------------------------- acting as channels and intake
    async def visitor_says(self, chatbot_id: str, visitor_id: str, text: str, **kw: Any) -> VisitorMessageReceived:
        """What channels publish when a visitor writes."""
        event = visitor_message(chatbot_id, visitor_id, text, **kw)
        await self.send(VISITOR_MESSAGES, event)
        return event

    async def turn_for(self, message: VisitorMessageReceived, timeout: float = 15.0) -> dict[str, Any]:
        """The AI turn the queue asked intake for, for this visitor message."""
        message_id = message_id_of(message)
        found = await self.seen.wait_for(AI_TURNS, lambda r: r["message_id"] == message_id, timeout=timeout)
        return found[0]

    async def ai_answers(self, turn: dict[str, Any], *texts: str, handoff: str | None = None,
                         source: str = "ai_tool", contact_fields: list[ContactField] | None = None,
                         **kw: Any) -> AiTurnCompleted:
        """What intake publishes for a turn: replies, and a handoff when `handoff` (the reason)."""
        outcome = ai_outcome(turn, *texts, handoff=handoff, source=source, contact_fields=contact_fields, **kw)
        await self.send(CONVERSATION_EVENTS, outcome)
        return outcome

    async def hand_off(self, chatbot_id: str, visitor_id: str, reason: str = "User asked for a person", *,
                       text: str = "I need a person", at: Any = None, **kw: Any) -> str:
        """A visitor writes and the AI hands the conversation off; the handoff id, once applied."""
        message = await self.visitor_says(chatbot_id, visitor_id, text, **({"occurred_at": at} if at else {}), **kw)
        turn = await self.turn_for(message)
        await self.ai_answers(turn, "I'm connecting you with a member of our team.", handoff=reason,
                              **({"occurred_at": at} if at else {}))
        handoff_id = handoff_id_for(turn["turn_id"])
        await self.seen.wait_for(CONVERSATION_STATE, lambda r: r["handoff_id"] == handoff_id)
        return handoff_id


@contextlib.asynccontextmanager
async def queue_under_test(isolated, **env: str) -> AsyncIterator[QueueUnderTest]:
    # A group per test: Tansu makes a new member wait out the previous test's departed ones.
    env = {"QUEUE_CONSUMER_GROUP": f"queue-{isolated.tag}", **env}
    settings = settings_from_env(QueueSettings, isolated.env("queue", **env))
    seen = Collector(isolated.topic_prefix)
    ready = asyncio.Event()
    collector = asyncio.create_task(_collect(settings.kafka_bootstrap_servers, isolated.topic_prefix,
                                             [t.name for t in WATCHED] + [by_name(n).dlq for n in
                                              ("conversation.events", "agent.commands", "visitor.messages")], seen, ready))
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_idempotence=False)
    await producer.start()
    try:
        await asyncio.wait_for(ready.wait(), 30)
        async with run_in_process("queue", create_app, settings) as running, httpx.AsyncClient(
                timeout=10, headers=internal_auth(settings)) as http:
            yield QueueUnderTest(settings, running.url, running.app.state.queue, producer, seen, http,
                                 isolated.topic_prefix)
    finally:
        await producer.stop()
        collector.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await collector


def internal_auth(settings: QueueSettings) -> dict[str, str]:
    """The header the queue's internal API requires (the gateway sends the same)."""
    assert settings.queue_api_token is not None
    return {"Authorization": f"Bearer {settings.queue_api_token.get_secret_value()}"}


# ---------------------------------------------------------------- event builders
def visitor(external_id: str, name: str | None = None) -> VisitorIdentity:
    return VisitorIdentity(external_id=external_id, name=name)


def conv_id(chatbot_id: str, visitor_id: str, channel: str = "web") -> str:
    return conversation_id_for(chatbot_id, channel, visitor_id)


def visitor_message(chatbot_id: str, visitor_id: str, text: str, *, channel: str = "web", name: str | None = None,
                    **kw: Any) -> VisitorMessageReceived:
    return VisitorMessageReceived(chatbot_id=chatbot_id, conversation_id=conv_id(chatbot_id, visitor_id, channel),
                                  channel=channel, visitor=visitor(visitor_id, name), text=text,
                                  channel_message_id=new_id(), **{"occurred_at": next_instant(), **kw})


def message_id_of(message: VisitorMessageReceived) -> str:
    assert message.conversation_id is not None
    return visitor_message_id(message.conversation_id, message.channel_message_id)


def ai_outcome(turn: dict[str, Any], *texts: str, handoff: str | None = None, source: str = "ai_tool",
               contact_fields: list[ContactField] | None = None, **kw: Any) -> AiTurnCompleted:
    replies = [AiReply(message_id=derived_id("m_", turn["message_id"], "ai", str(n)), text=t)
               for n, t in enumerate(texts)]
    kw.setdefault("event_id", derived_id("ai_", turn["turn_id"], "outcome"))
    return AiTurnCompleted(
        chatbot_id=turn["chatbot_id"],
        conversation_id=turn["conversation_id"], turn_id=turn["turn_id"], version=turn["version"],
        replies=replies, handoff=HandoffAsked(reason=handoff, source=source, contact_fields=contact_fields or [])
        if handoff else None, **{"occurred_at": next_instant(), **kw})  # event_id may be overridden


def command(chatbot_id: str, conversation_id: str, action: str, text: str | None = None, *,
            agent: str = "a1", command_id: str | None = None) -> AgentCommand:
    return AgentCommand(chatbot_id=chatbot_id, conversation_id=conversation_id, action=action, text=text,
                        command_id=command_id or f"cmd-{new_id()}", agent=AgentRef(agent_id=agent, display_name=agent.title()))


async def seed(qut: QueueUnderTest, chatbot_id: str, timezone: str = "UTC") -> ChatbotSettings:
    bot = ChatbotSettings(chatbot_id=chatbot_id, name=f"Bot {chatbot_id}", timezone=timezone)
    return await qut.queue.chatbots.save(bot)  # as saved: at its version
