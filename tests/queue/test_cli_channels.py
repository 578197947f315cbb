"""`python -m services.queue set-channels`, as a process: a chatbot's Telegram and WhatsApp
credentials are stored with the chatbot and published on chatbot.settings (where channels
reads them); secrets come from the environment and are never printed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from services.queue.settings import QueueSettings
from services.queue.store import QueueRecord
from shared.stores import open_mongo
from shared.topics import CHATBOT_SETTINGS
from tests.harness import ROOT, settings_from_env
from tests.support import read_topic

SECRETS = {
    "TELEGRAM_BOT_TOKEN": "123456:telegram-token-abc",
    "TELEGRAM_WEBHOOK_SECRET": "tg-secret-xyz",
    "WHATSAPP_ACCESS_TOKEN": "wa-access-token-123",
    "WHATSAPP_APP_SECRET": "wa-app-secret-456",
    "WHATSAPP_VERIFY_TOKEN": "wa-verify-789",
}


async def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in SECRETS}
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "services.queue", *args], cwd=ROOT,
        env={**clean, **env}, capture_output=True, text=True, timeout=60,
    )


async def test_set_channels_stores_publishes_and_never_prints_secrets(isolated):
    env = isolated.env("queue")
    assert (await _cli(env, "seed-chatbot", "--id", "shop", "--name", "Shop")).returncode == 0

    unknown = await _cli({**env, **SECRETS}, "set-channels", "--chatbot", "nope")
    assert unknown.returncode == 2 and "Unknown chatbot 'nope'" in unknown.stderr

    half = await _cli({**env, "WHATSAPP_ACCESS_TOKEN": "x"}, "set-channels", "--chatbot", "shop", "--whatsapp-connected")
    assert half.returncode == 2 and "cannot be connected" in half.stderr

    done = await _cli({**env, **SECRETS}, "set-channels", "--chatbot", "shop",
                      "--whatsapp-phone-number-id", "10987654321", "--whatsapp-connected")
    assert done.returncode == 0, done.stderr
    printed = done.stdout + done.stderr
    assert "'telegram_configured': True" in printed and "'whatsapp_connected': True" in printed
    assert not [s for s in SECRETS.values() if s in printed]

    settings = settings_from_env(QueueSettings, env)
    client, db = open_mongo(settings)
    try:
        bot = await QueueRecord(db).get_chatbot("shop")
        assert bot.channels.telegram_bot_token == SECRETS["TELEGRAM_BOT_TOKEN"]
        assert bot.channels.whatsapp_app_secret == SECRETS["WHATSAPP_APP_SECRET"]
        assert bot.channels.whatsapp_phone_number_id == "10987654321" and bot.channels.whatsapp_connected
        assert bot.name == "Shop"  # the rest of the chatbot is kept

        # Published where the channels service reads its credentials.
        published = await read_topic(settings.kafka_bootstrap_servers, isolated.topic_prefix + CHATBOT_SETTINGS.name, 2)
        assert published[-1]["settings"]["channels"]["telegram_bot_token"] == SECRETS["TELEGRAM_BOT_TOKEN"]

        # Unset variables keep what is stored; disconnect and clear work.
        off = await _cli(env, "set-channels", "--chatbot", "shop", "--whatsapp-disconnected", "--clear-telegram")
        assert off.returncode == 0, off.stderr
        bot = await QueueRecord(db).get_chatbot("shop")
        assert bot.channels.telegram_bot_token is None and bot.channels.telegram_webhook_secret is None
        assert not bot.channels.whatsapp_connected
        assert bot.channels.whatsapp_access_token == SECRETS["WHATSAPP_ACCESS_TOKEN"]
    finally:
        await client.close()
