"""The dashboard feed: the Redis index upkeep (rebuilt from Mongo whenever it is missing or
disagrees) and the sequenced `dashboard.updates` every change ends with."""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta

from services.queue import domain
from services.queue.chatbots import ChatbotCatalog
from services.queue.conversation import Conversation
from services.queue.domain import derived_event_id
from services.queue.store import HandoffIndex, IndexChange, IndexState, QueueRecord, oldest_from
from shared.bus import EventPublisher
from shared.events import DashboardUpdate
from shared.ids import utcnow
from shared.views import HandoffRow, MessageView, Page, Snapshot, Stats, SummaryView

log = logging.getLogger("handoff.queue.feed")

# How often one update re-applies itself while the index keeps losing its epoch under it.
APPLY_ATTEMPTS = 3


class DashboardFeed:
    def __init__(self, record: QueueRecord, index: HandoffIndex, chatbots: ChatbotCatalog,
                 dashboard_out: EventPublisher, clock: Callable[[], datetime] = utcnow) -> None:
        self.record = record
        self.index = index
        self.chatbots = chatbots
        self.dashboard_out = dashboard_out
        self.clock = clock
        # One lock per chatbot: seq numbers reach the producer in order, and a rebuild
        # never interleaves with an update.
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    # ------------------------------------------------------------------ index upkeep
    async def _rebuild_locked(self, chatbot_id: str, *, only_if_missing: bool = False) -> str:
        # The asyncio lock serialises this instance; the Redis lock serialises instances, so
        # two queues that both find the index gone rebuild one after the other, not interleaved.
        # Other instances keep applying changes meanwhile (they do not take the Redis lock):
        # the epoch is removed BEFORE Mongo is read, so a change whose `apply` lands before
        # that is in what Mongo returns, and one that lands after sees no epoch and applies
        # itself again once the rebuild is done (`publish`).
        async with self.index.rebuild_lock(chatbot_id):
            if only_if_missing and await self.index.is_whole(chatbot_id):
                return await self.index.epoch(chatbot_id) or ""  # another instance rebuilt it meanwhile
            await self.index.invalidate(chatbot_id)
            now = self.clock()
            convs = await self.record.open_conversations(chatbot_id)
            closed = await self.record.closed_since(chatbot_id, now - domain.RESOLVED_WINDOW - timedelta(days=1))
            epoch = await self.index.rebuild(chatbot_id, [c.row() for c in convs],
                                             [(h["_id"], h["closed_at"]) for h in closed],
                                             await self.record.closed_with_new_messages(chatbot_id))
        log.warning("rebuilt the handoff index of %s from Mongo: %d open, new epoch %s", chatbot_id, len(convs), epoch)
        return epoch

    async def rebuild(self, chatbot_id: str) -> str:
        async with self._locks[chatbot_id]:
            return await self._rebuild_locked(chatbot_id)

    async def ensure_index(self, chatbot_id: str) -> None:
        """Rebuild when the index is gone or not whole (Redis restarted, wiped, a key lost)."""
        if not await self.index.is_whole(chatbot_id):
            async with self._locks[chatbot_id]:
                await self._rebuild_locked(chatbot_id, only_if_missing=True)

    async def all_chatbot_ids(self) -> list[str]:
        # The catalog's: conversations only come to chatbots it knows (channels refuses
        # others). Not a `distinct` over conversations: the Mongo-wire server scans for it.
        return sorted(self.chatbots.ids())

    async def check_index(self) -> list[str]:
        """Startup: rebuild every chatbot whose index is missing or disagrees with Mongo."""
        rebuilt: list[str] = []
        now = self.clock()
        for chatbot_id in await self.all_chatbot_ids():
            week = domain.stats_window(now, await self.chatbots.timezone(chatbot_id)).week_starts_at
            epoch, open_idx, closed_idx = await self.index.counts_for_check(chatbot_id, week)
            open_db = await self.record.count_open(chatbot_id)
            closed_db = await self.record.count_closed_since(chatbot_id, week)
            if epoch is None or open_idx != open_db or closed_idx != closed_db:
                log.warning("index of %s disagrees with Mongo (epoch=%s open %d/%d closed %d/%d)",
                            chatbot_id, epoch, open_idx, open_db, closed_idx, closed_db)
                await self.rebuild(chatbot_id)
                rebuilt.append(chatbot_id)
        return rebuilt

    # ------------------------------------------------------------------ reads
    def stats_of(self, chatbot_id: str, state: IndexState, window: domain.StatsWindow, now: datetime) -> Stats:
        return Stats(
            chatbot_id=chatbot_id, open=state.counts.open, oldest_waiting_since=oldest_from(state.counts),
            today=state.counts.today, resolved_this_week=state.counts.resolved_this_week,
            computed_at=now, today_ends_at=window.today_ends_at,
            closed_with_new_messages=state.counts.closed_with_new,
        )

    async def window(self, chatbot_id: str) -> tuple[datetime, domain.StatsWindow]:
        now = self.clock()
        return now, domain.stats_window(now, await self.chatbots.timezone(chatbot_id))

    async def stats(self, chatbot_id: str) -> Stats:
        await self.ensure_index(chatbot_id)
        now, window = await self.window(chatbot_id)
        return self.stats_of(chatbot_id, await self.index.stats(chatbot_id, window), window, now)

    async def snapshot(self, chatbot_id: str, limit: int) -> Snapshot:
        """Stats and the first page of open handoffs at one seq: what a dashboard resyncs from."""
        await self.ensure_index(chatbot_id)
        now, window = await self.window(chatbot_id)
        state = await self.index.snapshot(chatbot_id, window, limit)
        return Snapshot(
            chatbot_id=chatbot_id, epoch=state.epoch, seq=state.seq,
            stats=self.stats_of(chatbot_id, state, window, now),
            handoffs=Page[HandoffRow](items=state.rows, next_cursor=state.next_cursor, total=state.counts.open),
        )

    async def open_page(self, chatbot_id: str, cursor: str | None, limit: int) -> Page[HandoffRow]:
        """Open handoffs oldest first after `cursor`; ValueError for a cursor of another list."""
        await self.ensure_index(chatbot_id)
        rows, next_cursor, total = await self.index.page(chatbot_id, cursor, limit)
        return Page[HandoffRow](items=rows, next_cursor=next_cursor, total=total)

    # ------------------------------------------------------------------ updates
    async def publish(
        self,
        chatbot_id: str,
        change: IndexChange | None = None,
        *,
        event_id: str,
        conversation: Conversation | None = None,
        message: MessageView | None = None,
        summary: SummaryView | None = None,
        settings_changed: bool = False,
    ) -> DashboardUpdate:
        """Apply `change` to the index and publish the update that carries its seq; the
        event id is derived from the input, so a replay publishes the same id."""
        change = change or IndexChange()
        now, window = await self.window(chatbot_id)
        async with self._locks[chatbot_id]:
            state = await self.index.apply(chatbot_id, change, window)
            attempts = 0
            while not state.whole:
                if attempts == APPLY_ATTEMPTS:
                    raise RuntimeError(f"the handoff index of {chatbot_id} keeps being rebuilt; retrying the event")
                attempts += 1
                # No epoch, or not as many rows as open handoffs: the index vanished (Redis
                # wiped), lost a key, or another instance is rebuilding it, and the change may
                # have gone into keys the rebuild deletes. Once the index is whole again
                # (rebuilt here from Mongo, which holds the change, or by that instance) apply
                # the change again: every part of it is idempotent.
                await self._rebuild_locked(chatbot_id, only_if_missing=True)
                state = await self.index.apply(chatbot_id, change, window)
            update = DashboardUpdate(
                event_id=event_id or derived_event_id(chatbot_id, state.epoch, str(state.seq)),
                chatbot_id=chatbot_id, conversation_id=conversation.id if conversation else None,
                epoch=state.epoch, seq=state.seq, stats=self.stats_of(chatbot_id, state, window, now),
                row_upserted=change.upsert_row, row_removed=change.remove_row,
                conversation=conversation.view() if conversation else None,
                message=message, summary=summary, settings_changed=settings_changed,
            )
            # Enqueued in seq order under the lock; the broker's acknowledgement is awaited
            # outside it, so one chatbot's updates are not one produce round trip apart.
            acknowledged = await self.dashboard_out.enqueue(update)
        await acknowledged
        return update

    async def conversation_changed(self, conv: Conversation, *, event_id: str, message: MessageView | None = None,
                                   summary: SummaryView | None = None) -> DashboardUpdate:
        """A message or contact on a conversation: its row follows while it is handed off; a
        closed one the visitor wrote to again is counted until an agent has seen it."""
        change = IndexChange(upsert_row=conv.row()) if conv.status == "handed_off" else None
        if conv.status == "closed" and conv.unseen_after_close_at is not None:
            change = IndexChange(after_close_add=(conv.id, conv.unseen_after_close_at))
        return await self.publish(conv.chatbot_id, change, event_id=event_id, conversation=conv,
                                  message=message, summary=summary)
