"""The gateway's data: agents, memberships and sessions (Mongo), sign-in attempts (Redis)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from limits import RateLimitItem
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError

from services.gateway.domain import AgentView, LoginBackoff, display_name, email_key, new_secret, token_digest
from shared.ids import new_id
from shared.ratelimit import Decision, RateLimits, rule


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


class LoginLimits:
    """Sign-in attempts, counted in Redis (`shared.ratelimit`) so every gateway process sees
    the same counts: per client address across all e-mails (spraying many e-mails from one
    place), and per e-mail the growing wait of `LoginBackoff` (many places guessing one).

    An attempt counts as a failure from the moment it is admitted, before the (slow) password
    check, and a success clears the e-mail's count: guesses sent in parallel are counted
    before any of them is checked. Past the free failures every admitted attempt must take
    the shortest wait's slot, so of guesses sent at once only one gets through. A wait is a
    "1 per N seconds" limit hit by the attempt that starts it; all waits are checked, since
    the count they were chosen by may have decayed since."""

    def __init__(self, limits: RateLimits, per_ip: RateLimitItem, backoff: LoginBackoff,
                 failures_window_s: int) -> None:
        self.limits = limits
        self.per_ip = per_ip
        self.backoff = backoff
        self.failures = rule(f"{backoff.failures_that_matter} per {failures_window_s} seconds")
        self.waits = {seconds: rule(f"1 per {seconds} seconds") for seconds in backoff.steps()}

    async def admit(self, email: str, address: str) -> Decision:
        """Count one attempt; not allowed (with when to retry) when the address is over its
        limit or the e-mail must still wait. A refused attempt's password is not checked."""
        by_address = await self.limits.hit(self.per_ip, "login-ip", address)
        if not by_address.allowed:
            return by_address
        key = _email_key_digest(email)
        waiting = [d for d in await asyncio.gather(*(self.limits.check(w, "login-wait", key)
                                                     for w in self.waits.values())) if not d.allowed]
        if waiting:
            return max(waiting, key=lambda d: d.retry_after_s)
        await self.limits.hit(self.failures, "login-failures", key)
        wait = self.backoff.wait_after(await self.limits.count(self.failures, "login-failures", key))
        if wait:
            shortest = self.waits[self.backoff.steps()[0]]
            slot = await self.limits.hit(shortest, "login-wait", key)
            if not slot.allowed:  # another attempt took it a moment ago
                return slot
            if self.waits[wait] is not shortest:
                await self.limits.hit(self.waits[wait], "login-wait", key)
        return Decision(True)

    async def succeeded(self, email: str) -> None:
        key = _email_key_digest(email)
        await asyncio.gather(self.limits.clear(self.failures, "login-failures", key),
                             *(self.limits.clear(w, "login-wait", key) for w in self.waits.values()))


def _email_key_digest(email: str) -> str:
    """Counts are kept under a digest: no e-mail addresses in Redis keys, and a short key."""
    return token_digest(email_key(email))
