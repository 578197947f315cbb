"""Issue 12, item 6 for the gateway: schemathesis over every operation of its OpenAPI document,
against the real gateway and queue processes (`python -m services.<name>`, on the test
session's broker, Redis and Mongo-wire server). Two passes:

- signed out: every generated request to /api/ is refused (4xx), nothing ever gets a
  response >= 500;
- signed in (the session cookie from a real login, the CSRF token from /api/me), the chatbot
  id the agent's and, half the time, the conversation id a real one, so the generated bodies
  and parameters get past the session, membership and CSRF checks to the parsing, the queue's
  internal API and the command round trip: never a response >= 500, and every 2xx body
  matches the documented response schema (error bodies are not checked against the document:
  FastAPI documents its own 422 shape, while the hand-parsed bodies answer a readable message).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest
import schemathesis

from services.gateway.deps import CSRF_HEADER, SESSION_COOKIE
from shared.events import VisitorIdentity, VisitorMessageReceived
from shared.ids import conversation_id_for
from shared.topics import VISITOR_MESSAGES
from tests.fuzzing import call_checked, fuzz_operations, load_schema, module_names, publish, run_cli, running
from tests.harness import ServiceProcess
from tests.support import eventually

EXAMPLES = 10  # per operation, generation mode and pass
PASSWORD = "fuzzing password 1"
BOT = "fuzzbot"


@dataclass
class SignedIn:
    gateway: ServiceProcess
    cookies: dict[str, str]
    headers: dict[str, str]
    conversation_id: str


@pytest.fixture(scope="module")
async def signed_in(infra, tmp_path_factory) -> AsyncIterator[SignedIn]:
    iso = await module_names(infra)
    logs = tmp_path_factory.mktemp("gateway-fuzz")
    queue_env = iso.env("queue", QUEUE_CONSUMER_GROUP=f"queue-{iso.tag}")
    async with running("queue", queue_env, logs) as queue:
        await run_cli("services.queue", ["seed-chatbot", "--id", BOT, "--name", "Fuzz shop", "--handoff-on"], queue_env)
        gateway_env = iso.env("gateway", QUEUE_URL=queue.url, COOKIE_SECURE="false",
                              COMMAND_TIMEOUT_S="3")
        async with running("gateway", gateway_env, logs) as gw:
            email = f"fuzz-{iso.tag}@example.com"
            await run_cli("services.gateway", ["create-agent", "--email", email, "--password", PASSWORD,
                                               "--chatbot", BOT], gateway_env)
            # What channels publishes when a web visitor writes: the queue opens the conversation.
            conversation_id = conversation_id_for(BOT, "web", "v-fuzz")
            await publish(iso, VISITOR_MESSAGES, VisitorMessageReceived(
                chatbot_id=BOT, conversation_id=conversation_id, channel="web",
                visitor=VisitorIdentity(external_id="v-fuzz", name="Fuzz"), text="hello", channel_message_id="m-fuzz"))
            async with httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
                async def conversation_known() -> bool:
                    r = await client.get(f"{queue.url}/internal/chatbots/{BOT}/conversations/{conversation_id}",
                                         headers={"Authorization": f"Bearer {iso.queue_api_token}"})
                    return r.status_code == 200
                await eventually(conversation_known, timeout=30)
                r = await client.post("/api/login", json={"email": email, "password": PASSWORD})
                assert r.status_code == 200, r.text
                me = await client.get("/api/me")
                assert me.status_code == 200, me.text
                yield SignedIn(gw, {SESSION_COOKIE: client.cookies[SESSION_COOKIE]},
                               {CSRF_HEADER: me.json()["csrf_token"]}, conversation_id)


@pytest.fixture(scope="module")
def gateway_schema(signed_in: SignedIn) -> schemathesis.BaseSchema:
    return load_schema(signed_in.gateway.url)


def _is_api(label: str) -> bool:
    return " /api/" in label


def test_signed_out_requests_are_refused_never_a_5xx(gateway_schema, signed_in, subtests):
    def send(case: schemathesis.Case) -> None:
        response = call_checked(case, signed_in.gateway)
        if _is_api(case.operation.label):  # a generated login never guesses the agent's password
            assert 400 <= response.status_code < 500, f"{case.as_curl_command()} -> {response.status_code}"

    # /readyz takes nothing and answers 503 by design while a dependency is away.
    ran = fuzz_operations(gateway_schema.exclude(path="/readyz"), send, subtests, EXAMPLES)
    assert len([label for label in ran if _is_api(label)]) >= 10, ran  # the whole API, not an empty document


def test_signed_in_requests_never_get_a_5xx(gateway_schema, signed_in, subtests):
    def send(case: schemathesis.Case) -> None:
        call_checked(case, signed_in.gateway, cookies=signed_in.cookies, headers=signed_in.headers)

    # The agent's chatbot, so that requests get past the membership check; the conversation a
    # real one or a generated id. Signing out would end the pass's session (it takes no input
    # besides the CSRF header); /readyz as above.
    ran = fuzz_operations(gateway_schema.exclude(path="/api/logout").exclude(path="/readyz"), send, subtests,
                          EXAMPLES, path_parameters=[{"chatbot_id": BOT},
                                                     {"chatbot_id": BOT, "conversation_id": signed_in.conversation_id}])
    assert len([label for label in ran if _is_api(label)]) >= 10, ran
