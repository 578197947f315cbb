"""The conversation aggregate: one visitor on one channel of one chatbot, the one owner of
its status. Loaded from and saved to Mongo `conversations` by the store; its transitions are
methods that check the rules (`domain`) and say which fields change.

Two kinds of fields, written two ways so they never overwrite each other:
- **state** (status, version, handoff, pending message, contact wanted…) changes only by a
  transition, saved with compare-and-set on `version` — two agents, or two queue instances
  in a rebalance, cannot both apply one;
- **activity** (counts, last message, contact, names) changes with every message by atomic
  `$set`/`$inc` that never touch the state fields.

`version` goes up by one on every status transition (handoff, close, reopen, return to AI).
An AI turn carries the version it was asked at; its outcome is applied only at that version.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.queue import domain, waitclock
from shared.chatbots import ContactField
from shared.events import TranscriptLine, VisitorIdentity
from shared.views import (Assignee, Channel, Contact, ConversationStatus, ConversationView, HandoffRow, MessageView,
                          SummaryView)


# What clears a closed conversation's messages no agent has seen.
SEEN_AFTER_CLOSE: dict[str, Any] = {"unseen_after_close": [], "unseen_after_close_at": None}


@dataclass(frozen=True)
class Change:
    """A transition to save: the fields it sets, valid only while `version` (and whatever
    `guard` names) is unchanged."""

    action: domain.Transition
    previous: ConversationStatus
    expected_version: int
    fields: dict[str, Any]
    guard: dict[str, Any] = field(default_factory=dict)


class Conversation(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    id: str = Field(alias="_id")
    chatbot_id: str
    channel: Channel
    visitor_id: str
    visitor_name: str | None = None
    created_at: datetime
    updated_at: datetime | None = None
    # state
    status: ConversationStatus = "active"
    version: int = 0
    previous_status: ConversationStatus | None = None
    last_command_id: str | None = None
    handoff_id: str | None = None
    reason: str | None = None
    waiting_since: datetime | None = None
    # An agent's first reply in the current waiting period (the wait the metrics measure).
    first_reply_at: datetime | None = None
    # The wait clock (waitclock.py): its start (None: an agent replied, "in conversation"),
    # the latest agent reply, the visitor's messages since the start; the handoff's loop.
    wait_started_at: datetime | None = None
    last_agent_reply_at: datetime | None = None
    nudges: int = 0
    loop: int = 0
    closed_at: datetime | None = None
    # The visitor's latest message nobody has answered while a human has the conversation;
    # Return to AI hands it to the AI (an agent reply clears it).
    pending_message_id: str | None = None
    returned_message_id: str | None = None  # the pending message the last Return to AI handed over
    # Visitor messages that came while closed and no agent has seen (it stays closed: the
    # team must notice); cleared by Reopen, Close and "Mark as seen". The time of the first.
    unseen_after_close: list[str] = Field(default_factory=list)
    unseen_after_close_at: datetime | None = None
    # Asked at the handoff, picked out of the visitor's next messages until all are given.
    contact_wanted: list[ContactField] = Field(default_factory=list)
    # activity
    contact: Contact = Field(default_factory=Contact)
    message_count: int = 0
    last_message_at: datetime | None = None
    last_message_preview: str | None = None
    last_visitor_message_at: datetime | None = None
    display_name: str | None = None
    summary: SummaryView | None = None
    # The claim (assignment.py): state fields, written only by conditional updates. Close
    # keeps who had it as `previous_assignee`, for a Reopen to give it back.
    assignee: Assignee | None = None
    previous_assignee: Assignee | None = None

    @classmethod
    def load(cls, doc: dict | None) -> Conversation | None:
        return None if doc is None else cls.model_validate(doc)

    @staticmethod
    def new_fields(chatbot_id: str, channel: str, visitor: VisitorIdentity, at: datetime) -> dict[str, Any]:
        """What a conversation starts with ($setOnInsert) besides what its first write sets; its
        display name from the start (searchable, and no second write to set it)."""
        return {"chatbot_id": chatbot_id, "channel": channel, "visitor_id": visitor.external_id,
                "created_at": at, "status": "active", "version": 0, "handoff_id": None, "reason": None,
                "waiting_since": None, "pending_message_id": None, "contact_wanted": [],
                "display_name": domain.display_name(None, visitor.name, visitor.external_id)}

    # ------------------------------------------------------------------ reading
    @property
    def name(self) -> str:
        return domain.display_name(self.contact.name, self.visitor_name, self.visitor_id)

    @property
    def with_ai(self) -> bool:
        return self.status == "active"

    @property
    def visitor(self) -> VisitorIdentity:
        return VisitorIdentity(external_id=self.visitor_id, name=self.visitor_name)

    @property
    def clock(self) -> datetime | None:
        """The wait clock's start while handed off; None when replied (or not handed off)."""
        if self.status != "handed_off":
            return None
        return waitclock.clock_start(self.wait_started_at, self.last_agent_reply_at, self.first_reply_at,
                                     self.waiting_since)

    def row(self) -> HandoffRow:
        assert self.waiting_since is not None, "only a handed-off conversation has a row"
        clock = self.clock
        return HandoffRow(conversation_id=self.id, chatbot_id=self.chatbot_id, display_name=self.name,
                          waiting_since=self.waiting_since, reason=self.reason, channel=self.channel,
                          message_count=self.message_count, wait_state=waitclock.wait_state(clock),
                          wait_started_at=clock, last_agent_reply_at=self.last_agent_reply_at,
                          nudges=self.nudges if clock else 0, last_visitor_at=self.last_visitor_message_at,
                          loop=self.loop,
                          reply_window_ends_at=domain.reply_window_ends_at(self.channel, self.last_visitor_message_at), assignee=self.assignee)

    def view(self) -> ConversationView:
        return ConversationView(
            conversation_id=self.id, chatbot_id=self.chatbot_id, status=self.status, channel=self.channel,
            visitor_id=self.visitor_id, display_name=self.name, contact=self.contact, reason=self.reason,
            handoff_id=self.handoff_id, waiting_since=self.waiting_since, message_count=self.message_count,
            last_message_at=self.last_message_at, last_message_preview=self.last_message_preview,
            created_at=self.created_at, updated_at=self.updated_at or self.created_at, summary=self.summary,
            reply_window_ends_at=domain.reply_window_ends_at(self.channel, self.last_visitor_message_at),
            new_after_close=len(self.unseen_after_close), new_after_close_at=self.unseen_after_close_at,
            wait_state=waitclock.wait_state(self.clock) if self.status == "handed_off" else None,
            wait_started_at=self.clock, last_agent_reply_at=self.last_agent_reply_at,
            nudges=self.nudges if self.clock else 0, loop=self.loop if self.status == "handed_off" else 0,
            assignee=self.assignee, previous_assignee=self.previous_assignee,
        )

    # ------------------------------------------------------------------ transitions
    def hand_off(self, handoff_id: str, reason: str, at: datetime, contact_wanted: list[ContactField],
                 loop: int = 0) -> Change:
        """The AI's tool or the visitor asked for a human; TransitionRefused unless active.
        `loop`: the AI <-> team loop this handoff closes (history.loop_count), 0 for none."""
        domain.plan_transition(self.status, "handoff")
        return Change("handoff", self.status, self.version, {
            "status": "handed_off", "version": self.version + 1, "previous_status": self.status,
            "handoff_id": handoff_id, "reason": reason, "waiting_since": at, "updated_at": at, "closed_at": None,
            "first_reply_at": None, **waitclock.started(at), "loop": loop,
            "pending_message_id": None, "contact_wanted": list(contact_wanted),
            "summary": {"handoff_id": handoff_id, "status": "pending", "text": None, "mode": None},
        })

    def agent_transition(self, action: domain.Transition, at: datetime, command_id: str) -> Change:
        """Close, Reopen or Return to AI by an agent; TransitionRefused when not allowed now."""
        target = domain.plan_transition(self.status, action)
        fields: dict[str, Any] = {"status": target, "version": self.version + 1, "previous_status": self.status,
                                  "updated_at": at, "last_command_id": command_id}
        if action == "close":
            fields.update(closed_at=at, pending_message_id=None, **SEEN_AFTER_CLOSE, **waitclock.stopped())
        elif action == "reopen":
            # A new waiting period; what the visitor wrote while closed is the team's again.
            fields.update(waiting_since=at, closed_at=None, first_reply_at=None, **SEEN_AFTER_CLOSE,
                          **waitclock.started(at))
        elif action == "return_to_ai":
            # Back with the AI: a contact question asked at the handoff is over, and the
            # message nobody answered goes to the AI (kept as `returned_message_id` so a
            # replay of this command can hand it over again). Guarded: a visitor message
            # marked pending meanwhile must not be dropped.
            fields.update(waiting_since=None, pending_message_id=None, contact_wanted=[],
                          returned_message_id=self.pending_message_id, **waitclock.stopped(), loop=0)
            return Change(action, self.status, self.version, fields,
                          guard={"pending_message_id": self.pending_message_id})
        return Change(action, self.status, self.version, fields)


def transcript_of(messages: list[dict]) -> list[TranscriptLine]:
    """The lines the AI and the summarizer see: what the visitor saw (never an answer that
    was not sent)."""
    return [TranscriptLine(sender=m["sender"], text=m["text"], at=m["created_at"], sender_name=m.get("sender_name"))
            for m in messages if m.get("delivery") != "not_sent"]


def message_view(doc: dict) -> MessageView:
    return MessageView(
        message_id=doc["_id"], conversation_id=doc["conversation_id"], sender=doc["sender"],
        sender_name=doc.get("sender_name"), text=doc["text"], created_at=doc["created_at"],
        delivery=doc.get("delivery"), delivery_error=doc.get("delivery_error"),
    )
