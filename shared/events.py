"""The events on the bus: one envelope, typed payloads, a union per topic.

Every event has an id (handlers ignore ids they have applied), a type (the discriminator),
when it happened, the chatbot and (when it is about one) the conversation, and a schema
version. Readers are tolerant (unknown fields are ignored) so producers can add fields
without a lock-step deploy; a change that is not additive bumps `schema_version`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter

from shared.chatbots import ChatbotSettings, ChatbotView, ContactField, HumanHandoffSettings
from shared.ids import new_id, utcnow
from shared.topics import KeyKind
from shared.views import (
    Channel,
    Contact,
    ConversationStatus,
    ConversationView,
    DeliveryState,
    HandoffRow,
    MessageView,
    Stats,
    SummaryView,
)

SCHEMA_VERSION = 1


class Envelope(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    event_id: str = Field(default_factory=new_id, min_length=1, max_length=128)
    occurred_at: AwareDatetime = Field(default_factory=utcnow)
    chatbot_id: str = Field(min_length=1, max_length=64)
    conversation_id: str | None = Field(default=None, max_length=128)
    schema_version: int = SCHEMA_VERSION

    def partition_key(self, by: KeyKind = "conversation_id") -> bytes:
        """The key of this event on a topic keyed `by` (shared.topics): by conversation, an
        event without one falls back to its chatbot. A chatbot-keyed topic must not key by
        the conversation id the event also carries: the chatbot's sequence would spread
        over partitions and reach the gateway out of order."""
        if by == "chatbot_id":
            return self.chatbot_id.encode()
        return (self.conversation_id or self.chatbot_id).encode()


class VisitorIdentity(BaseModel):
    model_config = ConfigDict(extra="ignore")

    external_id: str = Field(min_length=1, max_length=256)  # widget visitor id, Telegram chat id, WhatsApp wa_id
    name: str | None = Field(default=None, max_length=200)


# ---------------------------------------------------------------- visitor.messages
class VisitorMessageReceived(Envelope):
    """channels -> queue: a visitor wrote. conversation_id is always set."""

    type: Literal["visitor.message_received"] = "visitor.message_received"
    channel: Channel
    visitor: VisitorIdentity
    text: str = Field(min_length=1, max_length=4096)
    # Telegram update id / WhatsApp wamid / widget client message id: the dedupe key at the edge.
    channel_message_id: str = Field(min_length=1, max_length=256)
    # When the platform says the visitor sent it (WhatsApp's `timestamp`, Telegram's `date`);
    # None when it gave none. WhatsApp's 24-hour window counts from it (shared/reply_window.py).
    sent_at: AwareDatetime | None = None


class VisitorContactSubmitted(Envelope):
    """channels -> queue: the visitor filled in the contact fields the tool asked for."""

    type: Literal["visitor.contact_submitted"] = "visitor.contact_submitted"
    channel: Channel
    visitor: VisitorIdentity
    contact: Contact


VisitorEvent = Annotated[VisitorMessageReceived | VisitorContactSubmitted, Field(discriminator="type")]


class TranscriptLine(BaseModel):
    sender: Literal["visitor", "ai", "agent", "system"]
    text: str
    at: datetime
    sender_name: str | None = None  # the agent's display name on agent lines


# ---------------------------------------------------------------- ai.turns
class AiProfile(BaseModel):
    """What the AI needs of a chatbot's settings (never its channel credentials)."""

    model_config = ConfigDict(extra="ignore")

    instructions: str = Field(default="You are a helpful assistant.", max_length=20000)
    human_handoff: HumanHandoffSettings = Field(default_factory=HumanHandoffSettings)

    @classmethod
    def of(cls, settings: ChatbotSettings) -> AiProfile:
        return cls(instructions=settings.instructions, human_handoff=settings.human_handoff)


class AiTurnRequested(Envelope):
    """queue -> intake: the AI has this conversation; answer the visitor's message.

    Carries everything the model needs, so intake keeps no state: the chatbot's AI profile
    as it is now, the recent transcript (oldest first, ending with the message), the contact
    already collected. `version` is the conversation's version the turn was asked at: the
    queue applies the outcome only if nothing changed the conversation's status since."""

    type: Literal["ai.turn_requested"] = "ai.turn_requested"
    turn_id: str = Field(min_length=1, max_length=128)
    message_id: str
    version: int = Field(ge=0)
    channel: Channel
    visitor: VisitorIdentity
    text: str = Field(min_length=1, max_length=4096)
    transcript: list[TranscriptLine] = Field(default_factory=list)
    profile: AiProfile
    contact: Contact = Field(default_factory=Contact)


AI_TURN_EVENT = TypeAdapter(AiTurnRequested)


# ---------------------------------------------------------------- conversation.events
class AiReply(BaseModel):
    """One message the AI sends the visitor; its id is derived from the turn."""

    message_id: str = Field(min_length=1, max_length=128)
    text: str = Field(min_length=1, max_length=4096)
    # Ask the widget to show the contact form for these fields (Human Handoff tool).
    request_contact_fields: list[ContactField] = Field(default_factory=list)


class HandoffAsked(BaseModel):
    """The AI's tool, or the visitor's explicit request, asks for a human (and the schedule
    allows it): the queue hands off, then asks for `contact_fields`."""

    reason: str = Field(min_length=1, max_length=500)
    source: Literal["ai_tool", "explicit_request"]
    contact_fields: list[ContactField] = Field(default_factory=list)


class AiTurnCompleted(Envelope):
    """intake -> queue: the outcome of one AI turn, applied only at the version it was asked
    for (a late answer after an agent took over is recorded as not sent)."""

    type: Literal["ai.turn_completed"] = "ai.turn_completed"
    turn_id: str = Field(min_length=1, max_length=128)
    version: int = Field(ge=0)
    replies: list[AiReply] = Field(default_factory=list, max_length=4)
    handoff: HandoffAsked | None = None
    # "offline" (no model configured), "llm", or "apology" (the model failed).
    mode: Literal["llm", "offline", "apology"] = "llm"


# ---------------------------------------------------------------- conversation.state
class ConversationStateChanged(Envelope):
    """queue -> anyone: the conversation's status changed (every transition, in order).

    A `handoff` or `reopen` carries the handoff and, for `handoff`, the transcript so far
    (capped) so the summarizer needs no access to the queue's store."""

    type: Literal["conversation.state_changed"] = "conversation.state_changed"
    transition: Literal["handoff", "close", "reopen", "return_to_ai"]
    status: ConversationStatus
    previous_status: ConversationStatus
    channel: Channel
    visitor: VisitorIdentity
    handoff_id: str | None = None
    reason: str | None = None
    by: str  # "ai", "visitor", or "agent:<agent id>"
    contact: Contact = Field(default_factory=Contact)
    transcript: list[TranscriptLine] = Field(default_factory=list)


# ---------------------------------------------------------------- agent.commands
class AgentRef(BaseModel):
    agent_id: str
    display_name: str  # first name, or e-mail when there is none


class AgentCommand(Envelope):
    """gateway -> queue: an agent's action. `command_id` is chosen by the client so a
    retried click is applied (and sent to the visitor) once."""

    type: Literal["agent.command"] = "agent.command"
    command_id: str = Field(min_length=8, max_length=128)
    # mark_seen: the visitor's messages to a closed conversation were seen (it stays closed).
    # refresh_summary: write the handoff's summary again from the messages since (the summarizer).
    # take: the agent claims the conversation (409 when another agent has it); take_over: from
    # whoever has it, with a system line in the transcript (services/queue/assignment.py).
    action: Literal["reply", "close", "reopen", "return_to_ai", "mark_seen", "refresh_summary", "take", "take_over"]
    text: str | None = Field(default=None, max_length=4096)
    # Reopen only: the gateway (owner of agents) found the conversation's assignee still an
    # agent of the chatbot, so the claim is kept; otherwise a reopen clears it.
    keep_assignee: bool = False
    agent: AgentRef


class HumanHandoffUpdate(Envelope):
    """gateway -> queue (keyed by chatbot): replace the Human Handoff tool's part of a
    chatbot's settings, and nothing else (no channel secret travels here). `based_on_version`
    is the settings version the agent's form was loaded at: the queue refuses (409) when the
    settings changed since, so a credential rotation that raced the save is never undone."""

    type: Literal["agent.update_human_handoff"] = "agent.update_human_handoff"
    command_id: str = Field(min_length=8, max_length=128)
    human_handoff: HumanHandoffSettings
    based_on_version: int = Field(ge=0)
    agent: AgentRef


AgentCommandEvent = Annotated[AgentCommand | HumanHandoffUpdate, Field(discriminator="type")]


# ---------------------------------------------------------------- conversation.state: summary refreshes
class ConversationMessageAdded(Envelope):
    """queue -> summarizer: a visitor's or an agent's message joined a handed-off conversation.
    What a refresh of the handoff's summary reads (the summarizer has no access to the queue's
    store); the event id is derived from the message id, so a replay is the same event."""

    type: Literal["conversation.message_added"] = "conversation.message_added"
    handoff_id: str = Field(min_length=1, max_length=128)
    message_id: str = Field(min_length=1, max_length=128)
    line: TranscriptLine


class SummaryRefreshRequested(Envelope):
    """queue -> summarizer: an agent asked for the handoff's summary to be written again
    (the `refresh_summary` command, accepted by the queue)."""

    type: Literal["conversation.summary_refresh_requested"] = "conversation.summary_refresh_requested"
    handoff_id: str = Field(min_length=1, max_length=128)
    command_id: str = Field(min_length=8, max_length=128)
    agent: AgentRef


StateTopicEvent = Annotated[ConversationStateChanged | ConversationMessageAdded | SummaryRefreshRequested,
                            Field(discriminator="type")]


# ---------------------------------------------------------------- outbound.messages
class OutboundMessage(Envelope):
    """queue -> channels: deliver this text (an agent's or the AI's) to the visitor.
    `message_id` is the dedupe key: channels send each message id at most once."""

    type: Literal["outbound.message"] = "outbound.message"
    message_id: str
    channel: Channel
    visitor: VisitorIdentity
    text: str = Field(min_length=1, max_length=4096)
    sender: Literal["ai", "agent", "system"]
    sender_name: str | None = None
    # Ask the widget to show the contact form for these fields (Human Handoff tool).
    request_contact_fields: list[Literal["name", "email", "phone"]] = Field(default_factory=list)


class LinePlace(BaseModel):
    """One web visitor's place in a chatbot's line, and the text the widget shows for it."""

    visitor_id: str = Field(min_length=1, max_length=256)
    position: int = Field(ge=1)
    text: str = Field(max_length=1000)


# ---------------------------------------------------------------- visitor.line
class LineChanged(Envelope):
    """queue -> channels (keyed by chatbot): a chatbot's line moved.
    Carries the whole line of its web visitors (state, not a delta), so the newest one wins
    (`occurred_at`) and one lost is made good by the next. A web visitor not in it has no
    place in line (answered, closed, returned to the AI): the widget hides the line."""

    type: Literal["visitor.line_changed"] = "visitor.line_changed"
    places: list[LinePlace] = Field(default_factory=list)


# ---------------------------------------------------------------- delivery.status
class DeliveryStatusChanged(Envelope):
    """channels -> queue: what happened to an outbound message."""

    type: Literal["delivery.status_changed"] = "delivery.status_changed"
    message_id: str
    status: DeliveryState
    channel_message_id: str | None = None
    error: str | None = Field(default=None, max_length=1000)
    permanent: bool = False


# ---------------------------------------------------------------- handoff.summaries
class HandoffSummaryReady(Envelope):
    """summarizer -> queue: the recap of one handoff (or that none could be written)."""

    type: Literal["handoff.summary_ready"] = "handoff.summary_ready"
    handoff_id: str
    status: Literal["ready", "unavailable"]
    text: str | None = Field(default=None, max_length=4000)
    mode: Literal["llm", "extractive"] | None = None
    # What it covers, when it was written, how often refreshed, a refresh under way or failed
    # (shared.views.SummaryView says what each means).
    covers_until: AwareDatetime | None = None
    made_at: AwareDatetime | None = None
    revision: int = Field(default=0, ge=0)
    refresh: Literal["running", "failed"] | None = None

    def view(self) -> SummaryView:
        return SummaryView(handoff_id=self.handoff_id, status=self.status, text=self.text, mode=self.mode,
                           covers_until=self.covers_until, made_at=self.made_at, revision=self.revision,
                           refresh=self.refresh)


# ---------------------------------------------------------------- chatbot.settings
class ChatbotSettingsChanged(Envelope):
    """queue -> channels, gateway and other queue instances (keyed by chatbot; a table).
    Carries the channel credentials (secrets): channels needs them to call and verify the
    Telegram and WhatsApp APIs (docs/contracts.md, "What carries secrets")."""

    type: Literal["chatbot.settings_changed"] = "chatbot.settings_changed"
    settings: ChatbotSettings
    deleted: bool = False


# ---------------------------------------------------------------- dashboard.updates
class DashboardUpdate(Envelope):
    """queue -> gateway -> dashboards (keyed by chatbot). Carries state, not deltas, so
    applying one twice is harmless; `seq` increases by one per chatbot within an `epoch`
    (a new epoch starts when the queue's Redis index is rebuilt). A client that sees a gap
    or a new epoch resyncs from a snapshot."""

    type: Literal["dashboard.update"] = "dashboard.update"
    epoch: str
    seq: int
    stats: Stats
    row_upserted: HandoffRow | None = None
    row_removed: str | None = None  # conversation id
    conversation: ConversationView | None = None
    message: MessageView | None = None
    summary: SummaryView | None = None
    settings_changed: bool = False


class CommandResult(Envelope):
    """queue -> gateway: the outcome of one agent command (not sequenced; it answers the
    REST call that sent the command and is shown to that agent only)."""

    type: Literal["dashboard.command_result"] = "dashboard.command_result"
    command_id: str
    ok: bool
    error: str | None = None
    # HTTP-ish status the gateway answers with: 200 ok, 404 unknown, 409 refused, 422 invalid.
    status_code: int = 200
    conversation: ConversationView | None = None
    # A Human Handoff update's answer: the settings as saved (the public view, no secret).
    settings: ChatbotView | None = None


DashboardEvent = Annotated[DashboardUpdate | CommandResult, Field(discriminator="type")]


# ---------------------------------------------------------------- per-topic adapters
VISITOR_EVENT = TypeAdapter(VisitorEvent)
CONVERSATION_EVENT = TypeAdapter(AiTurnCompleted)
STATE_EVENT = TypeAdapter(ConversationStateChanged)
# Everything on conversation.state (what the summarizer reads): transitions and summary refreshes.
STATE_TOPIC_EVENT = TypeAdapter(StateTopicEvent)
AGENT_COMMAND_EVENT = TypeAdapter(AgentCommandEvent)
OUTBOUND_EVENT = TypeAdapter(OutboundMessage)
LINE_EVENT = TypeAdapter(LineChanged)
DELIVERY_EVENT = TypeAdapter(DeliveryStatusChanged)
SUMMARY_EVENT = TypeAdapter(HandoffSummaryReady)
SETTINGS_EVENT = TypeAdapter(ChatbotSettingsChanged)
DASHBOARD_EVENT = TypeAdapter(DashboardEvent)


# ---------------------------------------------------------------- agent.presence
class AgentPresence(Envelope):
    """gateway -> every gateway (keyed by chatbot): one dashboard socket (`conn`) of an agent
    views or types in a conversation's pane, or left. Ephemeral: it holds for `ttl_s` unless
    refreshed (the dashboard's heartbeat), so a gateway that died takes its agents' presence
    with it; `left` ends it at once (the pane closed, the socket dropped)."""

    type: Literal["agent.presence"] = "agent.presence"
    conn: str = Field(min_length=1, max_length=64)
    agent: AgentRef
    state: Literal["viewing", "typing", "left"]
    ttl_s: float = Field(gt=0)


PRESENCE_EVENT = TypeAdapter(AgentPresence)
