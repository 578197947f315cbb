"""Presence (docs/contracts.md, "Presence and claims"): which agents have a conversation's pane
open, and who is typing in it — across every gateway process. Ephemeral and advisory: it
never blocks anything by itself (the claim, services/queue/assignment.py, is queue state).

A dashboard socket says what its pane shows (`presence` frames: viewing / typing / left,
repeated as a heartbeat while the pane is open). The gateway holding the socket keeps it in
Redis with a TTL (what a newly subscribed dashboard is given at once) and publishes it on
`agent.presence`; every gateway consumes that topic without a group and hands each event to
its subscribers of the chatbot. A socket that drops publishes `left` for everything it showed;
a gateway process that dies stops refreshing, and its agents' entries expire (Redis and the
dashboards both drop an entry `ttl_s` after its last refresh).

Redis, per chatbot, under `<redis_prefix>:presence:<chatbot_id>`: a sorted set conn -> expiry
(epoch ms) and a hash `...:info` conn -> the entry's JSON; expired members are pruned on read.
One entry per socket and chatbot (`conn`): a pane shows one conversation at a time, so a socket
viewing another conversation replaces its entry."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from limits import RateLimitItem
from redis.asyncio import Redis

from services.gateway.domain import PresenceFrame
from services.gateway.live import LiveClient, LiveHub
from shared.bus import EventPublisher
from shared.events import AgentPresence, AgentRef
from shared.ids import new_id
from shared.ratelimit import RateLimits

log = logging.getLogger("handoff.gateway.presence")

TOO_MANY = "Too many presence updates; slow down."


def entry_of(event: AgentPresence) -> dict[str, Any]:
    """What a dashboard gets of one presence event (its `presence` frame's entries)."""
    return {"conn": event.conn, "conversation_id": event.conversation_id, "agent_id": event.agent.agent_id,
            "name": event.agent.display_name, "state": event.state, "ttl_s": event.ttl_s}


def presence_frame(chatbot_id: str, entries: list[dict[str, Any]], *, whole: bool) -> dict[str, Any]:
    """`whole`: every entry of the chatbot (on subscribe: replaces what the client holds);
    otherwise changes (an entry in state `left` is gone)."""
    return {"type": "presence", "chatbot_id": chatbot_id, "whole": whole, "entries": entries}


class PresenceStore:
    """Redis: the entries of each chatbot, each until its expiry."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix

    def _keys(self, chatbot_id: str) -> tuple[str, str]:
        base = f"{self.prefix}:presence:{chatbot_id}"
        return base, base + ":info"

    async def put(self, chatbot_id: str, entry: dict[str, Any], ttl_s: float) -> None:
        until, info = self._keys(chatbot_id)
        expires_ms = int((time.time() + ttl_s) * 1000)
        pipe = self.redis.pipeline(transaction=True)
        pipe.zadd(until, {entry["conn"]: expires_ms})
        pipe.hset(info, entry["conn"], json.dumps({**entry, "expires_ms": expires_ms}))
        # A chatbot nobody watches any more leaves nothing behind.
        pipe.pexpire(until, int(ttl_s * 2000))
        pipe.pexpire(info, int(ttl_s * 2000))
        await pipe.execute()

    async def drop(self, chatbot_id: str, conn: str) -> None:
        until, info = self._keys(chatbot_id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.zrem(until, conn)
        pipe.hdel(info, conn)
        await pipe.execute()

    async def current(self, chatbot_id: str) -> list[dict[str, Any]]:
        """The live entries, each with the seconds it has left (`ttl_s`)."""
        until, info = self._keys(chatbot_id)
        now_ms = int(time.time() * 1000)
        expired = await self.redis.zrangebyscore(until, "-inf", now_ms)
        if expired:
            pipe = self.redis.pipeline(transaction=True)
            pipe.zremrangebyscore(until, "-inf", now_ms)
            pipe.hdel(info, *expired)
            await pipe.execute()
        live = await self.redis.zrangebyscore(until, now_ms, "+inf", withscores=True)
        if not live:
            return []
        docs = await self.redis.hmget(info, [conn for conn, _ in live])
        entries = []
        for (_, expires_ms), doc in zip(live, docs, strict=True):
            if doc is None:
                continue
            entry = json.loads(doc)
            entry.pop("expires_ms", None)
            entry["ttl_s"] = round(max(0.0, (expires_ms - now_ms) / 1000), 3)
            entries.append(entry)
        return entries


@dataclass
class Shown:
    """What one socket's panes show: chatbot id -> (conversation id, state), and when each
    was last written (a heartbeat that changes nothing is not written more often)."""

    conn: str
    agent: AgentRef
    panes: dict[str, tuple[str, str]] = field(default_factory=dict)
    written_at: dict[str, float] = field(default_factory=dict)


class Presence:
    # How often the dashboard repeats its presence while a pane is open (static/js/presence.js).
    heartbeat_s = 5.0

    def __init__(self, store: PresenceStore, publisher: EventPublisher, hub: LiveHub, limits: RateLimits,
                 per_agent: RateLimitItem, ttl_s: float) -> None:
        self.store = store
        self.publisher = publisher
        self.hub = hub
        self.limits = limits
        self.per_agent = per_agent
        self.ttl_s = ttl_s
        self.sockets: dict[LiveClient, Shown] = {}

    async def on_frame(self, client: LiveClient, agent: AgentRef, frame: PresenceFrame) -> str | None:
        """A dashboard's `presence` frame; the error to answer with, or None."""
        shown = self.sockets.get(client)
        if shown is None:
            shown = self.sockets[client] = Shown(new_id(), agent)
        before = shown.panes.get(frame.chatbot_id)
        if frame.state == "left":
            if before is None:
                return None
            del shown.panes[frame.chatbot_id]
            shown.written_at.pop(frame.chatbot_id, None)
            await self._left(shown, frame.chatbot_id, before[0])
            return None
        now = time.monotonic()
        same = before == (frame.conversation_id, frame.state)
        if same and now - shown.written_at.get(frame.chatbot_id, 0.0) < self.heartbeat_s / 2:
            return None  # a repeat sooner than any heartbeat needs: nothing to refresh
        if not (await self.limits.hit(self.per_agent, "presence", agent.agent_id)).allowed:
            return TOO_MANY
        shown.panes[frame.chatbot_id] = (frame.conversation_id, frame.state)
        shown.written_at[frame.chatbot_id] = now
        event = AgentPresence(chatbot_id=frame.chatbot_id, conversation_id=frame.conversation_id, conn=shown.conn,
                              agent=agent, state=frame.state, ttl_s=self.ttl_s)
        try:
            await self.store.put(frame.chatbot_id, entry_of(event), self.ttl_s)
            await self.publisher.publish(event)
        except Exception:  # noqa: BLE001 - advisory: the socket goes on, the next heartbeat tries again
            log.warning("presence in %s not shared", frame.chatbot_id, exc_info=True)
            shown.written_at.pop(frame.chatbot_id, None)
        return None

    async def disconnected(self, client: LiveClient) -> None:
        """The socket is gone: whatever it showed is left, at once, on every gateway."""
        shown = self.sockets.pop(client, None)
        if shown is None:
            return
        for chatbot_id, (conversation_id, _) in shown.panes.items():
            await self._left(shown, chatbot_id, conversation_id)

    async def _left(self, shown: Shown, chatbot_id: str, conversation_id: str) -> None:
        try:
            await self.store.drop(chatbot_id, shown.conn)
            await self.publisher.publish(AgentPresence(chatbot_id=chatbot_id, conversation_id=conversation_id,
                                                       conn=shown.conn, agent=shown.agent, state="left",
                                                       ttl_s=self.ttl_s))
        except Exception:  # noqa: BLE001 - advisory: the entry still expires by its TTL everywhere
            log.warning("could not share that a socket left %s", chatbot_id, exc_info=True)

    async def snapshot(self, chatbot_id: str) -> dict[str, Any]:
        """The `presence` frame a newly subscribed dashboard gets: everyone there now."""
        try:
            entries = await self.store.current(chatbot_id)
        except Exception:  # noqa: BLE001 - advisory: the next heartbeats bring it
            log.warning("presence of %s not read", chatbot_id, exc_info=True)
            entries = []
        return presence_frame(chatbot_id, entries, whole=True)

    async def on_event(self, event: AgentPresence) -> None:
        """`agent.presence` (every gateway, no group): to this process's subscribers."""
        if event.chatbot_id in self.hub.channels:
            self.hub.broadcast(event.chatbot_id, presence_frame(event.chatbot_id, [entry_of(event)], whole=False))
