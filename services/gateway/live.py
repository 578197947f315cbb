"""The websockets this process holds, who is subscribed to what, and the fan-out of updates
(docs/contracts.md "Live protocol", coalescing).

Fan-out never awaits a client. A chatbot's updates are flushed to its subscribers at most
once per tick; the first one after a quiet tick goes at once (leading edge), so a lone
update waits for nothing. The tick grows with the audience (`subscribers / frame_budget`
seconds, at most `tick_s`): a chatbot's fan-out costs at most `frame_budget` frames a
second, and one watched by a few dashboards is barely held at all.

A flush only marks each subscriber due. Its writer builds the frame when it can send:
every update flushed since the last one it sent, coalesced (coalesce.py) and encoded once
per starting point, so clients in step share one text and a client that fell behind gets
the latest state in one frame instead of a backlog. A client is stuck, and dropped with
4408 (it resyncs from a snapshot when it reconnects), when it is more than `catch_up`
updates of a chatbot behind (the chatbot holds no more for it), or has `queue_size` other
frames (results, settings, answers) waiting."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.websockets import WebSocket

from services.gateway.coalesce import Entry, dumps, updates_frame
from services.gateway.domain import NOT_A_MEMBER, error_frame
from services.gateway.metrics import DROPPED_SLOW, FRAMES_SENT, OPEN_SOCKETS, SUBSCRIPTIONS

log = logging.getLogger("handoff.gateway.live")

# Private-use close codes: "you fell behind, reconnect and resync", "no (more) session",
# "this page's origin may not open /ws".
CLOSE_TOO_SLOW = 4408
CLOSE_NO_SESSION = 4401
CLOSE_BAD_ORIGIN = 4403
CLOSE_TOO_BIG = 1009  # RFC 6455 "message too big"


class ChatbotChannel:
    """One chatbot's updates on this process: those waiting for the next flush, and the
    flushed ones some subscriber has not been sent yet (positions count flushed updates)."""

    def __init__(self, chatbot_id: str) -> None:
        self.chatbot_id = chatbot_id
        self.subscribers: dict[LiveClient, Subscription] = {}
        self.pending: list[Entry] = []
        self.held: list[Entry] = []
        self.start = 0  # the position of held[0]
        self.end = 0  # updates flushed so far
        self.last_flush = float("-inf")
        self.timer: asyncio.TimerHandle | None = None
        self._frames: dict[int, str] = {}  # from position -> the frame of held[position:end]

    def frame_since(self, position: int) -> str | None:
        """The frame of every update flushed from `position` on (None: nothing new)."""
        if position >= self.end:
            return None
        text = self._frames.get(position)
        if text is None:
            text = self._frames[position] = updates_frame(self.chatbot_id, self.held[position - self.start:])
        return text

    def take_pending(self, now: float) -> None:
        self.held.extend(self.pending)
        self.end += len(self.pending)
        self.pending = []
        self._frames.clear()
        self.last_flush = now

    def forget_before(self, position: int) -> None:
        if position > self.start:
            del self.held[:position - self.start]
            self.start = position

    def cancel_timer(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None


class Subscription:
    """A client's place in a chatbot's updates; `due` while it waits in the client's outbox."""

    __slots__ = ("channel", "position", "due")

    def __init__(self, channel: ChatbotChannel) -> None:
        self.channel = channel
        self.position = channel.end
        self.due = False


class LiveClient:
    """One socket. Its writer task is started by a frame to send; after updates it waits for
    the next ones until a revalidation round finds it waiting (`rest`), so an
    idle dashboard holds no task (memory per idle socket bounds a process) and a busy one
    does not pay for a new task per frame."""

    __slots__ = ("websocket", "agent_id", "session_digest", "member_of", "subscriptions", "outbox", "queue_size",
                 "waiting_frames", "dropped", "_writer", "_wake")

    def __init__(self, websocket: WebSocket, agent_id: str, chatbot_ids: set[str], queue_size: int = 256,
                 session_digest: str = "") -> None:
        self.websocket = websocket
        self.agent_id = agent_id
        self.session_digest = session_digest
        self.member_of = chatbot_ids
        self.subscriptions: dict[str, Subscription] = {}
        # In order: frames as text, and subscriptions due (their frame is built when sent).
        self.outbox: deque[str | Subscription] = deque()
        self.queue_size = queue_size
        self.waiting_frames = 0  # texts in the outbox
        self.dropped = False
        self._writer: asyncio.Task[None] | None = None
        self._wake: asyncio.Future[None] | None = None  # set while the writer waits for work

    def offer(self, frame: dict[str, Any] | str) -> bool:
        """Queue a frame without waiting; False (and the client is dropped) when it already
        has `queue_size` frames waiting."""
        if self.dropped:
            return False
        if self.waiting_frames >= self.queue_size:
            self.stop_now()
            return False
        self.outbox.append(frame if isinstance(frame, str) else dumps(frame))
        self.waiting_frames += 1
        self._write_soon()
        return True

    def mark_due(self, subscription: Subscription) -> None:
        if not subscription.due and not self.dropped:
            subscription.due = True
            self.outbox.append(subscription)
            self._write_soon()

    def stop_now(self) -> None:
        """Dropped (or gone): nothing more is sent; a send in progress is cancelled."""
        self.dropped = True
        if self._writer is not None and self._writer is not asyncio.current_task():
            self._writer.cancel()
            self._writer = self._wake = None  # one cancelled before it ran would never clear it

    async def drained(self) -> None:
        """Until nothing is left to send (tests; a stuck send never ends)."""
        while self._writer is not None and (self._wake is None or self.outbox):
            await asyncio.sleep(0)

    def rest(self) -> None:
        """End the writer if it is waiting with nothing to send (the next frame starts one)."""
        if self._wake is not None and self._writer is not None:
            self._writer.cancel()
            self._writer = self._wake = None

    def _write_soon(self) -> None:
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write())
        elif self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _next_text(self) -> str | None:
        item = self.outbox.popleft()
        if isinstance(item, str):
            self.waiting_frames -= 1
            return item
        item.due = False
        if self.subscriptions.get(item.channel.chatbot_id) is not item:
            return None  # unsubscribed meanwhile
        text = item.channel.frame_since(item.position)
        item.position = item.channel.end
        return text

    async def _write(self) -> None:
        """Send in order. With nothing left to send it ends, unless it just sent updates
        (more are likely to follow): then it waits for them until dropped or rested."""
        loop = asyncio.get_running_loop()
        updates = False
        try:
            while not self.dropped:
                if not self.outbox:
                    if not updates:
                        return
                    self._wake = loop.create_future()
                    await self._wake
                    self._wake = None
                    continue
                updates = not isinstance(self.outbox[0], str)
                text = self._next_text()
                if text is not None:
                    await self.websocket.send_text(text)
                    FRAMES_SENT.inc()
        except Exception:  # noqa: BLE001 - a dead socket: its route sees the disconnect and cleans up
            self.dropped = True
        finally:
            if self._writer is asyncio.current_task():
                self._writer = self._wake = None


class LiveHub:
    def __init__(self, tick_s: float = 0.05, frame_budget: float = 2000.0, catch_up: int = 1000,
                 clock: Callable[[], float] | None = None) -> None:
        self.tick_s = tick_s
        # The event loop's clock unless a test gives its own (then it fires ticks itself: flush()).
        self.clock = clock or (lambda: asyncio.get_running_loop().time())
        self.frame_budget = frame_budget
        self.catch_up = catch_up
        self.clients: set[LiveClient] = set()
        self.channels: dict[str, ChatbotChannel] = {}
        self.dropped_slow = 0
        # Close handshakes in flight: the event loop keeps only weak references to tasks,
        # so an unreferenced one may be collected before the socket is closed.
        self.closing: set[asyncio.Task[None]] = set()

    def add(self, client: LiveClient) -> None:
        if client not in self.clients:
            self.clients.add(client)
            OPEN_SOCKETS.inc()

    def remove(self, client: LiveClient) -> None:
        if client in self.clients:
            self.clients.discard(client)
            OPEN_SOCKETS.dec()
        for chatbot_id in list(client.subscriptions):
            self.unsubscribe(client, chatbot_id)

    def subscribers(self, chatbot_id: str) -> set[LiveClient]:
        channel = self.channels.get(chatbot_id)
        return set(channel.subscribers) if channel else set()

    def subscribe(self, client: LiveClient, chatbot_id: str) -> None:
        if chatbot_id in client.subscriptions:
            return
        channel = self.channels.get(chatbot_id)
        if channel is None:
            channel = self.channels[chatbot_id] = ChatbotChannel(chatbot_id)
        channel.subscribers[client] = client.subscriptions[chatbot_id] = Subscription(channel)
        SUBSCRIPTIONS.inc()

    def unsubscribe(self, client: LiveClient, chatbot_id: str) -> None:
        subscription = client.subscriptions.pop(chatbot_id, None)
        if subscription is None:
            return
        SUBSCRIPTIONS.dec()
        channel = subscription.channel
        channel.subscribers.pop(client, None)
        if not channel.subscribers:
            channel.cancel_timer()
            del self.channels[chatbot_id]

    # ---------------------------------------------------------------- fan-out
    def tick_of(self, channel: ChatbotChannel) -> float:
        """How often the chatbot's updates may go out: its fan-out stays within the frame
        budget, and no update waits longer than `tick_s`."""
        return min(self.tick_s, len(channel.subscribers) / self.frame_budget)

    def update(self, chatbot_id: str, entry: Entry) -> bool:
        """A DashboardUpdate (as JSON) for the chatbot's subscribers: flushed at once when
        the chatbot's last flush is a tick ago, else with the others at the tick's end.
        False when nobody here is subscribed."""
        channel = self.channels.get(chatbot_id)
        if channel is None:
            return False
        channel.pending.append(entry)
        if channel.timer is None:
            now = self.clock()
            due = channel.last_flush + self.tick_of(channel)
            if now >= due:
                self.flush(channel)
            else:
                channel.timer = asyncio.get_running_loop().call_later(due - now, self.flush, channel)
        return True

    def flush(self, channel: ChatbotChannel) -> None:
        """Hand what the chatbot holds to its subscribers; drop the ones it cannot wait for."""
        channel.cancel_timer()
        if not channel.pending:
            return
        channel.take_pending(self.clock())
        oldest_kept = channel.end - self.catch_up
        lowest = channel.end
        for client, subscription in list(channel.subscribers.items()):
            if subscription.position < oldest_kept:
                self._drop(client)
                continue
            lowest = min(lowest, subscription.position)
            client.mark_due(subscription)
        channel.forget_before(lowest)

    def broadcast(self, chatbot_id: str, frame: dict[str, Any]) -> int:
        """Hand a frame (not an update) to every subscriber of the chatbot, after the
        updates that came before it; returns how many took it."""
        channel = self.channels.get(chatbot_id)
        if channel is None:
            return 0
        self.flush(channel)
        text = dumps(frame)
        delivered = 0
        for client in list(channel.subscribers):
            if client.offer(text):
                delivered += 1
            else:
                self._drop(client)
        return delivered

    # ---------------------------------------------------------------- sessions
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
            client.rest()  # writers idle since the last round end: idle dashboards hold no task
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
                for chatbot_id in sorted(set(client.subscriptions) - client.member_of):
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
        if client not in self.clients:
            return
        log.warning("dropping a websocket client of agent %s that fell behind", client.agent_id)
        client.stop_now()
        self.dropped_slow += 1
        DROPPED_SLOW.inc()
        self.remove(client)
        self._close(client, CLOSE_TOO_SLOW)


async def _close_quietly(websocket: WebSocket, code: int) -> None:
    reason = "Too slow; reconnect and resync." if code == CLOSE_TOO_SLOW else "Signed out."
    with contextlib.suppress(Exception):
        await asyncio.wait_for(websocket.close(code=code, reason=reason), 5)
