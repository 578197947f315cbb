"""Benchmark: the queue's stats and first page of open handoffs at 1,000 and 100,000 open
handoffs, through the store (Redis index) and through the internal HTTP API.

Not a test: `python -m bench.bench_queue_index [--samples N]`. Starts its own redis-server
and SecantusDB (deploy/infra.py), seeds one chatbot per size (Mongo with batched
insert_many, Redis through the index interface), measures p50/p99, prints the figures, the
100k/1k ratio and the raw Redis round-trip floor measured in the same run, then stops its
servers. The claim it checks: both reads cost O(log n + page), so the ratio stays near 1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import redis.asyncio as aioredis
import uvicorn
from fastapi import FastAPI
from pymongo import AsyncMongoClient

from deploy.infra import free_port, start_mongo, start_redis
from services.queue.api import router
from services.queue.conversation import Conversation
from services.queue.domain import stats_window
from services.queue.parts import build_queue
from services.queue.settings import QueueSettings
from services.queue.store import HandoffIndex, QueueRecord
from shared.chatbots import ChatbotSettings
from shared.ids import conversation_id_for

SIZES = (1_000, 100_000)
PAGE = 50
MONGO_BATCH = 5_000


class _Discard:
    """The bus of a queue that publishes nothing (the benchmark only reads)."""

    def publisher(self, topic) -> _Discard:  # noqa: ANN001
        return self

    async def publish(self, event) -> None:  # noqa: ANN001
        return None


def _conversations(chatbot_id: str, n: int, now: datetime) -> list[dict]:
    docs = []
    for i in range(n):
        visitor = f"bench-{i}"
        waiting = now - timedelta(seconds=n - i)
        docs.append({
            "_id": conversation_id_for(chatbot_id, "web", visitor), "chatbot_id": chatbot_id, "status": "handed_off",
            "channel": "web", "visitor_id": visitor, "display_name": f"Visitor {i}", "contact": {},
            "handoff_id": f"h-{chatbot_id}-{i}", "reason": "User asked for a person", "waiting_since": waiting,
            "message_count": 3, "created_at": waiting, "updated_at": waiting,
        })
    return docs


async def _timed_pair(small: Callable[[], Awaitable[object]], large: Callable[[], Awaitable[object]],
                      samples: int) -> tuple[tuple[float, float], tuple[float, float]]:
    """p50/p99 of both sizes, sampled alternately so background load hits both alike."""
    for _ in range(min(20, samples)):  # warm-up
        await small()
        await large()
    took: tuple[list[float], list[float]] = ([], [])
    for _ in range(samples):
        for fn, sink in ((small, took[0]), (large, took[1])):
            t0 = time.perf_counter()
            await fn()
            sink.append((time.perf_counter() - t0) * 1000)
    return _p50_p99(took[0]), _p50_p99(took[1])


def _p50_p99(values: list[float]) -> tuple[float, float]:
    values = sorted(values)
    return statistics.median(values), values[min(len(values) - 1, int(len(values) * 0.99))]


async def _timed(fn: Callable[[], Awaitable[object]], samples: int) -> tuple[float, float]:
    for _ in range(min(20, samples)):
        await fn()
    took = []
    for _ in range(samples):
        t0 = time.perf_counter()
        await fn()
        took.append((time.perf_counter() - t0) * 1000)
    return _p50_p99(took)


async def run(samples: int) -> None:
    log_dir = Path(tempfile.mkdtemp(prefix="bench-queue-"))
    redis_server = start_redis(free_port(), log_dir)
    mongo_server = start_mongo(free_port(), log_dir)
    redis = aioredis.from_url(f"redis://127.0.0.1:{redis_server.port}/0", decode_responses=True)
    mongo = AsyncMongoClient(f"mongodb://127.0.0.1:{mongo_server.port}/?retryWrites=false", tz_aware=True)
    server: uvicorn.Server | None = None
    task: asyncio.Task | None = None
    try:
        record = QueueRecord(mongo["bench_queue"])
        await record.create_indexes()
        index = HandoffIndex(redis, "bench")
        queue = build_queue(QueueSettings(), _Discard(), record, index)  # type: ignore[arg-type]
        now = datetime.now(UTC)
        for n in SIZES:
            bot = f"bench{n}"
            t0 = time.perf_counter()
            docs = _conversations(bot, n, now)
            for i in range(0, n, MONGO_BATCH):
                await record.conversations.insert_many(docs[i:i + MONGO_BATCH], ordered=False)
            t1 = time.perf_counter()
            await index.rebuild(bot, [Conversation.model_validate(d).row() for d in docs], [])
            t2 = time.perf_counter()
            await record.save_chatbot(ChatbotSettings(chatbot_id=bot, name=f"Bench {n}", timezone="Europe/Berlin"))
            print(f"seeded {n:>7,} open handoffs: Mongo insert_many {t1 - t0:6.1f}s, Redis index {t2 - t1:5.2f}s")
        await queue.chatbots.load()

        app = FastAPI()
        app.state.queue = queue
        app.state.queue_api_token = b"bench-queue-token-0123456789"  # the internal API's service token
        app.include_router(router)
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
        server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
        task = asyncio.create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.02)

        floor = await _timed(redis.ping, samples)
        results: dict[tuple[str, int], tuple[float, float]] = {}
        small_bot, large_bot = (f"bench{n}" for n in SIZES)
        window = stats_window(datetime.now(UTC), "Europe/Berlin")
        for n in SIZES:
            snap = await index.snapshot(f"bench{n}", window, PAGE)
            assert snap.counts.open == n and len(snap.rows) == PAGE, (snap.counts, len(snap.rows))
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10,
                                     headers={"Authorization": "Bearer bench-queue-token-0123456789"}) as http:

            async def api_get(path: str) -> None:
                r = await http.get(path)
                r.raise_for_status()

            measures: dict[str, Callable[[str], Callable[[], Awaitable[object]]]] = {
                "store stats": lambda b: lambda: index.stats(b, window),
                "store stats+first page": lambda b: lambda: index.snapshot(b, window, PAGE),
                "api /stats": lambda b: lambda: api_get(f"/internal/chatbots/{b}/stats"),
                "api /snapshot": lambda b: lambda: api_get(f"/internal/chatbots/{b}/snapshot?limit={PAGE}"),
                "api /handoffs": lambda b: lambda: api_get(f"/internal/chatbots/{b}/handoffs?limit={PAGE}"),
            }
            for name, make in measures.items():
                small, large = await _timed_pair(make(small_bot), make(large_bot), samples)
                results[(name, SIZES[0])], results[(name, SIZES[1])] = small, large

        print(f"\n{samples} samples each, page size {PAGE}; milliseconds")
        print(f"raw Redis round trip (PING): p50 {floor[0]:.3f}  p99 {floor[1]:.3f}")
        print(f"{'measure':<24}{'1k p50':>9}{'1k p99':>9}{'100k p50':>10}{'100k p99':>10}{'ratio p50':>11}{'ratio p99':>11}")
        for name in dict.fromkeys(k for k, _ in results):
            small, large = results[(name, SIZES[0])], results[(name, SIZES[1])]
            print(f"{name:<24}{small[0]:>9.3f}{small[1]:>9.3f}{large[0]:>10.3f}{large[1]:>10.3f}"
                  f"{large[0] / small[0]:>11.2f}{large[1] / small[1]:>11.2f}")
    finally:
        if server is not None and task is not None:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
        await redis.aclose()
        await mongo.close()
        redis_server.stop()
        mongo_server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_queue_index")
    parser.add_argument("--samples", type=int, default=1000)
    asyncio.run(run(parser.parse_args().samples))


if __name__ == "__main__":
    main()
