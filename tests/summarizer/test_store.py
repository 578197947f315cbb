"""The summary jobs store against the real Mongo-wire server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from services.summarizer.settings import SummarizerSettings
from services.summarizer.store import SummaryJobs, event_of
from shared.events import ConversationStateChanged, TranscriptLine, VisitorIdentity
from shared.stores import open_mongo


def _handoff(handoff_id: str) -> ConversationStateChanged:
    return ConversationStateChanged(
        chatbot_id="b", conversation_id="cv_1", transition="handoff", status="handed_off",
        previous_status="active", channel="telegram", visitor=VisitorIdentity(external_id="42"),
        handoff_id=handoff_id, reason="Visitor asked for a person", by="visitor",
        transcript=[TranscriptLine(sender="visitor", text="human please", at=datetime.now(UTC))])


async def test_jobs_are_idempotent_per_handoff_and_survive_as_pending(infra):
    settings = SummarizerSettings(mongodb_uri=infra.mongodb_uri, mongodb_db=f"t{uuid.uuid4().hex[:8]}_summarizer")
    client, db = open_mongo(settings)
    jobs = SummaryJobs(db)
    try:
        await jobs.create_indexes()
        first = _handoff("h1")
        assert await jobs.add(first) is True
        assert await jobs.add(_handoff("h1")) is False  # redelivered: already known
        assert await jobs.add(_handoff("h2")) is True
        assert await jobs.pending_ids() == ["h1", "h2"]

        job = await jobs.get("h1")
        assert event_of(job) == first  # the whole event comes back, to resume the job
        assert await jobs.claim("h1", lease_s=60) is True
        assert await jobs.claim("h1", lease_s=60) is False  # held by the first worker
        await jobs.release("h1")
        assert await jobs.claim("h1", lease_s=-1) is True  # a lease that has already run out
        assert await jobs.claim("h1", lease_s=60) is True  # ... is taken again
        await jobs.record_failure("h1", "boom")  # also lets go of the lease
        assert await jobs.claim("h1", lease_s=60) is True
        await jobs.mark_done("h2", status="ready", text="recap", mode="extractive")
        assert await jobs.pending_ids() == ["h1"]
        done = await jobs.get("h2")
        assert (done["state"], done["text"], done["mode"]) == ("done", "recap", "extractive")
        assert await jobs.claim("h2", lease_s=60) is False  # done: never taken again
        assert (await jobs.get("h1"))["attempts"] == 1
    finally:
        await client.drop_database(settings.mongodb_db)
        await client.close()
