"""The gateway's data: agents, memberships and sessions (Mongo), login failures (Redis)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import redis.asyncio as aioredis
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.gateway.domain import AgentView, display_name, email_key, new_secret, token_digest
from shared.ids import new_id


@dataclass
class Session:
    agent: AgentView
    chatbot_ids: set[str]
    csrf_token: str
    expires_at: datetime
    token_digest: str


@dataclass
class NewSession:
    token: str  # the cookie value: only the client ever holds it
    csrf_token: str
    expires_at: datetime


def _agent_view(doc: dict[str, Any]) -> AgentView:
    return AgentView(agent_id=doc["_id"], email=doc["email"], first_name=doc.get("first_name"),
                     display_name=display_name(doc.get("first_name"), doc["email"]), muted=bool(doc.get("muted")))


class AgentStore:
    """Mongo `agents` (unique by lower-cased e-mail), `memberships` (agent <-> chatbot) and
    `sessions` (by token digest, expiring through a TTL index and checked on every read)."""

    def __init__(self, db: AsyncDatabase) -> None:
        self.agents = db["agents"]
        self.memberships = db["memberships"]
        self.sessions = db["sessions"]

    async def create_indexes(self) -> None:
        await self.agents.create_index("email_key", unique=True)
        await self.memberships.create_index([("agent_id", ASCENDING), ("chatbot_id", ASCENDING)], unique=True)
        await self.sessions.create_index("expires_at", expireAfterSeconds=0)
        await self.sessions.create_index("agent_id")

    # ------------------------------------------------------------ agents
    async def upsert_agent(self, email: str, password_hash: str, first_name: str | None,
                           chatbot_ids: list[str]) -> AgentView:
        """Create the agent, or update its password, name and memberships (idempotent)."""
        key = email_key(email)
        existing = await self.agents.find_one({"email_key": key})
        now = datetime.now(UTC)
        if existing is None:
            doc = {"_id": "ag_" + new_id(), "email": email.strip(), "email_key": key, "first_name": first_name,
                   "password_hash": password_hash, "muted": False, "created_at": now, "updated_at": now}
            try:
                await self.agents.insert_one(doc)
            except DuplicateKeyError:  # created concurrently: update that one instead
                existing = await self.agents.find_one({"email_key": key})
        if existing is not None:
            await self.agents.update_one({"_id": existing["_id"]}, {"$set": {
                "first_name": first_name, "password_hash": password_hash, "updated_at": now}})
            doc = {**existing, "first_name": first_name, "password_hash": password_hash}
        await self.set_memberships(doc["_id"], chatbot_ids)
        return _agent_view(doc)

    async def set_memberships(self, agent_id: str, chatbot_ids: list[str]) -> None:
        # Grant first, then revoke: a reader in between (a socket's revalidation) sees the old
        # set plus the new one, never a gap where a kept or added membership is missing.
        wanted = list(dict.fromkeys(chatbot_ids))
        have = {d["chatbot_id"] async for d in self.memberships.find({"agent_id": agent_id}, {"chatbot_id": 1})}
        missing = [{"_id": f"{agent_id}:{c}", "agent_id": agent_id, "chatbot_id": c} for c in wanted if c not in have]
        if missing:
            await self.memberships.insert_many(missing)
        await self.memberships.delete_many({"agent_id": agent_id, "chatbot_id": {"$nin": wanted}})

    async def find_login(self, email: str) -> tuple[AgentView, str] | None:
        """The agent and its password hash, by e-mail (any case)."""
        doc = await self.agents.find_one({"email_key": email_key(email)})
        return None if doc is None else (_agent_view(doc), doc["password_hash"])

    async def set_password_hash(self, agent_id: str, password_hash: str) -> None:
        await self.agents.update_one({"_id": agent_id}, {"$set": {"password_hash": password_hash}})

    async def set_muted(self, agent_id: str, muted: bool) -> AgentView | None:
        await self.agents.update_one({"_id": agent_id}, {"$set": {"muted": muted, "updated_at": datetime.now(UTC)}})
        doc = await self.agents.find_one({"_id": agent_id})
        return None if doc is None else _agent_view(doc)

    async def chatbots_of(self, agent_id: str) -> list[str]:
        cursor = self.memberships.find({"agent_id": agent_id}, {"chatbot_id": 1}).sort("chatbot_id", ASCENDING)
        return [d["chatbot_id"] async for d in cursor]

    # ------------------------------------------------------------ sessions
    async def create_session(self, agent_id: str, ttl: timedelta) -> NewSession:
        token, csrf = new_secret(), new_secret()
        now = datetime.now(UTC)
        expires_at = now + ttl
        await self.sessions.insert_one({"_id": token_digest(token), "agent_id": agent_id, "csrf_token": csrf,
                                        "created_at": now, "expires_at": expires_at})
        return NewSession(token, csrf, expires_at)

    async def session(self, token: str | None) -> Session | None:
        """The live session behind a cookie value, with its agent and memberships."""
        if not token or len(token) > 256:
            return None
        return await self.session_by_digest(token_digest(token))

    async def session_by_digest(self, digest: str) -> Session | None:
        """The live session stored under this digest (what a websocket keeps of its cookie)."""
        doc = await self.sessions.find_one({"_id": digest})
        # The TTL sweeper runs only now and then: an expired session is refused on read.
        if doc is None or doc["expires_at"] <= datetime.now(UTC):
            return None
        agent, chatbots = await asyncio.gather(self.agents.find_one({"_id": doc["agent_id"]}),
                                               self.chatbots_of(doc["agent_id"]))
        if agent is None:
            return None
        return Session(_agent_view(agent), set(chatbots), doc["csrf_token"], doc["expires_at"], digest)

    async def delete_session(self, token: str | None) -> None:
        if token:
            await self.sessions.delete_one({"_id": token_digest(token)})


class LoginThrottle:
    """Sign-in attempts per e-mail in Redis: more than `max_failures` within `window_s` locks
    the e-mail out until the window passes. A success clears the count.

    An attempt is counted when it starts, before the (slow) password check, in one atomic
    INCR: guesses sent in parallel cannot all pass a check-then-count and get verified."""

    def __init__(self, redis: aioredis.Redis, prefix: str, max_failures: int, window_s: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.max_failures = max_failures
        self.window_s = window_s

    def _key(self, email: str) -> str:
        return f"{self.prefix}:login_failures:{email_key(email)}"

    async def attempt(self, email: str) -> bool:
        """Count one attempt; False when the e-mail is locked out (the password is not checked)."""
        key = self._key(email)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.incr(key)
            pipe.expire(key, self.window_s, nx=True)
            count, _ = await pipe.execute()
        return int(count) <= self.max_failures

    async def succeeded(self, email: str) -> None:
        await self.redis.delete(self._key(email))
