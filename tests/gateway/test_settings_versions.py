"""Human Handoff settings through the real gateway and queue: only the tool's part travels on
agent.commands (no secret), and a save from a form loaded before a credential rotation
(`set-channels`, the command line's path) is refused with 409, leaving the rotation intact."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import httpx

from services.gateway.app import create_app as create_gateway
from services.gateway.settings import GatewaySettings
from services.queue.app import create_app as create_queue
from services.queue.settings import QueueSettings
from shared.chatbots import ChannelCredentials, ChatbotSettings
from shared.topics import AGENT_COMMANDS
from tests.gateway.conftest import add_agent, login
from tests.harness import ROOT, run_in_process, settings_from_env
from tests.support import read_topic

CONFLICT = "These settings were changed elsewhere; reload to see the latest."


async def set_channels(env: dict[str, str], **secrets: str) -> None:
    """`python -m services.queue set-channels` (secrets from the environment), as an operator runs it."""
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "services.queue", "set-channels", "--chatbot", "shop"], cwd=ROOT,
        env={**os.environ, **env, **secrets}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


async def test_stale_human_handoff_save_is_refused_and_never_undoes_a_rotation(isolated):
    qsettings = settings_from_env(QueueSettings, isolated.env("queue"))
    async with run_in_process("queue", create_queue, qsettings) as queue:
        record = queue.app.state.queue.record
        await queue.app.state.queue.chatbots.save(ChatbotSettings(
            chatbot_id="shop", name="Shop", channels=ChannelCredentials(telegram_bot_token="111:first-SECRET")))
        gsettings = settings_from_env(GatewaySettings, isolated.env("gateway", QUEUE_URL=queue.url,
                                                                    COMMAND_TIMEOUT_S="10", COOKIE_SECURE="false"))
        await add_agent(gsettings, "dana@example.com", ["shop"])
        async with run_in_process("gateway", create_gateway, gsettings) as gw, \
                httpx.AsyncClient(base_url=gw.url, timeout=20) as client:
            h = {"X-CSRF-Token": await login(client, "dana@example.com")}
            loaded = (await client.get("/api/chatbots/shop/settings")).json()
            assert "SECRET" not in str(loaded) and loaded["channels"]["telegram_configured"] is True

            # The operator rotates the Telegram token while the agent's form is open.
            await set_channels(isolated.env("queue"), TELEGRAM_BOT_TOKEN="222:rotated-SECRET")
            form = {**loaded["human_handoff"], "enabled": True, "contact_fields": ["email"]}
            stale = await client.put("/api/chatbots/shop/settings/human-handoff", headers=h,
                                     json={**form, "version": loaded["version"]})
            assert stale.status_code == 409 and stale.json() == {"detail": CONFLICT}
            bot = await record.get_chatbot("shop")
            assert bot.channels.telegram_bot_token == "222:rotated-SECRET" and bot.human_handoff.enabled is False

            # Reloaded: the save goes through and merges only the tool's part.
            reloaded = (await client.get("/api/chatbots/shop/settings")).json()
            assert reloaded["version"] == loaded["version"] + 1
            saved = await client.put("/api/chatbots/shop/settings/human-handoff", headers=h,
                                     json={**form, "version": reloaded["version"]})
            assert saved.status_code == 200, saved.text
            assert saved.json()["version"] == reloaded["version"] + 1 and "SECRET" not in saved.text
            assert saved.json()["human_handoff"]["contact_fields"] == ["email"]
            bot = await record.get_chatbot("shop")
            assert bot.channels.telegram_bot_token == "222:rotated-SECRET" and bot.name == "Shop"
            assert bot.human_handoff.enabled is True and bot.human_handoff.contact_fields == ["email"]

    # What travelled on agent.commands: the tool's part and the version, no credential at all.
    sent = await read_topic(qsettings.kafka_bootstrap_servers, isolated.topic_prefix + AGENT_COMMANDS.name, 2)
    assert [c["type"] for c in sent] == ["agent.update_human_handoff"] * 2
    assert [c["based_on_version"] for c in sent] == [loaded["version"], reloaded["version"]]
    assert not [c for c in sent if "SECRET" in str(c) or "channels" in c or "settings" in c]
