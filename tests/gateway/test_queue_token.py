"""The gateway holds the queue's service token: it sends it on every internal call (the fake
queue of conftest.py answers 401 without it, so every gateway test relies on that), refuses
to start without it, and a token the queue does not accept is a clear 503, never a leak."""

from __future__ import annotations

import httpx
import pytest

from services.gateway.app import create_app
from tests.gateway.conftest import add_agent, gateway, login


async def test_the_gateway_refuses_to_start_without_the_queue_token(stack):
    settings = stack.gateway_settings().model_copy(update={"queue_api_token": None})
    with pytest.raises(RuntimeError, match="QUEUE_API_TOKEN"):
        create_app(settings)


async def test_a_token_the_queue_refuses_is_a_clear_503(stack):
    settings = stack.gateway_settings()
    await add_agent(settings, "tok@example.com", ["alpha"])
    async with gateway(stack, QUEUE_API_TOKEN="not-the-queues-token-0123") as gw, \
            httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
        await login(client, "tok@example.com")
        r = await client.get("/api/chatbots/alpha/stats")
        assert r.status_code == 503 and r.json() == {"detail": "The queue service could not answer. Try again in a moment."}
        assert stack.queue_seen["requests"][-1] == "/internal/chatbots/alpha/stats"
