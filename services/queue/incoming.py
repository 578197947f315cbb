"""What reaches the queue from outside the team: visitor messages and contact forms
(channels), AI turn outcomes (intake), summaries (summarizer) and delivery statuses
(channels). The queue is the one owner of each conversation's status: it records every
visitor message, then decides by that status who answers it.

Ordering inside every use case: the conditional write in Mongo first (it decides), then the
history, then the index, then the events; a visitor message's history goes beside its index
and events (the event stays on the bus until all three are in). A crash anywhere replays the
input event, and each step is safe to repeat (ids are derived from the input, writes are
upserts or conditional on the conversation's version).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from datetime import datetime, timedelta
from typing import Any

from services.queue import contact, domain, history, summaries, waitclock
from services.queue.conversation import Conversation, message_view, transcript_of
from services.queue.domain import derived_event_id
from services.queue.store import IndexChange
from services.queue.usecase import UseCases
from shared.events import (
    AiTurnCompleted,
    ConversationStateChanged,
    DeliveryStatusChanged,
    HandoffSummaryReady,
    OutboundMessage,
    VisitorContactSubmitted,
    VisitorMessageReceived,
)
from shared import reply_window
from shared.ids import derived_id
from shared.views import Contact

log = logging.getLogger("handoff.queue")

# How often a visitor message is routed again when a transition keeps overtaking it.
ROUTE_ATTEMPTS = 3


def visitor_message_id(conversation_id: str, channel_message_id: str) -> str:
    """A visitor message's id for ever, from the edge's dedupe key: a replay is the same."""
    return derived_id("m_", conversation_id, "visitor", channel_message_id)


def handoff_id_for(turn_id: str) -> str:
    return derived_id("h_", turn_id)


def state_event(conv: Conversation, transition: str, previous: str, by: str, event_id: str,
                transcript: list | None = None) -> ConversationStateChanged:
    return ConversationStateChanged(
        event_id=event_id, chatbot_id=conv.chatbot_id, conversation_id=conv.id, transition=transition,
        status=conv.status, previous_status=previous, channel=conv.channel, visitor=conv.visitor,
        handoff_id=conv.handoff_id, reason=conv.reason, by=by, contact=conv.contact, transcript=transcript or [],
    )


class Incoming(UseCases):
    # When a handoff is flagged as a loop (the queue's LOOP_* settings; parts.build_queue).
    loop_rule: history.LoopRule = history.LoopRule()

    # ------------------------------------------------------------------ visitor.messages
    async def on_visitor_message(self, event: VisitorMessageReceived) -> None:
        conv_id = _conversation_id(event)
        message_id = visitor_message_id(conv_id, event.channel_message_id)
        at = event.occurred_at
        doc: dict[str, Any] = {"_id": message_id, "conversation_id": conv_id, "chatbot_id": event.chatbot_id,
                               "sender": "visitor", "sender_name": None, "text": event.text, "created_at": at,
                               "delivery": None}
        activity: dict[str, Any] = {"last_message_at": at, "last_message_preview": domain.preview(event.text),
                                    "updated_at": at}
        # WhatsApp's window counts from the platform's stamp, as channels' does, and only moves
        # forward (shared/reply_window.py); in the same write, no extra round trip.
        window = {"last_visitor_message_at": reply_window.inbound_at(event.sent_at, at)}
        if event.visitor.name:
            activity["visitor_name"] = event.visitor.name
        # The conversation's write first, alone: it decides (the status routes the message, the
        # count is added once per message: record_activity's `counting`, so a retry after it
        # went through adds nothing) and is read back for the dashboard. The message's insert,
        # the history, then goes beside the dashboard update: the event is already durable on
        # the bus and its offset is committed only once every write is in, so a failure
        # anywhere retries it. (The Mongo-wire server answers two writes sent at once later
        # than one after the other: the update waited for the insert.)
        conv = await self.record.record_activity(
            conv_id, Conversation.new_fields(event.chatbot_id, event.channel, event.visitor, at), activity,
            inc={"message_count": 1}, latest=window, counting=message_id)
        stored = asyncio.ensure_future(self.record.insert_message(doc))
        # The wait clock (a nudge, or its restart after an agent's reply): a second write, only
        # while handed off, beside the insert and the update; written as for a new message
        # (a replay recounts below).
        clock_write: asyncio.Future[Conversation] | None = None
        clock_set, nudges = waitclock.visitor_wrote(conv.status, conv.clock, conv.last_agent_reply_at, at)
        if clock_set or nudges:
            clock_write = asyncio.ensure_future(self.record.record_known_activity(
                conv, clock_set, inc={"nudges": nudges} if nudges else None))
            conv = conv.model_copy(update={"nudges": conv.nudges + nudges, **clock_set})  # what it writes
        update_id = derived_event_id(event.event_id, "update")
        if conv.contact_wanted or conv.display_name != conv.name or conv.status == "closed":
            # Writes that read back what they write (so the wait clock's fields must be in) and
            # a closed conversation's mark, which differs on a replay: after the insert.
            await _settled(stored, clock_write)
            inserted = stored.result()
            if conv.contact_wanted:
                found = contact.extract_contact(event.text, conv.contact_wanted)
                if not found.empty:
                    conv = await self._add_contact(conv.id, found, at) or conv
            conv = await self._refresh_name(conv)
            if conv.status == "closed":
                log.info("visitor wrote to closed conversation %s: stored, it stays closed", conv_id)
                conv = await self._unseen_after_close(conv, message_id, at, replay=not inserted)
            await self.feed.conversation_changed(conv, message=message_view(doc), event_id=update_id)
        else:
            await _settled(self.feed.conversation_changed(conv, message=message_view(doc), event_id=update_id),
                           stored, clock_write)
            inserted = stored.result()
        if inserted:
            self.ai.counted(conv, [doc])
        else:
            # A replay (the message was stored before): the first try may have stopped before
            # counting it, or counted it and its nudge: count instead of adding, and show that.
            doc = await self.record.get_message(message_id) or doc
            recount: dict[str, Any] = {"message_count": await self.record.count_messages(conv_id)}
            if nudges:
                since = clock_set.get("wait_started_at") or conv.clock
                assert since is not None
                recount.update(clock_set, nudges=await self.record.count_visitor_messages_since(conv_id, since))
            conv = await self.record.record_known_activity(conv, recount)
            await self.feed.conversation_changed(conv, message=message_view(doc),
                                                 event_id=derived_event_id(event.event_id, "recount"))
        await self._route(conv, message_id, event.text, at, replay=not inserted)
        await summaries.message_added(self.state_out, conv, doc)  # a summary keeps up with it

    async def _unseen_after_close(self, conv: Conversation, message_id: str, at: datetime, *,
                                  replay: bool) -> Conversation:
        """A message to a closed conversation stays there (it is not reopened) but is marked
        for the team: counted, alerted once, until an agent reopens it or marks it seen. By
        message id, so a replay does not count it twice."""
        if message_id in conv.unseen_after_close:
            return conv
        if replay and conv.closed_at is not None and at < conv.closed_at:
            return conv  # handled before the close (an agent saw it then); only on a replay
        update: dict[str, Any] = {"$addToSet": {"unseen_after_close": message_id}}
        if conv.unseen_after_close_at is None:
            update["$set"] = {"unseen_after_close_at": at}
        return await self.record.update_conversation(conv.id, update, expected_status="closed") or conv

    async def _route(self, conv: Conversation, message_id: str, text: str, at: datetime, *, replay: bool) -> None:
        """The AI answers while it has the conversation; while a human has it the message
        waits for them (pending, which a Return to AI hands to the AI); closed stays closed."""
        for _ in range(ROUTE_ATTEMPTS):
            if conv.status == "active":
                await self.ai.ask(conv, message_id, text)
                return
            if conv.status == "closed":
                return
            if replay and conv.waiting_since is not None and at < conv.waiting_since:
                # Routed to the AI before a crash, and the handoff it led to came since: it is
                # not waiting for the team (a Return to AI must not hand it to the AI again).
                # Only on a replay: platform times are to the second.
                return
            if await self.record.set_pending(conv.id, conv.version, message_id):
                return
            # A transition overtook this message (e.g. Return to AI): route by the new status.
            conv = await self.record.get_conversation(conv.id) or conv
        raise RuntimeError(f"conversation {conv.id} keeps changing; routing the message again")

    async def on_contact_submitted(self, event: VisitorContactSubmitted) -> None:
        conv_id = _conversation_id(event)
        if event.contact.empty:
            log.info("empty contact form ignored")
            return
        at = event.occurred_at
        await self.record.record_activity(
            conv_id, {**Conversation.new_fields(event.chatbot_id, event.channel, event.visitor, at),
                      "message_count": 0, "contact": {}}, {})
        conv = await self._add_contact(conv_id, event.contact, at)
        if conv is None:
            return
        conv = await self._refresh_name(conv)
        await self.feed.conversation_changed(conv, event_id=derived_event_id(event.event_id, "update"))

    async def _add_contact(self, conv_id: str, found: Contact, at: datetime) -> Conversation | None:
        given = {k: v for k, v in found.model_dump().items() if v}
        fields: dict[str, Any] = {"updated_at": at, **{f"contact.{k}": v for k, v in given.items()}}
        name = (given.get("name") or "").strip()
        if name:  # the contact name comes first (domain.display_name): in the same write, never seen apart
            fields["display_name"] = name
        return await self.record.update_conversation(conv_id, {"$set": fields, "$pullAll": {"contact_wanted": list(given)}})

    async def _refresh_name(self, conv: Conversation) -> Conversation:
        """The stored display name (searched by the Conversations table) follows the contact."""
        if conv.display_name == conv.name:
            return conv
        return await self.record.update_conversation(conv.id, {"$set": {"display_name": conv.name}}) or conv

    # ------------------------------------------------------------------ conversation.events
    async def on_ai_outcome(self, event: AiTurnCompleted) -> None:
        conv_id = _conversation_id(event)
        conv = await self.record.get_conversation(conv_id)
        if conv is None:
            raise ValueError(f"AI outcome for unknown conversation {conv_id}")
        handoff_id = handoff_id_for(event.turn_id)
        resumed = event.handoff is not None and conv.handoff_id == handoff_id and conv.status == "handed_off"
        if not resumed and (conv.version != event.version or not conv.with_ai):
            log.info("late AI answer for %s (asked at version %d, now %d, %s): recorded, not sent",
                     conv_id, event.version, conv.version, conv.status)
            await self._record_replies(conv, event, sent=False)
            return
        if event.handoff is not None:
            if not resumed:
                past = history.past_handoffs(await self.record.handoffs_of(conv.id), but=handoff_id)
                saved = await self.record.save(conv.id, conv.hand_off(
                    handoff_id, event.handoff.reason, event.occurred_at, event.handoff.contact_fields,
                    loop=history.loop_count(past, event.occurred_at, self.loop_rule)))
                if saved is None:  # a transition overtook the outcome
                    fresh = await self.record.get_conversation(conv_id) or conv
                    await self._record_replies(fresh, event, sent=False)
                    return
                conv = saved
            line_text = await self._open_handoff(conv, event, handoff_id)
            await self._record_replies(conv, event, sent=True, line_text=line_text)
            return
        await self._record_replies(conv, event, sent=True)

    async def _open_handoff(self, conv: Conversation, event: AiTurnCompleted, handoff_id: str) -> str | None:
        """The handoff's record, events and place in line; returns what a WhatsApp or Telegram
        visitor is told of their place (appended to the handoff message), if anything."""
        assert event.handoff is not None
        at = conv.waiting_since or event.occurred_at
        by = "ai" if event.handoff.source == "ai_tool" else "visitor"

        async def record_and_tell_summarizer() -> None:
            # The record before the summarizer hears of it: its summary updates the record.
            await self.record.create_handoff({
                "_id": handoff_id, "chatbot_id": conv.chatbot_id, "conversation_id": conv.id,
                "reason": event.handoff.reason, "source": event.handoff.source, "status": "open",
                "requested_at": at, "waiting_since": at, "closed_at": None, "loop": conv.loop,
                "summary": {"handoff_id": handoff_id, "status": "pending", "text": None, "mode": None},
                "history": [history_entry("handoff", "active", "handed_off", by, at)],
            })
            recent, _ = await self.record.messages_before(conv.id, None, domain.TRANSCRIPT_CAP)
            await self.state_out.publish(state_event(conv, "handoff", "active", by,
                                                     derived_event_id(handoff_id, "handoff"),
                                                     transcript=transcript_of(recent)))

        # The saved transition decided; the team's dashboard hears of it at once, beside the
        # handoff's record and the summarizer's transcript (a replay repeats all three).
        await _settled(record_and_tell_summarizer(),
                       self.feed.publish(conv.chatbot_id, IndexChange(upsert_row=conv.row()), conversation=conv,
                                         event_id=derived_event_id(event.event_id, "update")))
        return await self.line.entered(conv)

    async def _record_replies(self, conv: Conversation, event: AiTurnCompleted, *, sent: bool,
                              line_text: str | None = None) -> None:
        """The AI's messages join the transcript; sent ones go to the visitor, late ones are
        kept for the team as not sent. Each reply a microsecond apart, so they stay in order.
        `line_text` (the visitor's place in line) is appended to the first, the handoff notice
        (a contact question may follow it)."""
        if not event.replies:
            return
        docs, replayed = [], False
        for n, reply in enumerate(event.replies):
            text = f"{reply.text}\n\n{line_text}" if line_text and n == 0 else reply.text
            doc = {"_id": reply.message_id, "conversation_id": conv.id, "chatbot_id": conv.chatbot_id,
                   "sender": "ai", "sender_name": None, "text": text[:4096],
                   "created_at": event.occurred_at + timedelta(microseconds=n),
                   "delivery": "pending" if sent else "not_sent"}
            if not await self.record.insert_message(doc):
                replayed = True
                doc = await self.record.get_message(reply.message_id) or doc
            docs.append(doc)
        activity: dict[str, Any] = {"last_message_at": event.occurred_at, "updated_at": event.occurred_at,
                                    "last_message_preview": domain.preview(docs[-1]["text"])}
        if replayed:  # counted before a crash, perhaps: count instead of adding
            activity["message_count"] = await self.record.count_messages(conv.id)
        conv = await self.record.record_known_activity(conv, activity,
                                                       inc=None if replayed else {"message_count": len(docs)})
        if not replayed:
            self.ai.counted(conv, docs)
        for reply, doc in zip(event.replies, docs, strict=True):
            if doc.get("delivery") != "not_sent":
                await self.outbound_out.publish(OutboundMessage(
                    event_id="o_" + reply.message_id, chatbot_id=conv.chatbot_id, conversation_id=conv.id,
                    # The stored text: a replay sends what the first try stored (and channels
                    # sends one message id once).
                    message_id=reply.message_id, channel=conv.channel, visitor=conv.visitor, text=doc["text"],
                    sender="ai", request_contact_fields=reply.request_contact_fields))
            await self.feed.conversation_changed(conv, message=message_view(doc),
                                                 event_id=derived_event_id(reply.message_id, "update"))

    # ------------------------------------------------------------------ summaries, delivery
    async def on_summary(self, event: HandoffSummaryReady) -> None:
        handoff = await self.record.get_handoff(event.handoff_id)
        if handoff is None:
            log.warning("summary for unknown handoff %s ignored", event.handoff_id)
            return
        summary = event.view()
        await self.record.update_handoff(event.handoff_id, {"summary": summary.model_dump()})
        conv = await self.record.get_conversation(handoff["conversation_id"])
        if conv is not None and conv.handoff_id == event.handoff_id:
            # The conversation header shows the summary of its current handoff only.
            conv = await self.record.update_conversation(conv.id, {"$set": {"summary": summary.model_dump()}}) or conv
        await self.feed.publish(handoff["chatbot_id"], conversation=conv, summary=summary,
                                event_id=derived_event_id(event.event_id, "update"))

    async def on_delivery_status(self, event: DeliveryStatusChanged) -> None:
        if event.status not in domain.SHOWN_DELIVERY_STATES:
            # 'sent' (every reply's first report): recorded, nothing on the dashboard shows it,
            # so one conditional write moves it forward, nothing is read ('not_sent' messages,
            # never handed to channels, and ones already further are not in the condition).
            await self.record.advance_delivery(event.message_id, domain.states_moved_by(event.status),
                                               _delivery_fields(event, event.status))
            return
        message = await self.record.get_message(event.message_id)
        if message is None:
            log.info("delivery status for unknown message %s ignored", event.message_id)
            return
        if message.get("delivery") == "not_sent":
            return  # never handed to channels: nothing can have been delivered
        state = domain.next_delivery_state(message.get("delivery"), event.status)
        set_fields = _delivery_fields(event, state)
        if all(message.get(k) == v for k, v in set_fields.items()):
            return  # a repeat, or a report the message is already past: nothing changes
        await self.record.update_message(event.message_id, set_fields)
        message = {**message, **set_fields}
        if state not in domain.SHOWN_DELIVERY_STATES:
            return  # recorded; nothing on the dashboard shows it, so no update goes out for it
        conv = await self.record.get_conversation(message["conversation_id"])
        await self.feed.publish(message["chatbot_id"], conversation=conv, message=message_view(message),
                                event_id=derived_event_id(event.event_id, "update"))


async def _settled(*work: Awaitable[Any] | None) -> None:
    """Every piece of `work` (some already running) done; the first failure is raised once all
    are (nothing left running unobserved)."""
    for outcome in await asyncio.gather(*(w for w in work if w is not None), return_exceptions=True):
        if isinstance(outcome, BaseException):
            raise outcome


def _delivery_fields(event: DeliveryStatusChanged, state: str) -> dict[str, Any]:
    """What a delivery report that leaves a message in `state` sets on it."""
    fields: dict[str, Any] = {"delivery": state}
    if state == "failed":
        fields["delivery_error"] = event.error or "Delivery failed."
    elif event.error is None:
        fields["delivery_error"] = None
    if event.channel_message_id:
        fields["channel_message_id"] = event.channel_message_id
    return fields


def _conversation_id(event: Any) -> str:
    if not event.conversation_id:
        raise ValueError(f"{event.type} without conversation_id")
    return event.conversation_id


def history_entry(transition: str, previous: str, status: str, by: str, at: datetime,
                  command_id: str | None = None) -> dict:
    return {"transition": transition, "from": previous, "to": status, "by": by, "at": at, "command_id": command_id}
