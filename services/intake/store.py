"""Intake's own memory: each conversation's status as intake sees it (from
`conversation.state`, and set to handed_off the moment intake asks for a handoff), the
recent messages the AI sees, and the contact fields still being asked for. Plus the
in-memory table of chatbot settings read from `chatbot.settings`.

The status decides whether the AI may speak, so it is recorded in intake's Mongo
(`conversation_status`) and cached in Redis: losing Redis must never let the AI answer a
conversation an agent is handling. Context, the contact question and the message held
across a Return to AI are Redis-only (losing them costs the AI some memory, nothing more)."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Literal

import redis.asyncio as aioredis
from pymongo.asynchronous.collection import AsyncCollection

from shared.ids import utcnow

from shared.chatbots import ChatbotSettings, ContactField
from shared.views import ConversationStatus

log = logging.getLogger("handoff.intake.store")

Role = Literal["user", "assistant"]


_DELETE_IF_EQUAL = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


class ConversationMemory:
    def __init__(self, redis: aioredis.Redis, prefix: str, *, context_messages: int, ttl_s: int,
                 statuses: AsyncCollection) -> None:
        self.redis = redis
        self.statuses = statuses
        self.prefix = prefix
        self.context_messages = context_messages
        self.ttl_s = ttl_s

    def _key(self, kind: str, conversation_id: str) -> str:
        return f"{self.prefix}:{kind}:{conversation_id}"

    # ------------------------------------------------------------ status
    async def status(self, conversation_id: str) -> ConversationStatus:
        """A conversation intake has never heard of is active: the AI answers. A Redis miss
        falls back to the Mongo record (and refills the cache)."""
        key = self._key("status", conversation_id)
        value = await self.redis.get(key)
        if value in ("active", "handed_off", "closed"):
            return value  # type: ignore[return-value]
        doc = await self.statuses.find_one({"_id": conversation_id}, {"status": 1})
        status: ConversationStatus = doc["status"] if doc else "active"
        # Only fill an empty key: a concurrent set_status must win over this read.
        await self.redis.set(key, status, nx=True)
        return status

    async def set_status(self, conversation_id: str, status: ConversationStatus) -> None:
        # Record first, then cache. No expiry: a closed conversation must stay closed to the
        # AI however long the visitor waits before writing again.
        await self.statuses.update_one({"_id": conversation_id}, {"$set": {"status": status, "at": utcnow()}},
                                       upsert=True)
        await self.redis.set(self._key("status", conversation_id), status)

    async def mark_handoff(self, conversation_id: str, message_id: str, reason: str, source: str) -> None:
        """Handed off from now on, remembering which visitor message asked and why, so a
        retried handler for that same message finishes the handoff instead of going silent."""
        await self.statuses.update_one({"_id": conversation_id}, {"$set": {"status": "handed_off", "at": utcnow()}},
                                       upsert=True)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._key("status", conversation_id), "handed_off")
            pipe.set(self._key("handoff_origin", conversation_id),
                     json.dumps({"message_id": message_id, "reason": reason, "source": source}), ex=self.ttl_s)
            await pipe.execute()

    async def handoff_origin(self, conversation_id: str) -> dict[str, str] | None:
        raw = await self.redis.get(self._key("handoff_origin", conversation_id))
        return json.loads(raw) if raw else None

    # ------------------------------------------------------------ Return to AI
    # conversation.state and visitor.messages are separate topics, so a visitor message may be
    # handled before the Return to AI that preceded it. See Intake.on_state_changed.
    async def hold_unanswered(self, conversation_id: str, event_json: str) -> None:
        """The latest visitor message the AI stayed silent on while handed off."""
        await self.redis.set(self._key("unanswered", conversation_id), event_json, ex=self.ttl_s)

    async def held_unanswered(self, conversation_id: str) -> str | None:
        return await self.redis.get(self._key("unanswered", conversation_id))

    async def take_unanswered(self, conversation_id: str) -> str | None:
        return await self.redis.getdel(self._key("unanswered", conversation_id))

    async def drop_unanswered(self, conversation_id: str, event_json: str) -> None:
        """Forget the held message, unless a newer one replaced it meanwhile."""
        await self.redis.eval(_DELETE_IF_EQUAL, 1, self._key("unanswered", conversation_id), event_json)

    async def set_returned_at(self, conversation_id: str, at: datetime) -> None:
        await self.redis.set(self._key("returned_at", conversation_id), at.isoformat(), ex=self.ttl_s)

    async def returned_at(self, conversation_id: str) -> datetime | None:
        raw = await self.redis.get(self._key("returned_at", conversation_id))
        return datetime.fromisoformat(raw) if raw else None

    # ------------------------------------------------------------ context
    async def remember(self, conversation_id: str, message_id: str, role: Role, text: str) -> None:
        key = self._key("context", conversation_id)
        entry = json.dumps({"id": message_id, "role": role, "text": text})
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.rpush(key, entry)
            # Twice the window: replays may add duplicates, which `context` drops.
            pipe.ltrim(key, -2 * self.context_messages, -1)
            pipe.expire(key, self.ttl_s)
            await pipe.execute()

    async def context(self, conversation_id: str) -> list[dict[str, str]]:
        """The last messages, oldest first, each message once (a replay may have added it twice)."""
        raw = await self.redis.lrange(self._key("context", conversation_id), 0, -1)
        seen: set[str] = set()
        out: list[dict[str, str]] = []
        for item in raw:
            entry = json.loads(item)
            if entry["id"] in seen:
                continue
            seen.add(entry["id"])
            out.append(entry)
        return out[-self.context_messages:]

    # ------------------------------------------------------------ contact question
    async def wanted_contact(self, conversation_id: str) -> list[ContactField]:
        raw = await self.redis.get(self._key("contact_wanted", conversation_id))
        return json.loads(raw) if raw else []

    async def set_wanted_contact(self, conversation_id: str, fields: list[ContactField]) -> None:
        key = self._key("contact_wanted", conversation_id)
        if fields:
            await self.redis.set(key, json.dumps(fields), ex=self.ttl_s)
        else:
            await self.redis.delete(key)


class ChatbotTable:
    """Every chatbot's settings, as last published on `chatbot.settings` (in memory)."""

    def __init__(self) -> None:
        self._by_id: dict[str, ChatbotSettings] = {}

    def apply(self, settings: ChatbotSettings, deleted: bool = False) -> None:
        if deleted:
            self._by_id.pop(settings.chatbot_id, None)
        else:
            self._by_id[settings.chatbot_id] = settings

    def get(self, chatbot_id: str) -> ChatbotSettings:
        """A chatbot we have no settings for gets the defaults (tool off), with a warning."""
        found = self._by_id.get(chatbot_id)
        if found is None:
            log.warning("no settings known for chatbot %s; using defaults (Human Handoff off)", chatbot_id)
            return ChatbotSettings(chatbot_id=chatbot_id, name=chatbot_id)
        return found

    def __len__(self) -> int:
        return len(self._by_id)
