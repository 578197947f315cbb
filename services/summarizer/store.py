"""Summaries in progress and done, in the summarizer's own Mongo database (`summaries`).

One document per handoff id (the _id): created pending with the handoff event when it
arrives, so a restart resumes what was not finished; marked done with the text once the
summary is published. The _id makes a redelivered handoff a no-op."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from shared.events import ConversationStateChanged


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

    async def mark_done(self, handoff_id: str, *, status: str, text: str | None, mode: str | None) -> None:
        await self.collection.update_one({"_id": handoff_id}, {"$set": {
            "state": "done", "status": status, "text": text, "mode": mode, "done_at": datetime.now(UTC)}})


def event_of(job: dict[str, Any]) -> ConversationStateChanged:
    return ConversationStateChanged.model_validate(job["event"])
