"""Every service's `/metrics` (shared.metrics, served by ServiceRuntime) and the bus's metrics
(shared/bus/metrics.py), against the real broker: HTTP requests timed by route template, the
metrics token, records handled / failed / dead-lettered, the handling time and the lag."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import httpx
from aiokafka import AIOKafkaProducer
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from shared.bus import Bus
from shared.events import VISITOR_EVENT, VisitorIdentity, VisitorMessageReceived
from shared.ids import new_id
from shared.metrics import UNAUTHORIZED
from shared.service import ServiceRuntime
from shared.settings import ServiceSettings
from shared.topics import VISITOR_MESSAGES
from tests.harness import run_in_process, settings_from_env
from tests.metrics_support import local, scrape, series, value
from tests.support import eventually, read_topic

TOKEN = "metrics-token-" + uuid.uuid4().hex
HTTP = "handoff_http_request_duration_seconds_count"


class _Refuse:
    """Middleware added after the runtime built the app (as channels adds its body limit):
    answers 418 to a request with `x-refuse`, before any route runs."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and any(k == b"x-refuse" for k, _ in scope["headers"]):
            await PlainTextResponse("no", 418)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _app(settings: ServiceSettings):
    runtime = ServiceRuntime(settings, name="metricstest", stateless=True)

    @runtime.app.get("/things/{thing_id}")
    async def thing(thing_id: str) -> dict:
        return {"thing": thing_id}

    @runtime.app.get("/boom")
    async def boom() -> dict:
        raise RuntimeError("a bug")

    runtime.app.add_middleware(_Refuse)
    return runtime.app


async def test_requests_are_timed_by_route_template_and_the_token_guards_metrics(isolated):
    settings = settings_from_env(ServiceSettings, isolated.env("metricstest", METRICS_TOKEN=TOKEN))
    async with run_in_process("metricstest", _app, settings) as svc, httpx.AsyncClient(base_url=svc.url) as http:
        refused = await http.get("/metrics")
        assert refused.status_code == 401 and refused.json() == {"detail": UNAUTHORIZED}
        assert refused.headers["www-authenticate"] == "Bearer"
        assert (await http.get("/metrics", headers={"Authorization": "Bearer wrong-" + TOKEN})).status_code == 401
        assert (await http.get("/metrics", headers={"Authorization": TOKEN})).status_code == 401  # no scheme

        before = await scrape(svc.url, TOKEN)
        assert (await http.get("/things/a1")).status_code == 200
        assert (await http.get("/things/b2")).status_code == 200
        assert (await http.get("/things/c3", headers={"x-refuse": "1"})).status_code == 418
        assert (await http.get("/no/such/path-" + new_id())).status_code == 404
        assert (await http.get("/boom")).status_code == 500
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.request("PROPFIND", "/things/d4")).status_code == 405
        after = await scrape(svc.url, TOKEN)

    def delta(route: str, status: str) -> float:
        return value(after, HTTP, route=route, method="GET", status=status) - value(before, HTTP, route=route,
                                                                                   method="GET", status=status)

    assert delta("/things/{thing_id}", "2xx") == 2
    assert delta("/things/{thing_id}", "4xx") == 1  # answered by a middleware, counted under its route
    assert delta("<unmatched>", "4xx") == 1
    assert delta("/boom", "5xx") == 1
    assert delta("/healthz", "2xx") == 1
    assert value(after, HTTP, route="/things/{thing_id}", method="other", status="4xx") >= 1
    assert not any(s["method"] == "PROPFIND" for s in series(after, HTTP))  # unusual methods are "other"
    routes = {s["route"] for s in series(after, HTTP)}
    assert not any(r.startswith(("/things/a", "/things/b", "/no/such")) for r in routes)  # never a raw path
    assert "/metrics" not in routes  # the scrapes themselves are not counted


async def test_metrics_are_open_without_a_token(isolated):
    settings = settings_from_env(ServiceSettings, isolated.env("metricstest"))
    assert settings.metrics_token == ""
    async with run_in_process("metricstest", _app, settings) as svc, httpx.AsyncClient(base_url=svc.url) as http:
        assert (await http.get("/things/open")).status_code == 200
        samples = await scrape(svc.url)
    assert value(samples, HTTP, route="/things/{thing_id}", method="GET", status="2xx") >= 1


def _message(conv: str, text: str) -> VisitorMessageReceived:
    return VisitorMessageReceived(chatbot_id="bot1", conversation_id=conv, channel="web",
                                  visitor=VisitorIdentity(external_id="v1"), text=text, channel_message_id=new_id())


@contextlib.asynccontextmanager
async def _bus(isolated, handler, group: str):
    settings = ServiceSettings(**{k.lower(): v for k, v in isolated.env("metricsbus").items()})
    bus = Bus(settings, client_id="metricsbus")
    bus.consume(VISITOR_MESSAGES, VISITOR_EVENT, handler, group_id=group, dedupe=False)
    publisher = bus.publisher(VISITOR_MESSAGES)
    raw = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await raw.start()
    try:
        yield bus, publisher, raw, settings
    finally:
        await raw.stop()
        await bus.broker.stop()


async def test_consumed_records_are_counted_timed_and_dead_lettered(isolated):
    group = f"metrics-{isolated.tag}"
    seen: list[str] = []

    async def on_event(event: VisitorMessageReceived) -> None:
        if event.text == "poison":
            raise RuntimeError("boom")
        await asyncio.sleep(0.05)
        seen.append(event.text)

    labels = {"topic": VISITOR_MESSAGES.name, "group": group}
    async with _bus(isolated, on_event, group) as (bus, publisher, raw, settings):
        await bus.broker.start()
        await publisher.publish(_message("c1", "hello"))
        await raw.send_and_wait(isolated.topic_prefix + VISITOR_MESSAGES.name, b'{"not": "an event"}', key=b"c1")
        await publisher.publish(_message("c1", "poison"))
        await publisher.publish(_message("c1", "after"))
        await eventually(lambda: asyncio.sleep(0, result="after" in seen), timeout=20)
        await read_topic(settings.kafka_bootstrap_servers, isolated.topic_prefix + VISITOR_MESSAGES.dlq, 2)

        async def committed() -> bool:
            lag = [s for s in series(local(), "handoff_bus_consumer_lag") if s["group"] == group]
            return bool(lag) and all(value(local(), "handoff_bus_consumer_lag", **s) == 0 for s in lag)

        await eventually(committed, timeout=20)
        samples = local()

    assert value(samples, "handoff_bus_records_handled_total", **labels) == 2
    assert value(samples, "handoff_bus_handler_failures_total", **labels) == settings.kafka_handler_attempts
    assert value(samples, "handoff_bus_records_dead_lettered_total", **labels, reason="invalid") == 1
    assert value(samples, "handoff_bus_records_dead_lettered_total", **labels, reason="handler_failed") == 1
    assert value(samples, "handoff_bus_handle_duration_seconds_count", **labels) == 2
    assert value(samples, "handoff_bus_handle_duration_seconds_sum", **labels) >= 0.1  # two 50 ms handlers
    assert value(samples, "handoff_bus_handle_duration_seconds_bucket", **labels, le="0.025") == 0


async def test_lag_shows_a_backlog_and_goes_to_zero_once_it_is_handled(isolated):
    group = f"lag-{isolated.tag}"
    release = asyncio.Event()
    handled: list[str] = []

    async def on_event(event: VisitorMessageReceived) -> None:
        await release.wait()
        handled.append(event.text)

    def lag() -> float:
        samples = local()
        return sum(value(samples, "handoff_bus_consumer_lag", **s) for s in series(samples, "handoff_bus_consumer_lag")
                   if s["group"] == group and s["topic"] == VISITOR_MESSAGES.name)

    async with _bus(isolated, on_event, group) as (bus, _, raw, _settings):
        for i in range(5):  # one conversation: one partition, handled one after another
            await raw.send_and_wait(isolated.topic_prefix + VISITOR_MESSAGES.name,
                                    _message("c-lag", f"m{i}").model_dump_json().encode(), key=b"c-lag")
        await bus.broker.start()
        # The first record is with the handler (blocked): the four behind it are the lag.
        await eventually(lambda: asyncio.sleep(0, result=lag() == 4), timeout=20)
        release.set()
        await eventually(lambda: asyncio.sleep(0, result=len(handled) == 5), timeout=20)
        await eventually(lambda: asyncio.sleep(0, result=lag() == 0), timeout=20)
