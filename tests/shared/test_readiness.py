"""Readiness tells the truth about the bus: a service whose topics the broker does not have
(a broker that restarted without its memory, topics never created) is not ready, and the
body names them; once they exist it is ready again."""

from __future__ import annotations

import uuid

import httpx

from services.intake.app import create_app
from services.intake.settings import IntakeSettings
from shared.bus import ensure_topics
from tests.harness import run_in_process, settings_from_env


async def test_missing_topics_make_a_service_unready_and_say_which(isolated):
    prefix = f"bare{uuid.uuid4().hex[:6]}."  # no topic of this prefix exists yet
    settings = settings_from_env(IntakeSettings, isolated.env("intake", KAFKA_TOPIC_PREFIX=prefix))
    async with run_in_process("intake", create_app, settings) as svc, httpx.AsyncClient(base_url=svc.url) as http:
        r = await http.get("/readyz")
        body = r.json()
        assert r.status_code == 503 and body["ready"] is False
        assert body["checks"] == {"broker": True, "topics": False, "consumers": True}
        # What it publishes is missing (what it reads, a broker may create on subscribe).
        assert prefix + "conversation.events" in body["missing_topics"]
        assert set(body["missing_topics"]) <= {prefix + "ai.turns", prefix + "conversation.events"}

        await ensure_topics(isolated.infra.kafka_bootstrap, prefix=prefix)
        r = await http.get("/readyz")
        assert r.status_code == 200 and r.json()["checks"] == {"broker": True, "topics": True, "consumers": True}
        assert "missing_topics" not in r.json()


async def test_an_unreachable_store_is_not_ready_within_the_probe_timeout():
    """A Mongo that does not answer makes readiness say no as soon as the probe gives up, not
    after the client's 5 s server selection (a probe with a 3 s timeout used to see a hang)."""
    import time

    from deploy.infra import free_port
    from shared.settings import ServiceSettings
    from shared.stores import PROBE_TIMEOUT_S, mongo_ready, open_mongo

    client, _ = open_mongo(ServiceSettings(mongodb_uri=f"mongodb://127.0.0.1:{free_port()}/?retryWrites=false"))
    try:
        started = time.monotonic()
        assert await mongo_ready(client) is False
        assert time.monotonic() - started < PROBE_TIMEOUT_S + 1.5
    finally:
        await client.close()
