"""The queue's command line, as a process: seed-chatbot (Mongo + chatbot.settings, exit 0),
rebuild-index (new epoch); and the service republishing every chatbot's settings on start."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

from services.queue.settings import QueueSettings
from services.queue.store import HandoffIndex, QueueRecord
from shared.stores import open_mongo, open_redis
from shared.topics import CHATBOT_SETTINGS
from tests.harness import ROOT, settings_from_env
from tests.queue.support import queue_under_test
from tests.support import read_topic


async def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "services.queue", *args], cwd=ROOT,
        env={**os.environ, **env}, capture_output=True, text=True, timeout=60,
    )


async def test_seed_chatbot_rebuild_index_and_settings_on_start(isolated):
    env = isolated.env("queue")
    done = await _cli(env, "seed-chatbot", "--id", "demo", "--name", "Demo Shop", "--handoff-on",
                      "--timezone", "Europe/Berlin", "--contact-fields", "name,email")
    assert done.returncode == 0, done.stderr
    settings = settings_from_env(QueueSettings, env)
    client, db = open_mongo(settings)
    try:
        bot = await QueueRecord(db).get_chatbot("demo")
        assert bot is not None and bot.name == "Demo Shop" and bot.timezone == "Europe/Berlin"
        assert bot.human_handoff.enabled and bot.human_handoff.contact_fields == ["name", "email"]
        published = await read_topic(settings.kafka_bootstrap_servers, isolated.topic_prefix + CHATBOT_SETTINGS.name, 1)
        assert published[0]["settings"]["chatbot_id"] == "demo" and published[0]["settings"]["human_handoff"]["enabled"]

        # Updating keeps what was set before and changes what is given.
        again = await _cli(env, "seed-chatbot", "--id", "demo", "--name", "Demo Shop 2")
        assert again.returncode == 0, again.stderr
        bot = await QueueRecord(db).get_chatbot("demo")
        assert bot.name == "Demo Shop 2" and bot.human_handoff.enabled and bot.timezone == "Europe/Berlin"
        bad = await _cli(env, "seed-chatbot", "--id", "demo", "--name", "X", "--timezone", "Mars/Base")
        assert bad.returncode == 2 and "Unknown timezone" in bad.stderr

        redis = open_redis(settings)
        try:
            rebuilt = await _cli(env, "rebuild-index")
            assert rebuilt.returncode == 0, rebuilt.stderr
            epoch = await HandoffIndex(redis, settings.redis_prefix).epoch("demo")
            assert epoch and f"rebuilt demo: epoch {epoch}" in rebuilt.stdout
        finally:
            await redis.aclose()
    finally:
        await client.close()

    # On start the service republishes every chatbot's settings (the broker may have lost them).
    async with queue_under_test(isolated) as q:
        found = await q.seen.wait_for(CHATBOT_SETTINGS, lambda r: r["settings"]["name"] == "Demo Shop 2")
        assert found[0]["chatbot_id"] == "demo"
        assert (await q.api("/internal/chatbots/demo/settings")).json()["timezone"] == "Europe/Berlin"


async def test_seed_chatbot_sets_the_widget_limits_and_refuses_nonsense(isolated):
    env = isolated.env("queue")
    done = await _cli(env, "seed-chatbot", "--id", "shopw", "--name", "Shop", "--widget-messages-per-visitor",
                      "5/minute", "--widget-sessions-per-ip", "100/hour")
    assert done.returncode == 0, done.stderr
    client, db = open_mongo(settings_from_env(QueueSettings, env))
    try:
        bot = await QueueRecord(db).get_chatbot("shopw")
        assert (bot.widget.messages_per_visitor, bot.widget.sessions_per_ip) == ("5/minute", "100/hour")
        assert bot.widget.messages_per_ip == "120/minute"  # the default, untouched
        bad = await _cli(env, "seed-chatbot", "--id", "shopw", "--name", "Shop", "--widget-messages-per-ip", "lots")
        assert bad.returncode == 2 and "Not a rate" in bad.stderr
        assert (await QueueRecord(db).get_chatbot("shopw")).widget.messages_per_ip == "120/minute"
    finally:
        await client.close()


async def test_an_edit_that_races_an_agents_save_is_read_and_made_again():
    from services.queue.__main__ import _edit_chatbot
    from services.queue.domain import CommandRefused
    from shared.chatbots import ChatbotSettings

    class _Catalog:
        saves = 0

        async def save(self, settings):
            self.saves += 1
            if self.saves == 1:  # an agent saved Human Handoff between the read and this save
                raise CommandRefused("These settings were changed elsewhere; reload to see the latest.", 409)
            return settings

    class _Record:
        reads = 0

        async def get_chatbot(self, chatbot_id):
            self.reads += 1
            return ChatbotSettings(chatbot_id=chatbot_id, name=f"read {self.reads}", version=self.reads)

    class _Queue:
        chatbots, record = _Catalog(), _Record()

    saved = await _edit_chatbot(_Queue(), "b", lambda current: current.model_copy(update={"timezone": "Europe/Paris"}))
    assert saved.name == "read 2" and saved.timezone == "Europe/Paris" and _Queue.chatbots.saves == 2
