"""Rate limits kept in Redis, with the `limits` library (sliding-window counters: two keys per
limit and caller, no per-hit lists), shared by every replica of a service.

A rule is `limits` notation ("30/minute", "5 per 10 seconds"). `RateLimits.hit` counts one
attempt and says whether it is allowed and, if not, after how many seconds to try again
(the Retry-After of the 429). When Redis does not answer, the limit is not enforced (logged,
at most once a minute): refusing every visitor and agent because a cache is down is the worse
failure, and readiness already reports Redis down.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass

from fastapi import HTTPException
from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

log = logging.getLogger(__name__)


def rule(text: str) -> RateLimitItem:
    """Parses "N/period" (raises ValueError with the text on nonsense, for settings checks)."""
    return parse(text)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def networks(text: str) -> list[Network]:
    """"10.0.0.0/8, 127.0.0.1" -> networks (raises ValueError naming the bad entry)."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if part:
            try:
                out.append(ipaddress.ip_network(part, strict=False))
            except ValueError:
                raise ValueError(f"Not an IP address or network: {part!r}.") from None
    return out


def client_address(peer: str | None, forwarded_for: str | None, trusted_proxies: Sequence[Network] = ()) -> str:
    """The caller to count per-IP limits against. X-Forwarded-For is believed only when the
    direct peer is a trusted proxy, and then only up to the first hop that is not one (the
    rightmost untrusted address: what lies left of it the client wrote itself). An IPv6
    address counts as its /64, the block one subscriber gets."""
    hops = [h.strip() for h in (forwarded_for or "").split(",") if h.strip()]
    chain = [peer or "unknown", *reversed(hops)]
    chosen = chain[0]
    for hop in chain:
        chosen = hop
        address = _address(hop)
        if address is None or not any(address in net for net in trusted_proxies):
            break
    address = _address(chosen)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is None:
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else address or chosen)


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


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
        return await self._decide(self.limiter.hit(limit, *key, cost=cost), limit, key)

    async def check(self, limit: RateLimitItem, *key: str) -> Decision:
        """Whether a hit would be allowed now, without counting one."""
        return await self._decide(self.limiter.test(limit, *key), limit, key)

    async def _decide(self, allowed: Awaitable[bool], limit: RateLimitItem, key: tuple[str, ...]) -> Decision:
        try:
            if await allowed:
                return Decision(True)
            stats = await self.limiter.get_window_stats(limit, *key)
        except Exception as exc:  # noqa: BLE001 - see the module note: fail open, loudly
            self._warn(exc)
            return Decision(True)
        return Decision(False, max(1, math.ceil(stats.reset_time - time.time())))

    async def count(self, limit: RateLimitItem, *key: str) -> int:
        """How many hits the (sliding) window holds now; 0 when Redis does not answer."""
        try:
            stats = await self.limiter.get_window_stats(limit, *key)
        except Exception as exc:  # noqa: BLE001
            self._warn(exc)
            return 0
        return limit.amount - stats.remaining

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
