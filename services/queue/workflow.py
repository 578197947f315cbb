"""The queue's use cases: load from the record, ask the domain, write, index, publish.

Ordering inside every use case: the conditional write in Mongo first (it decides), then the
history, then the index, then the events. A crash anywhere replays the input event, and
each step is safe to repeat (ids are derived from the input, writes are upserts or
conditional, `last_command_id` recognises a transition this command already made).
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, Protocol

from services.queue import domain
from services.queue.domain import CommandRefused, derived_event_id
from services.queue.store import HandoffIndex, IndexChange, IndexState, QueueRecord, oldest_from
from shared.chatbots import ChatbotSettings
from shared.events import (
    AgentCommand,
    ChatbotSettingsChanged,
    ChatbotSettingsUpdate,
    CommandResult,
    ContactCaptured,
    ContactDetails,
    ConversationStateChanged,
    DashboardUpdate,
    DeliveryStatusChanged,
    Envelope,
    HandoffRequested,
    HandoffSummaryReady,
    MessageAppended,
    OutboundMessage,
    TranscriptLine,
    VisitorIdentity,
)
from shared.ids import utcnow
from shared.views import Contact, ConversationView, HandoffRow, MessageView, Stats, SummaryView

log = logging.getLogger("handoff.queue")

# How often one update re-applies itself while the index keeps losing its epoch under it.
APPLY_ATTEMPTS = 3


class Publisher(Protocol):
    async def publish(self, event: Envelope) -> None: ...


class HandoffQueue:
    def __init__(
        self,
        record: QueueRecord,
        index: HandoffIndex,
        *,
        state_out: Publisher,
        dashboard_out: Publisher,
        outbound_out: Publisher,
        settings_out: Publisher,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.record = record
        self.index = index
        self.state_out = state_out
        self.dashboard_out = dashboard_out
        self.outbound_out = outbound_out
        self.settings_out = settings_out
        self.clock = clock
        self.chatbots: dict[str, ChatbotSettings] = {}
        # One lock per chatbot: seq numbers leave this instance in order, and a rebuild
        # never interleaves with an update.
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    # ------------------------------------------------------------------ chatbots
    async def load_chatbots(self) -> None:
        self.chatbots = {c.chatbot_id: c for c in await self.record.list_chatbots()}

    async def chatbot(self, chatbot_id: str) -> ChatbotSettings | None:
        found = self.chatbots.get(chatbot_id)
        if found is None:
            found = await self.record.get_chatbot(chatbot_id)
            if found is not None:
                self.chatbots[chatbot_id] = found
        return found

    async def timezone(self, chatbot_id: str) -> str:
        bot = await self.chatbot(chatbot_id)
        return bot.timezone if bot else "UTC"

    async def publish_all_settings(self) -> None:
        """The embedded broker keeps topics in memory only: republish what Mongo holds."""
        for bot in self.chatbots.values():
            await self.settings_out.publish(ChatbotSettingsChanged(chatbot_id=bot.chatbot_id, settings=bot))

    async def seed_chatbot(self, settings: ChatbotSettings) -> None:
        await self.record.save_chatbot(settings)
        self.chatbots[settings.chatbot_id] = settings
        await self.settings_out.publish(ChatbotSettingsChanged(chatbot_id=settings.chatbot_id, settings=settings))

    async def on_settings_changed(self, event: ChatbotSettingsChanged) -> None:
        """Another queue instance changed a chatbot: keep this instance's copy (timezone for
        "Today") current. Mongo stays the record; this is only the cache."""
        if event.deleted:
            self.chatbots.pop(event.chatbot_id, None)
        else:
            self.chatbots[event.chatbot_id] = event.settings

    # ------------------------------------------------------------------ index upkeep
    async def _rebuild_locked(self, chatbot_id: str, *, only_if_missing: bool = False) -> str:
        # The asyncio lock serialises this instance; the Redis lock serialises instances, so
        # two queues that both find the index gone rebuild one after the other, not interleaved.
        # Other instances keep applying changes meanwhile (they do not take the Redis lock):
        # the epoch is removed BEFORE Mongo is read, so a change whose `apply` lands before
        # that is in what Mongo returns, and one that lands after sees no epoch and applies
        # itself again once the rebuild is done (`publish_update`).
        async with self.index.rebuild_lock(chatbot_id):
            if only_if_missing:
                current = await self.index.epoch(chatbot_id)
                if current is not None:  # another instance rebuilt it while we waited
                    return current
            await self.index.invalidate(chatbot_id)
            now = self.clock()
            convs = await self.record.open_conversations(chatbot_id)
            closed = await self.record.closed_since(chatbot_id, now - domain.RESOLVED_WINDOW - timedelta(days=1))
            epoch = await self.index.rebuild(chatbot_id, [row_of(c) for c in convs],
                                             [(h["_id"], h["closed_at"]) for h in closed])
        log.warning("rebuilt the handoff index of %s from Mongo: %d open, new epoch %s", chatbot_id, len(convs), epoch)
        return epoch

    async def rebuild(self, chatbot_id: str) -> str:
        async with self._locks[chatbot_id]:
            return await self._rebuild_locked(chatbot_id)

    async def ensure_index(self, chatbot_id: str) -> None:
        """Rebuild when the index is gone (Redis restarted or was wiped)."""
        if await self.index.epoch(chatbot_id) is None:
            async with self._locks[chatbot_id]:
                await self._rebuild_locked(chatbot_id, only_if_missing=True)

    async def all_chatbot_ids(self) -> list[str]:
        return sorted(set(self.chatbots) | set(await self.record.chatbot_ids_with_conversations()))

    async def check_index(self) -> list[str]:
        """Startup: rebuild every chatbot whose index is missing or disagrees with Mongo."""
        rebuilt: list[str] = []
        now = self.clock()
        for chatbot_id in await self.all_chatbot_ids():
            week = domain.stats_window(now, "UTC").week_starts_at
            epoch, open_idx, closed_idx = await self.index.counts_for_check(chatbot_id, week)
            open_db = await self.record.count_open(chatbot_id)
            closed_db = len(await self.record.closed_since(chatbot_id, week))
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
        )

    async def window(self, chatbot_id: str) -> tuple[datetime, domain.StatsWindow]:
        now = self.clock()
        return now, domain.stats_window(now, await self.timezone(chatbot_id))

    # ------------------------------------------------------------------ dashboard updates
    async def publish_update(
        self,
        chatbot_id: str,
        change: IndexChange | None = None,
        *,
        conversation: dict | None = None,
        message: dict | None = None,
        summary: SummaryView | None = None,
        settings_changed: bool = False,
        event_id: str | None = None,
    ) -> DashboardUpdate:
        change = change or IndexChange()
        now, window = await self.window(chatbot_id)
        async with self._locks[chatbot_id]:
            state = await self.index.apply(chatbot_id, change, window)
            attempts = 0
            while not state.epoch:
                if attempts == APPLY_ATTEMPTS:
                    raise RuntimeError(f"the handoff index of {chatbot_id} keeps being rebuilt; retrying the event")
                attempts += 1
                # No epoch: the index vanished (Redis wiped) or another instance is rebuilding
                # it, and the change may have gone into keys the rebuild deletes. Once the
                # index is whole again (rebuilt here from Mongo, which holds the change, or by
                # that instance) apply the change again: every part of it is idempotent.
                await self._rebuild_locked(chatbot_id, only_if_missing=True)
                state = await self.index.apply(chatbot_id, change, window)
            update = DashboardUpdate(
                event_id=event_id or derived_event_id(chatbot_id, state.epoch, str(state.seq)),
                chatbot_id=chatbot_id,
                conversation_id=conversation["_id"] if conversation else None,
                epoch=state.epoch, seq=state.seq, stats=self.stats_of(chatbot_id, state, window, now),
                row_upserted=change.upsert_row, row_removed=change.remove_row,
                conversation=view_of(conversation) if conversation else None,
                message=message_view_of(message) if message else None,
                summary=summary, settings_changed=settings_changed,
            )
            await self.dashboard_out.publish(update)
        return update

    # ------------------------------------------------------------------ conversation.events
    async def on_message_appended(self, event: MessageAppended) -> None:
        conv_id = _conversation_id(event)
        at = event.occurred_at
        message = {
            "_id": event.message_id, "conversation_id": conv_id, "chatbot_id": event.chatbot_id,
            "sender": event.sender, "sender_name": None, "text": event.text, "created_at": at, "delivery": None,
        }
        inserted = await self.record.insert_message(message)
        set_fields: dict[str, Any] = {"last_message_at": at, "last_message_preview": domain.preview(event.text), "updated_at": at}
        if event.sender == "visitor":
            set_fields["last_visitor_message_at"] = at
        if event.visitor.name:
            set_fields["visitor_name"] = event.visitor.name
        if not inserted:
            # A replay: the message is stored; make sure the count is right (the first try
            # may have stopped before counting it) instead of counting it twice.
            set_fields["message_count"] = await self.record.count_messages(conv_id)
        conv = await self.record.upsert_conversation(
            conv_id, _new_conversation(event, conv_id), set_fields, inc=None if not inserted else {"message_count": 1}
        )
        conv = await self._refresh_display_name(conv)
        if not inserted:  # show what is stored, e.g. a delivery state it has since gained
            message = await self.record.get_message(event.message_id) or message
        change = IndexChange(upsert_row=row_of(conv)) if conv["status"] == "handed_off" else None
        if conv["status"] == "closed" and event.sender == "visitor":
            log.info("visitor wrote to closed conversation %s: stored, it stays closed", conv_id)
        await self.publish_update(event.chatbot_id, change, conversation=conv, message=message,
                                  event_id=derived_event_id(event.event_id, "update"))

    async def on_contact_captured(self, event: ContactCaptured) -> None:
        conv_id = _conversation_id(event)
        set_fields: dict[str, Any] = {"updated_at": event.occurred_at}
        for key, value in event.contact.model_dump().items():
            if value:
                set_fields[f"contact.{key}"] = value
        conv = await self.record.upsert_conversation(conv_id, _new_conversation(event, conv_id), set_fields)
        conv = await self._refresh_display_name(conv)
        change = IndexChange(upsert_row=row_of(conv)) if conv["status"] == "handed_off" else None
        await self.publish_update(event.chatbot_id, change, conversation=conv,
                                  event_id=derived_event_id(event.event_id, "update"))

    async def on_handoff_requested(self, event: HandoffRequested) -> None:
        conv_id = _conversation_id(event)
        handoff_id = event.event_id
        conv = await self.record.get_conversation(conv_id)
        if conv is None:
            conv = await self.record.upsert_conversation(conv_id, _new_conversation(event, conv_id), {})
        if conv.get("handoff_id") == handoff_id and conv["status"] == "handed_off":
            updated = conv  # this very handoff was applied before a crash: finish it
        else:
            decision = domain.decide_handoff(conv["status"])
            if decision == "already_handed_off":
                log.info("handoff requested for %s which is already handed off (%s): nothing changes", conv_id, conv.get("handoff_id"))
                return
            if decision == "refused_closed":
                log.info("handoff requested for closed conversation %s: refused, it stays closed", conv_id)
                return
            updated = await self.record.transition(conv_id, "active", {
                "status": "handed_off", "handoff_id": handoff_id, "reason": event.reason,
                "waiting_since": event.occurred_at, "updated_at": event.occurred_at, "closed_at": None,
                "summary": {"handoff_id": handoff_id, "status": "pending", "text": None, "mode": None},
            })
            if updated is None:
                log.info("conversation %s changed while handing off; nothing changes", conv_id)
                return
        by = "ai" if event.source == "ai_tool" else "visitor"
        await self.record.create_handoff({
            "_id": handoff_id, "chatbot_id": event.chatbot_id, "conversation_id": conv_id,
            "reason": event.reason, "source": event.source, "status": "open",
            "requested_at": event.occurred_at, "waiting_since": event.occurred_at, "closed_at": None,
            "summary": {"handoff_id": handoff_id, "status": "pending", "text": None, "mode": None},
            "history": [_history("handoff", "active", "handed_off", by, event.occurred_at)],
        })
        transcript, _ = await self.record.messages_before(conv_id, None, domain.TRANSCRIPT_CAP)
        await self.state_out.publish(self._state_event(
            updated, "handoff", "active", by, derived_event_id(handoff_id, "handoff"),
            transcript=[TranscriptLine(sender=m["sender"], text=m["text"], at=m["created_at"]) for m in transcript],
        ))
        await self.publish_update(event.chatbot_id, IndexChange(upsert_row=row_of(updated)), conversation=updated,
                                  event_id=derived_event_id(event.event_id, "update"))

    async def _refresh_display_name(self, conv: dict) -> dict:
        name = domain.display_name((conv.get("contact") or {}).get("name"), conv.get("visitor_name"), conv["visitor_id"])
        if conv.get("display_name") == name:
            return conv
        return await self.record.update_conversation(conv["_id"], {"$set": {"display_name": name}}) or conv

    def _state_event(self, conv: dict, transition: str, previous: str, by: str, event_id: str,
                     transcript: list[TranscriptLine] | None = None) -> ConversationStateChanged:
        return ConversationStateChanged(
            event_id=event_id, chatbot_id=conv["chatbot_id"], conversation_id=conv["_id"],
            transition=transition, status=conv["status"], previous_status=previous, channel=conv["channel"],
            visitor=VisitorIdentity(external_id=conv["visitor_id"], name=conv.get("visitor_name")),
            handoff_id=conv.get("handoff_id"), reason=conv.get("reason"), by=by,
            contact=ContactDetails(**(conv.get("contact") or {})), transcript=transcript or [],
        )

    # ------------------------------------------------------------------ agent.commands
    async def on_agent_command(self, cmd: AgentCommand) -> None:
        if await self._answer_stored(cmd.command_id):
            return
        conv = await self.record.get_conversation(cmd.conversation_id) if cmd.conversation_id else None
        if conv is None or conv["chatbot_id"] != cmd.chatbot_id:
            await self._answer(cmd, 404, domain.UNKNOWN_CONVERSATION, None)
            return
        try:
            if cmd.action == "reply":
                conv = await self._reply(cmd, conv)
            else:
                conv = await self._agent_transition(cmd, conv)
        except CommandRefused as refused:
            log.info("command %s (%s) refused: %s", cmd.command_id, cmd.action, refused.message)
            await self._answer(cmd, refused.status_code, refused.message, await self.record.get_conversation(conv["_id"]))
            return
        await self._answer(cmd, 200, None, conv)

    async def _agent_transition(self, cmd: AgentCommand, conv: dict) -> dict:
        now = self.clock()
        by = f"agent:{cmd.agent.agent_id}"
        if conv.get("last_command_id") == cmd.command_id:
            updated, previous = conv, conv.get("previous_status", conv["status"])  # applied before a crash
        else:
            previous = conv["status"]
            target = domain.plan_transition(previous, cmd.action)
            set_fields: dict[str, Any] = {"status": target, "previous_status": previous, "updated_at": now,
                                          "last_command_id": cmd.command_id}
            if cmd.action == "close":
                set_fields["closed_at"] = now
            elif cmd.action == "reopen":
                set_fields.update(waiting_since=now, closed_at=None)  # a new waiting period
            elif cmd.action == "return_to_ai":
                set_fields.update(waiting_since=None)
            updated = await self.record.transition(conv["_id"], previous, set_fields)
            if updated is None:
                # Someone else moved it first (another agent, another instance): refuse
                # with the reason as it stands now.
                fresh = await self.record.get_conversation(conv["_id"]) or conv
                domain.plan_transition(fresh["status"], cmd.action)
                raise domain.TransitionRefused("The conversation changed meanwhile; try again.")
        handoff_id = updated.get("handoff_id")
        if handoff_id:
            handoff_set: dict[str, Any] = {
                "close": {"status": "closed", "closed_at": now},
                "reopen": {"status": "open", "closed_at": None, "waiting_since": updated.get("waiting_since")},
                "return_to_ai": {"status": "returned_to_ai", "ended_at": now},
            }[cmd.action]
            await self.record.update_handoff(handoff_id, handoff_set,
                                             _history(cmd.action, previous, updated["status"], by, now, cmd.command_id))
        await self.state_out.publish(self._state_event(updated, cmd.action, previous, by,
                                                       derived_event_id(cmd.command_id, "state")))
        if cmd.action == "close":
            change = IndexChange(remove_row=updated["_id"], closed_add=(handoff_id, updated["closed_at"]) if handoff_id else None)
        elif cmd.action == "reopen":
            change = IndexChange(upsert_row=row_of(updated), closed_remove=handoff_id)
        else:
            change = IndexChange(remove_row=updated["_id"])
        await self.publish_update(updated["chatbot_id"], change, conversation=updated,
                                  event_id=derived_event_id(cmd.command_id, "update"))
        return updated

    async def _reply(self, cmd: AgentCommand, conv: dict) -> dict:
        now = self.clock()
        message_id = domain.agent_message_id(cmd.command_id)
        if conv.get("last_command_id") == cmd.command_id:
            updated, text = conv, (cmd.text or "").strip()  # counted before a crash
        else:
            text = domain.check_reply(conv["status"], cmd.text, conv["channel"], conv.get("last_visitor_message_at"), now)
            updated = await self.record.update_conversation(conv["_id"], {
                "$inc": {"message_count": 1},
                "$set": {"last_message_at": now, "last_message_preview": domain.preview(text), "updated_at": now,
                         "last_command_id": cmd.command_id},
            }, expected_status="handed_off")
            if updated is None:
                raise CommandRefused(domain.REPLY_NOT_ALLOWED, 409)
        message = {
            "_id": message_id, "conversation_id": conv["_id"], "chatbot_id": conv["chatbot_id"], "sender": "agent",
            "sender_name": cmd.agent.display_name, "text": text, "created_at": now, "delivery": "pending",
            "command_id": cmd.command_id,
        }
        if not await self.record.insert_message(message):  # stored before a crash: show that one
            message = await self.record.get_message(message_id) or message
        await self.outbound_out.publish(OutboundMessage(
            event_id=derived_event_id(cmd.command_id, "outbound"), chatbot_id=conv["chatbot_id"],
            conversation_id=conv["_id"], message_id=message_id, channel=conv["channel"],
            visitor=VisitorIdentity(external_id=conv["visitor_id"], name=conv.get("visitor_name")),
            text=text, sender="agent", sender_name=cmd.agent.display_name,
        ))
        change = IndexChange(upsert_row=row_of(updated)) if updated["status"] == "handed_off" else None
        await self.publish_update(conv["chatbot_id"], change, conversation=updated, message=message,
                                  event_id=derived_event_id(cmd.command_id, "update"))
        return updated

    async def on_settings_update(self, cmd: ChatbotSettingsUpdate) -> None:
        if await self._answer_stored(cmd.command_id):
            return
        if cmd.settings.chatbot_id != cmd.chatbot_id:
            await self._answer(cmd, 422, "The settings belong to another chatbot.", None)
            return
        if await self.chatbot(cmd.chatbot_id) is None:
            await self._answer(cmd, 404, domain.UNKNOWN_CHATBOT, None)
            return
        await self.record.save_chatbot(cmd.settings)
        self.chatbots[cmd.chatbot_id] = cmd.settings
        await self.settings_out.publish(ChatbotSettingsChanged(
            event_id=derived_event_id(cmd.command_id, "settings"), chatbot_id=cmd.chatbot_id, settings=cmd.settings))
        await self.publish_update(cmd.chatbot_id, settings_changed=True, event_id=derived_event_id(cmd.command_id, "update"))
        await self._answer(cmd, 200, None, None)

    async def _answer_stored(self, command_id: str) -> bool:
        """A retried command id: answer again with the stored result, apply nothing."""
        stored = await self.record.get_command(command_id)
        if stored is None:
            return False
        log.info("command %s already applied; answering with the stored result", command_id)
        await self.dashboard_out.publish(CommandResult.model_validate_json(stored["result"]))
        return True

    async def _answer(self, cmd: AgentCommand | ChatbotSettingsUpdate, status_code: int, error: str | None,
                      conv: dict | None) -> None:
        result = CommandResult(
            event_id=derived_event_id(cmd.command_id, "result"), chatbot_id=cmd.chatbot_id,
            conversation_id=cmd.conversation_id, command_id=cmd.command_id, ok=status_code == 200,
            error=error, status_code=status_code, conversation=view_of(conv) if conv else None,
        )
        stored = await self.record.save_command(cmd.command_id, {
            "chatbot_id": cmd.chatbot_id, "conversation_id": cmd.conversation_id, "action": getattr(cmd, "action", "update_settings"),
            "agent_id": cmd.agent.agent_id, "status_code": status_code, "at": self.clock(), "result": result.model_dump_json(),
        })
        await self.dashboard_out.publish(CommandResult.model_validate_json(stored["result"]))

    # ------------------------------------------------------------------ summaries, delivery
    async def on_summary(self, event: HandoffSummaryReady) -> None:
        handoff = await self.record.get_handoff(event.handoff_id)
        if handoff is None:
            log.warning("summary for unknown handoff %s ignored", event.handoff_id)
            return
        summary = SummaryView(handoff_id=event.handoff_id, status=event.status, text=event.text, mode=event.mode)
        await self.record.update_handoff(event.handoff_id, {"summary": summary.model_dump()})
        conv = await self.record.get_conversation(handoff["conversation_id"])
        if conv is not None and conv.get("handoff_id") == event.handoff_id:
            # The conversation header shows the summary of its current handoff only.
            conv = await self.record.update_conversation(conv["_id"], {"$set": {"summary": summary.model_dump()}}) or conv
        await self.publish_update(handoff["chatbot_id"], conversation=conv, summary=summary,
                                  event_id=derived_event_id(event.event_id, "update"))

    async def on_delivery_status(self, event: DeliveryStatusChanged) -> None:
        message = await self.record.get_message(event.message_id)
        if message is None:
            log.info("delivery status for unknown message %s ignored", event.message_id)
            return
        state = domain.next_delivery_state(message.get("delivery"), event.status)
        set_fields: dict[str, Any] = {"delivery": state}
        if state == "failed":
            set_fields["delivery_error"] = event.error or "Delivery failed."
        elif event.error is None:
            set_fields["delivery_error"] = None
        if event.channel_message_id:
            set_fields["channel_message_id"] = event.channel_message_id
        message = await self.record.update_message(event.message_id, set_fields)
        conv = await self.record.get_conversation(message["conversation_id"])
        await self.publish_update(message["chatbot_id"], conversation=conv, message=message,
                                  event_id=derived_event_id(event.event_id, "update"))


# ---------------------------------------------------------------------- mapping
def _conversation_id(event: Envelope) -> str:
    if not event.conversation_id:
        raise ValueError("conversation event without conversation_id")
    return event.conversation_id


def _new_conversation(event: MessageAppended | HandoffRequested | ContactCaptured, conv_id: str) -> dict:
    """The fields a conversation starts with ($setOnInsert). Fields the same upsert also
    sets or increments are left out: Mongo refuses one field in two operators."""
    doc: dict[str, Any] = {
        "chatbot_id": event.chatbot_id, "status": "active", "channel": event.channel,
        "visitor_id": event.visitor.external_id, "created_at": event.occurred_at,
        "handoff_id": None, "reason": None, "waiting_since": None,
    }
    if not isinstance(event, MessageAppended):  # a message sets these itself
        doc["message_count"] = 0
        if event.visitor.name:
            doc["visitor_name"] = event.visitor.name
    if not isinstance(event, ContactCaptured):  # the contact form sets contact.* itself
        doc["contact"] = {}
    if isinstance(event, HandoffRequested):  # the others set updated_at themselves
        doc["updated_at"] = event.occurred_at
    return doc


def _history(transition: str, previous: str, status: str, by: str, at: datetime, command_id: str | None = None) -> dict:
    return {"transition": transition, "from": previous, "to": status, "by": by, "at": at, "command_id": command_id}


def row_of(conv: dict) -> HandoffRow:
    return HandoffRow(
        conversation_id=conv["_id"], chatbot_id=conv["chatbot_id"], display_name=_display(conv),
        waiting_since=conv["waiting_since"], reason=conv.get("reason"), channel=conv["channel"],
        message_count=int(conv.get("message_count") or 0),
    )


def _display(conv: dict) -> str:
    return conv.get("display_name") or domain.display_name(
        (conv.get("contact") or {}).get("name"), conv.get("visitor_name"), conv["visitor_id"])


def view_of(conv: dict) -> ConversationView:
    summary = conv.get("summary")
    return ConversationView(
        conversation_id=conv["_id"], chatbot_id=conv["chatbot_id"], status=conv["status"], channel=conv["channel"],
        visitor_id=conv["visitor_id"], display_name=_display(conv), contact=Contact(**(conv.get("contact") or {})),
        reason=conv.get("reason"), handoff_id=conv.get("handoff_id"), waiting_since=conv.get("waiting_since"),
        message_count=int(conv.get("message_count") or 0), last_message_at=conv.get("last_message_at"),
        last_message_preview=conv.get("last_message_preview"), created_at=conv["created_at"],
        updated_at=conv.get("updated_at") or conv["created_at"],
        summary=SummaryView(**summary) if summary else None,
        reply_window_ends_at=domain.reply_window_ends_at(conv["channel"], conv.get("last_visitor_message_at")),
    )


def message_view_of(doc: dict) -> MessageView:
    return MessageView(
        message_id=doc["_id"], conversation_id=doc["conversation_id"], sender=doc["sender"],
        sender_name=doc.get("sender_name"), text=doc["text"], created_at=doc["created_at"],
        delivery=doc.get("delivery"), delivery_error=doc.get("delivery_error"),
    )
