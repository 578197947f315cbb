"""Fetch waits follow the traffic (shared/bus/pacing.py): a consumer that saw no record for
`KAFKA_IDLE_AFTER_S` sleeps (its partitions paused) until a producer rings the doorbell
(shared/bus/doorbell.py), or, without a doorbell, fetches with the long wait; the first
record brings the short one back, and it is handled. Against the real broker and Redis, in
a real service; the state machine also on its own, with a fake consumer."""

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
    return pacing.running()._fetcher._fetch_max_wait_ms  # noqa: SLF001 - what aiokafka sends


async def test_without_the_doorbell_an_idle_consumer_fetches_with_the_long_wait_until_a_record_comes(isolated):
    handled: list[str] = []
    env = {**isolated.env("pacing"), "KAFKA_FETCH_MAX_WAIT_MS": "25", "KAFKA_IDLE_FETCH_MAX_WAIT_MS": "400",
           "KAFKA_IDLE_AFTER_S": "1", "KAFKA_DOORBELL": "false"}
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


async def test_an_idle_consumer_sleeps_and_the_producers_ring_wakes_it_at_once(isolated):
    """Asleep, it fetches nothing (its look comes only every KAFKA_SLEEP_POLL_S, here ten
    minutes): the record is handled within seconds only because the publish rang."""
    handled: list[str] = []
    env = {**isolated.env("pacing"), "KAFKA_FETCH_MAX_WAIT_MS": "25", "KAFKA_IDLE_FETCH_MAX_WAIT_MS": "400",
           "KAFKA_IDLE_AFTER_S": "1", "KAFKA_SLEEP_POLL_S": "600"}
    settings = settings_from_env(ServiceSettings, env)
    async with run_in_process("pacing", _factory(handled), settings) as svc:
        runtime = svc.app.state.runtime
        [health] = runtime.bus.consumers
        pacing: FetchPacing = health.pacing
        consumer = pacing.running()

        async def asleep() -> bool:
            return pacing.asleep and bool(consumer.assignment()) and consumer.paused() == consumer.assignment()

        await eventually(asleep, timeout=20)
        await asyncio.sleep(1)  # a fetch in flight when it fell asleep is over
        assert pacing.asleep
        # Asleep, its fetch loop stays asleep too (aiokafka's would look round every 200 ms).
        fetcher = consumer._fetcher  # noqa: SLF001
        looks = 0
        look = fetcher._get_actions_per_node  # noqa: SLF001

        def counted(assignment):  # noqa: ANN001, ANN202
            nonlocal looks
            looks += 1
            return look(assignment)

        fetcher._get_actions_per_node = counted  # noqa: SLF001
        await asyncio.sleep(2)
        assert looks <= 1
        await runtime.app.state.publisher.publish(_message("c1", "after a quiet spell"))
        await eventually(lambda: asyncio.sleep(0, result=handled == ["after a quiet spell"]), timeout=2)
        assert not pacing.asleep and not pacing.idle and not consumer.paused() and _fetch_wait(pacing) == 25
        assert fetcher._fetcher_timeout == 0.2  # noqa: SLF001 - awake, aiokafka's own look again
        await eventually(asleep, timeout=20)  # quiet again: asleep again
        async with __import__("httpx").AsyncClient(base_url=svc.url) as http:
            assert (await http.get("/healthz")).json()["doorbell"] == {"listening": True}


class _FakeConsumer:
    def __init__(self) -> None:
        self.parts = {"t-0", "t-1"}
        self.paused_parts: set[str] = set()
        self.fetch_wait = 25

    def assignment(self) -> set[str]:
        return set(self.parts)

    def paused(self) -> set[str]:
        return set(self.paused_parts)

    def pause(self, *parts: str) -> None:
        self.paused_parts |= set(parts)

    def resume(self, *parts: str) -> None:
        self.paused_parts -= set(parts)


class _FakeDoorbell:
    def __init__(self) -> None:
        self.listening = True
        self.heard: dict[str, float] = {}
        self.callbacks: list = []

    def on_ring(self, topics, wake, lost) -> None:  # noqa: ANN001
        self.callbacks.append((topics, wake, lost))

    def heard_since(self, topics, since: float) -> bool:  # noqa: ANN001
        return any(self.heard.get(t, float("-inf")) >= since for t in topics)


def _paced() -> tuple[FetchPacing, _FakeConsumer, _FakeDoorbell]:
    doorbell = _FakeDoorbell()
    consumer = _FakeConsumer()
    fetcher = type("Fetcher", (), {"_fetch_max_wait_ms": 25})()
    consumer._fetcher = fetcher  # what set_fetch_wait changes
    pacing = FetchPacing(25, 250, 30.0, lambda: consumer, doorbell=doorbell, topics=("t",), poll_s=60.0)
    return pacing, consumer, doorbell


def test_asleep_only_after_the_idle_time_and_no_recent_ring_and_rebalanced_partitions_sleep_too():
    pacing, consumer, doorbell = _paced()
    start = pacing.last_record
    pacing.tick(start + 10)
    assert pacing.state == "busy"
    doorbell.heard["t"] = start + 29.5  # a ring just now: a record may be on its way
    pacing.tick(start + 30.5)
    assert pacing.state == "idle" and consumer.paused() == set()
    pacing.tick(start + 32)
    assert pacing.state == "asleep" and consumer.paused() == {"t-0", "t-1"}
    consumer.parts.add("t-2")  # a rebalance gave it another partition
    pacing.tick(start + 34)
    assert consumer.paused() == {"t-0", "t-1", "t-2"}


def test_a_consumer_with_one_long_wait_a_tables_sleeps_too():
    doorbell = _FakeDoorbell()
    consumer = _FakeConsumer()
    pacing = FetchPacing(1000, 250, 30.0, lambda: consumer, doorbell=doorbell, topics=("t",), poll_s=60.0)
    pacing.tick(pacing.last_record + 31)
    assert pacing.state == "asleep" and consumer.paused() == {"t-0", "t-1"}


def test_a_ring_wakes_it_a_lost_doorbell_falls_back_to_the_long_wait_and_it_looks_every_poll():
    pacing, consumer, doorbell = _paced()
    start = pacing.last_record
    pacing.tick(start + 31)
    assert pacing.state == "asleep"
    [(_, wake, lost)] = doorbell.callbacks
    wake()
    assert pacing.state == "busy" and consumer.paused() == set() and consumer._fetcher._fetch_max_wait_ms == 25
    pacing.tick(pacing.last_record + 31)
    assert pacing.state == "asleep"
    doorbell.listening = False
    lost()
    assert pacing.state == "idle" and consumer.paused() == set() and consumer._fetcher._fetch_max_wait_ms == 250
    pacing.tick(pacing.last_record + 40)
    assert pacing.state == "idle"  # no doorbell: it stays on the long wait
    doorbell.listening = True
    now = pacing.last_record + 50
    pacing.tick(now)
    assert pacing.state == "asleep"
    pacing.tick(now + 30)
    assert pacing.state == "asleep"
    pacing.tick(now + 60)  # its look: awake on the long wait for one round of the watch
    assert pacing.state == "idle" and consumer.paused() == set()
    pacing.tick(now + 62)
    assert pacing.state == "asleep"


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
