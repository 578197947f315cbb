"""What the dashboard sees: the read models the queue serves, the gateway re-serves over
REST and pushes over the websocket. One definition so the three agree.

Times are ISO-8601 UTC. Formatted strings ("15m", "2h 10m") are computed by the client
from the timestamps so they tick; `shared/formatting.py` (and its JavaScript twin in the
dashboard) holds the rules, tested against one table of cases.
"""

from __future__ import annotations

from datetime import datetime
from typing import Generic, Literal, TypeVar

from pydantic import BaseModel, Field

from shared.chatbots import ContactField

Channel = Literal["web", "whatsapp", "telegram"]
ConversationStatus = Literal["active", "handed_off", "closed"]
SenderKind = Literal["visitor", "ai", "agent", "system"]
DeliveryState = Literal["pending", "sent", "delivered", "read", "failed"]
# What a message shows: a delivery state, or not_sent — an AI answer that came after the
# conversation left the AI (an agent took over meanwhile): recorded for the team, never sent.
MessageDelivery = DeliveryState | Literal["not_sent"]

CHANNEL_LABELS: dict[str, str] = {"web": "Web widget", "whatsapp": "WhatsApp", "telegram": "Telegram"}

# The longest reply an agent may send, in characters: what an AgentCommand and an
# OutboundMessage carry (shared/events.py). The gateway refuses longer ones in words and
# gives it to the dashboard (/api/me "limits"), whose reply box counts and stops there.
REPLY_MAX_CHARS = 4096


def reply_too_long(limit: int = REPLY_MAX_CHARS) -> str:
    return f"The reply is too long: at most {limit:,} characters."


class Contact(BaseModel):
    name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=64)

    @property
    def empty(self) -> bool:
        return not (self.name or self.email or self.phone)

    def missing(self, fields: list[ContactField]) -> list[ContactField]:
        """Those of `fields` the visitor has not given."""
        return [f for f in fields if not getattr(self, f)]


class HandoffRow(BaseModel):
    """One row of the open-handoffs list."""

    conversation_id: str
    chatbot_id: str
    display_name: str  # the visitor's name, or a short random identifier
    waiting_since: datetime  # when the (current) handoff happened; waiting time counts from here
    reason: str | None = None
    channel: Channel
    message_count: int


class Stats(BaseModel):
    """The four stats. Raw numbers and timestamps; the client formats and ticks them."""

    chatbot_id: str
    open: int
    oldest_waiting_since: datetime | None  # None -> "—"
    today: int  # open handoffs that came in since local midnight (chatbot timezone)
    resolved_this_week: int  # handoffs closed in the last 7 days
    computed_at: datetime
    # Clients recompute "Today" at this instant (the next local midnight).
    today_ends_at: datetime
    # Not one of the four stats: closed conversations with a visitor message no agent has
    # seen yet (shown beside the Conversations tab).
    closed_with_new_messages: int = 0


class MessageView(BaseModel):
    message_id: str
    conversation_id: str
    sender: SenderKind
    sender_name: str | None = None  # the agent's display name for agent messages
    text: str
    created_at: datetime
    delivery: MessageDelivery | None = None  # outbound messages only
    delivery_error: str | None = None


class SummaryView(BaseModel):
    handoff_id: str
    status: Literal["pending", "ready", "unavailable"]
    text: str | None = None
    mode: Literal["llm", "extractive"] | None = None


class ConversationView(BaseModel):
    """A conversation's header: what the Conversations table and the reply pane show."""

    conversation_id: str
    chatbot_id: str
    status: ConversationStatus
    channel: Channel
    visitor_id: str
    display_name: str
    contact: Contact = Field(default_factory=Contact)
    reason: str | None = None  # of the current / last handoff
    handoff_id: str | None = None
    waiting_since: datetime | None = None
    message_count: int = 0
    last_message_at: datetime | None = None
    last_message_preview: str | None = None
    created_at: datetime
    updated_at: datetime
    summary: SummaryView | None = None
    # WhatsApp's 24-hour customer-service window; None on other channels.
    reply_window_ends_at: datetime | None = None
    # A closed conversation the visitor wrote to again (it stays closed): how many of their
    # messages came since no agent has seen (Reopen or "Mark as seen" clears them), and when
    # the first of them came (one alert per such burst).
    new_after_close: int = 0
    new_after_close_at: datetime | None = None


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    # Opaque cursor for the next page, None at the end.
    next_cursor: str | None = None
    total: int | None = None


class ConversationDetail(BaseModel):
    conversation: ConversationView
    messages: Page[MessageView]


class Snapshot(BaseModel):
    """A chatbot's dashboard at one sequence number: what a client resyncs from."""

    chatbot_id: str
    epoch: str
    seq: int
    stats: Stats
    handoffs: Page[HandoffRow]
