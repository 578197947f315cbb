"""The delivery rules of shared/bus/ against the real broker and Mongo-wire server:
typed handlers, commit after success, dead-letter on malformed or poison events, and
idempotency by event id. The same handler is also exercised with TestKafkaBroker."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest
from aiokafka import AIOKafkaProducer
from faststream.kafka import TestKafkaBroker

from shared.bus import Bus
from shared.events import VISITOR_EVENT, VisitorIdentity, VisitorMessageReceived
from shared.ids import new_id
from shared.settings import ServiceSettings
from shared.stores import ProcessedEvents, open_mongo
from shared.topics import VISITOR_MESSAGES
from tests.support import eventually, read_topic


def _message(conv: str, text: str, event_id: str | None = None) -> VisitorMessageReceived:
    kwargs = {"event_id": event_id} if event_id else {}
    return VisitorMessageReceived(chatbot_id="bot1", conversation_id=conv, channel="web",
                                  visitor=VisitorIdentity(external_id="v1"), text=text,
                                  channel_message_id=new_id(), **kwargs)


async def test_typed_handler_dlq_and_dedupe_on_real_broker(isolated):
    settings = ServiceSettings(**{k.lower(): v for k, v in isolated.env("bustest").items()})
    client, db = open_mongo(settings)
    processed = ProcessedEvents(db)
    bus = Bus(settings, client_id="bustest", processed=processed)
    seen: list[str] = []
    failures = {"poison": 0}

    async def on_event(event: VisitorMessageReceived) -> None:
        if event.text == "poison":
            failures["poison"] += 1
            raise RuntimeError("boom")
        seen.append(event.text)

    bus.consume(VISITOR_MESSAGES, VISITOR_EVENT, on_event, group_id="bustest-group")
    publisher = bus.publisher(VISITOR_MESSAGES)
    await bus.broker.start()
    raw = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await raw.start()
    try:
        topic = isolated.topic_prefix + VISITOR_MESSAGES.name
        first = _message("c1", "hello", event_id="e-1")
        await publisher.publish(first)
        await raw.send_and_wait(topic, b'{"not": "an event"}', key=b"c1")
        await raw.send_and_wait(topic, b"\xff\xfe binary", key=b"c1")
        await publisher.publish(_message("c1", "poison"))
        await publisher.publish(first)  # redelivered / duplicated event id: applied once
        await publisher.publish(_message("c1", "after"))

        await eventually(lambda: asyncio.sleep(0, result="after" in seen), timeout=20)
        assert seen == ["hello", "after"]
        assert failures["poison"] == settings.kafka_handler_attempts

        parked = await read_topic(settings.kafka_bootstrap_servers, isolated.topic_prefix + VISITOR_MESSAGES.dlq, 3)
        kinds = [p["error_kind"] for p in parked]
        assert kinds == ["invalid", "invalid", "handler_failed"]
        assert parked[0]["payload"] == '{"not": "an event"}'
        assert parked[1]["payload_encoding"] == "base64"
        assert "boom" in parked[2]["error"]
        assert await processed.seen("bustest-group", "e-1")
    finally:
        await raw.stop()
        await bus.broker.stop()
        await client.close()


async def test_commits_only_after_success(isolated):
    """A consumer that dies mid-handler gets the message again after a restart."""
    settings = ServiceSettings(**{k.lower(): v for k, v in isolated.env("committest", KAFKA_GRACEFUL_TIMEOUT_S="0.5").items()})
    topic = VISITOR_MESSAGES
    gate = asyncio.Event()
    got: list[str] = []

    async def slow(event: VisitorMessageReceived) -> None:
        got.append(event.text)
        await gate.wait()  # never finishes in the first consumer

    bus1 = Bus(settings, client_id="c1")
    bus1.consume(topic, VISITOR_EVENT, slow, group_id="commit-group", dedupe=False)
    pub = bus1.publisher(topic)
    await bus1.broker.start()
    await pub.publish(_message("c9", "once"))
    await eventually(lambda: asyncio.sleep(0, result=got == ["once"]), timeout=20)
    await asyncio.wait_for(bus1.broker.stop(), 10)  # stopped before the handler finished

    again: list[str] = []

    async def fast(event: VisitorMessageReceived) -> None:
        again.append(event.text)

    bus2 = Bus(settings, client_id="c2")
    bus2.consume(topic, VISITOR_EVENT, fast, group_id="commit-group", dedupe=False)
    await bus2.broker.start()
    try:
        await eventually(lambda: asyncio.sleep(0, result=again == ["once"]), timeout=20)
    finally:
        await bus2.broker.stop()


async def test_same_handler_in_memory_broker():
    settings = ServiceSettings()
    bus = Bus(settings, client_id="mem")
    seen: list[str] = []

    async def on_event(event: VisitorMessageReceived) -> None:
        seen.append(event.text)

    bus.consume(VISITOR_MESSAGES, VISITOR_EVENT, on_event, group_id="mem-group", dedupe=False)
    pub = bus.publisher(VISITOR_MESSAGES)
    async with TestKafkaBroker(bus.broker):
        await pub.publish(_message("c1", "in memory"))
    assert seen == ["in memory"]


def _settings(isolated, name: str, **extra: str) -> ServiceSettings:
    return ServiceSettings(**{k.lower(): v for k, v in isolated.env(name, **extra).items()})


async def _send(raw: AIOKafkaProducer, topic: str, conv: str, text: str, partition: int = 0) -> None:
    await raw.send_and_wait(topic, _message(conv, text).model_dump_json().encode(), key=conv.encode(), partition=partition)


async def test_concurrent_consumer_keeps_order_per_key_and_does_not_block_other_keys(isolated):
    settings = _settings(isolated, "keyed")
    topic = isolated.topic_prefix + VISITOR_MESSAGES.name
    release_slow = asyncio.Event()
    done: list[str] = []

    async def handler(event: VisitorMessageReceived) -> None:
        if event.text == "slow-1":
            await release_slow.wait()  # a slow LLM call for conversation "slow"
        done.append(event.text)

    bus = Bus(settings, client_id="keyed")
    bus.consume(VISITOR_MESSAGES, VISITOR_EVENT, handler, group_id="keyed-group", dedupe=False, concurrency=8)
    raw = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await raw.start()
    await bus.broker.start()
    try:
        # Same partition on purpose: the slow conversation and the others share it.
        await _send(raw, topic, "slow", "slow-1")
        await _send(raw, topic, "slow", "slow-2")
        for i in range(5):
            await _send(raw, topic, f"other{i}", f"other-{i}")

        await eventually(lambda: asyncio.sleep(0, result=len(done) == 5), timeout=20)
        assert sorted(done) == [f"other-{i}" for i in range(5)]  # not held up by the slow one
        assert "slow-2" not in done  # but its own next message waits for it

        release_slow.set()
        await eventually(lambda: asyncio.sleep(0, result=len(done) == 7), timeout=20)
        assert done.index("slow-1") < done.index("slow-2")
    finally:
        await raw.stop()
        await bus.drain(1)
        await bus.broker.stop()


async def test_concurrent_consumer_never_commits_past_an_unfinished_message(isolated):
    settings = _settings(isolated, "watermark", KAFKA_GRACEFUL_TIMEOUT_S="0.5")
    topic = isolated.topic_prefix + VISITOR_MESSAGES.name
    never = asyncio.Event()
    first_run: list[str] = []

    async def stuck(event: VisitorMessageReceived) -> None:
        first_run.append(event.text)
        if event.text == "stuck":
            await never.wait()  # the process dies before this finishes

    bus1 = Bus(settings, client_id="w1")
    bus1.consume(VISITOR_MESSAGES, VISITOR_EVENT, stuck, group_id="watermark-group", dedupe=False, concurrency=4)
    raw = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await raw.start()
    await bus1.broker.start()
    try:
        await _send(raw, topic, "a", "stuck")
        await _send(raw, topic, "b", "finished-after")
        await eventually(lambda: asyncio.sleep(0, result=sorted(first_run) == ["finished-after", "stuck"]), timeout=20)
        await asyncio.sleep(0.3)  # let the finished one try to commit
        await bus1.drain(0.2)  # shutdown: the stuck one is cancelled uncommitted
        await bus1.broker.stop()

        second_run: list[str] = []

        async def record(event: VisitorMessageReceived) -> None:
            second_run.append(event.text)

        bus2 = Bus(settings, client_id="w2")
        bus2.consume(VISITOR_MESSAGES, VISITOR_EVENT, record, group_id="watermark-group", dedupe=False,
                     concurrency=4)
        await bus2.broker.start()
        try:
            # The unfinished message comes back (and the one after it, which idempotent
            # handlers / the processed-events check absorb).
            await eventually(lambda: asyncio.sleep(0, result="stuck" in second_run), timeout=20)
            await eventually(lambda: asyncio.sleep(0, result="finished-after" in second_run), timeout=20)
            await _send(raw, topic, "c", "later")
            await eventually(lambda: asyncio.sleep(0, result="later" in second_run), timeout=20)
        finally:
            await bus2.drain(1)
            await bus2.broker.stop()

        # Everything finished now: a third member of the group gets nothing old again.
        third_run: list[str] = []

        async def record3(event: VisitorMessageReceived) -> None:
            third_run.append(event.text)

        bus3 = Bus(settings, client_id="w3")
        bus3.consume(VISITOR_MESSAGES, VISITOR_EVENT, record3, group_id="watermark-group", dedupe=False,
                     concurrency=4)
        await bus3.broker.start()
        try:
            await _send(raw, topic, "d", "newest")
            await eventually(lambda: asyncio.sleep(0, result="newest" in third_run), timeout=20)
            assert third_run == ["newest"]
        finally:
            await bus3.drain(1)
            await bus3.broker.stop()
    finally:
        await raw.stop()


async def test_invalid_event_logs_and_parks_no_input_values(isolated, caplog):
    """A record that fails validation may carry secrets: the log line and the DLQ's error
    text say where and why, never the values (the DLQ's payload field keeps the record)."""
    settings = _settings(isolated, "secrets")
    topic = isolated.topic_prefix + VISITOR_MESSAGES.name
    seen: list[str] = []

    async def handler(event: VisitorMessageReceived) -> None:
        seen.append(event.text)

    bus = Bus(settings, client_id="secrets")
    bus.consume(VISITOR_MESSAGES, VISITOR_EVENT, handler, group_id="secrets-group", dedupe=False)
    raw = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await raw.start()
    await bus.broker.start()
    try:
        secret = "sk-live-SECRET-TOKEN-42"
        bad = _message("c1", "x").model_dump(mode="json")
        bad["channel"] = secret  # an invalid value that happens to be a secret
        with caplog.at_level("WARNING", logger="handoff.bus"):
            await raw.send_and_wait(topic, json.dumps(bad).encode(), key=b"c1")
            await _send(raw, topic, "c1", "after")
            await eventually(lambda: asyncio.sleep(0, result=seen == ["after"]), timeout=20)
        assert "invalid event" in caplog.text and "'channel'" in caplog.text
        assert secret not in caplog.text
        [parked] = await read_topic(settings.kafka_bootstrap_servers, isolated.topic_prefix + VISITOR_MESSAGES.dlq, 1)
        assert '"channel"' in parked["error"] and secret not in parked["error"]
        assert secret in parked["payload"]  # nothing is lost
    finally:
        await raw.stop()
        await bus.broker.stop()


class _FlakyStore:
    """The processed-events store with the Mongo-wire server away for the first `outage`
    calls of each kind (what a Mongo restart looks like to a consumer)."""

    def __init__(self, real: ProcessedEvents, outage: int) -> None:
        self.real, self.outage = real, outage
        self.calls = {"seen": 0, "mark": 0}

    async def _maybe_fail(self, kind: str) -> None:
        self.calls[kind] += 1
        if self.calls[kind] <= self.outage:
            from pymongo.errors import AutoReconnect

            raise AutoReconnect("connection refused")

    async def seen(self, consumer: str, event_id: str) -> bool:
        await self._maybe_fail("seen")
        return await self.real.seen(consumer, event_id)

    async def mark(self, consumer: str, event_id: str) -> None:
        await self._maybe_fail("mark")
        await self.real.mark(consumer, event_id)


async def _outage_run(isolated, name: str, *, concurrency: int, store_outage: int, handler_outage: int) -> tuple[list, list]:
    """Three messages through a consumer while the store (dedupe check and mark) and the
    handler's own store calls fail with connection errors for a while."""
    from pymongo.errors import AutoReconnect

    settings = ServiceSettings(**{k.lower(): v for k, v in isolated.env(name, KAFKA_RETRY_BACKOFF_S="0.02").items()})
    client, db = open_mongo(settings)
    bus = Bus(settings, client_id=name, processed=_FlakyStore(ProcessedEvents(db), store_outage))
    applied: list[str] = []
    handler_failures = {"n": 0}

    async def on_event(event: VisitorMessageReceived) -> None:
        if handler_failures["n"] < handler_outage:
            handler_failures["n"] += 1
            raise AutoReconnect("the handler's own store is away")
        applied.append(event.text)

    bus.consume(VISITOR_MESSAGES, VISITOR_EVENT, on_event, group_id=f"{name}-group", concurrency=concurrency)
    publisher = bus.publisher(VISITOR_MESSAGES)
    await bus.broker.start()
    try:
        for text in ("one", "two", "three"):
            await publisher.publish(_message("same-conversation", text))
        await eventually(lambda: asyncio.sleep(0, result=len(applied) >= 3), timeout=20)
        await asyncio.sleep(0.3)
        parked = []
        with contextlib.suppress(AssertionError):
            parked = await read_topic(settings.kafka_bootstrap_servers, isolated.topic_prefix + VISITOR_MESSAGES.dlq,
                                      1, timeout=1)
        return applied, parked
    finally:
        await bus.broker.stop()
        await client.close()


async def test_a_store_outage_in_the_dedupe_check_loses_nothing(isolated):
    """The dedupe check and mark fail while Mongo is away: every message is still applied,
    once, in order (the check used to sit outside the retries: the first message was skipped
    and the next one's commit went past it)."""
    applied, parked = await _outage_run(isolated, "dedupe-outage", concurrency=1, store_outage=2, handler_outage=0)
    assert applied == ["one", "two", "three"] and parked == []


@pytest.mark.parametrize("concurrency", [1, 4])
async def test_an_outage_longer_than_the_retries_is_waited_for_not_parked(isolated, concurrency):
    """A store away for longer than the handler's attempts: the message waits (uncommitted)
    instead of being parked on the DLQ, where it was lost to the flow; keyed concurrency too,
    whose unfinished offset used to stay in flight for good."""
    applied, parked = await _outage_run(isolated, "long-outage", concurrency=concurrency,
                                        store_outage=3, handler_outage=6)
    assert applied == ["one", "two", "three"] and parked == []
