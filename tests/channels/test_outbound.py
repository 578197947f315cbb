"""OutboundDelivery with the real Redis and Mongo-wire stores: a status that could not be
published is published on the bus's retry, and the message is still not sent twice."""

from __future__ import annotations

from services.channels.chatbots import ChatbotTable
from services.channels.outbound import OutboundDelivery
from services.channels.platforms import TelegramClient, WhatsAppClient
from services.channels.settings import ChannelsSettings
from services.channels.store import DeliveryRecords, WebOutbox, WhatsAppWindowStore
from shared.events import OutboundMessage, VisitorIdentity
from shared.ids import conversation_id_for, new_id, new_visitor_id
from shared.stores import open_mongo, open_redis
from tests.harness import settings_from_env


class FlakyStatuses:
    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.published: list = []

    async def publish(self, event) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("broker unreachable")
        self.published.append(event)


async def test_status_publish_failure_is_repaired_on_retry_without_resending(isolated):
    settings = settings_from_env(ChannelsSettings, isolated.env("channels"))
    client, db = open_mongo(settings)
    redis = open_redis(settings)
    telegram = TelegramClient("http://127.0.0.1:9/bot", 1.0)  # never called for web
    whatsapp = WhatsAppClient("http://127.0.0.1:9", "v21.0", 1.0)
    statuses = FlakyStatuses(failures=1)
    outbox = WebOutbox(redis, settings.redis_prefix, 50, 60)
    delivery = OutboundDelivery(chatbots=ChatbotTable(), records=DeliveryRecords(db), statuses=statuses,
                                telegram=telegram, whatsapp=whatsapp, window=WhatsAppWindowStore(redis, settings.redis_prefix),
                                outbox=outbox, attempts=2, backoff_s=0.01, max_backoff_s=0.01)
    visitor = new_visitor_id()
    event = OutboundMessage(chatbot_id="b", conversation_id=conversation_id_for("b", "web", visitor), message_id=new_id(),
                            channel="web", visitor=VisitorIdentity(external_id=visitor), text="hello", sender="ai")
    try:
        try:
            await delivery.deliver(event)
            raise AssertionError("the failed publish must surface so the bus retries")
        except ConnectionError:
            pass
        await delivery.deliver(event)  # the bus's retry
        await delivery.deliver(event)  # a later duplicate: nothing more
        assert [(s.message_id, s.status) for s in statuses.published] == [(event.message_id, "sent")]
        assert [e["text"] for e in await outbox.history("b", visitor)] == ["hello"]  # stored once
    finally:
        await telegram.close()
        await whatsapp.close()
        await redis.aclose()
        await client.close()
