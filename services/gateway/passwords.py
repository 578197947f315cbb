"""Argon2, a few at a time. Each check takes ~64 MiB and a core for tens of milliseconds, so
parallel sign-ins must not each get a thread of their own: at most `size` run at once in
this process, and an attempt that waits longer than `wait_s` for its turn is refused
(`Busy`, a 503 with Retry-After) instead of queueing without end."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from typing import TypeVar

from services.gateway import domain

T = TypeVar("T")


class Busy(Exception):
    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"no password check free; retry after {retry_after_s} s")
        self.retry_after_s = retry_after_s


class PasswordChecks:
    def __init__(self, size: int, wait_s: float) -> None:
        self._slots = asyncio.Semaphore(size)
        self.wait_s = wait_s

    async def verify(self, password_hash: str | None, password: str) -> bool:
        """`domain.verify_password` (which checks against a dummy hash when there is none, so
        an unknown e-mail takes as long as a wrong password)."""
        return await self.run(domain.verify_password, password_hash, password)

    async def hash(self, password: str) -> str:
        return await self.run(domain.hash_password, password)

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        try:
            async with asyncio.timeout(self.wait_s):
                await self._slots.acquire()
        except TimeoutError:
            raise Busy(max(1, math.ceil(self.wait_s))) from None
        # The slot is given back when the thread is done, not when the request is: a client
        # that hangs up cannot free a slot while its check still runs.
        work = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        work.add_done_callback(lambda _: self._slots.release())
        return await asyncio.shield(work)
