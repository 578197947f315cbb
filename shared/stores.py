"""Store helpers every service uses: open Mongo and Redis from settings, check they answer,
and remember which events a consumer has applied."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import redis.asyncio as aioredis
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

from shared.settings import ServiceSettings


def open_mongo(settings: ServiceSettings) -> tuple[AsyncMongoClient, AsyncDatabase]:
    client: AsyncMongoClient = AsyncMongoClient(
        settings.mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=5000, connectTimeoutMS=5000
    )
    return client, client[settings.mongodb_db]


def open_redis(settings: ServiceSettings) -> aioredis.Redis:
    return aioredis.from_url(settings.redis_url, decode_responses=True, health_check_interval=30)


# A readiness probe answers within this: a store that does not answer by then is not ready
# (the client's own server selection would wait 5 s, longer than a probe waits).
PROBE_TIMEOUT_S = 2.0


async def mongo_ready(client: AsyncMongoClient, timeout: float = PROBE_TIMEOUT_S) -> bool:
    try:
        await asyncio.wait_for(client.admin.command("ping"), timeout)
        return True
    except Exception:  # noqa: BLE001 - readiness is a yes/no question
        return False


async def redis_ready(r: aioredis.Redis, timeout: float = PROBE_TIMEOUT_S) -> bool:
    try:
        return bool(await asyncio.wait_for(r.ping(), timeout))
    except Exception:  # noqa: BLE001
        return False


DUPLICATE_KEY = 11000


def write_errors(exc: BulkWriteError) -> dict[int, dict]:
    """A bulk write's errors by the index of the item that failed."""
    return {err["index"]: err for err in exc.details.get("writeErrors", [])}


def write_failure(err: dict) -> OperationFailure:
    return OperationFailure(err.get("errmsg", "write failed"), err.get("code"), err)


async def insert_each(collection: AsyncCollection, docs: list[dict]) -> list[bool | BaseException]:
    """One unordered insert_many; per document True when stored now, False when its _id was
    stored already (a replay), or the error that document alone failed with."""
    try:
        await collection.insert_many(docs, ordered=False)
        return [True] * len(docs)
    except BulkWriteError as exc:
        errors = write_errors(exc)
    return [True if i not in errors else False if errors[i].get("code") == DUPLICATE_KEY
            else write_failure(errors[i]) for i in range(len(docs))]


class ProcessedEvents:
    """Which event ids each consumer group has applied (Mongo `processed_events`).

    Marked after the handler succeeded; entries expire after `keep` (longer than any
    redelivery window). Handlers stay idempotent on their own too (upserts by id), since a
    crash between 'applied' and 'marked' replays the event once more.
    """

    def __init__(self, db: AsyncDatabase, keep: timedelta = timedelta(days=14)) -> None:
        self.collection = db["processed_events"]
        self.keep = keep

    async def create_indexes(self) -> None:
        await self.collection.create_index("at", expireAfterSeconds=int(self.keep.total_seconds()))

    async def seen(self, consumer: str, event_id: str) -> bool:
        return await self.collection.find_one({"_id": f"{consumer}:{event_id}"}, {"_id": 1}) is not None

    async def mark(self, consumer: str, event_id: str) -> None:
        try:
            await self.collection.insert_one({"_id": f"{consumer}:{event_id}", "at": datetime.now(UTC)})
        except DuplicateKeyError:
            pass
