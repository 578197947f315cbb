"""Intake's rules, without I/O: the handoff decision, the system prompt and the tool the AI
is offered, the model's context, deterministic ids and the fixed texts the visitor sees
(explicit requests for a person: explicit.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

# Explicit requests for a person have their own table and matcher (explicit.py); re-exported.
from services.intake.explicit import is_explicit_request as is_explicit_request
from shared.chatbots import ContactField, HumanHandoffSettings
from shared.events import AiProfile, TranscriptLine
from shared.ids import derived_id

# ---------------------------------------------------------------- fixed texts
HANDOFF_NOTICE = "I'm connecting you with a member of our team. Someone will reply here shortly."
LLM_APOLOGY = "Sorry, I'm having trouble answering right now. Please try again in a moment."
EXPLICIT_REQUEST_REASON = "Visitor asked for a person"
DEFAULT_TOOL_REASON = "The assistant requested a human"
OFFLINE_RESPONDER_INTRO = (
    "I'm an automated assistant running without an AI model, so I can't answer questions myself."
)
OFFLINE_RESPONDER_WITH_HANDOFF = (
    OFFLINE_RESPONDER_INTRO
    + " If you'd like to talk to a person, just write \"I want to talk to a human\" and I'll connect you."
)
OFFLINE_RESPONDER_NO_HANDOFF = (
    OFFLINE_RESPONDER_INTRO + " Talking to a person isn't available in this chat, sorry."
)

FIELD_WORDS: dict[str, str] = {"name": "your name", "email": "your e-mail address", "phone": "your phone number"}

TOOL_NAME = "request_human_handoff"

Mode = Literal["llm", "offline"]


def contact_question(fields: list[ContactField]) -> str:
    """The plain question asked on channels without a contact form (Telegram, WhatsApp)."""
    words = [FIELD_WORDS[f] for f in fields]
    if len(words) == 1:
        listed = words[0]
    else:
        listed = ", ".join(words[:-1]) + " and " + words[-1]
    return f"So our team can follow up, please share {listed}."


def offline_responder_reply(settings: AiProfile, now: datetime) -> str:
    """Honest about what a request for a person would do now: hand off, nothing (the tool is
    off), or — outside the tool's schedule — the Offline Message, never an invitation to ask
    for a handoff that would not happen."""
    tool = settings.human_handoff
    if not tool.enabled:
        return OFFLINE_RESPONDER_NO_HANDOFF
    if not tool.is_available(now):
        return f"{OFFLINE_RESPONDER_INTRO} {tool.offline_message}"
    return OFFLINE_RESPONDER_WITH_HANDOFF


# ---------------------------------------------------------------- ids
def reply_message_id(visitor_message_id: str, n: int = 0) -> str:
    """The AI's n-th message answering a visitor message: a turn taken again (a redelivery)
    yields the same ids, so the queue and channels drop the repeat."""
    return derived_id("m_", visitor_message_id, "ai", str(n))


def outcome_event_id(turn_id: str) -> str:
    return derived_id("ai_", turn_id, "outcome")


# ---------------------------------------------------------------- handoff decision
@dataclass(frozen=True)
class HandoffDecision:
    """What to do when someone (the AI's tool or the visitor) asks for a human."""

    hand_off: bool
    reply: str  # what the visitor is told
    ask_contact: list[ContactField] = field(default_factory=list)


def decide_handoff(tool: HumanHandoffSettings, now: datetime) -> HandoffDecision:
    if not tool.enabled:  # callers do not ask then; keep the rule here too
        return HandoffDecision(False, "")
    if not tool.is_available(now):
        return HandoffDecision(False, tool.offline_message)
    return HandoffDecision(True, HANDOFF_NOTICE, list(tool.contact_fields))


# ---------------------------------------------------------------- prompt and tool
def build_system_prompt(settings: AiProfile) -> str:
    parts = [settings.instructions.strip() or "You are a helpful assistant."]
    tool = settings.human_handoff
    if tool.enabled:
        parts.append(
            "You can hand the conversation over to a human member of the team with the "
            f"`{TOOL_NAME}` function (give a short reason). Handoff Conditions:\n"
            + tool.conditions.strip()
        )
    return "\n\n".join(parts)


def handoff_tool() -> dict[str, Any]:
    return {
        "type": "function",
        "function": {
            "name": TOOL_NAME,
            "description": "Hand this conversation over to a human member of the team.",
            "parameters": {
                "type": "object",
                "properties": {
                    "reason": {
                        "type": "string",
                        "description": "Why, in a few words, e.g. 'User asked for a person', 'Topic is a refund'.",
                    }
                },
                "required": ["reason"],
                "additionalProperties": False,
            },
        },
    }


def tools_for(settings: AiProfile) -> list[dict[str, Any]]:
    """The tool is offered only while the Human Handoff tool is on."""
    return [handoff_tool()] if settings.human_handoff.enabled else []


def clean_reason(raw: Any) -> str:
    """The model's reason, trimmed to what the event allows; a default when it gave none."""
    text = " ".join(str(raw or "").split())
    return text[:500] if text else DEFAULT_TOOL_REASON


# ---------------------------------------------------------------- the model's context
def model_context(transcript: list[TranscriptLine]) -> list[dict[str, str]]:
    """The recent transcript as the model's turns: the visitor is the user; the AI and the
    team speak as the assistant, a human's words marked as theirs (for after Return to AI)."""
    out: list[dict[str, str]] = []
    for line in transcript:
        if line.sender == "visitor":
            out.append({"role": "user", "text": line.text})
        elif line.sender == "ai":
            out.append({"role": "assistant", "text": line.text})
        elif line.sender == "agent":
            who = line.sender_name or "a team member"
            out.append({"role": "assistant", "text": f"[Reply from {who}, a human team member] {line.text}"})
    return out
