"""The widget's live connections on this instance.

Every channels instance subscribes to one Redis pub/sub channel; whichever instance holds a
visitor's socket pushes the message to it. The history in Redis is replayed on connect, so a
reload (or a message published while the visitor was away) still shows. The first socket
that shows an outbound message records 'delivered' for it, once. The visitor's place in line
comes the same way (a chatbot's whole line in one note) and is sent on connect."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect

from services.channels.domain import status_event
from services.channels.line import NOT_WAITING, LineBoard
from shared.http_limits import nested_deeper_than
from services.channels.store import WebOutbox
from services.channels.visitors import BadToken, VisitorSession
from shared.bus import EventPublisher
from shared.ids import conversation_id_for

log = logging.getLogger("handoff.channels.web")
# The close reason when the socket's token expires (the widget renews on any 4401).
TOKEN_EXPIRED = "The widget token has expired: renew it."

Key = tuple[str, str]  # (chatbot id, visitor id)


class WebHub:
    QUEUE_LIMIT = 500

    def __init__(self, outbox: WebOutbox, statuses: EventPublisher, max_frame_bytes: int = 4096,
                 max_json_depth: int = 32, line: LineBoard | None = None) -> None:
        self.outbox = outbox
        self.line = line
        self.statuses = statuses
        self.max_frame_bytes = max_frame_bytes
        self.max_json_depth = max_json_depth
        self._sockets: dict[Key, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)
        # The line frame each visitor's sockets last got: a line note reaches only the
        # sockets whose place changed (not every socket of the chatbot on every move).
        self._line_shown: dict[Key, dict[str, Any]] = {}
        self._open: set[WebSocket] = set()
        self._listener: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()

    @property
    def connections(self) -> int:
        return sum(len(v) for v in self._sockets.values())

    async def start(self) -> None:
        self._listener = asyncio.create_task(self._listen())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._subscribed.wait(), 10)

    async def disconnect_all(self, code: int = 1012) -> None:
        """Close every visitor socket (1012: service restart): widgets reconnect, possibly
        to another instance, and the history replay fills any gap."""
        for websocket in list(self._open):
            with contextlib.suppress(Exception):
                await websocket.close(code=code)

    async def close(self) -> None:
        await self.disconnect_all()
        if self._listener:
            self._listener.cancel()
            with contextlib.suppress(BaseException):
                await self._listener

    async def _listen(self) -> None:
        while True:
            pubsub = self.outbox.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self.outbox.live_channel)
                self._subscribed.set()
                async for msg in pubsub.listen():
                    if msg.get("type") == "message":
                        self._dispatch(msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis went away: resubscribe; history covers the gap
                log.warning("widget live channel lost (%r); resubscribing", type(exc).__name__)
                await asyncio.sleep(1.0)
            finally:
                with contextlib.suppress(Exception):
                    await pubsub.aclose()

    def _dispatch(self, data: str) -> None:
        try:
            note = json.loads(data)
            if "line" in note:
                self._dispatch_line(note["chatbot_id"], note["line"])
                return
            key = (note["chatbot_id"], note["visitor_id"])
            entry = note["entry"]
        except (ValueError, KeyError, TypeError, AttributeError):
            return
        self._push(key, entry)

    def _push(self, key: Key, entry: dict[str, Any]) -> None:
        for queue in list(self._sockets.get(key, ())):
            if queue.qsize() < self.QUEUE_LIMIT:
                queue.put_nowait(entry)

    def _dispatch_line(self, chatbot_id: str, frames: dict[str, dict[str, Any]]) -> None:
        """A chatbot's line moved: each of its visitors connected here gets their new place,
        or NOT_WAITING when they left the line, only when it changed."""
        for key in [k for k in self._sockets if k[0] == chatbot_id]:
            frame = frames.get(key[1], NOT_WAITING)
            if self._line_shown.get(key, NOT_WAITING) != frame:
                self._line_shown[key] = frame
                self._push(key, frame)

    async def authenticate(self, websocket: WebSocket, verify: Callable[[str | None], VisitorSession],
                           timeout_s: float) -> VisitorSession | None:
        """The visitor's token from the socket's first frame, `{"type": "auth", "token": ...}`
        (kept out of the URL: URLs land in proxy and access logs). A missing, bad, expired or
        other chatbot's token, or none within `timeout_s`, closes the socket with 4401 and
        the reason (the widget renews its token, or starts a new session, and reconnects)."""
        token: str | None = None
        self._open.add(websocket)  # a shutdown closes it too (1012), not only the served ones
        try:
            message = await asyncio.wait_for(websocket.receive(), timeout_s)
        except TimeoutError:
            message = {}
        except (WebSocketDisconnect, RuntimeError, OSError):
            return None
        finally:
            self._open.discard(websocket)
        if message.get("type") == "websocket.disconnect":
            return None
        data = message.get("text")
        if isinstance(data, str) and len(data) <= self.max_frame_bytes and not nested_deeper_than(
                data.encode(), self.max_json_depth):
            with contextlib.suppress(ValueError, AttributeError):
                frame = json.loads(data)
                if frame.get("type") == "auth" and isinstance(frame.get("token"), str):
                    token = frame["token"]
        try:
            return verify(token)
        except BadToken as exc:
            with contextlib.suppress(Exception):
                await websocket.close(code=4401, reason=str(exc)[:120])
            return None

    async def serve(self, websocket: WebSocket, chatbot_id: str, visitor_id: str,
                    expires_at: float | None = None) -> None:
        """Replay the history, then push live messages until the visitor goes away, or until
        the token the socket was opened with expires (`expires_at`, epoch seconds): then it is
        closed with 4401 and the widget renews its token and opens another."""
        key = (chatbot_id, visitor_id)
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._sockets[key].add(queue)  # before reading history: nothing falls in between
        self._open.add(websocket)
        shown: set[str] = set()
        try:
            for entry in await self.outbox.history(chatbot_id, visitor_id):
                await self._show(websocket, chatbot_id, visitor_id, entry, shown)
            await websocket.send_json({"type": "ready"})
            if self.line is not None:  # after `ready`, which clears a line the widget showed before
                self._line_shown[key] = frame = await self.line.place(chatbot_id, visitor_id)
                if frame != NOT_WAITING:
                    await websocket.send_json(frame)
            receiver = asyncio.create_task(self._receive(websocket))
            try:
                while True:
                    getter = asyncio.create_task(queue.get())
                    left = None if expires_at is None else max(0.0, expires_at - time.time())
                    done, _ = await asyncio.wait({getter, receiver}, timeout=left,
                                                 return_when=asyncio.FIRST_COMPLETED)
                    if not done:
                        getter.cancel()
                        with contextlib.suppress(Exception):
                            await websocket.close(code=4401, reason=TOKEN_EXPIRED)
                        return
                    if receiver in done:
                        getter.cancel()
                        return
                    await self._show(websocket, chatbot_id, visitor_id, getter.result(), shown)
            finally:
                receiver.cancel()
                with contextlib.suppress(BaseException):
                    await receiver
        except (WebSocketDisconnect, RuntimeError, OSError):
            return  # the visitor went away mid-send (uvicorn raises ClientDisconnected, an OSError)
        finally:
            self._open.discard(websocket)
            self._sockets[key].discard(queue)
            if not self._sockets[key]:
                self._sockets.pop(key, None)
                self._line_shown.pop(key, None)

    async def _show(self, websocket: WebSocket, chatbot_id: str, visitor_id: str, entry: dict[str, Any], shown: set[str]) -> None:
        if entry.get("type") == "line":
            await websocket.send_json(entry)
            return
        message_id = entry.get("message_id")
        if not message_id or message_id in shown:
            return
        shown.add(message_id)
        await websocket.send_json(entry)
        if entry.get("sender") != "visitor" and await self.outbox.mark_delivered_once(message_id):
            try:
                await self.statuses.publish(status_event(
                    chatbot_id, conversation_id_for(chatbot_id, "web", visitor_id), message_id, "delivered"))
            except Exception:
                await self.outbox.unmark_delivered(message_id)  # the next socket (or replay) records it
                log.exception("could not publish 'delivered' for %s", message_id)

    async def _receive(self, websocket: WebSocket) -> None:
        """Answer pings; return when the socket closes. A frame over `max_frame_bytes` (the
        widget only sends pings) closes the socket with 1009 (message too big). The server
        reads a frame whole before this sees it, up to uvicorn's ws_max_size."""
        while True:
            try:
                message = await websocket.receive()
            except (WebSocketDisconnect, RuntimeError, OSError):
                return
            if message["type"] != "websocket.receive":
                return
            data = message.get("text")
            raw = data.encode() if isinstance(data, str) else (message.get("bytes") or b"")
            if len(raw) > self.max_frame_bytes:
                log.info("widget socket closed: a frame of %d bytes (at most %d)", len(raw), self.max_frame_bytes)
                with contextlib.suppress(Exception):
                    await websocket.close(code=1009, reason="Message too big.")
                return
            if data is None or nested_deeper_than(raw, self.max_json_depth):
                continue
            with contextlib.suppress(ValueError, AttributeError):
                if json.loads(data).get("type") == "ping":
                    await websocket.send_json({"type": "pong"})
