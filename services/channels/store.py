"""The channels' stores behind narrow interfaces.

Redis: edge dedupe keys, the WhatsApp window (last inbound time per conversation), the web
widget's per-visitor history/outbox and its live pub/sub channel, "delivered" marks, and the
fingerprint of each chatbot's registered Telegram webhook.
Mongo (`handoff_channels`): one delivery record per outbound message id (one sender at a time,
remember the outcome) and the wamid -> message id map for WhatsApp statuses.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import redis.asyncio as aioredis
from pymongo import UpdateOne
from pymongo.asynchronous.database import AsyncDatabase

from shared.batching import Coalescer
from shared.ids import new_id
from shared.stores import insert_each

Claim = Literal["new", "pending", "done"]
# (filter, update, a filter that matches only when this very update was applied)
Update = tuple[dict[str, Any], dict[str, Any], dict[str, Any]]


class InboundDedupe:
    """Claim a platform message id before publishing it; `done` after it was published,
    `release` when publishing failed (so the platform's retry is accepted)."""

    # Longer than the producer takes to settle a write it could not deliver (metadata wait
    # and batch expiry, 15 s each; an idempotent producer never expires a batch): a write
    # that outlived its request keeps the claim until then. Past it (or when the process
    # died) the retry is published; a late first copy is then dropped downstream by its
    # event id.
    PENDING_TTL_S = 60

    def __init__(self, redis: aioredis.Redis, prefix: str, ttl_s: int) -> None:
        self.redis, self.prefix, self.ttl_s = redis, prefix, ttl_s

    def _key(self, key: str) -> str:
        return f"{self.prefix}:inbound:{key}"

    async def claim(self, key: str) -> Claim:
        if await self.redis.set(self._key(key), "pending", nx=True, ex=self.PENDING_TTL_S):
            return "new"
        return "done" if await self.redis.get(self._key(key)) == "done" else "pending"

    async def done(self, key: str) -> None:
        await self.redis.set(self._key(key), "done", ex=self.ttl_s)

    async def release(self, key: str) -> None:
        await self.redis.delete(self._key(key))


class WhatsAppWindowStore:
    def __init__(self, redis: aioredis.Redis, prefix: str, ttl_s: int = 3 * 24 * 3600) -> None:
        self.redis, self.prefix, self.ttl_s = redis, prefix, ttl_s

    def _key(self, chatbot_id: str, conversation_id: str) -> str:
        return f"{self.prefix}:wa_window:{chatbot_id}:{conversation_id}"

    async def record_inbound(self, chatbot_id: str, conversation_id: str, at: datetime) -> None:
        # Keep the latest: Meta may deliver an older message after a newer one.
        key = self._key(chatbot_id, conversation_id)
        ts = at.timestamp()
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zadd(key, {"last": ts}, gt=True)  # GT still adds a missing member
            pipe.expire(key, self.ttl_s)
            await pipe.execute()

    async def last_inbound(self, chatbot_id: str, conversation_id: str) -> datetime | None:
        score = await self.redis.zscore(self._key(chatbot_id, conversation_id), "last")
        return datetime.fromtimestamp(score, UTC) if score is not None else None


# Append an entry to a history unless the very same entry is already in it, trim, refresh the
# TTL: a reply sent again after a crash (allowed for the widget) is kept once.
# ARGV: entry, history limit, TTL, and optionally the live channel and what to publish on it
# (in the same round trip; published whether or not the entry was new, as a separate notify is).
_STORE_ONCE = """
local added = 0
if not redis.call('LPOS', KEYS[1], ARGV[1]) then
  redis.call('RPUSH', KEYS[1], ARGV[1])
  redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  added = 1
end
if ARGV[4] then redis.call('PUBLISH', ARGV[4], ARGV[5]) end
return added
"""


class WebOutbox:
    """Per-visitor history (what the widget replays on connect) and the live channel every
    channels instance listens on, so the instance holding the visitor's socket delivers."""

    def __init__(self, redis: aioredis.Redis, prefix: str, limit: int, ttl_s: int) -> None:
        self.redis, self.prefix, self.limit, self.ttl_s = redis, prefix, limit, ttl_s
        self.live_channel = f"{prefix}:web:live"
        self._store_once = redis.register_script(_STORE_ONCE)

    def _history(self, chatbot_id: str, visitor_id: str) -> str:
        return f"{self.prefix}:web:history:{chatbot_id}:{visitor_id}"

    async def store(self, chatbot_id: str, visitor_id: str, entry: dict[str, Any]) -> bool:
        """False when this entry was stored already."""
        added = await self._store_once(keys=[self._history(chatbot_id, visitor_id)],
                                       args=[json.dumps(entry), self.limit, self.ttl_s])
        return bool(added)

    async def notify(self, chatbot_id: str, visitor_id: str, entry: dict[str, Any]) -> None:
        await self.redis.publish(self.live_channel, self._live(chatbot_id, visitor_id, entry))

    async def append(self, chatbot_id: str, visitor_id: str, entry: dict[str, Any]) -> None:
        """`store`, then `notify`, in one round trip (a visitor's own message, on every POST)."""
        await self._store_once(keys=[self._history(chatbot_id, visitor_id)],
                               args=[json.dumps(entry), self.limit, self.ttl_s, self.live_channel,
                                     self._live(chatbot_id, visitor_id, entry)])

    @staticmethod
    def _live(chatbot_id: str, visitor_id: str, entry: dict[str, Any]) -> str:
        return json.dumps({"chatbot_id": chatbot_id, "visitor_id": visitor_id, "entry": entry})

    async def history(self, chatbot_id: str, visitor_id: str) -> list[dict[str, Any]]:
        return [json.loads(x) for x in await self.redis.lrange(self._history(chatbot_id, visitor_id), 0, -1)]

    async def mark_delivered_once(self, message_id: str) -> bool:
        """True for the first socket that shows this message (delivery.status 'delivered' once)."""
        return bool(await self.redis.set(f"{self.prefix}:web:delivered:{message_id}", "1", nx=True, ex=self.ttl_s))

    async def unmark_delivered(self, message_id: str) -> None:
        await self.redis.delete(f"{self.prefix}:web:delivered:{message_id}")


class TelegramWebhookRegistry:
    """Which (token, url, secret) each chatbot's webhook was last set with, so a restart or
    a second instance does not call setWebhook again for nothing. Only a hash is kept."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis, self.prefix = redis, prefix

    async def registered(self, chatbot_id: str) -> str | None:
        return await self.redis.get(f"{self.prefix}:tg_webhook:{chatbot_id}")

    async def remember(self, chatbot_id: str, fingerprint: str) -> None:
        await self.redis.set(f"{self.prefix}:tg_webhook:{chatbot_id}", fingerprint)


class DeliveryRecords:
    """One record per outbound message id, claimed before sending, so one sender at a time
    holds it. While it is 'sending' it keeps the message, and `platform_called` says whether
    a Telegram/WhatsApp call may have started: what decides, when its sender died, whether the
    message can be sent again without the visitor seeing it twice."""

    def __init__(self, db: AsyncDatabase) -> None:
        self.deliveries = db["deliveries"]
        self.wamids = db["whatsapp_wamids"]
        # Every reply makes three writes (claim, outcome, status published); concurrent
        # deliveries share one round trip per kind (see shared/batching.py).
        self._claims: Coalescer[dict, bool] = Coalescer(lambda docs: insert_each(self.deliveries, docs), name="delivery claims")
        self._finishes: Coalescer[Update, bool] = Coalescer(self._conditional_updates, name="delivery outcomes")
        self._published: Coalescer[Update, bool] = Coalescer(self._conditional_updates, name="statuses published")

    async def _conditional_updates(self, updates: list[Update]) -> list[bool | BaseException]:
        """Whether each conditional update matched. One bulk write; only when fewer matched
        than were sent (a claim settled meanwhile: rare) is each one's effect looked up."""
        result = await self.deliveries.bulk_write([UpdateOne(f, u) for f, u, _ in updates], ordered=False)
        if result.matched_count == len(updates):
            return [True] * len(updates)
        return [await self.deliveries.count_documents(applied, limit=1) == 1 for _, _, applied in updates]

    async def create_indexes(self) -> None:
        # The sweep looks for the few records still 'sending' or not yet published.
        await self.deliveries.create_index([("state", 1), ("lease_until", 1)])
        await self.deliveries.create_index([("status_published", 1), ("finished_at", 1)])

    async def claim(self, message_id: str, chatbot_id: str, conversation_id: str | None, channel: str,
                    owner: str = "", lease_s: float = 300.0, message: dict[str, Any] | None = None,
                    ) -> dict[str, Any] | None:
        """None when this call claimed the message; otherwise the existing record. The claim
        holds until `lease_until`; the owner renews it while it is still trying."""
        now = datetime.now(UTC)
        if await self._claims.submit({
            "_id": message_id, "chatbot_id": chatbot_id, "conversation_id": conversation_id, "channel": channel,
            "owner": owner, "state": "sending", "status_published": False, "claimed_at": now,
            "lease_until": now + timedelta(seconds=lease_s), "platform_called": False, "message": message,
        }):
            return None
        return await self.get(message_id) or {"_id": message_id, "state": "sending"}

    async def get(self, message_id: str) -> dict[str, Any] | None:
        return await self.deliveries.find_one({"_id": message_id})

    async def renew(self, message_id: str, lease_s: float) -> None:
        await self.deliveries.update_one({"_id": message_id, "state": "sending"},
                                         {"$set": {"lease_until": datetime.now(UTC) + timedelta(seconds=lease_s)}})

    async def platform_call_started(self, message_id: str, owner: str, lease_s: float) -> bool:
        """Recorded (with a fresh lease) before each Telegram/WhatsApp call; False when the
        claim is no longer this owner's (it stalled past its lease and was taken over)."""
        result = await self.deliveries.update_one(
            {"_id": message_id, "state": "sending", "owner": owner},
            {"$set": {"platform_called": True, "lease_until": datetime.now(UTC) + timedelta(seconds=lease_s)}})
        return result.matched_count == 1

    async def take_over(self, message_id: str, now: datetime, owner: str, lease_s: float) -> bool:
        """Claim a message whose sender died (its lease ran out); True for the one caller that did."""
        result = await self.deliveries.update_one(
            {"_id": message_id, "state": "sending", "lease_until": {"$lt": now}},
            {"$set": {"owner": owner, "lease_until": now + timedelta(seconds=lease_s)}})
        return result.modified_count == 1

    async def release(self, message_id: str, owner: str) -> None:
        """Drop a claim whose message was certainly not sent (stopped between attempts)."""
        await self.deliveries.delete_one({"_id": message_id, "state": "sending", "owner": owner})

    async def finish(self, message_id: str, state: str, channel_message_id: str | None, error: str | None) -> bool:
        """Record the outcome; False when the claim was meanwhile settled as expired."""
        token = new_id()
        return await self._finishes.submit(({"_id": message_id, "state": "sending"}, {
            "$set": {"state": state, "channel_message_id": channel_message_id, "error": error,
                     "finished_at": datetime.now(UTC), "finish_id": token},
            "$unset": {"message": ""},  # kept only while it may have to be sent again
        }, {"_id": message_id, "finish_id": token}))

    async def expired_claims(self, now: datetime, limit: int = 100) -> list[dict[str, Any]]:
        """Claims whose owner stopped renewing them (it crashed between claiming and finishing)."""
        cursor = self.deliveries.find({"state": "sending", "lease_until": {"$lt": now}}).limit(limit)
        return [doc async for doc in cursor]

    async def settle_expired(self, message_id: str, now: datetime, error: str) -> bool:
        """Mark an expired claim failed; True for the one caller that did it."""
        result = await self.deliveries.update_one(
            {"_id": message_id, "state": "sending", "lease_until": {"$lt": now}},
            {"$set": {"state": "failed", "channel_message_id": None, "error": error, "finished_at": now},
             "$unset": {"message": ""}})
        return result.modified_count == 1

    async def unpublished(self, finished_before: datetime, limit: int = 100) -> list[dict[str, Any]]:
        """Finished records whose status never reached the bus (a crash right after finishing)."""
        # The keys in the order of the index that answers it: the Mongo-wire server takes
        # the index of the query's first key, and (state, lease_until) with $in on state
        # walks every sent message (1.8 s at 50,000 deliveries, against 2 ms this way).
        cursor = self.deliveries.find({"status_published": False, "finished_at": {"$lt": finished_before},
                                       "state": {"$in": ["sent", "failed"]}}).limit(limit)
        return [doc async for doc in cursor]

    async def status_published(self, message_id: str) -> None:
        await self._published.submit(({"_id": message_id}, {"$set": {"status_published": True}},
                                       {"_id": message_id, "status_published": True}))

    async def remember_wamid(self, wamid: str, message_id: str, chatbot_id: str, conversation_id: str | None) -> None:
        await self.wamids.replace_one(
            {"_id": wamid},
            {"_id": wamid, "message_id": message_id, "chatbot_id": chatbot_id, "conversation_id": conversation_id},
            upsert=True,
        )

    async def message_for_wamid(self, wamid: str) -> dict[str, Any] | None:
        return await self.wamids.find_one({"_id": wamid})
