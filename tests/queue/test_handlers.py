"""The handlers' wiring with FastStream's in-memory TestKafkaBroker (the real-broker flow is
in test_integration.py): each topic's union reaches the right use case."""

from __future__ import annotations

import asyncio
import uuid

from faststream.kafka import TestKafkaBroker

from services.queue.app import subscribe
from services.queue.handlers import QueueHandlers
from services.queue.incoming import handoff_id_for
from services.queue.parts import build_queue
from services.queue.settings import QueueSettings
from services.queue.store import HandoffIndex, QueueRecord
from shared.bus import Bus
from shared.chatbots import ChatbotSettings, HumanHandoffSettings
from shared.events import (
    AI_TURN_EVENT,
    AgentRef,
    AiTurnRequested,
    DeliveryStatusChanged,
    HandoffSummaryReady,
    HumanHandoffUpdate,
    VisitorContactSubmitted,
)
from shared.stores import open_mongo, open_redis
from shared.topics import (
    AGENT_COMMANDS,
    AI_TURNS,
    CONVERSATION_EVENTS,
    DELIVERY_STATUS,
    HANDOFF_SUMMARIES,
    VISITOR_MESSAGES,
)
from shared.views import Contact
from tests.queue.support import ai_outcome, command, conv_id, message_id_of, visitor, visitor_message
from tests.support import eventually


async def test_handlers_dispatch_in_memory(infra):
    tag = uuid.uuid4().hex[:8]
    settings = QueueSettings(redis_url=infra.redis_url, mongodb_uri=infra.mongodb_uri, mongodb_db=f"t{tag}_handlers",
                             redis_prefix=f"t{tag}:queue")
    client, db = open_mongo(settings)
    redis = open_redis(settings)
    bus = Bus(settings, client_id="handlers-test")
    record = QueueRecord(db)
    queue = build_queue(settings, bus, record, HandoffIndex(redis, settings.redis_prefix))
    subscribe(bus, QueueHandlers(queue.incoming, queue.commands), settings)
    turns: list[AiTurnRequested] = []

    async def on_turn(turn: AiTurnRequested) -> None:  # acting as intake
        turns.append(turn)

    bus.consume(AI_TURNS, AI_TURN_EVENT, on_turn, group_id=None)
    visitor_messages, conversation_events = bus.publisher(VISITOR_MESSAGES), bus.publisher(CONVERSATION_EVENTS)
    agent_commands, summaries, delivery = (bus.publisher(AGENT_COMMANDS), bus.publisher(HANDOFF_SUMMARIES),
                                           bus.publisher(DELIVERY_STATUS))
    try:
        await record.save_chatbot(ChatbotSettings(chatbot_id="mem", name="Mem"))
        async with TestKafkaBroker(bus.broker):
            cid = conv_id("mem", "v1")
            hello = visitor_message("mem", "v1", "hello")
            await visitor_messages.publish(hello)
            # Visitor messages and AI outcomes are handled concurrently (per conversation in order).
            [turn] = await eventually(lambda: asyncio.sleep(0, result=turns))
            assert turn.message_id == message_id_of(hello) and turn.text == "hello"
            # The contact's name and the display name it makes are one write: a reader never
            # sees the one without the other (a CI run read "Ann" beside "Visitor 345B66").
            writes: list[dict] = []
            update_conversation = record.update_conversation

            async def spy(conversation_id, update, **kw):  # noqa: ANN001, ANN003, ANN202
                writes.append(update)
                return await update_conversation(conversation_id, update, **kw)

            record.update_conversation = spy  # type: ignore[method-assign]
            await visitor_messages.publish(VisitorContactSubmitted(chatbot_id="mem", conversation_id=cid, channel="web",
                                                                   visitor=visitor("v1"), contact=Contact(name="Eve")))
            await eventually(lambda: _conversation_where(record, cid, display_name="Eve"))
            record.update_conversation = update_conversation  # type: ignore[method-assign]
            naming = [w for w in writes if "contact.name" in w.get("$set", {})]
            assert naming and all(w["$set"].get("display_name") == "Eve" for w in naming), writes
            await conversation_events.publish(ai_outcome(turn.model_dump(mode="json"), "Connecting you",
                                                         handoff="User asked for a person"))
            await eventually(lambda: _conversation_where(record, cid, status="handed_off", message_count=2))
            reply = command("mem", cid, "reply", "hi Eve")
            await agent_commands.publish(reply)
            # Every topic is handled concurrently (one conversation's events in order).
            stored = await eventually(lambda: record.get_command(reply.command_id))
            agent_msg = await eventually(lambda: record.messages.find_one({"conversation_id": cid, "sender": "agent"}))
            await delivery.publish(DeliveryStatusChanged(chatbot_id="mem", conversation_id=cid,
                                                         message_id=agent_msg["_id"], status="failed", error="blocked"))
            handoff_id = handoff_id_for(turn.turn_id)
            await summaries.publish(HandoffSummaryReady(chatbot_id="mem", conversation_id=cid, handoff_id=handoff_id,
                                                        status="ready", text="Eve wants a person.", mode="extractive"))
            await agent_commands.publish(HumanHandoffUpdate(chatbot_id="mem", command_id="cmd-settings-1",
                                                            human_handoff=HumanHandoffSettings(enabled=True),
                                                            based_on_version=0,
                                                            agent=AgentRef(agent_id="a1", display_name="A1")))
            await eventually(lambda: record.get_command("cmd-settings-1"))
            await eventually(lambda: _summary_is(record, cid, "Eve wants a person."))
        conv = await record.get_conversation(cid)
        assert conv is not None and conv.status == "handed_off" and conv.display_name == "Eve"
        assert conv.handoff_id == handoff_id and conv.message_count == 3  # visitor, AI, agent
        assert conv.summary is not None and conv.summary.text == "Eve wants a person."
        assert stored["status_code"] == 200
        failed = await record.get_message(agent_msg["_id"])
        assert (failed["delivery"], failed["delivery_error"]) == ("failed", "blocked")
        assert (await record.get_command("cmd-settings-1"))["status_code"] == 200
        assert (await record.get_chatbot("mem")).human_handoff.enabled is True
    finally:
        await redis.aclose()
        await client.close()


async def _summary_is(record: QueueRecord, conversation_id: str, text: str) -> bool:
    conv = await record.get_conversation(conversation_id)
    return conv is not None and conv.summary is not None and conv.summary.text == text


async def _conversation_where(record: QueueRecord, conversation_id: str, **fields: object) -> bool:
    conv = await record.get_conversation(conversation_id)
    return conv is not None and all(getattr(conv, k) == v for k, v in fields.items())
