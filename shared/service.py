"""The shape every service has: a FastAPI app (health, readiness and whatever HTTP the
service serves) whose lifespan opens the stores and runs the service's FastStream broker.

A service's `app.py` is its composition root: it builds a `ServiceRuntime`, wires its
domain objects and handlers onto it, and returns `runtime.app`. `python -m services.<name>`
serves it with uvicorn.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response

from pydantic import TypeAdapter

from shared.bus import Bus, read_table
from shared.topics import Topic
from shared.logging import configure_logging
from shared.metrics import ServiceApp, add_metrics_route
from shared.settings import ServiceSettings
from shared.stores import ProcessedEvents, mongo_ready, open_mongo, open_redis, redis_ready

log = logging.getLogger("handoff.service")

Hook = Callable[[], Awaitable[Any]]

# Young objects a process may allocate (net) before the collector looks at them. Python's
# default, 700, collects while a busy loop's short-lived objects (a frame in flight to a
# thousand sockets) are still alive, promotes them, and so runs a full collection every few
# seconds: 70-200 ms with every socket and consumer stalled (bench/bench_fanout.py saw them
# as its p99). At 10,000 they are mostly gone by the time it looks; a young pass stays ~1 ms.
YOUNG_GC_THRESHOLD = 10_000


def install_request_error_handler(app: FastAPI) -> None:
    """422 for a request that does not validate, FastAPI's shape, as ASCII-escaped JSON.
    FastAPI's own answer repeats the input, and a lone surrogate in it (valid JSON: "\\ud800")
    cannot be encoded as UTF-8: the answer to bad input would be a 500."""

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, exc: RequestValidationError) -> Response:
        body = json.dumps({"detail": jsonable_encoder(exc.errors())}, ensure_ascii=True)
        return Response(body, 422, media_type="application/json")


class ServiceRuntime:
    """`stateless=True`: a service that owns no data (intake) opens neither Mongo nor Redis,
    skips the processed-events check (its consumers of it dedupe what it publishes) and is
    ready when the broker answers."""

    def __init__(self, settings: ServiceSettings, *, name: str, title: str | None = None,
                 stateless: bool = False) -> None:
        self.settings = settings
        self.name = name
        self.stateless = stateless
        self.startup_hooks: list[Hook] = []
        if not stateless:
            self.mongo_client, self.db = open_mongo(settings)
            self.redis = open_redis(settings)
            self.processed: ProcessedEvents | None = ProcessedEvents(self.db)
            self.startup_hooks.append(self.processed.create_indexes)
        else:
            self.processed = None
        self.bus = Bus(settings, client_id=f"handoff-{name}", processed=self.processed)
        # Run after the broker started (e.g. warm-up that publishes).
        self.started_hooks: list[Hook] = []
        # Run in reverse order after in-flight handlers finished and the broker stopped.
        self.shutdown_hooks: list[Hook] = []
        # Run after the bus recovered from a broker that lost its topics (consumers already
        # restarted on the recreated ones), e.g. republish a table the broker lost.
        self.recovered_hooks: list[Hook] = self.bus.recovered_hooks
        # Extra readiness facts, e.g. {"mode": "offline"}; a callable may add more.
        self.health_details: dict[str, Callable[[], Any]] = {}
        # Each consumer group's share in this process: replicas of a service show how they split it.
        self.health_details["consumer_groups"] = lambda: {h.group: h.share() for h in self.bus.consumers if h.group}
        doorbell = self.bus.doorbell
        if doorbell is not None:  # whether idle consumers can sleep until rung (else: long fetch waits)
            self.health_details["doorbell"] = lambda: {"listening": doorbell.listening}
        # Run before every /metrics answer, to refresh gauges read from a store (bounded).
        self.metrics_hooks: list[Hook] = []
        # HTTP requests are timed by route template around every middleware (shared.metrics).
        self.app = ServiceApp(title=title or f"Handoff {name}", lifespan=self._lifespan)
        self.app.state.runtime = self
        install_request_error_handler(self.app)
        self._add_health_routes()
        add_metrics_route(self.app, settings.metrics_token, self.metrics_hooks)

    @contextlib.asynccontextmanager
    async def _lifespan(self, app: FastAPI) -> AsyncIterator[None]:
        for hook in self.startup_hooks:
            await hook()
        await self.bus.start()
        for hook in self.started_hooks:
            await hook()
        log.info("%s started", self.name)
        try:
            yield
        finally:
            # In-flight handlers finish first (up to the graceful timeout), while everything
            # they use is still open; only then do the hooks close clients and tasks.
            await self.bus.stop(self.settings.kafka_graceful_timeout_s)
            for hook in reversed(self.shutdown_hooks):
                with contextlib.suppress(Exception):
                    await hook()
            if not self.stateless:
                await self.redis.aclose()
                await self.mongo_client.close()
            log.info("%s stopped", self.name)

    def every(self, name: str, interval_s: float, work: Hook) -> None:
        """Run `work` every `interval_s` seconds from start-up (broker running) to shutdown; a
        failed round is logged and the next one runs as usual (e.g. Mongo briefly away)."""
        task: asyncio.Task | None = None

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval_s)
                try:
                    await work()
                except Exception:  # noqa: BLE001
                    log.exception("%s failed; trying again in %.0fs", name, interval_s)

        async def start() -> None:
            nonlocal task
            task = asyncio.create_task(loop(), name=name)

        async def stop() -> None:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        self.started_hooks.append(start)
        self.shutdown_hooks.append(stop)

    def replicate(self, topic: Topic, adapter: TypeAdapter[Any], apply: Callable[[Any], Any],
                  *, timeout: float = 10.0, owner: bool = False) -> None:
        """Keep a replica of a table topic (e.g. `chatbot.settings`) in this process: every
        instance reads all of it, without a consumer group.

        At start-up, before the broker's consumers start and before HTTP is served, the topic
        is read to its end (bounded by `timeout`), so the first message or request after a
        restart sees every record rather than defaults; then a live consumer applies every
        change, from the beginning again, so nothing between the two reads is missed.
        `apply(event)` (sync or async) must therefore be idempotent. After the bus recovered
        from a broker that lost the table, the live consumer reads the recreated topic from its
        beginning again (what the owner republishes).

        `owner=True`: the table's owner, which loads its own record at start-up (the topic
        may lag it), only follows the changes other instances publish from now on."""

        async def apply_one(event: Any) -> None:
            result = apply(event)
            if inspect.isawaitable(result):
                await result

        async def preload() -> None:
            try:
                count = await asyncio.wait_for(read_table(self.settings, topic, adapter, apply_one), timeout)
                log.info("%s read to its end (%d records)", topic.name, count)
            except Exception as exc:  # noqa: BLE001 - the live consumer fills the table anyway
                log.warning("could not read %s to its end (%r); the live consumer continues", topic.name, exc)

        if not owner:
            self.startup_hooks.append(preload)
        self.bus.consume(topic, adapter, apply_one, group_id=None, from_beginning=not owner,
                         fetch_max_wait_ms=self.settings.kafka_table_fetch_max_wait_ms)

    async def readiness(self) -> dict[str, Any]:
        """Ready when the broker answers and has every topic this service uses, its consumers
        can fetch, commit and handle (`Bus.consumer_problems`), and its stores answer; the body
        says which check failed, which topics are missing, what stops the consumers."""
        probes: dict[str, Awaitable[Any]] = {"broker": self.bus.broker.ping(timeout=2.0),
                                             "topics": self._missing_topics()}
        if not self.stateless:
            probes |= {"mongo": mongo_ready(self.mongo_client), "redis": redis_ready(self.redis)}
        results = dict(zip(probes, await asyncio.gather(*probes.values()), strict=True))
        missing = results.pop("topics")
        problems = self.bus.consumer_problems()
        checks = {name: bool(ok) for name, ok in results.items()} | {"topics": missing == [],
                                                                      "consumers": not problems}
        body: dict[str, Any] = {"service": self.name, "ready": all(checks.values()), "checks": checks}
        if missing:
            body["missing_topics"] = missing
        if problems:
            body["consumer_problems"] = problems
        return body | {k: f() for k, f in self.health_details.items()}

    async def _missing_topics(self) -> list[str] | None:
        """None when the broker could not be asked (the broker check says why)."""
        try:
            return await asyncio.wait_for(self.bus.missing_topics(), 3.0)
        except Exception as exc:  # noqa: BLE001 - readiness is a yes/no question
            log.warning("could not list the broker's topics: %r", exc)
            return None

    def _add_health_routes(self) -> None:
        @self.app.get("/healthz", tags=["health"], summary="Liveness: the process answers")
        async def healthz() -> dict[str, Any]:
            return {"service": self.name, "alive": True, **{k: f() for k, f in self.health_details.items()}}

        @self.app.get("/readyz", tags=["health"], summary="Readiness: broker, topics, consumers and stores work")
        async def readyz() -> JSONResponse:
            body = await self.readiness()
            return JSONResponse(body, status_code=200 if body["ready"] else 503)


def settle_heap() -> None:
    """Once the process has imported and built what it keeps for life: move all of it out
    of the collector's sight (full collections then scan only what the service allocates
    while it runs, a fraction) and let young objects die before they are looked at."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(YOUNG_GC_THRESHOLD, *gc.get_threshold()[1:])


class QuietServer(uvicorn.Server):
    """uvicorn's main loop wakes ten times a second to see whether it should stop, which is
    most of what an idle service does. This one wakes once a second (the resolution of the
    Date header it refreshes) and at once when a stop signal comes."""

    _stop: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864000  # uvicorn refreshes the Date header on multiples of 10
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), 1.0)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        super().handle_exit(sig, frame)
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)


def serve(app_factory: Callable[[ServiceSettings], FastAPI], settings: ServiceSettings, *,
          ws_max_size: int = 64 * 1024) -> None:
    configure_logging(settings.service_name, settings.log_level, settings.log_json)
    app = app_factory(settings)
    settle_heap()  # the serving process only: tests that build apps in-process keep their collector
    config = uvicorn.Config(
        app,
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        access_log=False,
        lifespan="on",
        ws="websockets-sansio",
        # No service's socket takes more than small JSON frames: a bigger one closes the socket
        # (1009) before it is buffered (uvicorn's default reads up to 16 MiB).
        ws_max_size=ws_max_size,
        # The client address is the peer's. uvicorn would otherwise take X-Forwarded-For from
        # any peer on 127.0.0.1 (every browser of a local stack): per-IP limits believe it
        # only from configured proxies (TRUSTED_PROXIES, shared.ratelimit.client_address).
        proxy_headers=False,
    )
    QuietServer(config).run()
