"""Fetch waits that follow the traffic. The embedded broker never answers a waiting fetch
early, so a consumer's wait is both its latency per hop and, while idle, its cost: one fetch
per wait, each one broker work and a wake-up of the service. A consumer fetches with its
short wait while records come and switches to the long one after `idle_after_s` without
any; the first record after a quiet spell arrives within the long wait, and the short wait
is back for whatever follows it. (Real Kafka answers a waiting fetch as soon as data
arrives: there both waits can be long.)"""

from __future__ import annotations

import time
from typing import Any


def set_fetch_wait(subscriber: Any, wait_ms: int) -> bool:
    """Change a running consumer's fetch wait. aiokafka reads it from its fetcher for every
    fetch request it builds and has no public setter (aiokafka is pinned below 0.15)."""
    fetcher = getattr(getattr(subscriber, "consumer", None), "_fetcher", None)
    if fetcher is None or not hasattr(fetcher, "_fetch_max_wait_ms"):
        return False
    fetcher._fetch_max_wait_ms = wait_ms  # noqa: SLF001 - see above
    return True


class FetchPacing:
    def __init__(self, busy_wait_ms: int, idle_wait_ms: int, idle_after_s: float) -> None:
        self.busy_wait_ms = busy_wait_ms
        self.idle_wait_ms = max(busy_wait_ms, idle_wait_ms)
        self.idle_after_s = idle_after_s
        self.subscriber: Any = None
        self.last_record = time.monotonic()
        self.idle = False

    @property
    def wait_ms(self) -> int:
        return self.idle_wait_ms if self.idle else self.busy_wait_ms

    def record_seen(self) -> None:
        self.last_record = time.monotonic()
        if self.idle and set_fetch_wait(self.subscriber, self.busy_wait_ms):
            self.idle = False

    def tick(self, now: float) -> None:
        if (not self.idle and self.idle_wait_ms > self.busy_wait_ms and now - self.last_record >= self.idle_after_s
                and set_fetch_wait(self.subscriber, self.idle_wait_ms)):
            self.idle = True

    def restarted(self) -> None:
        """A fresh consumer starts with the wait it was created with (the short one)."""
        self.idle = False
        self.last_record = time.monotonic()
