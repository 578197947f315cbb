"""Session fixtures: the real infrastructure.

By default the session starts the embedded servers (Tansu broker, redis-server, SecantusDB)
as local processes and stops them at the end. Point at real servers instead with
`TEST_KAFKA_BOOTSTRAP_SERVERS`, `TEST_REDIS_URL`, `MONGODB_URI` (e.g. a real mongod):
each one given is used and not started.

Isolation between tests: every test that builds services gets its own topic prefix,
Mongo database names and Redis key prefix (`isolated` fixture), so nothing leaks between
tests although they share the servers.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.infra import Server, free_port, start_kafka, start_mongo, start_redis
from shared.bus import ensure_topics

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts"


@dataclass
class InfraEndpoints:
    kafka_bootstrap: str
    redis_url: str
    mongodb_uri: str


# Debian's Chromium, driven by Playwright (never `playwright install`); without the
# background-networking flags it keeps dialling out on a machine with no network.
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
async def browser():
    """One headless Chromium for the session (dashboard and widget tests share it)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        chromium = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            await chromium.close()


@pytest.fixture(scope="session")
def infra(tmp_path_factory: pytest.TempPathFactory):
    log_dir = tmp_path_factory.mktemp("infra-logs")
    started: list[Server] = []
    try:
        kafka = os.environ.get("TEST_KAFKA_BOOTSTRAP_SERVERS")
        if not kafka:
            started.append(start_kafka(free_port(), log_dir))
            kafka = f"127.0.0.1:{started[-1].port}"
        redis_url = os.environ.get("TEST_REDIS_URL")
        if not redis_url:
            started.append(start_redis(free_port(), log_dir))
            redis_url = f"redis://127.0.0.1:{started[-1].port}/0"
        mongodb_uri = os.environ.get("MONGODB_URI")
        if not mongodb_uri:
            started.append(start_mongo(free_port(), log_dir))
            mongodb_uri = f"mongodb://127.0.0.1:{started[-1].port}/?retryWrites=false"
        yield InfraEndpoints(kafka, redis_url, mongodb_uri)
    finally:
        for s in started:
            s.stop()


@dataclass
class Isolated:
    """Per-test names on the shared servers, and the environment services read them from."""

    infra: InfraEndpoints
    tag: str

    @property
    def topic_prefix(self) -> str:
        return f"t{self.tag}."

    def mongodb_db(self, service: str) -> str:
        return f"t{self.tag}_{service}"

    def redis_prefix(self, service: str) -> str:
        return f"t{self.tag}:{service}"

    def env(self, service: str, **extra: str) -> dict[str, str]:
        """Environment variables for one service process / settings object."""
        return {
            "SERVICE_NAME": service,
            "KAFKA_BOOTSTRAP_SERVERS": self.infra.kafka_bootstrap,
            "KAFKA_ENABLE_IDEMPOTENCE": "false",
            "KAFKA_TOPIC_PREFIX": self.topic_prefix,
            "KAFKA_FETCH_MAX_WAIT_MS": "20",
            "KAFKA_SESSION_TIMEOUT_MS": "3000",
            "KAFKA_HEARTBEAT_INTERVAL_MS": "500",
            "KAFKA_RETRY_BACKOFF_S": "0.05",
            "MONGODB_URI": self.infra.mongodb_uri,
            "MONGODB_DB": self.mongodb_db(service),
            "REDIS_URL": self.infra.redis_url,
            "REDIS_PREFIX": self.redis_prefix(service),
            "LOG_JSON": "false",
            # The queue's service token, shared by the queue and the gateways of this test.
            "QUEUE_API_TOKEN": self.queue_api_token,
            **extra,
        }

    @property
    def queue_api_token(self) -> str:
        return f"test-queue-token-{self.tag}"


@pytest.fixture
async def isolated(infra: InfraEndpoints) -> Isolated:
    iso = Isolated(infra, uuid.uuid4().hex[:8])
    await ensure_topics(infra.kafka_bootstrap, prefix=iso.topic_prefix)
    return iso
