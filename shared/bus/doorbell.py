"""A doorbell for idle consumers (`KAFKA_DOORBELL`). The embedded broker never answers a
waiting fetch early, so an idle consumer costs one fetch per wait and the first record after
a quiet spell waits out the wait on every hop. With the doorbell an idle consumer stops
fetching (its partitions paused) and every producer rings a Redis pub/sub channel per topic
after the broker acknowledged a record: the ring resumes the topic's sleeping consumers at
once, in every process. Rings are a hint, never the data: the record is in Kafka before the
ring, a sleeping consumer still fetches once every `KAFKA_SLEEP_POLL_S`, and while the
doorbell cannot listen (Redis away) consumers fall back to the long fetch wait
(shared/bus/pacing.py). On real Kafka, which answers a waiting fetch as data arrives, turn it
off and use long waits."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

import redis.asyncio as aioredis

log = logging.getLogger("handoff.bus")

# A producer rings a topic at most this often: under load a ring per record would be a Redis
# round trip per record. Safe because a consumer goes to sleep only after KAFKA_IDLE_AFTER_S
# without records and QUIET_AFTER_RING_S without rings (see pacing.py).
RING_EVERY_S = 0.5
# After losing Redis, the listener tries again this often.
RECONNECT_S = 1.0


class Doorbell:
    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        # Its own client, opened by the first ring or the listener: every bus rings, a stateless
        # service's and a test's or bench's publisher too, not only services that keep data in Redis.
        self._redis: aioredis.Redis | None = None
        # Pub/sub channels are the Redis server's, whatever the database: one per topic, named
        # by its full (prefixed) name, so stacks sharing a Redis ring only their own consumers.
        self.channel_prefix = "handoff:bus:ring:"
        self.listening = False
        self._rung: dict[str, float] = {}  # topic -> when this process last rang it
        self._heard: dict[str, float] = {}  # topic -> when a ring for it last came
        self._wakers: dict[str, list[Callable[[], None]]] = defaultdict(list)
        self._lost: list[Callable[[], None]] = []
        self._tasks: set[asyncio.Task] = set()
        self._listener: asyncio.Task | None = None

    # ------------------------------------------------------------------ producing
    def ring(self, topic: str) -> None:
        """A record of `topic` was acknowledged: wake its sleeping consumers (not awaited)."""
        now = time.monotonic()
        if now - self._rung.get(topic, float("-inf")) < RING_EVERY_S:
            return
        self._rung[topic] = now
        task = asyncio.ensure_future(self._ring(topic))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            self._redis = aioredis.from_url(self.redis_url, decode_responses=True)
        return self._redis

    async def _ring(self, topic: str) -> None:
        try:
            await self.redis.publish(self.channel_prefix + topic, "1")
        except Exception as exc:  # noqa: BLE001 - a hint only: the sleeping consumers' poll finds the record
            self._rung.pop(topic, None)  # the next record rings again
            log.debug("doorbell: ring for %s failed (%r)", topic, exc)

    # ------------------------------------------------------------------ consuming
    def on_ring(self, topics: Iterable[str], wake: Callable[[], None], lost: Callable[[], None]) -> None:
        """`wake()` when any of `topics` is rung; `lost()` when the doorbell stops listening."""
        for topic in topics:
            self._wakers[topic].append(wake)
        self._lost.append(lost)

    def heard_since(self, topics: Iterable[str], since: float) -> bool:
        return any(self._heard.get(t, float("-inf")) >= since for t in topics)

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen(), name="bus-doorbell")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        for task in list(self._tasks):
            task.cancel()
        self.listening = False
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

    async def _listen(self) -> None:
        while True:
            pubsub = self.redis.pubsub()
            try:
                await pubsub.psubscribe(self.channel_prefix + "*")
                self.listening = True
                log.info("doorbell: listening")
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=None)
                    if message and message.get("type") == "pmessage":
                        self._heard_ring(str(message["channel"])[len(self.channel_prefix):])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis away: consumers fall back to fetch waits
                if self.listening:
                    log.warning("doorbell: stopped listening (%r); idle consumers use the long fetch wait", exc)
                self._stopped_listening()
                await asyncio.sleep(RECONNECT_S)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _heard_ring(self, topic: str) -> None:
        self._heard[topic] = time.monotonic()
        for wake in self._wakers.get(topic, ()):
            wake()

    def _stopped_listening(self) -> None:
        self.listening = False
        for lost in self._lost:
            lost()
