"""A broker that cannot take a write is never answered with an acknowledgement: the widget
gets 503 with Retry-After, Telegram and Meta a non-2xx so they retry. The retry once the
broker is back is accepted, and the message is on `visitor.messages` exactly once: the edge's
dedupe claim neither drops the retry as a duplicate nor lets the late first write and the
retry both through.

The broker is one of our own, frozen with SIGSTOP (how a broker behind a dead network looks
to a producer: nothing refuses, nothing answers), then thawed with its memory intact."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest_asyncio
from aiokafka import AIOKafkaProducer

from deploy.infra import Server, free_port, start_kafka
from services.channels.app import create_app
from services.channels.domain import whatsapp_signature
from services.channels.settings import ChannelsSettings
from shared.bus import ensure_topics
from shared.chatbots import ChannelCredentials, ChatbotSettings
from shared.events import ChatbotSettingsChanged
from shared.ids import conversation_id_for, new_id
from shared.topics import CHATBOT_SETTINGS, VISITOR_MESSAGES
from tests.channels.conftest import TopicWatch, widget_visitor
from tests.conftest import Isolated
from tests.harness import RunningService, run_in_process, settings_from_env

PUBLISH_TIMEOUT_S = 1.0
TELEGRAM_SECRET = "outage-hook-secret"
WHATSAPP_SECRET = "outage-app-secret"


@dataclass
class Outage:
    service: RunningService
    broker: Server
    chatbot_id: str
    visitor_messages: TopicWatch

    @contextlib.contextmanager
    def broker_frozen(self) -> Iterator[None]:
        os.kill(self.broker.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(self.broker.proc.pid, signal.SIGCONT)

    def on_topic(self, conversation_id: str) -> list[str]:
        return [r["channel_message_id"] for r in self.visitor_messages.matching(
            lambda r: r.get("conversation_id") == conversation_id)]


@pytest_asyncio.fixture(scope="module")
async def outage(infra, tmp_path_factory):
    broker = start_kafka(free_port(), tmp_path_factory.mktemp("outage-broker"))
    bootstrap = f"127.0.0.1:{broker.port}"
    iso = Isolated(infra, uuid.uuid4().hex[:8])
    bot = ChatbotSettings(chatbot_id="bot_outage", name="Outage", channels=ChannelCredentials(
        telegram_bot_token="700999:AAOutageTokenPart", telegram_webhook_secret=TELEGRAM_SECRET,
        whatsapp_app_secret=WHATSAPP_SECRET, whatsapp_access_token="EAAGoutage", whatsapp_phone_number_id="1555",
        whatsapp_connected=True))
    watch = TopicWatch(bootstrap, iso.topic_prefix + VISITOR_MESSAGES.name)
    try:
        await ensure_topics(bootstrap, prefix=iso.topic_prefix)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(
                iso.topic_prefix + CHATBOT_SETTINGS.name, key=bot.chatbot_id.encode(),
                value=ChatbotSettingsChanged(chatbot_id=bot.chatbot_id, settings=bot).model_dump_json().encode())
        finally:
            await producer.stop()
        await watch.start()
        env = iso.env("channels", KAFKA_BOOTSTRAP_SERVERS=bootstrap, PUBLISH_TIMEOUT_S=str(PUBLISH_TIMEOUT_S))
        async with run_in_process("channels", create_app, settings_from_env(ChannelsSettings, env)) as service:
            assert service.app.state.channels.chatbots.get(bot.chatbot_id) == bot
            yield Outage(service, broker, bot.chatbot_id, watch)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(broker.proc.pid, signal.SIGCONT)  # never leave it frozen, whatever failed
        await watch.stop()
        broker.stop()


async def _post_until_accepted(send, attempts: int = 15) -> httpx.Response:
    """Retry as the widget and the platforms do: after a 5xx, wait and send the same again."""
    for _ in range(attempts):
        response = await send()
        if response.status_code < 500:
            return response
        await asyncio.sleep(float(response.headers.get("Retry-After", "1")))
    return response


async def _refused_while_frozen(outage: Outage, send) -> tuple[httpx.Response, float, httpx.Response]:
    """The first try (and how long it took) and an immediate retry, both while frozen."""
    with outage.broker_frozen():
        started = time.monotonic()
        first = await send()
        took = time.monotonic() - started
        again = await send()
    return first, took, again


async def test_widget_message_refused_while_the_broker_cannot_write_then_on_the_topic_once(outage):
    me = widget_visitor(outage.service.app, outage.chatbot_id)
    visitor = me.visitor_id
    url = f"{outage.service.url}/web/{outage.chatbot_id}/messages"
    body = {"client_message_id": "m_outage", "text": "Is anyone there?"}
    async with httpx.AsyncClient(timeout=5.0, headers=me.headers) as client:
        refused, took, again = await _refused_while_frozen(outage, lambda: client.post(url, json=body))
        accepted = await _post_until_accepted(lambda: client.post(url, json=body))
        # Same conversation, same partition, produced after: once it is on the topic, any
        # late copy of the first write would be there before it.
        after = await client.post(url, json={**body, "client_message_id": "m_after"})

    assert refused.status_code == 503 and took < PUBLISH_TIMEOUT_S + 1.5
    assert refused.headers["Retry-After"].isdigit()
    assert "retry" in refused.json()["detail"]
    assert again.status_code == 503  # a retry while it is still unknown is not taken for a duplicate
    assert accepted.status_code == 202 and accepted.json()["accepted"] is True
    assert after.status_code == 202
    conversation = conversation_id_for(outage.chatbot_id, "web", visitor)
    await outage.visitor_messages.wait_for(lambda r: r.get("channel_message_id") == "m_after"
                                           and r.get("conversation_id") == conversation)
    assert outage.on_topic(conversation) == ["m_outage", "m_after"]


def _update(update_id: int, chat_id: int, text: str) -> dict:
    return {"update_id": update_id, "message": {
        "message_id": update_id, "date": 1764000000, "text": text,
        "chat": {"id": chat_id, "type": "private", "first_name": "Ada"},
        "from": {"id": chat_id, "is_bot": False, "first_name": "Ada"}}}


async def test_telegram_update_refused_while_the_broker_cannot_write_then_on_the_topic_once(outage):
    url = f"{outage.service.url}/telegram/{outage.chatbot_id}/webhook"
    headers = {"X-Telegram-Bot-Api-Secret-Token": TELEGRAM_SECRET}
    async with httpx.AsyncClient(timeout=5.0) as client:
        refused, took, again = await _refused_while_frozen(
            outage, lambda: client.post(url, json=_update(71, 4242, "hello?"), headers=headers))
        accepted = await _post_until_accepted(lambda: client.post(url, json=_update(71, 4242, "hello?"), headers=headers))
        after = await client.post(url, json=_update(72, 4242, "still there?"), headers=headers)

    assert refused.status_code == 503 and again.status_code == 503 and took < PUBLISH_TIMEOUT_S + 1.5
    assert accepted.status_code == 200 and after.status_code == 200
    conversation = conversation_id_for(outage.chatbot_id, "telegram", "4242")
    await outage.visitor_messages.wait_for(lambda r: r.get("channel_message_id") == "72")
    assert outage.on_topic(conversation) == ["71", "72"]


def _whatsapp_message(wamid: str, text: str) -> bytes:
    return json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{
        "field": "messages", "value": {
            "messaging_product": "whatsapp", "metadata": {"display_phone_number": "1555", "phone_number_id": "1555"},
            "contacts": [{"profile": {"name": "Grace"}, "wa_id": "4917"}],
            "messages": [{"from": "4917", "id": wamid, "timestamp": str(int(time.time())), "type": "text",
                          "text": {"body": text}}]}}]}]}).encode()


async def test_whatsapp_message_refused_while_the_broker_cannot_write_then_on_the_topic_once(outage):
    url = f"{outage.service.url}/whatsapp/{outage.chatbot_id}/webhook"
    first, second = f"wamid.{new_id()}", f"wamid.{new_id()}"

    def send(wamid: str, text: str):
        raw = _whatsapp_message(wamid, text)
        return lambda: client.post(url, content=raw, headers={
            "Content-Type": "application/json", "X-Hub-Signature-256": whatsapp_signature(WHATSAPP_SECRET, raw)})

    async with httpx.AsyncClient(timeout=5.0) as client:
        refused, took, again = await _refused_while_frozen(outage, send(first, "hi"))
        accepted = await _post_until_accepted(send(first, "hi"))
        after = await send(second, "anyone?")()

    assert refused.status_code == 503 and again.status_code == 503 and took < PUBLISH_TIMEOUT_S + 1.5
    assert accepted.status_code == 200 and after.status_code == 200
    conversation = conversation_id_for(outage.chatbot_id, "whatsapp", "4917")
    await outage.visitor_messages.wait_for(lambda r: r.get("channel_message_id") == second)
    assert outage.on_topic(conversation) == [first, second]
