"""Readiness tells the truth about a service's consumers: one whose handler has waited on
infrastructure too long, or whose offset commits keep failing, makes /readyz 503 with
`checks.consumers` false and a reason naming the consumer, the topic and the error; it is
ready again once the consumer works."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from aiokafka.admin import AIOKafkaAdminClient
from fastapi import FastAPI
from pymongo.errors import AutoReconnect

from shared.events import VISITOR_EVENT, VisitorMessageReceived
from shared.service import ServiceRuntime
from shared.settings import ServiceSettings
from shared.topics import VISITOR_MESSAGES
from tests.harness import run_in_process, settings_from_env
from tests.shared.test_bus import _message
from tests.support import eventually

Handler = Callable[[VisitorMessageReceived], Awaitable[None]]


def _factory(handler: Handler, group: str) -> Callable[[ServiceSettings], FastAPI]:
    """A stateless service with one consumer group and a publisher on visitor.messages; a
    fault counts after half a second. The bus's own watch is off (the test calls
    `check_broker` itself): what readiness says before a recovery is what is tested."""

    def create_app(settings: ServiceSettings) -> FastAPI:
        runtime = ServiceRuntime(settings, name="health", stateless=True)
        runtime.bus.fault_after_s = 0.5
        runtime.bus.watch_interval_s = 3600.0
        runtime.bus.consume(VISITOR_MESSAGES, VISITOR_EVENT, handler, group_id=group, dedupe=False)
        runtime.app.state.publisher = runtime.bus.publisher(VISITOR_MESSAGES)
        return runtime.app

    return create_app


async def _readyz(http: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    r = await http.get("/readyz")
    return r.status_code, r.json()


async def test_a_handler_stuck_on_an_outage_makes_the_service_unready_until_it_recovers(isolated):
    away = asyncio.Event()
    away.set()
    handled: list[str] = []

    async def handler(event: VisitorMessageReceived) -> None:
        if away.is_set():
            raise AutoReconnect("mongo is away")
        handled.append(event.text)

    settings = settings_from_env(ServiceSettings, isolated.env("health"))
    async with (run_in_process("health", _factory(handler, "health-stuck"), settings) as svc,
                httpx.AsyncClient(base_url=svc.url) as http):
        assert (await _readyz(http))[0] == 200
        await svc.app.state.publisher.publish(_message("c1", "waits"))

        async def unready() -> dict[str, Any]:
            status, body = await _readyz(http)
            return body if status == 503 else {}

        body = await eventually(unready, timeout=20)
        assert body["checks"] == {"broker": True, "topics": True, "consumers": False}
        [problem] = body["consumer_problems"]
        assert "health-stuck" in problem and "AutoReconnect" in problem and "mongo is away" in problem

        away.clear()
        await eventually(lambda: asyncio.sleep(0, result=handled == ["waits"]), timeout=20)
        status, body = await eventually(lambda: _ready_again(http), timeout=20)
        assert body["checks"]["consumers"] is True and "consumer_problems" not in body


async def _ready_again(http: httpx.AsyncClient) -> tuple[int, dict[str, Any]] | None:
    status, body = await _readyz(http)
    return (status, body) if status == 200 else None


async def test_failing_offset_commits_make_the_service_unready_and_say_why(isolated):
    """The topic is deleted under a consumer (what a broker restart does to it): aiokafka
    retries the commit for ever and only logs `OffsetCommit failed … UnknownTopicOrPartition
    Error`; /readyz used to stay 200 throughout. Now it says so, and the bus's next check of
    the broker recovers (the topic recreated, the consumer restarted)."""
    gate = asyncio.Event()
    handled: list[str] = []

    async def handler(event: VisitorMessageReceived) -> None:
        handled.append(event.text)
        await gate.wait()

    settings = settings_from_env(ServiceSettings, isolated.env("health"))
    topic = isolated.topic_prefix + VISITOR_MESSAGES.name
    admin = AIOKafkaAdminClient(bootstrap_servers=isolated.infra.kafka_bootstrap)
    await admin.start()
    try:
        async with (run_in_process("health", _factory(handler, "health-commit"), settings) as svc,
                    httpx.AsyncClient(base_url=svc.url) as http):
            await svc.app.state.publisher.publish(_message("c1", "first"))
            await eventually(lambda: asyncio.sleep(0, result=handled == ["first"]), timeout=20)
            await admin.delete_topics([topic])
            gate.set()  # handled; now its offset is to be committed to a topic that is gone

            async def commit_failing() -> dict[str, Any]:
                status, body = await _readyz(http)
                return body if status == 503 and not body["checks"].get("consumers", True) else {}

            body = await eventually(commit_failing, timeout=20)
            [problem] = body["consumer_problems"]
            assert "health-commit" in problem and topic in problem and "UnknownTopicOrPartitionError" in problem

            await svc.app.state.runtime.bus.check_broker()
            status, body = await eventually(lambda: _ready_again(http), timeout=20)
            assert body["checks"] == {"broker": True, "topics": True, "consumers": True}
            await svc.app.state.publisher.publish(_message("c1", "second"))
            await eventually(lambda: asyncio.sleep(0, result=handled == ["first", "second"]), timeout=20)
    finally:
        await admin.close()
