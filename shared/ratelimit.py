"""Rate limits kept in Redis, with the `limits` library (sliding-window counters: two keys per
limit and caller, no per-hit lists), shared by every replica of a service.

A rule is `limits` notation ("30/minute", "5 per 10 seconds"). `RateLimits.hit` counts one
attempt and says whether it is allowed and, if not, after how many seconds to try again
(the Retry-After of the 429). When Redis does not answer, the limit is not enforced (logged,
at most once a minute): refusing every visitor and agent because a cache is down is the worse
failure, and readiness already reports Redis down.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from fastapi import HTTPException
from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

log = logging.getLogger(__name__)


def rule(text: str) -> RateLimitItem:
    """Parses "N/period" (raises ValueError with the text on nonsense, for settings checks)."""
    return parse(text)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: int = 0


class RateLimited(HTTPException):
    """429 with Retry-After (whole seconds, at least 1) and a message a person can read."""

    def __init__(self, retry_after_s: int, detail: str = "Too many requests. Please try again later.") -> None:
        super().__init__(429, detail, headers={"Retry-After": str(max(1, retry_after_s))})


class RateLimits:
    def __init__(self, redis_url: str, key_prefix: str) -> None:
        self.storage = RedisStorage("async+" + redis_url, implementation="redispy", key_prefix=f"{key_prefix}limits",
                                    wrap_exceptions=True)
        self.limiter = SlidingWindowCounterRateLimiter(self.storage)
        self._warned_at = 0.0

    async def hit(self, limit: RateLimitItem, *key: str, cost: int = 1) -> Decision:
        try:
            if await self.limiter.hit(limit, *key, cost=cost):
                return Decision(True)
            stats = await self.limiter.get_window_stats(limit, *key)
        except Exception as exc:  # noqa: BLE001 - see the module note: fail open, loudly
            self._warn(exc)
            return Decision(True)
        return Decision(False, max(1, math.ceil(stats.reset_time - time.time())))

    async def check(self, limit: RateLimitItem, *key: str) -> Decision:
        """Whether a hit would be allowed now, without counting one."""
        try:
            if await self.limiter.test(limit, *key):
                return Decision(True)
            stats = await self.limiter.get_window_stats(limit, *key)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)
            return Decision(True)
        return Decision(False, max(1, math.ceil(stats.reset_time - time.time())))

    async def clear(self, limit: RateLimitItem, *key: str) -> None:
        try:
            await self.limiter.clear(limit, *key)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)

    def _warn(self, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._warned_at >= 60:
            self._warned_at = now
            log.warning("rate limits not enforced: Redis did not answer (%s)", type(exc).__name__)
