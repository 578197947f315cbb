"""A chatbot's settings, the Human Handoff tool's settings among them (the product specification).

Owned by the queue service (Mongo `chatbots`), published on `chatbot.settings` whenever
they change so channels and gateway keep their own copy (intake gets what it needs with
each AI turn).
"""

from __future__ import annotations

from datetime import datetime, time
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

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


def valid_timezone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"Unknown timezone: {name!r}.") from exc
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
    timezone: str = "UTC"
    contact_fields: list[ContactField] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _timezone_exists(cls, v: str) -> str:
        return valid_timezone(v)

    @field_validator("available_days", "contact_fields")
    @classmethod
    def _no_duplicates(cls, v: list[str]) -> list[str]:
        return list(dict.fromkeys(v))

    @model_validator(mode="after")
    def _end_after_start(self) -> HumanHandoffSettings:
        if self.end_time <= self.start_time:
            raise ValueError("End Time must be after Start Time.")
        if self.schedule_enabled and not self.available_days:
            raise ValueError("Choose at least one available day, or turn the schedule off.")
        return self

    def is_available(self, at: datetime) -> bool:
        """Whether a handoff requested at `at` (aware) goes through, per the schedule."""
        if not self.schedule_enabled:
            return True
        local = at.astimezone(ZoneInfo(self.timezone))
        if DAYS[local.weekday()] not in self.available_days:
            return False
        return self.start_time <= local.time().replace(tzinfo=None) < self.end_time


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

    def public_view(self) -> dict:
        """What the dashboard may show: which channels are configured, never the secrets."""
        return {
            "telegram_configured": bool(self.telegram_bot_token),
            "whatsapp_configured": bool(self.whatsapp_access_token and self.whatsapp_phone_number_id),
            "whatsapp_connected": self.whatsapp_connected,
            "whatsapp_phone_number_id": self.whatsapp_phone_number_id,
        }


class ChatbotSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chatbot_id: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    name: str = Field(min_length=1, max_length=200)
    # The chatbot's own instructions for the AI (its persona, knowledge).
    instructions: str = Field(default="You are a helpful assistant.", max_length=20000)
    # The timezone in which "Today" is counted on the dashboard.
    timezone: str = "UTC"
    human_handoff: HumanHandoffSettings = Field(default_factory=HumanHandoffSettings)
    channels: ChannelCredentials = Field(default_factory=ChannelCredentials)

    @field_validator("timezone")
    @classmethod
    def _timezone_exists(cls, v: str) -> str:
        return valid_timezone(v)
