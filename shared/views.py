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


class Assignee(BaseModel):
    """The agent handling a conversation (a claim: Take, or the first reply; docs/contracts.md,
    "Presence and claims"). `name` is the agent's display name when the claim was made."""

    agent_id: str
    name: str


class HandoffRow(BaseModel):
    """One row of the open-handoffs list."""

    conversation_id: str
    chatbot_id: str
    display_name: str  # the visitor's name, or a short random identifier
    waiting_since: datetime  # when the (current) handoff happened; waiting time counts from here
    reason: str | None = None
    channel: Channel
    message_count: int
    # The wait clock (docs/contracts.md, "The wait clock"): "waiting" for a human since
    # `wait_started_at` (the handoff or reopen, or the visitor's first message after an
    # agent's reply), or "replied" (in conversation: `wait_started_at` is None).
    wait_state: Literal["waiting", "replied"] = "waiting"
    wait_started_at: datetime | None = None
    last_agent_reply_at: datetime | None = None
    nudges: int = 0  # visitor messages since the clock started ("3 new messages")
    last_visitor_at: datetime | None = None  # the visitor's latest message ("wrote again 2m ago")
    loop: int = 0  # handoffs in the AI <-> team loop this handoff closes ("loop ×3"); 0: none
    # WhatsApp's 24-hour reply window (shared/reply_window.py); None on other channels. The
    # dashboard counts down to it and lifts rows whose window closes soon.
    reply_window_ends_at: datetime | None = None
    assignee: Assignee | None = None  # who is handling it; None: unassigned


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
    # The time of the last message it accounts for: the dashboard counts the visitor's and the
    # agents' messages after it ("3 new messages since this summary").
    covers_until: datetime | None = None
    made_at: datetime | None = None  # when it was written ("showing the one from 12:04")
    revision: int = 0  # 0 the handoff's first summary, +1 per refresh: the higher is the newer
    # A refresh under way ("running"), or the last one failed ("failed": this is the previous one).
    refresh: Literal["running", "failed"] | None = None


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
    # The wait clock and the loop flag, as on the row (HandoffRow) while handed off.
    wait_state: Literal["waiting", "replied"] | None = None
    wait_started_at: datetime | None = None
    last_agent_reply_at: datetime | None = None
    nudges: int = 0
    loop: int = 0
    assignee: Assignee | None = None  # as HandoffRow.assignee (cleared on Close and Return to AI)
    # Closed: who had it at the close (Reopen gives it back while that agent is still on the team).
    previous_assignee: Assignee | None = None


class HandoffHistoryItem(BaseModel):
    """One handoff of a conversation (the reply pane's history)."""

    handoff_id: str
    reason: str | None = None
    requested_at: datetime  # handed off
    waiting_since: datetime  # its latest waiting period began (a reopen starts one)
    status: Literal["open", "closed", "returned_to_ai"]
    ended_at: datetime | None = None  # closed or returned to the AI
    ended_by: str | None = None  # the agent who closed it or returned it (display name)
    first_reply_at: datetime | None = None  # an agent's first reply in that period
    waited_s: int | None = None  # waiting_since to the first reply (or to its end); None: still waiting
    loop: int = 0  # as HandoffRow.loop, when it was handed off


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    # Opaque cursor for the next page, None at the end.
    next_cursor: str | None = None
    total: int | None = None


class ConversationDetail(BaseModel):
    conversation: ConversationView
    messages: Page[MessageView]
    handoffs: list[HandoffHistoryItem] = Field(default_factory=list)  # oldest first


class Snapshot(BaseModel):
    """A chatbot's dashboard at one sequence number: what a client resyncs from."""

    chatbot_id: str
    epoch: str
    seq: int
    stats: Stats
    handoffs: Page[HandoffRow]
