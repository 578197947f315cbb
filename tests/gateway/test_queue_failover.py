"""QUEUE_URL may list several queue replicas: the gateway asks the one that answered last and
fails over to the next when one refuses the connection or answers 5xx; a 4xx is an answer
(passed through, no other replica asked). A QUEUE_URL entry that is no URL stops the gateway
with a readable message."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from deploy.infra import free_port
from services.gateway.domain import QUEUE_UNREACHABLE
from tests.fakes.server import FakeHttpServer
from tests.gateway.conftest import add_agent, gateway, login


class BrokenQueue(FakeHttpServer):
    """A queue replica that answers 503 to everything (e.g. it lost its stores)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.requests: list[str] = []
        self.app = FastAPI()

        @self.app.get("/{path:path}")
        async def everything(path: str) -> JSONResponse:
            self.requests.append("/" + path)
            return JSONResponse({"detail": "not ready"}, status_code=503)


@pytest.mark.parametrize(("replicas", "status"), [(("down", "queue"), 200), (("down", "down"), 503)])
async def test_a_queue_replica_that_is_down_is_skipped_and_none_up_is_a_clear_503(stack, replicas, status):
    settings = stack.gateway_settings()
    await add_agent(settings, "down@example.com", ["alpha"])
    urls = [stack.queue.url if r == "queue" else f"http://127.0.0.1:{free_port()}" for r in replicas]
    async with gateway(stack, QUEUE_URL=",".join(urls)) as gw, httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
        await login(client, "down@example.com")
        r = await client.get("/api/chatbots/alpha/stats")
        assert r.status_code == status, r.text
        assert r.json()["chatbot_id"] == "alpha" if status == 200 else r.json() == {"detail": QUEUE_UNREACHABLE}


async def test_a_replica_answering_5xx_is_skipped_and_the_one_that_answered_is_asked_first(stack):
    settings = stack.gateway_settings()
    await add_agent(settings, "five@example.com", ["alpha"])
    async with BrokenQueue() as broken, \
            gateway(stack, QUEUE_URL=f"{broken.url},{stack.queue.url}/") as gw, \
            httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
        await login(client, "five@example.com")
        before = len(stack.queue_seen["requests"])
        for _ in range(3):
            r = await client.get("/api/chatbots/alpha/stats")
            assert r.status_code == 200, r.text
        assert broken.requests == ["/internal/chatbots/alpha/stats"]  # asked once, then no more
        assert len(stack.queue_seen["requests"]) - before == 3


async def test_a_4xx_is_the_queues_answer_not_a_reason_to_ask_another_replica(stack):
    settings = stack.gateway_settings()
    await add_agent(settings, "four@example.com", ["alpha", "gamma"])  # gamma: unknown to the queue
    async with BrokenQueue() as broken, \
            gateway(stack, QUEUE_URL=f"{stack.queue.url},{broken.url}") as gw, \
            httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
        await login(client, "four@example.com")
        r = await client.get("/api/chatbots/gamma/stats")
        assert r.status_code == 404 and r.json() == {"detail": "Unknown chatbot: gamma"}
        assert broken.requests == []


@pytest.mark.parametrize("value", ["queue:8002", "http://queue-1:8002,,http://queue-2:8002", "http://"])
def test_a_queue_url_that_is_not_a_list_of_urls_is_refused_readably(stack, value):
    with pytest.raises(ValidationError, match="QUEUE_URL must be one or more comma-separated http"):
        stack.gateway_settings(QUEUE_URL=value)
