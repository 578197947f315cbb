"""The handlers' wiring with FastStream's in-memory TestKafkaBroker (the real-broker flow is
in test_integration.py): each topic's union reaches the right use case."""

from __future__ import annotations

import uuid

from faststream.kafka import TestKafkaBroker

from services.queue.handlers import register
from services.queue.store import HandoffIndex, QueueRecord
from services.queue.workflow import HandoffQueue
from shared.bus import Bus
from shared.chatbots import ChatbotSettings
from shared.events import ContactCaptured, ContactDetails, DeliveryStatusChanged
from shared.settings import ServiceSettings
from shared.stores import open_mongo, open_redis
from shared.topics import (
    AGENT_COMMANDS,
    CHATBOT_SETTINGS,
    CONVERSATION_EVENTS,
    CONVERSATION_STATE,
    DASHBOARD_UPDATES,
    DELIVERY_STATUS,
    OUTBOUND_MESSAGES,
)
from tests.queue.support import command, conv_id, handoff, message, visitor


async def test_handlers_dispatch_in_memory(infra):
    tag = uuid.uuid4().hex[:8]
    settings = ServiceSettings(redis_url=infra.redis_url, mongodb_uri=infra.mongodb_uri, mongodb_db=f"t{tag}_handlers",
                               redis_prefix=f"t{tag}:queue")
    client, db = open_mongo(settings)
    redis = open_redis(settings)
    bus = Bus(settings, client_id="handlers-test")
    record = QueueRecord(db)
    queue = HandoffQueue(record, HandoffIndex(redis, settings.redis_prefix),
                         state_out=bus.publisher(CONVERSATION_STATE), dashboard_out=bus.publisher(DASHBOARD_UPDATES),
                         outbound_out=bus.publisher(OUTBOUND_MESSAGES), settings_out=bus.publisher(CHATBOT_SETTINGS))
    register(bus, queue, "queue")
    conversation_events, agent_commands = bus.publisher(CONVERSATION_EVENTS), bus.publisher(AGENT_COMMANDS)
    delivery = bus.publisher(DELIVERY_STATUS)
    try:
        await record.save_chatbot(ChatbotSettings(chatbot_id="mem", name="Mem"))
        async with TestKafkaBroker(bus.broker):
            cid = conv_id("mem", "v1")
            await conversation_events.publish(message("mem", "v1", "hello"))
            await conversation_events.publish(ContactCaptured(chatbot_id="mem", conversation_id=cid, channel="web",
                                                              visitor=visitor("v1"), contact=ContactDetails(name="Eve")))
            await conversation_events.publish(handoff("mem", "v1"))
            reply = command("mem", cid, "reply", "hi Eve")
            await agent_commands.publish(reply)
            stored = await record.get_command(reply.command_id)
            agent_msg = await record.messages.find_one({"conversation_id": cid, "sender": "agent"})
            await delivery.publish(DeliveryStatusChanged(chatbot_id="mem", conversation_id=cid,
                                                         message_id=agent_msg["_id"], status="failed", error="blocked"))
        conv = await record.get_conversation(cid)
        assert conv["status"] == "handed_off" and conv["display_name"] == "Eve" and conv["message_count"] == 2
        assert stored["status_code"] == 200
        failed = await record.get_message(agent_msg["_id"])
        assert (failed["delivery"], failed["delivery_error"]) == ("failed", "blocked")
    finally:
        await redis.aclose()
        await client.close()
