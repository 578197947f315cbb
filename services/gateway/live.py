"""The websockets this process holds and who is subscribed to what.

Each socket has a bounded send queue drained by its own task, so fan-out never awaits a
client: a client that falls `queue_size` frames behind is dropped (it resyncs from a
snapshot when it reconnects) and the others are not slowed down."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.websockets import WebSocket

from services.gateway.domain import NOT_A_MEMBER, error_frame

log = logging.getLogger("handoff.gateway.live")

# Private-use close codes: "you fell behind, reconnect and resync", "no (more) session",
# "this page's origin may not open /ws".
CLOSE_TOO_SLOW = 4408
CLOSE_NO_SESSION = 4401
CLOSE_BAD_ORIGIN = 4403
CLOSE_TOO_BIG = 1009  # RFC 6455 "message too big"


class LiveClient:
    def __init__(self, websocket: WebSocket, agent_id: str, chatbot_ids: set[str], queue_size: int,
                 session_digest: str = "") -> None:
        self.websocket = websocket
        self.agent_id = agent_id
        self.session_digest = session_digest
        self.member_of = chatbot_ids
        self.subscriptions: set[str] = set()
        self.outbox: asyncio.Queue[str | None] = asyncio.Queue(maxsize=queue_size)
        self.dropped = False

    def offer(self, frame: dict[str, Any] | str) -> bool:
        """Queue a frame without waiting; False (and the client is dropped) when it is full."""
        if self.dropped:
            return False
        text = frame if isinstance(frame, str) else json.dumps(frame, separators=(",", ":"))
        try:
            self.outbox.put_nowait(text)
            return True
        except asyncio.QueueFull:
            self.dropped = True
            return False

    async def run_writer(self) -> None:
        """Send queued frames in order until told to stop or the client is dropped."""
        while True:
            text = await self.outbox.get()
            if text is None or self.dropped:
                return
            await self.websocket.send_text(text)

    def stop_writer(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.outbox.put_nowait(None)


class LiveHub:
    def __init__(self) -> None:
        self.clients: set[LiveClient] = set()
        self.by_chatbot: dict[str, set[LiveClient]] = {}
        self.dropped_slow = 0
        # Close handshakes in flight: the event loop keeps only weak references to tasks,
        # so an unreferenced one may be collected before the socket is closed.
        self.closing: set[asyncio.Task[None]] = set()

    def add(self, client: LiveClient) -> None:
        self.clients.add(client)

    def remove(self, client: LiveClient) -> None:
        self.clients.discard(client)
        for chatbot_id in list(client.subscriptions):
            self.unsubscribe(client, chatbot_id)

    def subscribe(self, client: LiveClient, chatbot_id: str) -> None:
        client.subscriptions.add(chatbot_id)
        self.by_chatbot.setdefault(chatbot_id, set()).add(client)

    def unsubscribe(self, client: LiveClient, chatbot_id: str) -> None:
        client.subscriptions.discard(chatbot_id)
        subs = self.by_chatbot.get(chatbot_id)
        if subs is not None:
            subs.discard(client)
            if not subs:
                del self.by_chatbot[chatbot_id]

    def broadcast(self, chatbot_id: str, frame: dict[str, Any]) -> int:
        """Hand the frame to every subscriber of the chatbot; returns how many took it."""
        subscribers = self.by_chatbot.get(chatbot_id)
        if not subscribers:
            return 0
        text = json.dumps(frame, separators=(",", ":"))
        delivered = 0
        for client in list(subscribers):
            if client.offer(text):
                delivered += 1
            else:
                self._drop(client)
        return delivered

    def end_session(self, session_digest: str, code: int) -> int:
        """Close the sockets opened with a session that just ended (logout)."""
        ended = [c for c in self.clients if c.session_digest == session_digest]
        for client in ended:
            self.remove(client)
            self._close(client, code)
        return len(ended)

    async def revalidate(self, memberships_of: Callable[[str], Awaitable[set[str] | None]], code: int) -> int:
        """Check every socket against its session as stored now (`memberships_of(digest)`:
        the session's chatbot ids, None when the session is gone or expired). A socket
        whose session ended on any gateway process is closed with `code`; a subscription
        to a chatbot the agent is no longer a member of ends with a 403 error frame; newly
        granted chatbots can be subscribed to. Returns how many sockets were closed."""
        by_session: dict[str, list[LiveClient]] = {}
        for client in list(self.clients):
            by_session.setdefault(client.session_digest, []).append(client)
        closed = 0
        for digest, clients in by_session.items():
            memberships = await memberships_of(digest)
            for client in clients:
                if client not in self.clients:  # went away while we looked
                    continue
                if memberships is None:
                    self.remove(client)
                    self._close(client, code)
                    closed += 1
                    continue
                client.member_of = set(memberships)
                for chatbot_id in sorted(client.subscriptions - client.member_of):
                    self.unsubscribe(client, chatbot_id)
                    if not client.offer(error_frame(NOT_A_MEMBER, chatbot_id, 403)):
                        self._drop(client)
                        break
        return closed

    def _close(self, client: LiveClient, code: int) -> None:
        task = asyncio.get_running_loop().create_task(_close_quietly(client.websocket, code))
        self.closing.add(task)
        task.add_done_callback(self.closing.discard)

    def _drop(self, client: LiveClient) -> None:
        log.warning("dropping a websocket client of agent %s that fell behind", client.agent_id)
        self.dropped_slow += 1
        self.remove(client)
        self._close(client, CLOSE_TOO_SLOW)


async def _close_quietly(websocket: WebSocket, code: int) -> None:
    reason = "Too slow; reconnect and resync." if code == CLOSE_TOO_SLOW else "Signed out."
    with contextlib.suppress(Exception):
        await asyncio.wait_for(websocket.close(code=code, reason=reason), 5)
