"""The queue's internal API answers only with the service token, never returns a channel
secret, and Human Handoff saves merge only their part, from the version they were based on."""

from __future__ import annotations

import httpx
import pytest

from services.queue.api import router
from services.queue.app import create_app
from services.queue.chatbots import SETTINGS_CHANGED
from services.queue.domain import CommandRefused
from services.queue.settings import QueueSettings
from shared.chatbots import ChannelCredentials, ChatbotSettings, HumanHandoffSettings
from shared.events import AgentRef, ChatbotSettingsChanged, HumanHandoffUpdate
from shared.ids import new_id
from shared.topics import AGENT_COMMANDS, CHATBOT_SETTINGS
from tests.harness import settings_from_env
from tests.queue.support import conv_id

CREDENTIALS = ChannelCredentials(
    telegram_bot_token="123:tg-SECRET-bot", telegram_webhook_secret="tg-SECRET-hook",
    whatsapp_phone_number_id="555", whatsapp_access_token="wa-SECRET-access", whatsapp_app_secret="wa-SECRET-app",
    whatsapp_verify_token="wa-SECRET-verify", whatsapp_connected=True)
SECRET_VALUES = [v for k, v in CREDENTIALS.model_dump().items() if isinstance(v, str) and "SECRET" in v]


def internal_paths(chatbot_id: str, conversation_id: str) -> list[str]:
    """Every route of the internal API, from its own route table, with these ids."""
    assert {m for r in router.routes for m in r.methods} == {"GET"}  # a new method gets its own check
    return [r.path.replace("{chatbot_id}", chatbot_id).replace("{conversation_id}", conversation_id)
            for r in router.routes]


def hh_update(chatbot_id: str, based_on: int, **fields) -> HumanHandoffUpdate:
    return HumanHandoffUpdate(chatbot_id=chatbot_id, command_id=f"hh-{new_id()}", based_on_version=based_on,
                              human_handoff=HumanHandoffSettings(**fields),
                              agent=AgentRef(agent_id="a1", display_name="Alice"))


async def test_internal_api_requires_the_service_token(queue):
    q = queue
    await q.queue.chatbots.save(ChatbotSettings(chatbot_id="auth", name="Auth shop"))
    paths = internal_paths("auth", conv_id("auth", "v1"))
    token = q.settings.queue_api_token.get_secret_value()
    async with httpx.AsyncClient(base_url=q.url, timeout=10) as anon:
        for path in paths:
            for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": token},
                            {"Authorization": f"Basic {token}"}, {"Authorization": f"Bearer {token}x"}):
                r = await anon.get(path, headers=headers)
                assert r.status_code == 401, (path, headers, r.status_code)
                assert r.json() == {"detail": "The internal API needs the queue's service token."}
        # Health and readiness stay open (orchestrators probe them without a token).
        assert (await anon.get("/healthz")).status_code == 200
        assert (await anon.get("/readyz")).status_code != 401
        assert (await anon.get("/internal/chatbots/auth/stats",
                               headers={"Authorization": f"Bearer {token}"})).status_code == 200


async def test_the_queue_refuses_to_serve_without_a_real_token(isolated):
    base = {k: v for k, v in isolated.env("queue").items() if k != "QUEUE_API_TOKEN"}
    for extra in ({}, {"QUEUE_API_TOKEN": ""}, {"QUEUE_API_TOKEN": "short"}):
        with pytest.raises(RuntimeError, match="QUEUE_API_TOKEN"):
            create_app(settings_from_env(QueueSettings, {**base, **extra}))


async def test_no_internal_route_returns_a_channel_secret(queue):
    q = queue
    bot = "secrets"
    await q.queue.chatbots.save(ChatbotSettings(chatbot_id=bot, name="Secret shop", channels=CREDENTIALS))
    await q.hand_off(bot, "v1")  # a conversation, a transcript and a handoff to list
    for path in internal_paths(bot, conv_id(bot, "v1")):
        r = await q.api(path)
        assert r.status_code == 200, (path, r.text)
        assert not [s for s in SECRET_VALUES if s in r.text], path
    # What the dashboard shows is still there: which channels are configured, and the version.
    got = (await q.api(f"/internal/chatbots/{bot}/settings")).json()
    assert got["channels"] == {"telegram_configured": True, "whatsapp_configured": True, "whatsapp_connected": True,
                               "whatsapp_phone_number_id": "555"}
    assert got["version"] == 1


async def test_human_handoff_save_from_an_older_version_never_undoes_a_credential_rotation(queue):
    q = queue
    bot = "rotation"
    seen = q.seen.for_chatbot(bot)
    loaded = await q.queue.chatbots.save(ChatbotSettings(
        chatbot_id=bot, name="Rotation shop", channels=ChannelCredentials(telegram_bot_token="old-token")))
    # The credentials rotate (the command line's path) after the agent's form was loaded.
    rotated = await q.queue.chatbots.save(loaded.model_copy(update={
        "channels": ChannelCredentials(telegram_bot_token="rotated-token")}))
    assert rotated.version == loaded.version + 1

    stale = hh_update(bot, loaded.version, enabled=True)
    await q.send(AGENT_COMMANDS, stale)
    refused = await q.seen.result(stale.command_id)
    assert (refused["ok"], refused["status_code"], refused["error"]) == (False, 409, SETTINGS_CHANGED)
    stored = await q.queue.record.get_chatbot(bot)
    assert stored.channels.telegram_bot_token == "rotated-token"
    assert stored.human_handoff.enabled is False and stored.version == rotated.version

    # From the current version: only the tool's part changes, the rotated credentials stay.
    fresh = hh_update(bot, rotated.version, enabled=True, contact_fields=["email"])
    await q.send(AGENT_COMMANDS, fresh)
    answered = await q.seen.result(fresh.command_id)
    assert answered["status_code"] == 200
    assert answered["settings"]["version"] == rotated.version + 1
    assert answered["settings"]["human_handoff"]["contact_fields"] == ["email"]
    assert "rotated-token" not in str(answered)
    stored = await q.queue.record.get_chatbot(bot)
    assert stored.channels.telegram_bot_token == "rotated-token" and stored.name == "Rotation shop"
    assert stored.human_handoff.enabled is True and stored.version == rotated.version + 1
    # Channels still gets the credentials with the new settings.
    published = await seen.wait_for(CHATBOT_SETTINGS, lambda r: r["settings"]["version"] == rotated.version + 1)
    assert published[0]["settings"]["channels"]["telegram_bot_token"] == "rotated-token"

    # The same command again (a retried click): the stored answer, no second change.
    await q.send(AGENT_COMMANDS, fresh)
    await q.handled(fresh.event_id)
    assert (await q.queue.record.get_chatbot(bot)).version == rotated.version + 1
    # The other way round: an edit of the settings as read before the agent's save (the
    # command line's read-edit-save) is refused instead of undoing that save.
    with pytest.raises(CommandRefused, match="changed elsewhere"):
        await q.queue.chatbots.save(rotated.model_copy(update={"name": "Renamed"}))
    assert (await q.queue.record.get_chatbot(bot)).human_handoff.enabled is True
    # Another queue instance's cache never goes back to an older version.
    q.queue.chatbots.apply(ChatbotSettingsChanged(chatbot_id=bot, settings=loaded))
    assert (await q.queue.chatbots.get(bot)).version == rotated.version + 1
