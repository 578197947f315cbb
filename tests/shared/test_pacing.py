"""Fetch waits follow the traffic (shared/bus/pacing.py): a consumer that saw no record for
`KAFKA_IDLE_AFTER_S` fetches with the long wait; the first record brings the short one back,
and it is handled. Against the real broker, in a real service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from fastapi import FastAPI

from shared.bus.pacing import FetchPacing
from shared.events import VISITOR_EVENT, VisitorMessageReceived
from shared.service import ServiceRuntime
from shared.settings import ServiceSettings
from shared.topics import VISITOR_MESSAGES
from tests.harness import run_in_process, settings_from_env
from tests.shared.test_bus import _message
from tests.support import eventually


def _factory(handled: list[str]) -> Callable[[ServiceSettings], FastAPI]:
    def create_app(settings: ServiceSettings) -> FastAPI:
        runtime = ServiceRuntime(settings, name="pacing", stateless=True)
        runtime.bus.watch_interval_s = 0.2  # the watch also paces the consumers

        async def handler(event: VisitorMessageReceived) -> None:
            handled.append(event.text)

        runtime.bus.consume(VISITOR_MESSAGES, VISITOR_EVENT, handler, group_id="pacing", dedupe=False)
        runtime.app.state.runtime = runtime
        runtime.app.state.publisher = runtime.bus.publisher(VISITOR_MESSAGES)
        return runtime.app

    return create_app


def _fetch_wait(pacing: FetchPacing) -> int:
    return pacing.subscriber.consumer._fetcher._fetch_max_wait_ms  # noqa: SLF001 - what aiokafka sends


async def test_an_idle_consumer_fetches_with_the_long_wait_until_a_record_comes(isolated):
    handled: list[str] = []
    env = {**isolated.env("pacing"), "KAFKA_FETCH_MAX_WAIT_MS": "25", "KAFKA_IDLE_FETCH_MAX_WAIT_MS": "400",
           "KAFKA_IDLE_AFTER_S": "1"}
    settings = settings_from_env(ServiceSettings, env)
    async with run_in_process("pacing", _factory(handled), settings) as svc:
        [health] = svc.app.state.runtime.bus.consumers
        pacing: FetchPacing = health.pacing
        assert (pacing.busy_wait_ms, pacing.idle_wait_ms) == (25, 400)

        async def idle() -> bool:
            return pacing.idle and _fetch_wait(pacing) == 400

        await eventually(idle, timeout=20)
        await svc.app.state.publisher.publish(_message("c1", "after a quiet spell"))
        await eventually(lambda: asyncio.sleep(0, result=handled == ["after a quiet spell"]), timeout=20)
        assert not pacing.idle and _fetch_wait(pacing) == 25
        # Quiet again: back to the long wait.
        await eventually(idle, timeout=20)


async def test_the_watch_asks_the_broker_for_its_topics_only_every_few_rounds_while_all_is_well(isolated):
    """Each ask is broker work, paid by an idle stack; a failed fetch (a sign the broker may
    have lost the topics) brings the ask back to every round."""
    env = {**isolated.env("pacing"), "KAFKA_IDLE_AFTER_S": "1"}
    settings = settings_from_env(ServiceSettings, env)
    async with run_in_process("pacing", _factory([]), settings) as svc:
        bus = svc.app.state.runtime.bus
        recovery = bus._recovery  # noqa: SLF001 - the watch's own collaborator
        asked: list[float] = []
        lost_topics = recovery.lost_topics

        async def counting() -> list[str]:
            asked.append(asyncio.get_running_loop().time())
            return await lost_topics()

        recovery.lost_topics = counting
        await asyncio.sleep(0.2 * 20)  # twenty rounds of the watch
        assert 2 <= len(asked) <= 6, asked
        asked.clear()
        bus._consuming.fetch_faults.seen(  # noqa: SLF001
            "Failed fetch messages from 1: …", time.monotonic())
        await asyncio.sleep(0.2 * 2)
        assert len(asked) >= 1, "a failed fetch is a reason to ask at once"
