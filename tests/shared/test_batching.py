"""The coalescer: concurrent callers share one flush, a lone call is not delayed, each gets
its own outcome, and a failed flush fails every caller of that batch (who then retry)."""

from __future__ import annotations

import asyncio

import pytest

from shared.batching import Coalescer


async def test_callers_of_one_loop_turn_share_a_flush_and_the_next_ones_wait_for_it():
    flushed: list[list[int]] = []
    release = asyncio.Event()

    async def flush(items: list[int]) -> list[int | BaseException]:
        flushed.append(items)
        await release.wait()
        return [ValueError(f"odd {i}") if i == 7 else i * 10 for i in items]

    c: Coalescer[int, int] = Coalescer(flush, max_batch=4)
    first = [asyncio.ensure_future(c.submit(i)) for i in range(6)]
    await asyncio.sleep(0.01)
    later = [asyncio.ensure_future(c.submit(i)) for i in (7, 8)]  # while a batch is in flight
    await asyncio.sleep(0.01)
    assert flushed == [[0, 1, 2, 3]]
    release.set()
    assert await asyncio.gather(*first) == [0, 10, 20, 30, 40, 50]
    with pytest.raises(ValueError, match="odd 7"):
        await later[0]
    assert await later[1] == 80
    assert flushed == [[0, 1, 2, 3], [4, 5, 7, 8]]
    assert (c.batches, c.items) == (2, 8)


async def test_a_failed_flush_fails_its_callers_and_the_next_batch_goes_on():
    calls = 0

    async def flush(items: list[str]) -> list[str]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("store down")
        return [s.upper() for s in items]

    c: Coalescer[str, str] = Coalescer(flush)
    results = await asyncio.gather(c.submit("a"), c.submit("b"), return_exceptions=True)
    assert [type(r) for r in results] == [ConnectionError, ConnectionError]
    assert await c.submit("c") == "C"


async def test_a_cancelled_caller_is_left_out():
    seen: list[list[int]] = []

    async def flush(items: list[int]) -> list[int]:
        seen.append(items)
        return items

    c: Coalescer[int, int] = Coalescer(flush)
    gone = asyncio.ensure_future(c.submit(1))
    kept = asyncio.ensure_future(c.submit(2))
    await asyncio.sleep(0)  # both submitted, the flush not yet run
    assert len(c._pending) == 2
    gone.cancel()
    assert await kept == 2
    assert seen == [[2]]
