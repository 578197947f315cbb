"""A chatbot's settings, the Human Handoff tool's settings among them (the product specification).

Owned by the queue service (Mongo `chatbots`), published on `chatbot.settings` whenever
they change so channels and gateway keep their own copy (intake gets what it needs with
each AI turn).
"""

from __future__ import annotations

import string
from datetime import datetime, time
from functools import cache
from typing import Literal
from zoneinfo import ZoneInfo, available_timezones

from limits import parse
from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from shared.wait_sla import SLA_LABELS, sla_minutes

Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
ContactField = Literal["name", "email", "phone"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

DEFAULT_HANDOFF_CONDITIONS = (
    "Hand the conversation over to a human when:\n"
    "- the user explicitly asks to talk to a human, a person, an agent or support staff;\n"
    "- you cannot answer the user's question after trying;\n"
    "- the topic is a complaint, a refund, billing, or another sensitive matter;\n"
    "- the user seems frustrated or upset.\n"
    "Do not hand over simple questions that the knowledge base answers."
)
DEFAULT_OFFLINE_MESSAGE = (
    "Our team is currently offline. Please leave your message and we'll get back to you "
    "as soon as possible."
)

# The visitor's place in line (told at the handoff, shown live in the widget).
DEFAULT_LINE_MESSAGE = "You're number {position} in line. Expected wait: {wait}."
# When nothing is known of the team's recent pace: the position only, never a made-up wait.
DEFAULT_LINE_MESSAGE_NO_ESTIMATE = "You're number {position} in line."


def wait_words(seconds: float) -> str:
    """An expected wait in words: "less than a minute", "about 4 minutes", "about 1 hour",
    "about 3 hours" (to the nearest minute under an hour, to the nearest hour from there)."""
    if seconds < 60:
        return "less than a minute"
    minutes = round(seconds / 60)
    if minutes < 60:
        return "about 1 minute" if minutes == 1 else f"about {minutes} minutes"
    hours = round(seconds / 3600)
    return "about 1 hour" if hours == 1 else f"about {hours} hours"


def _placeholders(template: str) -> set[str]:
    try:
        parts = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError:
        raise ValueError("A line message has an unmatched { or }: write {position} and {wait} as they are.") from None
    if any(spec or conv for _, spec, conv in parts):  # "{position:>9999999}" would build a huge text
        raise ValueError("Write {position} and {wait} as they are, without a format.")
    return {name for name, _, _ in parts}


# In the system's zone database but no place's zone: the server's own setting, a placeholder.
_NOT_A_PLACE = frozenset({"localtime", "posixrules", "Factory"})


@cache
def _iana_zones() -> frozenset[str]:
    return frozenset(available_timezones()) - _NOT_A_PLACE


def valid_timezone(name: str) -> str:
    """An IANA zone name ("Europe/Berlin", "UTC"), as the browser's Intl knows them; not a
    file path or an offset, which ZoneInfo alone might accept."""
    if name not in _iana_zones():
        raise ValueError(f"Unknown timezone: {name!r}.")
    return name


class HumanHandoffSettings(BaseModel):
    """Tools → Human Handoff. Every field has a working default: saving without edits works."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    conditions: str = Field(default=DEFAULT_HANDOFF_CONDITIONS, max_length=4000)
    offline_message: str = Field(default=DEFAULT_OFFLINE_MESSAGE, min_length=1, max_length=1000)
    schedule_enabled: bool = False
    available_days: list[Day] = Field(default_factory=lambda: ["mon", "tue", "wed", "thu", "fri"])
    start_time: time = time(9, 0)
    end_time: time = time(17, 0)
    # The chatbot's timezone (ChatbotSettings.timezone: one per chatbot, kept equal to it
    # there). Saved with this form, since Tools → Human Handoff is where it is edited.
    timezone: str = "UTC"
    contact_fields: list[ContactField] = Field(default_factory=list)
    # The visitor's place in line: told at the handoff (WhatsApp, Telegram), shown live in the widget.
    line_enabled: bool = True
    line_message: str = Field(default=DEFAULT_LINE_MESSAGE, min_length=1, max_length=500)
    line_message_no_estimate: str = Field(default=DEFAULT_LINE_MESSAGE_NO_ESTIMATE, min_length=1, max_length=500)
    # Wait-time SLA on the dashboard, in whole minutes of waiting (None: off): rows turn amber
    # after `alert_after_min`, red after `urgent_after_min`, and an unassigned row crossing the
    # urgent one alerts the chatbot's agents again (services/gateway/static/js/sla.js).
    alert_after_min: int | None = 5
    urgent_after_min: int | None = 15

    @field_validator("timezone")
    @classmethod
    def _timezone_exists(cls, v: str) -> str:
        return valid_timezone(v)

    @field_validator("line_message")
    @classmethod
    def _line_message(cls, v: str) -> str:
        names = _placeholders(v)
        if not names <= {"position", "wait"} or "position" not in names:
            raise ValueError("The line message must contain {position}, and may contain {wait}; nothing else in braces.")
        return v

    @field_validator("line_message_no_estimate")
    @classmethod
    def _line_message_no_estimate(cls, v: str) -> str:
        if _placeholders(v) != {"position"}:
            raise ValueError("The line message without an estimate must contain {position}, and nothing else in braces.")
        return v

    @field_validator("alert_after_min", "urgent_after_min", mode="before")
    @classmethod
    def _sla_minutes(cls, v: object, info: ValidationInfo) -> int | None:
        return sla_minutes(v, SLA_LABELS[info.field_name])

    @field_validator("available_days", "contact_fields")
    @classmethod
    def _no_duplicates(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))

    @field_validator("start_time", "end_time")
    @classmethod
    def _local_time(cls, v: time) -> time:
        # The times are in the schedule's `timezone`; an offset could not be compared with them.
        if v.tzinfo is not None:
            raise ValueError("Start Time and End Time are times of day in the schedule's timezone, without an offset.")
        return v

    @model_validator(mode="after")
    def _end_after_start(self) -> HumanHandoffSettings:
        if self.end_time <= self.start_time:
            raise ValueError("End Time must be after Start Time.")
        if self.schedule_enabled and not self.available_days:
            raise ValueError("Choose at least one available day, or turn the schedule off.")
        if self.alert_after_min is not None and self.urgent_after_min is not None \
                and self.urgent_after_min <= self.alert_after_min:
            raise ValueError("Urgent after must be more minutes than Alert after (or turn one of them off).")
        return self

    def is_available(self, at: datetime) -> bool:
        """Whether a handoff requested at `at` (aware) goes through, per the schedule."""
        if not self.schedule_enabled:
            return True
        local = at.astimezone(ZoneInfo(self.timezone))
        if DAYS[local.weekday()] not in self.available_days:
            return False
        return self.start_time <= local.time().replace(tzinfo=None) < self.end_time

    def line_text(self, position: int, wait_s: float | None) -> str:
        """What the visitor is told of their place in line; the position only when no wait is
        known (`wait_s` None)."""
        if wait_s is None:
            return self.line_message_no_estimate.format(position=position)
        return self.line_message.format(position=position, wait=wait_words(wait_s))


class ChannelCredentials(BaseModel):
    """Per-chatbot channel credentials. Secrets are excluded from repr so they never reach logs."""

    model_config = ConfigDict(extra="forbid")

    telegram_bot_token: str | None = Field(default=None, repr=False)
    telegram_webhook_secret: str | None = Field(default=None, repr=False)
    whatsapp_phone_number_id: str | None = None
    whatsapp_access_token: str | None = Field(default=None, repr=False)
    whatsapp_app_secret: str | None = Field(default=None, repr=False)
    whatsapp_verify_token: str | None = Field(default=None, repr=False)
    # The WhatsApp integration can be disconnected without forgetting its credentials.
    whatsapp_connected: bool = False

    def view(self) -> ChannelsView:
        """What the dashboard may show: which channels are configured, never the secrets."""
        return ChannelsView(
            telegram_configured=bool(self.telegram_bot_token),
            whatsapp_configured=bool(self.whatsapp_access_token and self.whatsapp_phone_number_id),
            whatsapp_connected=self.whatsapp_connected,
            whatsapp_phone_number_id=self.whatsapp_phone_number_id,
        )

    def public_view(self) -> dict:
        return self.view().model_dump()


class ChannelsView(BaseModel):
    """A chatbot's channels as they may leave the queue: configured or not, no secret."""

    telegram_configured: bool = False
    whatsapp_configured: bool = False
    whatsapp_connected: bool = False
    whatsapp_phone_number_id: str | None = None


class WidgetLimits(BaseModel):
    """How much the public web widget takes from one caller, in `limits` notation ("20/minute").
    A script minting visitor ids costs a model call, a conversation and Redis keys per
    message, so messages count per visitor and per IP address (many visitors may share one
    office or mobile-carrier address: the IP limit is the looser one), and new visitor
    sessions, the cheapest thing to abuse, per IP address and tightly."""

    model_config = ConfigDict(extra="forbid")

    # Messages and contact submissions from one visitor.
    messages_per_visitor: str = "20/minute"
    # Messages and contact submissions from one IP address (all its visitors together).
    messages_per_ip: str = "120/minute"
    # New visitor sessions (widget tokens for a new visitor) handed to one IP address.
    sessions_per_ip: str = "30/hour"

    @field_validator("messages_per_visitor", "messages_per_ip", "sessions_per_ip")
    @classmethod
    def _a_rate(cls, v: str) -> str:
        try:
            rate = parse(v)
        except ValueError:
            raise ValueError(f"Not a rate: {v!r} (write e.g. \"20/minute\" or \"5 per 10 seconds\").") from None
        if rate.amount < 1:
            raise ValueError(f"A rate must allow at least one request: {v!r}.")
        return v


class ChatbotSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chatbot_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    name: str = Field(min_length=1, max_length=200)
    # The chatbot's own instructions for the AI (its persona, knowledge).
    instructions: str = Field(default="You are a helpful assistant.", max_length=20000)
    # The chatbot's one timezone: the schedule's hours, the dashboard's Today and Resolved
    # this week (day boundaries) and the chatbot's time shown beside message times.
    timezone: str = "UTC"
    human_handoff: HumanHandoffSettings = Field(default_factory=HumanHandoffSettings)
    channels: ChannelCredentials = Field(default_factory=ChannelCredentials)
    # Rate limits of the public web widget (sane defaults; raise them for a busy site).
    widget: WidgetLimits = Field(default_factory=WidgetLimits)
    # Increases by one on every change (the queue's record decides): a change made from an
    # older version (a dashboard form loaded before a credential rotation) is refused.
    version: int = Field(default=0, ge=0)

    @field_validator("timezone")
    @classmethod
    def _timezone_exists(cls, v: str) -> str:
        return valid_timezone(v)

    @model_validator(mode="after")
    def _one_timezone(self) -> ChatbotSettings:
        """One timezone per chatbot. Settings stored before it was one may hold two: a
        schedule's zone saved from Tools while the chatbot's stayed at the default UTC; that
        saved one is the chatbot's. Otherwise the chatbot's wins and the schedule follows."""
        hh = self.human_handoff
        if hh.timezone != self.timezone:
            if self.timezone == "UTC":
                self.timezone = hh.timezone
            else:
                self.human_handoff = hh.model_copy(update={"timezone": self.timezone})
        return self

    def view(self) -> ChatbotView:
        """The settings as they may leave the queue over HTTP: no channel secret, no instructions."""
        return ChatbotView(chatbot_id=self.chatbot_id, name=self.name, timezone=self.timezone,
                           human_handoff=self.human_handoff, channels=self.channels.view(), version=self.version)


class ChatbotView(BaseModel):
    """What the queue's internal API and the dashboard see of a chatbot's settings."""

    chatbot_id: str
    name: str
    timezone: str
    human_handoff: HumanHandoffSettings
    channels: ChannelsView
    # What a Human Handoff save sends back as `version`: the settings it was based on.
    version: int
