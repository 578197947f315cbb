"""Keeping a summary current, against the real broker and Mongo-wire server, with the real
openai client talking to the fake OpenAI server: the messages since the handoff and an agent's
Refresh come on conversation.state (as the queue publishes them); refreshes are incremental
(the previous summary and only the new messages go to the model), show in flight, keep the
summary when the model fails, and work offline (extractive) and by the clock too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from aiokafka import AIOKafkaProducer

from services.summarizer.app import create_app
from services.summarizer.settings import SummarizerSettings
from shared.events import (
    AgentRef,
    ConversationMessageAdded,
    ConversationStateChanged,
    SummaryRefreshRequested,
    TranscriptLine,
)
from shared.ids import new_id
from tests.fakes.openai_server import Error, FakeOpenAI, Reply, Slow
from tests.harness import run_in_process, settings_from_env
from tests.intake.watch import TopicWatcher
from tests.summarizer.test_integration import handoff, send

T0 = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
ANN = AgentRef(agent_id="a1", display_name="Ann")


@pytest.fixture
async def producer(isolated):
    """What the queue writes to conversation.state, written by the test."""
    writer = AIOKafkaProducer(bootstrap_servers=isolated.infra.kafka_bootstrap)
    await writer.start()
    yield writer
    await writer.stop()


def said(marker: str, sender: str, text: str, n: int, at: datetime | None = None) -> ConversationMessageAdded:
    """The queue's news of the `n`-th message since the handoff (now, unless `at`)."""
    return ConversationMessageAdded(
        event_id=f"line-{marker}-{n}", chatbot_id="bot", conversation_id="cv_" + marker, handoff_id="h_" + marker,
        message_id=f"m-{marker}-{n}", line=TranscriptLine(sender=sender, text=text, at=at or datetime.now(UTC),
                                                          sender_name="Ann" if sender == "agent" else None))


def refresh(marker: str) -> SummaryRefreshRequested:
    return SummaryRefreshRequested(chatbot_id="bot", conversation_id="cv_" + marker, handoff_id="h_" + marker,
                                   command_id=new_id(), agent=ANN)


def transition(marker: str, name: str) -> ConversationStateChanged:
    return handoff(marker).model_copy(update={"event_id": new_id(), "transition": name, "transcript": []})


async def test_refreshes_with_a_model_are_incremental_show_in_flight_and_keep_the_summary_on_failure(isolated, producer):
    prefix = isolated.topic_prefix
    async with FakeOpenAI() as fake, TopicWatcher(isolated.infra.kafka_bootstrap, prefix,
                                                  "handoff.summaries") as w:
        fake.when("Handoff reason", Reply("First recap."))
        fake.when("AUTO-MARK", Reply("Second recap: the order was found."))
        fake.when("FAIL-MARK", Slow(1, Error(500)), Reply("Recap after the outage."))  # fails once
        settings = settings_from_env(SummarizerSettings, isolated.env(
            "summarizer", OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY="k", OPENAI_MAX_RETRIES="0",
            SUMMARY_REFRESH_AFTER_MESSAGES="2", SUMMARY_REFRESH_AFTER_MINUTES="60"))
        async with run_in_process("summarizer", create_app, settings):
            await send(producer, prefix, handoff("AUTO"))
            [first] = await w.wait_for("handoff.summaries", handoff_id="h_AUTO", timeout=20)
            assert (first["text"], first["revision"], first["refresh"]) == ("First recap.", 0, None)
            assert first["covers_until"] is not None and first["made_at"] is not None

            # One visitor message and an agent's reply: not yet (2 visitor messages); the
            # second visitor message (and its replay) refreshes it by itself.
            await send(producer, prefix, said("AUTO", "visitor", "Any news? AUTO-MARK", 1))
            await send(producer, prefix, said("AUTO", "agent", "Looking into it", 2))
            last = said("AUTO", "visitor", "Found it, thanks", 3)
            await send(producer, prefix, last)
            await send(producer, prefix, last)
            running, second = (await w.wait_for("handoff.summaries", handoff_id="h_AUTO", count=3, timeout=20))[1:]
            assert (running["refresh"], running["text"], running["revision"]) == ("running", "First recap.", 0)
            assert (second["refresh"], second["text"], second["revision"]) == (
                None, "Second recap: the order was found.", 1)
            assert second["mode"] == "llm"
            # It covers up to the last new message (as stored: milliseconds).
            assert datetime.fromisoformat(second["covers_until"]) == last.line.at.replace(
                microsecond=last.line.at.microsecond // 1000 * 1000)

            # Incremental: the previous summary and the new messages, never the transcript again.
            [asked] = fake.requests_containing("AUTO-MARK")
            prompt = asked["messages"][1]["content"]
            assert prompt.startswith("Previous recap:\nFirst recap.")
            assert "Visitor: Any news? AUTO-MARK\nAgent: Looking into it\nVisitor: Found it, thanks" in prompt
            assert prompt.count("Found it, thanks") == 1  # the replayed message once
            assert "Where is my order?" not in prompt and "I want a refund" not in prompt

            # An agent's Refresh with nothing new: in flight, then the same summary again.
            await send(producer, prefix, refresh("AUTO"))
            again = (await w.wait_for("handoff.summaries", handoff_id="h_AUTO", count=5, timeout=20))[3:]
            assert [(s["refresh"], s["revision"], s["text"]) for s in again] == [
                ("running", 1, second["text"]), (None, 1, second["text"])]
            assert len(fake.requests_containing("Previous recap")) == 1

            # A model that fails: the summary stays, marked failed; asked again, it is retried.
            await send(producer, prefix, handoff("FAIL"))
            await w.wait_for("handoff.summaries", handoff_id="h_FAIL", timeout=20)
            await send(producer, prefix, said("FAIL", "visitor", "FAIL-MARK where is it?", 1))
            await send(producer, prefix, refresh("FAIL"))
            failed = (await w.wait_for("handoff.summaries", handoff_id="h_FAIL", count=3, timeout=20))[1:]
            assert [(s["refresh"], s["revision"], s["text"]) for s in failed] == [
                ("running", 0, "First recap."), ("failed", 0, "First recap.")]
            assert failed[1]["made_at"] is not None  # "showing the one from 12:04"
            await send(producer, prefix, refresh("FAIL"))
            [*_, back] = await w.wait_for("handoff.summaries", handoff_id="h_FAIL", count=5, timeout=20)
            assert (back["text"], back["revision"], back["refresh"]) == ("Recap after the outage.", 1, None)


async def test_offline_refreshes_merge_the_extract_and_come_by_the_clock_while_waiting(isolated, producer):
    prefix = isolated.topic_prefix
    async with TopicWatcher(isolated.infra.kafka_bootstrap, prefix, "handoff.summaries") as w:
        settings = settings_from_env(SummarizerSettings, isolated.env(
            "summarizer", SUMMARY_REFRESH_AFTER_MESSAGES="50", SUMMARY_REFRESH_AFTER_MINUTES="0.01",
            SUMMARY_SWEEP_INTERVAL_S="0.3"))
        async with run_in_process("summarizer", create_app, settings):
            await send(producer, prefix, handoff("CLOSED"))
            await send(producer, prefix, handoff("OFF"))
            await w.wait_for("handoff.summaries", handoff_id="h_OFF", timeout=20)
            await w.wait_for("handoff.summaries", handoff_id="h_CLOSED", timeout=20)
            # Closed: no longer waiting for the team, its summary is not refreshed by itself.
            await send(producer, prefix, transition("CLOSED", "close"))
            await send(producer, prefix, said("CLOSED", "visitor", "hello? CLOSED", 1))
            # One agent's reply and one visitor message: the clock (0.6 s here) refreshes it.
            await send(producer, prefix, said("OFF", "agent", "We are checking with the courier", 1))
            await send(producer, prefix, said("OFF", "visitor", "It was order 123", 2))
            [*_, merged] = await w.wait_for("handoff.summaries", handoff_id="h_OFF", count=3, timeout=20)
            assert (merged["mode"], merged["revision"], merged["refresh"]) == ("extractive", 1, None)
            assert merged["text"] == (
                'Handed off: Topic is a refund.\nVisitor first asked: "Where is my order? OFF"\n'
                'Contact: off@example.com.\nLatest message: "It was order 123"\n'
                'Agent\'s last reply: "We are checking with the courier"')
            assert w.of("handoff.summaries", handoff_id="h_CLOSED", refresh="running") == []
            # Reopened: waiting again, and refreshed by the clock.
            await send(producer, prefix, transition("CLOSED", "reopen"))
            [*_, reopened] = await w.wait_for("handoff.summaries", handoff_id="h_CLOSED", count=3, timeout=20)
            assert reopened["revision"] == 1 and 'Latest message: "hello? CLOSED"' in reopened["text"]


async def test_the_store_keeps_each_new_message_once_and_lets_go_of_what_a_refresh_covers(infra):
    import uuid

    from services.summarizer.store import SummaryJobs, lines_of
    from shared.stores import open_mongo

    settings = SummarizerSettings(mongodb_uri=infra.mongodb_uri, mongodb_db=f"t{uuid.uuid4().hex[:8]}_summarizer")
    client, db = open_mongo(settings)
    jobs = SummaryJobs(db)
    try:
        await jobs.add(handoff("STORE"))
        line = said("STORE", "visitor", "one", 1, T0 + timedelta(seconds=1))
        assert await jobs.add_line("h_UNKNOWN", "m1", line.line, keep=3) is None
        job = await jobs.add_line("h_STORE", "m1", line.line, keep=3)
        assert job is not None and [x.text for x in lines_of(job)] == ["one"]
        assert await jobs.add_line("h_STORE", "m1", line.line, keep=3) is None  # a replay
        for n in range(2, 6):
            job = await jobs.add_line("h_STORE", f"m{n}", said("STORE", "visitor", str(n), n, T0 + timedelta(seconds=n)).line, keep=3)
        assert [x.text for x in lines_of(job)] == ["3", "4", "5"]  # the most recent `keep`
        assert await jobs.want_refresh("h_STORE") is False  # no summary written yet
        await jobs.mark_done("h_STORE", status="ready", text="t", mode="extractive", covers_until=T0, made_at=T0)
        assert await jobs.want_refresh("h_STORE") is True and await jobs.wanted_ids() == ["h_STORE"]
        assert await jobs.claim_refresh("h_STORE", 60) is True and await jobs.claim_refresh("h_STORE", 60) is False
        await jobs.refreshed("h_STORE", text="t2", mode="extractive", covers_until=T0 + timedelta(seconds=4),
                             made_at=T0, revision=1)
        job = await jobs.get("h_STORE")
        assert [x.text for x in lines_of(job)] == ["5"] and job["refresh"] is None and job["revision"] == 1
        assert [j["_id"] for j in await jobs.waiting_done()] == ["h_STORE"]
        await jobs.set_waiting("h_STORE", False)
        assert await jobs.waiting_done() == []
    finally:
        await client.close()
