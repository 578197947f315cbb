"""The summarizer against the real broker and Mongo-wire server, with the real openai
client talking to the fake OpenAI server: LLM and extractive summaries, idempotency per
handoff, slow / rate-limited / failing models, resuming after a restart, the DLQ."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx
from aiokafka import AIOKafkaProducer

from services.summarizer.app import create_app
from services.summarizer.settings import SummarizerSettings
from shared.events import ConversationStateChanged, TranscriptLine, VisitorIdentity
from shared.views import Contact
from shared.ids import new_id
from shared.stores import open_mongo
from tests.fakes.openai_server import Error, FakeOpenAI, Reply, Slow
from tests.harness import run_in_process, settings_from_env
from tests.intake.watch import TopicWatcher

TOPICS = ("handoff.summaries", "conversation.state.dlq")


def handoff(marker: str, *, handoff_id: str | None = None, transition: str = "handoff",
            event_id: str | None = None) -> ConversationStateChanged:
    now = datetime.now(UTC)
    return ConversationStateChanged(
        event_id=event_id or new_id(), chatbot_id="bot", conversation_id="cv_" + marker,
        transition=transition, status="handed_off", previous_status="active", channel="web",
        visitor=VisitorIdentity(external_id="v-" + marker), handoff_id=handoff_id or "h_" + marker,
        reason="Topic is a refund", by="ai", contact=Contact(email=f"{marker.lower()}@example.com"),
        transcript=[TranscriptLine(sender="visitor", text=f"Where is my order? {marker}", at=now),
                    TranscriptLine(sender="ai", text="Let me check.", at=now),
                    TranscriptLine(sender="visitor", text="I want a refund", at=now)])


async def send(producer: AIOKafkaProducer, prefix: str, event: ConversationStateChanged) -> None:
    await producer.send_and_wait(prefix + "conversation.state", event.model_dump_json().encode(),
                                 key=event.partition_key())


async def test_summaries_with_a_model_that_works_is_slow_rate_limits_and_fails(isolated):
    prefix = isolated.topic_prefix
    producer = AIOKafkaProducer(bootstrap_servers=isolated.infra.kafka_bootstrap)
    await producer.start()
    try:
        async with FakeOpenAI() as fake, TopicWatcher(isolated.infra.kafka_bootstrap, prefix, *TOPICS) as w:
            fake.when("OK-MARK", Reply("Visitor wants a refund for a missing order."))
            fake.when("DUP-MARK", Reply("Summary of the duplicate."))
            fake.when("SLOW-MARK", Slow(20, Reply("too late")))
            fake.when("RATE-MARK", Error(429, retry_after=0.1, message="rate limited"), Reply("After the rate limit."))
            fake.when("FAIL-MARK", Error(500))
            fake.when("FAST-MARK", Reply("Fast summary."))
            settings = settings_from_env(SummarizerSettings, isolated.env(
                "summarizer", OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY="k", OPENAI_TIMEOUT_S="2",
                OPENAI_MAX_RETRIES="1", SUMMARY_CONCURRENCY="2", SUMMARY_MAX_TOKENS="120"))
            async with run_in_process("summarizer", create_app, settings) as svc:
                async with httpx.AsyncClient(base_url=svc.url) as http:
                    assert (await http.get("/healthz")).json()["ai_mode"] == "llm"

                # The slow one first: it must not hold up the ones after it.
                await send(producer, prefix, handoff("SLOW-MARK"))
                await send(producer, prefix, handoff("FAST-MARK"))
                await send(producer, prefix, handoff("OK-MARK"))
                dup = handoff("DUP-MARK")
                await send(producer, prefix, dup)
                await send(producer, prefix, dup)  # the same event redelivered
                await send(producer, prefix, handoff("DUP-MARK"))  # another event, the same handoff
                await send(producer, prefix, handoff("RATE-MARK"))
                await send(producer, prefix, handoff("FAIL-MARK"))
                await send(producer, prefix, handoff("CLOSE-MARK", transition="close"))
                bad = handoff("NOID-MARK").model_dump(mode="json") | {"handoff_id": None}
                await producer.send_and_wait(prefix + "conversation.state", ConversationStateChanged.model_validate(
                    bad).model_dump_json().encode(), key=b"cv_NOID")
                await producer.send_and_wait(prefix + "conversation.state", b'{"type": "nonsense"}', key=b"x")

                summaries = await w.wait_for("handoff.summaries", count=6, timeout=30)
                by_id = {s["handoff_id"]: s for s in summaries}
                assert by_id["h_OK-MARK"]["text"] == "Visitor wants a refund for a missing order."
                assert by_id["h_OK-MARK"]["mode"] == "llm" and by_id["h_OK-MARK"]["status"] == "ready"
                assert by_id["h_OK-MARK"]["conversation_id"] == "cv_OK-MARK"
                assert by_id["h_FAST-MARK"]["text"] == "Fast summary."
                assert by_id["h_RATE-MARK"]["text"] == "After the rate limit." and by_id["h_RATE-MARK"]["mode"] == "llm"
                assert len(fake.requests_containing("RATE-MARK")) == 2  # 429, then the retry
                for failed in ("h_SLOW-MARK", "h_FAIL-MARK"):
                    assert by_id[failed]["status"] == "ready" and by_id[failed]["mode"] == "extractive"
                    assert by_id[failed]["text"].startswith("Handed off: Topic is a refund.")
                assert "fail-mark@example.com" in by_id["h_FAIL-MARK"]["text"]
                # The slow model did not block the handoffs behind it.
                order = [s["handoff_id"] for s in summaries]
                assert order.index("h_FAST-MARK") < order.index("h_SLOW-MARK")
                assert order.index("h_OK-MARK") < order.index("h_SLOW-MARK")

                # The prompt: capped tokens, the transcript and the reason.
                [ok_request] = fake.requests_containing("OK-MARK")
                assert ok_request["max_tokens"] == 120
                assert "Handoff reason: Topic is a refund" in ok_request["messages"][1]["content"]

                # Malformed events are parked; the close transition is ignored.
                parked = await w.wait_for("conversation.state.dlq", count=2, timeout=20)
                assert sorted(p["error_kind"] for p in parked) == ["handler_failed", "invalid"]
                assert any("handoff_id" in p["error"] for p in parked)

                # Idempotent per handoff: one model call and one summary for DUP-MARK.
                assert len(fake.requests_containing("DUP-MARK")) == 1
                assert len(w.of("handoff.summaries", handoff_id="h_DUP-MARK")) == 1
                assert "h_CLOSE-MARK" not in by_id and len(summaries) == 6

                client, db = open_mongo(settings)
                try:
                    stored = await db["summaries"].find_one({"_id": "h_OK-MARK"})
                    assert stored["state"] == "done" and stored["text"] == by_id["h_OK-MARK"]["text"]
                finally:
                    await client.close()
    finally:
        await producer.stop()


async def test_pending_jobs_resume_after_a_restart_and_offline_mode_is_extractive(isolated):
    prefix = isolated.topic_prefix
    producer = AIOKafkaProducer(bootstrap_servers=isolated.infra.kafka_bootstrap)
    await producer.start()
    try:
        async with FakeOpenAI() as fake, TopicWatcher(isolated.infra.kafka_bootstrap, prefix, *TOPICS) as w:
            fake.when("RESUME-MARK", Slow(30, Reply("never")))
            llm_env = isolated.env("summarizer", OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY="k",
                                   OPENAI_TIMEOUT_S="60", OPENAI_MAX_RETRIES="0")
            async with run_in_process("summarizer", create_app, settings_from_env(SummarizerSettings, llm_env)):
                await send(producer, prefix, handoff("RESUME-MARK"))
                # The job is running (the model was called); the process stops before it ends.
                await w.wait_until(lambda: bool(fake.requests_containing("RESUME-MARK")))
            assert w.of("handoff.summaries") == []

            # The next process has no model: it resumes the pending job from Mongo (the
            # event itself was already committed) and writes an extractive summary.
            offline = settings_from_env(SummarizerSettings, isolated.env("summarizer"))
            async with run_in_process("summarizer", create_app, offline) as svc:
                async with httpx.AsyncClient(base_url=svc.url) as http:
                    assert (await http.get("/readyz")).json()["ai_mode"] == "offline"
                [resumed] = await w.wait_for("handoff.summaries", handoff_id="h_RESUME-MARK", timeout=20)
                assert resumed["mode"] == "extractive" and resumed["status"] == "ready"
                assert 'Visitor first asked: "Where is my order? RESUME-MARK"' in resumed["text"]
                assert 'Latest message: "I want a refund"' in resumed["text"]

                await send(producer, prefix, handoff("OFFLINE-MARK"))
                [offline_summary] = await w.wait_for("handoff.summaries", handoff_id="h_OFFLINE-MARK")
                assert offline_summary["mode"] == "extractive"
                assert "offline-mark@example.com" in offline_summary["text"]

                # Nothing to summarize (no reason, no visitor words, no contact): unavailable.
                empty = handoff("EMPTY-MARK").model_copy(update={
                    "reason": None, "contact": Contact(),
                    "transcript": [TranscriptLine(sender="ai", text="Hi!", at=datetime.now(UTC))]})
                await send(producer, prefix, empty)
                [unavailable] = await w.wait_for("handoff.summaries", handoff_id="h_EMPTY-MARK")
                assert unavailable["status"] == "unavailable" and unavailable["text"] is None
            assert len(fake.requests_containing("RESUME-MARK")) == 1
    finally:
        await producer.stop()
