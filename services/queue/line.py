"""The visitor's place in line: "You're number 3 in line. Expected wait: about 4 minutes."

**The line** of a chatbot is its handed-off conversations that no agent has answered yet in
their current waiting period (`first_reply_at` unset), oldest `waiting_since` first: a
visitor an agent already talks with is being served, not ahead of anyone. Position = 1 +
the conversations of the line that began waiting earlier. Read from Mongo (the record; no
index to keep in step): one find per publish, and publishes are coalesced per chatbot.

**The expected wait** is the position times the time one place took recently: for each
conversation of the chatbot whose first agent reply came in the last `LINE_HISTORY_HOURS`,
its wait (handoff or reopen -> first reply) divided by the position it entered the line at
(recorded at entry; 1 for one recorded before this existed), and the median of those. So
"3rd in line, recent visitors waited 2 minutes per place" -> about 6 minutes. The median of
the raw waits alone would tell the 10th in line what the 1st waits; the number of agents is
not knowable; the time per place needs neither. Fewer than `LINE_MIN_SAMPLES` such waits:
nothing is known, the text says the position only.

**Delivery**: the widget's visitors get the whole line as one `LineChanged` per chatbot (on
`visitor.line`, keyed by chatbot), published at most once per `LINE_INTERVAL_S` per
chatbot however many conversations moved (the first at once). WhatsApp and Telegram are told
once, in the handoff message (incoming.py), and at most once more when the expected wait
changed a lot (`changed_a_lot`), while the WhatsApp window is open and within business
hours. Outside business hours the widget shows the offline message instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from statistics import median

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection

from services.queue import domain
from services.queue.chatbots import ChatbotCatalog
from services.queue.conversation import Conversation
from services.queue.domain import derived_event_id
from shared.bus import EventPublisher
from shared.chatbots import HumanHandoffSettings
from shared.events import LineChanged, LinePlace, OutboundMessage, VisitorIdentity
from shared.ids import utcnow

log = logging.getLogger("handoff.queue.line")

# "A lot": the expected wait moved by at least half of what the visitor was told, and by at
# least this much (a visitor told "about 2 minutes" is not messaged about "about 3 minutes").
LOT_SHARE = 0.5
LOT_MIN_S = 5 * 60
# Channels told in a message (the widget shows the line live instead).
TOLD_CHANNELS = ("whatsapp", "telegram")


# ---------------------------------------------------------------------- the rules (no I/O)
@dataclass(frozen=True)
class WaitSample:
    """One recent wait: from the start of a waiting period to its first agent reply."""

    waited_s: float
    entry_position: int = 1


def seconds_per_place(samples: list[WaitSample], min_samples: int) -> float | None:
    """The median time one place in line took; None when fewer than `min_samples` waits are
    known (then no wait is told: never a made-up number)."""
    if len(samples) < max(1, min_samples):
        return None
    return median(max(0.0, s.waited_s) / max(1, s.entry_position) for s in samples)


def expected_wait_s(position: int, per_place_s: float | None) -> float | None:
    return None if per_place_s is None else position * per_place_s


def changed_a_lot(told_s: float, now_s: float) -> bool:
    return abs(now_s - told_s) >= max(LOT_MIN_S, LOT_SHARE * told_s)


@dataclass(frozen=True)
class Waiting:
    """A conversation in line, as the line reads it."""

    id: str
    channel: str
    visitor_id: str
    visitor_name: str | None
    waiting_since: datetime
    last_visitor_message_at: datetime | None
    told: dict | None  # what a WhatsApp/Telegram visitor was told: {since, wait_s, updated}

    @classmethod
    def of(cls, doc: dict) -> Waiting:
        return cls(doc["_id"], doc["channel"], doc["visitor_id"], doc.get("visitor_name"), doc["waiting_since"],
                   doc.get("last_visitor_message_at"), doc.get("line_told"))


# ---------------------------------------------------------------------- the record
class LineRecord:
    """The line's reads and its few fields on `conversations` (`line_entry`, `line_told`;
    never a state field)."""

    def __init__(self, conversations: AsyncCollection) -> None:
        self.conversations = conversations

    async def create_indexes(self) -> None:
        await self.conversations.create_index([("chatbot_id", ASCENDING), ("first_reply_at", ASCENDING)])

    async def waiting(self, chatbot_id: str) -> list[Waiting]:
        docs = await self.conversations.find(
            {"chatbot_id": chatbot_id, "status": "handed_off", "first_reply_at": None},
            {"channel": 1, "visitor_id": 1, "visitor_name": 1, "waiting_since": 1, "last_visitor_message_at": 1,
             "line_told": 1},
        ).sort([("waiting_since", ASCENDING), ("_id", ASCENDING)]).to_list()
        return [Waiting.of(d) for d in docs if d.get("waiting_since") is not None]

    async def samples(self, chatbot_id: str, since: datetime) -> list[WaitSample]:
        docs = await self.conversations.find(
            {"chatbot_id": chatbot_id, "first_reply_at": {"$gte": since}},
            {"waiting_since": 1, "first_reply_at": 1, "line_entry": 1},
        ).to_list()
        found = []
        for d in docs:
            if d.get("waiting_since") is None:
                continue
            entry = d.get("line_entry") or {}
            position = entry.get("position", 1) if entry.get("since") == d["waiting_since"] else 1
            found.append(WaitSample((d["first_reply_at"] - d["waiting_since"]).total_seconds(), int(position)))
        return found

    async def entered(self, conv: Conversation, position: int, told_wait_s: float | None, told: bool) -> None:
        fields: dict = {"line_entry": {"since": conv.waiting_since, "position": position}}
        if told:
            fields["line_told"] = {"since": conv.waiting_since, "wait_s": told_wait_s, "updated": False}
        await self.conversations.update_one({"_id": conv.id}, {"$set": fields})

    async def claim_update(self, waiting: Waiting, wait_s: float) -> bool:
        """The one update a visitor may get in this waiting period; False when it was had."""
        result = await self.conversations.update_one(
            {"_id": waiting.id, "line_told.since": waiting.waiting_since, "line_told.updated": False},
            {"$set": {"line_told.updated": True, "line_told.update_wait_s": wait_s}})
        return result.modified_count == 1


# ---------------------------------------------------------------------- the use case
class VisitorLine:
    def __init__(self, record: LineRecord, chatbots: ChatbotCatalog, line_out: EventPublisher,
                 outbound_out: EventPublisher, *,
                 history_hours: float, min_samples: int, interval_s: float, max_places: int,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.record = record
        self.chatbots = chatbots
        self.line_out = line_out
        self.outbound_out = outbound_out
        self.history = timedelta(hours=history_hours)
        self.min_samples = min_samples
        self.interval_s = interval_s
        self.max_places = max_places
        self.clock = clock
        self._dirty: set[str] = set()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._last: dict[str, float] = {}
        # Chatbots whose line was not empty when last published: refreshed now and then
        # (`refresh`), so the estimate and business hours follow the clock between moves.
        self._shown: set[str] = set()

    async def _handoff_settings(self, chatbot_id: str) -> HumanHandoffSettings:
        bot = await self.chatbots.get(chatbot_id)
        return bot.human_handoff if bot else HumanHandoffSettings()

    async def per_place_s(self, chatbot_id: str, now: datetime) -> float | None:
        return seconds_per_place(await self.record.samples(chatbot_id, now - self.history), self.min_samples)

    # ------------------------------------------------------------------ moves
    async def entered(self, conv: Conversation) -> str | None:
        """`conv` has just joined the line (a handoff or a reopen): its entry position is
        recorded (the estimator's input) and the line moves. Returns what a WhatsApp or
        Telegram visitor is told in the handoff message (None: nothing to tell — the widget
        shows it live, the tool's line text is off, or outside business hours)."""
        now = self.clock()
        waiting = await self.record.waiting(conv.chatbot_id)
        ids = [w.id for w in waiting]
        position = ids.index(conv.id) + 1 if conv.id in ids else len(ids) + 1
        hh = await self._handoff_settings(conv.chatbot_id)
        wait = expected_wait_s(position, await self.per_place_s(conv.chatbot_id, now))
        tell = conv.channel in TOLD_CHANNELS and hh.line_enabled and hh.is_available(now)
        await self.record.entered(conv, position, wait, tell)
        self.moved(conv.chatbot_id)
        return hh.line_text(position, wait) if tell else None

    def moved(self, chatbot_id: str) -> None:
        """The chatbot's line changed: publish it, coalesced (at once if nothing went out in
        the last `interval_s`, else once at the end of it, whatever moved meanwhile)."""
        self._dirty.add(chatbot_id)
        if chatbot_id not in self._tasks:
            self._tasks[chatbot_id] = asyncio.create_task(self._run(chatbot_id))

    async def _run(self, chatbot_id: str) -> None:
        try:
            while chatbot_id in self._dirty:
                wait = self._last.get(chatbot_id, float("-inf")) + self.interval_s - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._dirty.discard(chatbot_id)
                self._last[chatbot_id] = time.monotonic()
                try:
                    await self.publish(chatbot_id)
                except Exception:  # noqa: BLE001 - the next move (or refresh) publishes the whole line again
                    log.exception("could not publish the line of %s", chatbot_id)
        finally:
            self._tasks.pop(chatbot_id, None)

    async def refresh(self) -> None:
        """Lines on show are published again now and then: the estimate and business hours
        change with the clock, not only with moves."""
        for chatbot_id in list(self._shown):
            self.moved(chatbot_id)

    async def idle(self) -> None:
        """Until every pending publish went out (tests, shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    # ------------------------------------------------------------------ publishing
    async def publish(self, chatbot_id: str) -> LineChanged:
        now = self.clock()
        hh = await self._handoff_settings(chatbot_id)
        waiting = await self.record.waiting(chatbot_id)
        per_place = await self.per_place_s(chatbot_id, now) if waiting else None
        available = hh.is_available(now)
        places: list[LinePlace] = []
        for position, w in enumerate(waiting if hh.line_enabled else [], start=1):
            wait = expected_wait_s(position, per_place)
            if w.channel == "web":
                if len(places) < self.max_places:
                    text = hh.line_text(position, wait) if available else hh.offline_message
                    places.append(LinePlace(visitor_id=w.visitor_id, position=position, text=text))
            elif available and wait is not None:
                await self._maybe_update(w, chatbot_id, position, wait, hh, now)
        event = LineChanged(chatbot_id=chatbot_id, places=places)
        await self.line_out.publish(event)
        (self._shown.add if waiting else self._shown.discard)(chatbot_id)
        return event

    async def _maybe_update(self, w: Waiting, chatbot_id: str, position: int, wait: float,
                            hh: HumanHandoffSettings, now: datetime) -> None:
        """The one later message a WhatsApp/Telegram visitor may get: when the wait they were
        told moved a lot, and (WhatsApp) only while its 24-hour window is open."""
        told = w.told or {}
        if told.get("since") != w.waiting_since or told.get("updated") or told.get("wait_s") is None:
            return
        if not changed_a_lot(float(told["wait_s"]), wait):
            return
        window_ends = domain.reply_window_ends_at(w.channel, w.last_visitor_message_at)
        if w.channel == "whatsapp" and (window_ends is None or window_ends <= now):
            return
        if not await self.record.claim_update(w, wait):
            return
        message_id = derived_event_id(w.id, w.waiting_since.isoformat(), "line-update")
        await self.outbound_out.publish(OutboundMessage(
            event_id="o_" + message_id, chatbot_id=chatbot_id, conversation_id=w.id, message_id=message_id,
            channel=w.channel, visitor=VisitorIdentity(external_id=w.visitor_id, name=w.visitor_name),
            text=hh.line_text(position, wait), sender="system"))
