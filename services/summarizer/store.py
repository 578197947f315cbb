"""Summaries in progress and done, in the summarizer's own Mongo database (`summaries`).

One document per handoff id (the _id): created pending with the handoff event when it
arrives, so a restart resumes what was not finished; marked done with the text once the
summary is published. The _id makes a redelivered handoff a no-op. The same document keeps
the summary current (refresh.py): the messages since what it covers, a refresh wanted."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from shared.events import ConversationStateChanged, TranscriptLine


class SummaryJobs:
    def __init__(self, db: AsyncDatabase) -> None:
        self.collection = db["summaries"]

    async def create_indexes(self) -> None:
        await self.collection.create_index("state")

    async def add(self, event: ConversationStateChanged) -> bool:
        """Remember a handoff to summarize; False when it is already known."""
        try:
            await self.collection.insert_one({
                "_id": event.handoff_id, "state": "pending", "event": event.model_dump(mode="json"),
                "attempts": 0, "created_at": datetime.now(UTC), "lease_until": None,
                # Keeping it current (refresh.py): the conversation waits for the team; the
                # messages since what the summary covers; a refresh wanted (None / "wanted").
                "waiting": True, "new_lines": [], "revision": 0, "refresh": None, "refresh_lease_until": None,
            })
            return True
        except DuplicateKeyError:
            return False

    async def get(self, handoff_id: str) -> dict[str, Any] | None:
        return await self.collection.find_one({"_id": handoff_id})

    async def pending_ids(self) -> list[str]:
        return [d["_id"] async for d in self.collection.find({"state": "pending"}, {"_id": 1}).sort("created_at", 1)]

    async def claim(self, handoff_id: str, lease_s: float) -> bool:
        """Take a pending job for `lease_s` (several summarizer instances may sweep the same
        pending jobs); False when it is done or another worker holds a live lease. A worker
        that dies without releasing it lets the lease run out, then the job is taken again."""
        now = datetime.now(UTC)
        result = await self.collection.update_one(
            {"_id": handoff_id, "state": "pending",
             "$or": [{"lease_until": None}, {"lease_until": {"$lt": now}}]},
            {"$set": {"lease_until": now + timedelta(seconds=lease_s)}},
        )
        return result.modified_count == 1

    async def release(self, handoff_id: str) -> None:
        await self.collection.update_one({"_id": handoff_id}, {"$set": {"lease_until": None}})

    async def record_failure(self, handoff_id: str, error: str) -> None:
        await self.collection.update_one({"_id": handoff_id},
                                         {"$inc": {"attempts": 1},
                                          "$set": {"last_error": error[:1000], "lease_until": None}})

    async def mark_done(self, handoff_id: str, *, status: str, text: str | None, mode: str | None,
                        covers_until: datetime | None = None, made_at: datetime | None = None) -> None:
        await self.collection.update_one({"_id": handoff_id}, {"$set": {
            "state": "done", "status": status, "text": text, "mode": mode, "done_at": datetime.now(UTC),
            "covers_until": covers_until, "made_at": made_at}})

    # ------------------------------------------------------------ keeping it current
    async def add_line(self, handoff_id: str, message_id: str, line: TranscriptLine, keep: int) -> dict[str, Any] | None:
        """A message since the handoff (the most recent `keep` are kept); the job as it is now,
        or None for an unknown handoff or a message it has already (a replay)."""
        return await self.collection.find_one_and_update(
            {"_id": handoff_id, "new_lines.message_id": {"$ne": message_id}},
            {"$push": {"new_lines": {"$each": [{"message_id": message_id, **line.model_dump()}], "$slice": -keep}}},
            return_document=ReturnDocument.AFTER)

    async def set_waiting(self, handoff_id: str, waiting: bool) -> None:
        await self.collection.update_one({"_id": handoff_id}, {"$set": {"waiting": waiting}})

    async def want_refresh(self, handoff_id: str) -> bool:
        """Ask for a refresh of a written summary; False when it has none yet (unknown, or its
        first one is being written: that one will be current)."""
        result = await self.collection.update_one({"_id": handoff_id, "state": "done"}, {"$set": {"refresh": "wanted"}})
        return result.matched_count == 1

    async def waiting_done(self) -> list[dict[str, Any]]:
        """Written summaries of conversations that wait for the team, no refresh wanted yet."""
        return await self.collection.find({"state": "done", "waiting": True, "refresh": None},
                                          {"event": 0}).to_list(None)  # not the handoff's transcript

    async def wanted_ids(self) -> list[str]:
        return [d["_id"] async for d in self.collection.find({"refresh": "wanted"}, {"_id": 1})]

    async def claim_refresh(self, handoff_id: str, lease_s: float) -> bool:
        """Take a wanted refresh for `lease_s` (as `claim` does a job)."""
        now = datetime.now(UTC)
        result = await self.collection.update_one(
            {"_id": handoff_id, "refresh": "wanted",
             "$or": [{"refresh_lease_until": None}, {"refresh_lease_until": {"$lt": now}}]},
            {"$set": {"refresh_lease_until": now + timedelta(seconds=lease_s)}})
        return result.modified_count == 1

    async def release_refresh(self, handoff_id: str) -> None:
        await self.collection.update_one({"_id": handoff_id}, {"$set": {"refresh_lease_until": None}})

    async def refreshed(self, handoff_id: str, *, text: str | None, mode: str | None, covers_until: datetime | None,
                        made_at: datetime | None, revision: int) -> None:
        """The new summary; the lines it covers are let go."""
        update: dict[str, Any] = {"$set": {
            "text": text, "mode": mode, "status": "ready" if text else "unavailable", "covers_until": covers_until,
            "made_at": made_at, "revision": revision, "refresh": None, "refresh_lease_until": None,
            "refresh_failed_at": None}}
        if covers_until is not None:
            update["$pull"] = {"new_lines": {"at": {"$lte": covers_until}}}
        await self.collection.update_one({"_id": handoff_id}, update)

    async def refresh_failed(self, handoff_id: str, error: str, at: datetime) -> None:
        """The model failed: the summary stays as it was, its lines wait for the next refresh."""
        await self.collection.update_one({"_id": handoff_id}, {"$set": {
            "refresh": None, "refresh_lease_until": None, "refresh_failed_at": at, "last_error": error[:1000]}})


def event_of(job: dict[str, Any]) -> ConversationStateChanged:
    return ConversationStateChanged.model_validate(job["event"])


def lines_of(job: dict[str, Any]) -> list[TranscriptLine]:
    return [TranscriptLine.model_validate(line) for line in job.get("new_lines") or []]
