"""After the embedded broker restarts (memory only: every topic, offset and group is gone) a
service recovers by itself: its topics are recreated with their partition counts, its
consumers start again on the new logs, the recovered hooks run once (the queue republishes
the chatbot settings there, and replicas read them again), and one loud ERROR report says
what was lost. /readyz is 503 meanwhile and 200 after.

A broker of its own on a free port: the session's shared broker is never killed."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from aiokafka.admin import AIOKafkaAdminClient
from fastapi import FastAPI

from deploy.infra import Server, free_port, start_kafka
from shared.bus import LOSS_REPORT, ensure_topics
from shared.chatbots import ChatbotSettings
from shared.events import SETTINGS_EVENT, VISITOR_EVENT, ChatbotSettingsChanged, VisitorMessageReceived
from shared.service import ServiceRuntime
from shared.settings import ServiceSettings
from shared.topics import CHATBOT_SETTINGS, VISITOR_MESSAGES
from tests.harness import run_in_process, settings_from_env
from tests.shared.test_bus import _message
from tests.support import eventually

TOPICS = (VISITOR_MESSAGES, CHATBOT_SETTINGS)
WANTED = {t.name: t.partitions for t in TOPICS} | {t.dlq: 1 for t in TOPICS}


class Probe:
    """What the test service saw: messages handled (one, "stuck", never finishes), chatbots
    its replica knows, hook runs."""

    def __init__(self) -> None:
        self.handled: list[str] = []
        self.started: list[str] = []
        self.chatbots: set[str] = set()
        self.recovered = 0
        self.never = asyncio.Event()


def _factory(probe: Probe) -> Callable[[ServiceSettings], FastAPI]:
    def create_app(settings: ServiceSettings) -> FastAPI:
        runtime = ServiceRuntime(settings, name="restart", stateless=True)
        runtime.bus.watch_interval_s = 0.3
        runtime.bus.fault_after_s = 0.5

        async def on_message(event: VisitorMessageReceived) -> None:
            probe.started.append(event.text)
            if event.text == "stuck":
                await probe.never.wait()
            probe.handled.append(event.text)

        def on_settings(event: ChatbotSettingsChanged) -> None:
            probe.chatbots.add(event.settings.chatbot_id)

        settings_out = runtime.bus.publisher(CHATBOT_SETTINGS)

        async def republish() -> None:  # what the queue's chatbots.publish_all does
            probe.recovered += 1
            demo = ChatbotSettings(chatbot_id="demo", name="Demo")
            await settings_out.publish(ChatbotSettingsChanged(chatbot_id="demo", settings=demo))

        runtime.bus.consume(VISITOR_MESSAGES, VISITOR_EVENT, on_message, group_id="restart-group", dedupe=False,
                            concurrency=4)
        runtime.replicate(CHATBOT_SETTINGS, SETTINGS_EVENT, on_settings, timeout=3)
        runtime.recovered_hooks.append(republish)
        runtime.app.state.publisher = runtime.bus.publisher(VISITOR_MESSAGES)
        return runtime.app

    return create_app


async def _partition_counts(bootstrap: str, prefix: str) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=3000)
    await admin.start()
    try:  # all topics: naming a missing one would make the broker create it
        return {t["topic"][len(prefix):]: len(t["partitions"]) for t in await admin.describe_topics()
                if t["topic"].startswith(prefix)}
    finally:
        await admin.close()


async def _status(http: httpx.AsyncClient) -> tuple[int, dict[str, Any]]:
    try:
        r = await http.get("/readyz", timeout=5)
    except httpx.HTTPError as exc:
        return 0, {"error": repr(exc)}
    return r.status_code, r.json()


async def test_a_broker_restart_is_recovered_from_and_reported_once(isolated, tmp_path: Path, caplog):
    port = free_port()
    bootstrap = f"127.0.0.1:{port}"
    kafka: Server = start_kafka(port, tmp_path)
    prefix = isolated.topic_prefix
    await ensure_topics(bootstrap, prefix=prefix, topics=TOPICS)
    probe = Probe()
    settings = settings_from_env(ServiceSettings, isolated.env(
        "restart", KAFKA_BOOTSTRAP_SERVERS=bootstrap, KAFKA_GRACEFUL_TIMEOUT_S="1"))
    try:
        async with (run_in_process("restart", _factory(probe), settings) as svc,
                    httpx.AsyncClient(base_url=svc.url) as http):
            publisher = svc.app.state.publisher
            await eventually(lambda: _ready(http), timeout=20)
            for i in range(3):
                await publisher.publish(_message(f"c{i}", f"before-{i}"))
            await publisher.publish(_message("c9", "first"))
            await eventually(lambda: asyncio.sleep(0, result=len(probe.handled) == 4), timeout=20)
            # Two messages of one conversation in the log, never handled: the loss report counts them.
            await publisher.publish(_message("c9", "stuck"))
            await publisher.publish(_message("c9", "queued"))
            await eventually(lambda: asyncio.sleep(0, result="stuck" in probe.started), timeout=10)
            [health] = [h for h in svc.app.state.runtime.bus.consumers if h.group == "restart-group"]
            await eventually(lambda: asyncio.sleep(0, result=sum(health.ends.values()) == 6), timeout=10)

            kafka.proc.kill()  # the broker we started, by its PID
            kafka.proc.wait()
            # Not ready, and why: the broker, and the consumers' fetches failing.
            await eventually(lambda: _fetches_failing(http), timeout=10)
            probe.chatbots.clear()

            with caplog.at_level(logging.ERROR, logger="handoff.bus"):
                kafka = start_kafka(port, tmp_path)  # same port, empty memory
                await eventually(lambda: _has(bootstrap, prefix), timeout=20)
                await eventually(lambda: _ready(http), timeout=20)
                assert probe.recovered == 1

                await publisher.publish(_message("c1", "after"))
                await eventually(lambda: asyncio.sleep(0, result="after" in probe.handled), timeout=15)
                await eventually(lambda: asyncio.sleep(0, result=probe.chatbots == {"demo"}), timeout=15)

            reports = [r for r in caplog.records if r.levelno == logging.ERROR and LOSS_REPORT in r.getMessage()]
            assert len(reports) == 1, [r.getMessage() for r in reports]
            report = reports[0].getMessage()
            assert prefix + VISITOR_MESSAGES.name in report and prefix + CHATBOT_SETTINGS.name in report
            assert "consumer restart-group: 2 messages never handled, lost" in report
            assert "queued" not in probe.started
            assert probe.recovered == 1  # once per recovery, not per check
            assert await _partition_counts(bootstrap, prefix) == WANTED
    finally:
        kafka.stop()


async def _ready(http: httpx.AsyncClient) -> bool:
    return (await _status(http))[0] == 200


async def _fetches_failing(http: httpx.AsyncClient) -> bool:
    status, body = await _status(http)
    return (status == 503 and body["checks"]["broker"] is False and body["checks"]["consumers"] is False
            and any("fetches failing" in p for p in body["consumer_problems"]))


async def _has(bootstrap: str, prefix: str) -> bool:
    return await _partition_counts(bootstrap, prefix) == WANTED
