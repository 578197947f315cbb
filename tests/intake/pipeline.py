"""The AI path under test: the real queue (the owner of every conversation's status, which
routes visitor messages and asks for AI turns) and the real intake (the stateless AI worker),
both served in this event loop against the real broker, Redis and Mongo-wire server. The test
acts as channels (visitor messages, contact forms) and as the gateway (agents' commands), and
watches what comes out."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer

from services.intake.app import create_app as create_intake
from services.intake.settings import IntakeSettings
from services.queue.app import create_app as create_queue
from services.queue.parts import Queue
from services.queue.settings import QueueSettings
from shared.chatbots import ChatbotSettings
from shared.events import (
    AgentCommand,
    AgentRef,
    Envelope,
    VisitorContactSubmitted,
    VisitorIdentity,
    VisitorMessageReceived,
)
from shared.ids import conversation_id_for, new_id
from shared.topics import AGENT_COMMANDS, VISITOR_MESSAGES, Topic
from shared.views import Contact
from tests.conftest import Isolated
from tests.harness import RunningService, run_in_process, settings_from_env
from tests.intake.watch import TopicWatcher
from tests.support import next_instant

WATCHED = ("outbound.messages", "conversation.events", "ai.turns", "dashboard.updates", "conversation.state",
           "ai.turns.dlq")


@dataclass
class Pipeline:
    iso: Isolated
    producer: AIOKafkaProducer
    queue: Queue
    watch: TopicWatcher
    intake_settings: IntakeSettings

    async def send(self, topic: Topic, event: Envelope) -> None:
        await self.producer.send_and_wait(self.iso.topic_prefix + topic.name, event.model_dump_json().encode(),
                                          key=event.partition_key(topic.key))

    def intake(self) -> contextlib.AbstractAsyncContextManager[RunningService]:
        """Intake served until the block ends (stop it to see the queue go on without it)."""
        return run_in_process("intake", create_intake, self.intake_settings)

    async def chatbot(self, settings: ChatbotSettings) -> ChatbotSettings:
        await self.queue.chatbots.save(settings)
        return settings

    def visitor(self, chatbot_id: str, channel: str = "web") -> Visitor:
        return Visitor(self, chatbot_id, channel)


@dataclass
class Visitor:
    """One visitor of one chatbot: writes as channels would, is acted on as agents would."""

    pipe: Pipeline
    chatbot_id: str
    channel: str

    def __post_init__(self) -> None:
        self.external_id = "v-" + new_id()[:8]
        self.conversation_id = conversation_id_for(self.chatbot_id, self.channel, self.external_id)
        self.identity = VisitorIdentity(external_id=self.external_id)

    async def says(self, text: str) -> VisitorMessageReceived:
        event = VisitorMessageReceived(chatbot_id=self.chatbot_id, conversation_id=self.conversation_id,
                                       channel=self.channel, visitor=self.identity, text=text,
                                       channel_message_id=new_id(), occurred_at=next_instant())
        await self.pipe.send(VISITOR_MESSAGES, event)
        return event

    async def submits_contact(self, **contact: str) -> None:
        await self.pipe.send(VISITOR_MESSAGES, VisitorContactSubmitted(
            chatbot_id=self.chatbot_id, conversation_id=self.conversation_id, channel=self.channel,
            visitor=self.identity, contact=Contact(**contact)))

    async def agent(self, action: str, text: str | None = None, name: str = "Alice") -> dict[str, Any]:
        """An agent's command on this conversation; its result."""
        cmd = AgentCommand(chatbot_id=self.chatbot_id, conversation_id=self.conversation_id, action=action,
                           text=text, command_id=f"cmd-{new_id()}", agent=AgentRef(agent_id="a1", display_name=name))
        await self.pipe.send(AGENT_COMMANDS, cmd)
        [result] = await self.pipe.watch.wait_for("dashboard.updates", command_id=cmd.command_id)
        return result

    def sent(self, **match: Any) -> list[dict[str, Any]]:
        """What went out to this visitor (outbound.messages), in order."""
        return self.pipe.watch.of("outbound.messages", self.conversation_id, **match)

    async def told(self, count: int = 1, **match: Any) -> list[dict[str, Any]]:
        return await self.pipe.watch.wait_for("outbound.messages", self.conversation_id, count=count, **match)

    async def state(self, transition: str) -> dict[str, Any]:
        [found] = await self.pipe.watch.wait_for("conversation.state", self.conversation_id, transition=transition)
        return found


@contextlib.asynccontextmanager
async def pipeline(isolated: Isolated, **intake_env: str) -> AsyncIterator[Pipeline]:
    queue_settings = settings_from_env(QueueSettings, isolated.env("queue", QUEUE_CONSUMER_GROUP=f"queue-{isolated.tag}"))
    intake_settings = settings_from_env(IntakeSettings, isolated.env("intake", **intake_env))
    producer = AIOKafkaProducer(bootstrap_servers=isolated.infra.kafka_bootstrap)
    await producer.start()
    try:
        async with TopicWatcher(isolated.infra.kafka_bootstrap, isolated.topic_prefix, *WATCHED) as watch, \
                run_in_process("queue", create_queue, queue_settings) as queue:
            yield Pipeline(isolated, producer, queue.app.state.queue, watch, intake_settings)
    finally:
        await producer.stop()
