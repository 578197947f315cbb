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
