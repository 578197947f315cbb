"""Fetch waits that follow the traffic. The embedded broker never answers a waiting fetch
early, so a consumer's wait is both its latency per hop and, while idle, its cost: one fetch
per wait, each one broker work and a wake-up of the service. A consumer fetches with its
short wait while records come and switches to the long one after `idle_after_s` without
any; the first record after a quiet spell arrives within the long wait, and the short wait
is back for whatever follows it. (Real Kafka answers a waiting fetch as soon as data
arrives: there both waits can be long.)"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def _set_on_fetcher(consumer: Any, name: str, value: float) -> bool:
    """Change a running consumer's fetcher setting. aiokafka reads these from its fetcher each
    round and has no public setter (aiokafka is pinned below 0.15); False without a fetcher."""
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is None or not hasattr(fetcher, name):
        return False
    setattr(fetcher, name, value)
    return True


def set_fetch_wait(consumer: Any, wait_ms: int) -> bool:
    """The fetch wait sent with every fetch request the consumer builds."""
    return _set_on_fetcher(consumer, "_fetch_max_wait_ms", wait_ms)


def set_fetcher_look(consumer: Any, seconds: float) -> None:
    """How often its fetch loop looks round when nothing wakes it (`consumer_timeout_ms`)."""
    _set_on_fetcher(consumer, "_fetcher_timeout", seconds)


# Asleep, nothing is fetched and a resume wakes the fetch loop at once: its look every 200 ms
# (aiokafka's default, kept while awake, where error recovery may lean on it) would be five
# wake-ups a second for nothing.
SLEEPING_LOOK_S = 5.0
AWAKE_LOOK_S = 0.2


# A consumer goes to sleep only when no ring for its topics came for this long either: a
# producer rings a topic at most every doorbell.RING_EVERY_S, so a record whose ring was
# skipped was fetched (by the long wait at the latest) before its consumer could sleep.
QUIET_AFTER_RING_S = 2.0


class FetchPacing:
    """busy (the short wait) -> idle after `idle_after_s` without records: asleep (partitions
    paused, woken by the doorbell, one look every `poll_s`) when the doorbell listens, else
    the long wait. A record, or a ring, makes it busy again."""

    def __init__(self, busy_wait_ms: int, idle_wait_ms: int, idle_after_s: float, running: Callable[[], Any], *,
                 doorbell: Any = None, topics: tuple[str, ...] = (), poll_s: float = 30.0) -> None:
        """`running`: the consumer it paces, while one runs (its ConsumerHealth's)."""
        self.busy_wait_ms = busy_wait_ms
        self.idle_wait_ms = max(busy_wait_ms, idle_wait_ms)
        self.idle_after_s = idle_after_s
        self.doorbell = doorbell
        self.topics = topics
        self.poll_s = poll_s
        self.running = running
        self.last_record = time.monotonic()
        self.idle = False
        self.asleep = False
        self.slept_at = 0.0
        if doorbell is not None:
            doorbell.on_ring(topics, self.wake, self.doorbell_lost)

    @property
    def wait_ms(self) -> int:
        return self.idle_wait_ms if self.idle else self.busy_wait_ms

    @property
    def state(self) -> str:
        return "asleep" if self.asleep else "idle" if self.idle else "busy"

    def record_seen(self) -> None:
        self.last_record = time.monotonic()
        if self.idle and set_fetch_wait(self.running(), self.busy_wait_ms):
            self.idle = False

    def wake(self) -> None:
        """A ring for one of its topics: a record is in the broker; fetch it now."""
        if self.asleep:
            self._resume()
        if self.idle and set_fetch_wait(self.running(), self.busy_wait_ms):
            self.idle = False
        self.last_record = time.monotonic()  # busy again, as after a record

    def doorbell_lost(self) -> None:
        """No rings can come: a sleeping consumer fetches with the long wait instead."""
        if self.asleep:
            self._resume()

    def tick(self, now: float) -> None:
        quiet = now - self.last_record >= self.idle_after_s
        if self.asleep:
            if now - self.slept_at >= self.poll_s:
                self._resume()  # one look with the long wait; the next tick puts it back to sleep
            else:
                self._pause()  # partitions a rebalance gave it meanwhile sleep too
            return
        if not quiet:
            return
        if not self.idle and self.idle_wait_ms > self.busy_wait_ms and set_fetch_wait(self.running(), self.idle_wait_ms):
            self.idle = True
        doorbell = self.doorbell
        # Any consumer may sleep, a table's too (its one wait is already long, never switched).
        if (doorbell is not None and doorbell.listening
                and not doorbell.heard_since(self.topics, now - QUIET_AFTER_RING_S)):
            self.slept_at = now
            self.asleep = self._pause()

    def _pause(self) -> bool:
        consumer = self.running()
        if consumer is None:
            return False
        consumer.pause(*consumer.assignment())
        set_fetcher_look(consumer, SLEEPING_LOOK_S)
        return True

    def _resume(self) -> None:
        self.asleep = False
        consumer = self.running()
        if consumer is not None:
            consumer.resume(*consumer.paused())  # wakes the fetch loop, which then looks as before
            set_fetcher_look(consumer, AWAKE_LOOK_S)

    def restarted(self) -> None:
        """A fresh consumer starts with the wait it was created with (the short one)."""
        self.idle = False
        self.asleep = False
        self.last_record = time.monotonic()
