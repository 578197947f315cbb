"""The bus handlers on FastStream's in-memory broker: the settings table follows
chatbot.settings, updates and deletes included. (The real-broker flows, setWebhook among
them, are in test_telegram / test_whatsapp / test_web.)"""

from __future__ import annotations

from faststream.kafka import TestKafkaBroker

from services.channels.app import create_app
from services.channels.settings import ChannelsSettings
from shared.chatbots import ChannelCredentials, ChatbotSettings
from shared.events import ChatbotSettingsChanged
from shared.topics import CHATBOT_SETTINGS


async def test_settings_table_follows_chatbot_settings():
    app = create_app(ChannelsSettings(channels_public_url=""))
    runtime = app.state.runtime
    table = app.state.channels.chatbots
    publisher = runtime.bus.publisher(CHATBOT_SETTINGS)
    creds = ChannelCredentials(telegram_bot_token="1:tok", telegram_webhook_secret="s")
    bot = ChatbotSettings(chatbot_id="demo", name="Demo", channels=creds)
    try:
        async with TestKafkaBroker(runtime.bus.broker):
            await publisher.publish(ChatbotSettingsChanged(chatbot_id="demo", settings=bot))
            assert table.get("demo") == bot
            renamed = bot.model_copy(update={"name": "Demo 2"})
            await publisher.publish(ChatbotSettingsChanged(chatbot_id="demo", settings=renamed))
            assert table.get("demo").name == "Demo 2"
            await publisher.publish(ChatbotSettingsChanged(chatbot_id="demo", settings=renamed, deleted=True))
            assert table.get("demo") is None
    finally:
        await runtime.redis.aclose()
        await runtime.mongo_client.close()
