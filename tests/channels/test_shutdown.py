"""Stopping the channels service while a reply is on its way to the platform: the delivery
finishes before the platform clients close (it used to have its client closed under it)."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from services.channels.app import create_app
from services.channels.settings import ChannelsSettings
from shared.chatbots import ChannelCredentials, ChatbotSettings
from shared.events import ChatbotSettingsChanged, OutboundMessage, VisitorIdentity
from shared.ids import conversation_id_for, new_id
from tests.fakes.telegram_api import Answer, FakeTelegram
from tests.harness import run_in_process, settings_from_env
from tests.support import eventually, read_topic


async def test_stop_lets_an_in_flight_telegram_send_finish(isolated):
    token = "900001:AAShutdownTokenSecretPart"
    bot = ChatbotSettings(chatbot_id="bot_stop", name="Stop", channels=ChannelCredentials(telegram_bot_token=token))
    message = OutboundMessage(chatbot_id=bot.chatbot_id, conversation_id=conversation_id_for(bot.chatbot_id, "telegram", "77"),
                              message_id=new_id(), channel="telegram", visitor=VisitorIdentity(external_id="77"),
                              text="on its way", sender="agent", sender_name="Maria")
    prefix = isolated.topic_prefix
    producer = AIOKafkaProducer(bootstrap_servers=isolated.infra.kafka_bootstrap)
    await producer.start()
    try:
        async with FakeTelegram() as telegram:
            telegram.script("sendMessage", Answer(delay_s=1.5))  # slow Bot API
            settings = settings_from_env(ChannelsSettings, isolated.env(
                "channels", TELEGRAM_API_BASE_URL=telegram.base_url, DELIVERY_BACKOFF_S="0.05"))
            for topic, event in (("chatbot.settings", ChatbotSettingsChanged(chatbot_id=bot.chatbot_id, settings=bot)),
                                 ("outbound.messages", message)):
                await producer.send_and_wait(prefix + topic, event.model_dump_json().encode(), key=event.partition_key())
            async with run_in_process("channels", create_app, settings):
                await eventually(lambda: asyncio.sleep(0, result=bool(telegram.calls_to("sendMessage"))), timeout=20)
            # stopped while Telegram was still answering
            [status] = await read_topic(isolated.infra.kafka_bootstrap, prefix + "delivery.status", 1)
            assert (status["message_id"], status["status"]) == (message.message_id, "sent")
            assert len(telegram.calls_to("sendMessage")) == 1
    finally:
        await producer.stop()
