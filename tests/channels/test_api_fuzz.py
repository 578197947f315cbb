"""Issue 12, item 6 for channels: schemathesis over every operation of its OpenAPI document (the
widget's API and the webhooks), against the real channels process (`python -m
services.channels` on the test session's broker, Redis and Mongo-wire server). Two passes:

- without credentials: generated chatbot ids and the id of a chatbot with Telegram and
  WhatsApp connected; every webhook request (unsigned) and every widget call that needs a
  visitor token is refused with a 4xx, nothing ever gets a response >= 500;
- as a widget visitor (a token from POST /web/{id}/session): messages and contact details
  with generated bodies get past the token check to validation, the rate limits (429 is an
  answer like any other) and the broker: never a response >= 500, and every 2xx body matches
  the documented schema.

The signed webhook bodies are test_webhook_fuzz.py's."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import schemathesis

from deploy.infra import free_port
from shared.chatbots import ChannelCredentials, ChatbotSettings
from shared.events import ChatbotSettingsChanged
from shared.topics import CHATBOT_SETTINGS
from tests.channels.test_telegram import _creds as _telegram_creds
from tests.channels.test_whatsapp import _creds as _whatsapp_creds
from tests.fuzzing import call_checked, fuzz_operations, load_schema, module_names, publish, running
from tests.harness import ServiceProcess
from tests.support import eventually

EXAMPLES = 25  # per operation, generation mode and pass
BOT = "fuzzbot"
# Calls that need a credential: a visitor token (widget) or a signature / secret (webhooks).
GUARDED = ("/messages", "/contact", "/session/renew", "/webhook")


@dataclass
class Channels:
    service: ServiceProcess
    visitor_token: str


@pytest.fixture(scope="module")
async def channels(infra, tmp_path_factory) -> AsyncIterator[Channels]:
    iso = await module_names(infra)
    # Nothing listens on the platforms' port: the Telegram webhook registration a new bot
    # triggers fails at once (and is only logged); the passes never send to a platform.
    nowhere = f"http://127.0.0.1:{free_port()}"
    env = iso.env("channels", CHANNELS_PUBLIC_URL="https://channels.example.test", TELEGRAM_API_BASE_URL=nowhere + "/bot",
                  GRAPH_API_BASE_URL=nowhere, WIDGET_TOKEN_SECRET=f"widget-secret-{uuid.uuid4().hex}")
    async with running("channels", env, tmp_path_factory.mktemp("channels-fuzz")) as service:
        settings = ChatbotSettings(chatbot_id=BOT, name="Fuzz shop",
                                   channels=ChannelCredentials(**_telegram_creds(), **_whatsapp_creds()))
        await publish(iso, CHATBOT_SETTINGS, ChatbotSettingsChanged(chatbot_id=BOT, settings=settings))
        async with httpx.AsyncClient(base_url=service.url, timeout=30) as client:
            async def known() -> bool:
                return (await client.get(f"/telegram/{BOT}/webhook")).status_code == 200
            await eventually(known, timeout=30)
            r = await client.post(f"/web/{BOT}/session")
            assert r.status_code == 201, r.text
            yield Channels(service, r.json()["token"])


@pytest.fixture(scope="module")
def channels_schema(channels: Channels) -> schemathesis.BaseSchema:
    # /readyz takes nothing and answers 503 by design while a dependency is away.
    return load_schema(channels.service.url).exclude(path="/readyz")


def test_requests_without_credentials_are_refused_never_a_5xx(channels_schema, channels, subtests):
    def send(case: schemathesis.Case) -> None:
        response = call_checked(case, channels.service)
        if case.operation.path.endswith(GUARDED):
            assert 400 <= response.status_code < 500, f"{case.as_curl_command()} -> {response.status_code}"

    ran = fuzz_operations(channels_schema, send, subtests, EXAMPLES, path_parameters=[{}, {"chatbot_id": BOT}])
    assert {path for path in GUARDED if any(label.endswith(path) for label in ran)} == set(GUARDED), ran


def test_a_visitors_requests_never_get_a_5xx(channels_schema, channels, subtests):
    def send(case: schemathesis.Case) -> None:
        call_checked(case, channels.service, headers={"Authorization": f"Bearer {channels.visitor_token}"})

    # The widget's calls that take the token; renewing would replace it in the middle of the pass.
    widget = channels_schema.include(path_regex=r"^/web/\{chatbot_id\}/(messages|contact)$")
    ran = fuzz_operations(widget, send, subtests, EXAMPLES, path_parameters=[{"chatbot_id": BOT}])
    assert len(ran) == 2, ran
