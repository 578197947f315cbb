"""Reading Prometheus metrics in tests: a service's `/metrics` over HTTP, or this process's
registry (the services under test run in this process), parsed with prometheus_client's own
parser. Every metric is process-wide, so tests compare a series before and after, on labels
of their own (a consumer group, a model name, a chatbot id)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from aiokafka import AIOKafkaProducer
from prometheus_client import REGISTRY, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from shared.events import Envelope
from shared.topics import Topic
from tests.fakes.openai_server import Error, FakeOpenAI, Reply, Slow
from tests.harness import run_in_process, settings_from_env
from tests.support import read_topic

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def local() -> Samples:
    """This process's registry, as /metrics would show it."""
    return parse(generate_latest(REGISTRY).decode())


async def scrape(url: str, token: str | None = None) -> Samples:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(url + "/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return parse(r.text)


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def series(samples: Samples, name: str) -> list[dict[str, str]]:
    """The label sets of every sample called `name`."""
    return [dict(labels) for (n, labels) in samples if n == name]


# A model call the fake server answers after this long, and one it answers with a 500.
SLOW_OK, BROKEN, SLOW_S = "SLOW-OK", "BROKEN", 0.3


async def model_calls(isolated: Any, name: str, create_app: Callable[[Any], Any], settings_cls: type, topic: Topic,
                      events: list[Envelope], out: Topic) -> tuple[Samples, list[dict[str, Any]], str]:
    """A model-using service against the fake OpenAI server (text with SLOW_OK answered after
    SLOW_S, with BROKEN a 500), under a model name of this test only (the model metrics'
    `model` label): `feed_and_scrape`'s samples and records, and that model name."""
    model = f"fake-model-{isolated.tag}"
    async with FakeOpenAI() as fake:
        fake.when(SLOW_OK, Slow(SLOW_S, Reply("Here you are.")))
        fake.when(BROKEN, Error(500))
        env = isolated.env(name, OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY="test-key", OPENAI_MODEL=model,
                           OPENAI_MAX_RETRIES="0", OPENAI_TIMEOUT_S="5")
        samples, records = await feed_and_scrape(name, create_app, settings_from_env(settings_cls, env),
                                                 isolated.topic_prefix, topic, events, out)
    return samples, records, model


async def feed_and_scrape(name: str, create_app: Callable[[Any], Any], settings: Any, prefix: str, topic: Topic,
                          events: list[Envelope], out: Topic) -> tuple[Samples, list[dict[str, Any]]]:
    """Serve the app, write `events` to `topic`, wait for as many records on `out`, then scrape
    the app's /metrics: the samples and the records."""
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        async with run_in_process(name, create_app, settings) as svc:
            for event in events:
                await producer.send_and_wait(prefix + topic.name, event.model_dump_json().encode(),
                                             key=event.partition_key(topic.key))
            records = await read_topic(settings.kafka_bootstrap_servers, prefix + out.name, len(events))
            return await scrape(svc.url), records
    finally:
        await producer.stop()
