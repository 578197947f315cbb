"""Intake's memory on the real redis-server and Mongo-wire server, under names of its own."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient

from services.intake.store import ConversationMemory


@dataclass
class MemoryStores:
    redis: aioredis.Redis
    mongo: AsyncMongoClient
    prefix: str
    db_name: str

    def memory(self, *, context_messages: int = 10, ttl_s: int = 60) -> ConversationMemory:
        return ConversationMemory(self.redis, self.prefix, context_messages=context_messages, ttl_s=ttl_s,
                                  statuses=self.mongo[self.db_name]["conversation_status"])


@pytest.fixture
async def memory_stores(infra) -> AsyncIterator[MemoryStores]:
    tag = uuid.uuid4().hex[:8]
    stores = MemoryStores(aioredis.from_url(infra.redis_url, decode_responses=True),
                          AsyncMongoClient(infra.mongodb_uri), f"t{tag}:intake", f"t{tag}_intake")
    try:
        yield stores
    finally:
        await stores.redis.aclose()
        await stores.mongo.close()
