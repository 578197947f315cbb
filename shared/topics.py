"""Every topic, its partition count and what its messages are keyed by — in one place.

Everything about one conversation is keyed by conversation id so it stays in order on one
partition; dashboard fan-out is keyed by chatbot id; chatbot settings are keyed by chatbot
id and read from the beginning by every instance that needs them (a compacted table).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

KeyKind = Literal["conversation_id", "chatbot_id"]


@dataclass(frozen=True, slots=True)
class Topic:
    name: str
    partitions: int
    key: KeyKind
    compacted: bool = False

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"


VISITOR_MESSAGES = Topic("visitor.messages", 6, "conversation_id")
AI_TURNS = Topic("ai.turns", 6, "conversation_id")
CONVERSATION_EVENTS = Topic("conversation.events", 6, "conversation_id")
CONVERSATION_STATE = Topic("conversation.state", 6, "conversation_id")
AGENT_COMMANDS = Topic("agent.commands", 6, "conversation_id")
OUTBOUND_MESSAGES = Topic("outbound.messages", 6, "conversation_id")
DELIVERY_STATUS = Topic("delivery.status", 6, "conversation_id")
HANDOFF_SUMMARIES = Topic("handoff.summaries", 6, "conversation_id")
DASHBOARD_UPDATES = Topic("dashboard.updates", 3, "chatbot_id")
CHATBOT_SETTINGS = Topic("chatbot.settings", 1, "chatbot_id", compacted=True)
# A chatbot's line of visitors waiting for a person (whole, the newest wins): queue -> channels.
VISITOR_LINE = Topic("visitor.line", 3, "chatbot_id")
# Who views or types in which conversation's pane (ephemeral): gateway -> every gateway.
# One partition: every gateway reads all of it without a group, a few events a second at
# most, and each partition in a fetch costs the broker time on every poll, idle or not.
AGENT_PRESENCE = Topic("agent.presence", 1, "chatbot_id")

ALL_TOPICS: tuple[Topic, ...] = (
    VISITOR_MESSAGES,
    AI_TURNS,
    CONVERSATION_EVENTS,
    CONVERSATION_STATE,
    AGENT_COMMANDS,
    OUTBOUND_MESSAGES,
    DELIVERY_STATUS,
    HANDOFF_SUMMARIES,
    DASHBOARD_UPDATES,
    CHATBOT_SETTINGS,
    VISITOR_LINE,
    AGENT_PRESENCE,
)


def by_name(name: str) -> Topic:
    for t in ALL_TOPICS:
        if t.name == name:
            return t
    raise KeyError(name)
