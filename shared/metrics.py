"""Prometheus metrics: `/metrics` on every service's HTTP port, and the HTTP request histogram.

Every metric lives in prometheus_client's default `REGISTRY`, so any module defines its own
with plain prometheus_client objects (named `handoff_…`, defined once at import in the
module that owns what they count: `shared/bus/metrics.py`, `shared/llm.py`,
`services/<name>/metrics.py`). No series carries a service label: the scraper's target
labels (job, pod) tell the services apart. The metric list: docs/contracts.md, "Metrics".

`METRICS_TOKEN` (shared settings): when set, `/metrics` answers only a request with
`Authorization: Bearer <token>` (gateway and channels face the internet); empty, it is open.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, Histogram, generate_latest
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("handoff.metrics")

METRICS_PATH = "/metrics"
# A scrape waits this long at most for a hook refreshing a gauge (e.g. the queue's open
# handoffs from Redis); a slow store must not make the scrape itself time out.
SCRAPE_HOOK_TIMEOUT_S = 2.0
UNAUTHORIZED = "The metrics need the metrics token (Authorization: Bearer <METRICS_TOKEN>)."

HTTP_REQUEST_SECONDS = Histogram(
    "handoff_http_request_duration_seconds",
    "HTTP requests served, by route template (never the raw path), method and status class.",
    ["route", "method", "status"],
)
# A path no route matched: one series for all of them, whatever a scanner asks for.
UNMATCHED = "<unmatched>"
# Methods a client may invent: anything else is counted as "other" (no series per invention).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _status_class(status: int) -> str:
    return f"{status // 100}xx"


class HttpMetrics:
    """Times every HTTP request (websockets aside) and counts it by its route's template.
    The outermost layer of the app (`ServiceApp`), so answers of other middleware (413 of a
    body limit, CORS preflights, a 500 of an unhandled error) are counted too. `/metrics`
    itself is not: a scraper would measure mostly itself."""

    def __init__(self, app: ASGIApp, routes: list[BaseRoute]) -> None:
        self.app = app
        self.routes = routes
        # (route, method, status class) -> the histogram's child: one dict lookup per
        # request instead of prometheus_client's label validation and lock.
        self._children: dict[tuple[str, str, str], Any] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == METRICS_PATH:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an error that escapes before an answer started

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            # The router writes the matched route into the same scope dict.
            route = getattr(scope.get("route"), "path", None) or self._template(scope)
            method = scope["method"] if scope["method"] in METHODS else "other"
            key = (route, method, _status_class(status))
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = HTTP_REQUEST_SECONDS.labels(*key)
            child.observe(time.perf_counter() - started)

    def _template(self, scope: Scope) -> str:
        """The route a request answered before routing (a body limit's 413) was meant for."""
        for route in self.routes:
            if route.matches(scope)[0] is not Match.NONE:
                return getattr(route, "path", UNMATCHED)
        return UNMATCHED


class ServiceApp(FastAPI):
    """FastAPI with `HttpMetrics` around everything, however much middleware a service adds
    after the runtime built the app (FastAPI would put later middleware outside it)."""

    def build_middleware_stack(self) -> ASGIApp:
        return HttpMetrics(super().build_middleware_stack(), self.router.routes)


def _authorized(request: Request, token: str) -> bool:
    if not token:
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def add_metrics_route(app: FastAPI, token: str, hooks: list[Callable[[], Awaitable[Any]]]) -> None:
    """`GET /metrics`: the default registry in Prometheus' text format, after the `hooks`
    (each bounded by SCRAPE_HOOK_TIMEOUT_S; one that fails leaves its gauges as they were)."""

    @app.get(METRICS_PATH, tags=["health"], summary="Prometheus metrics", include_in_schema=False)
    async def metrics(request: Request) -> Response:
        if not _authorized(request, token):
            return JSONResponse({"detail": UNAUTHORIZED}, 401, headers={"WWW-Authenticate": "Bearer"})
        for hook in hooks:
            try:
                await asyncio.wait_for(hook(), SCRAPE_HOOK_TIMEOUT_S)
            except Exception as exc:  # noqa: BLE001 - a scrape shows what it has
                log.warning("metrics hook %s failed: %r", getattr(hook, "__qualname__", hook), exc)
        return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
