"""Intake's rules, without I/O: explicit-request detection, the handoff decision, the
system prompt and the tool the AI is offered, the model's context, deterministic ids and the
fixed texts the visitor sees."""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

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


def offline_responder_reply(settings: AiProfile) -> str:
    return OFFLINE_RESPONDER_WITH_HANDOFF if settings.human_handoff.enabled else OFFLINE_RESPONDER_NO_HANDOFF


# ---------------------------------------------------------------- ids
def reply_message_id(visitor_message_id: str, n: int = 0) -> str:
    """The AI's n-th message answering a visitor message: a turn taken again (a redelivery)
    yields the same ids, so the queue and channels drop the repeat."""
    return derived_id("m_", visitor_message_id, "ai", str(n))


def outcome_event_id(turn_id: str) -> str:
    return derived_id("ai_", turn_id, "outcome")


# ---------------------------------------------------------------- explicit requests
def _fold(text: str) -> str:
    """Lower-case, accents stripped, so 'Persönlich', 'humain' and 'HUMANO' match alike."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


# Phrases asking for a person, per language (accent-folded, lower case). Whole words only.
_EXPLICIT_PATTERNS: list[str] = [
    # en
    r"\b(talk|speak|chat|connect me|put me through|transfer me)\b.{0,30}\b(human|person|someone|somebody|agent|operator|representative|rep|staff|people|support team|real one)\b",
    r"\b(real|live|actual)\s+(person|human|agent|people)\b",
    r"\b(human|live) (agent|support|being|operator)\b",
    r"^\W*(human|agent|operator|representative|person)( please| pls)?\W*$",
    r"\b(i want|i need|i'd like|id like|can i get|can i have|give me|get me)\b.{0,20}\b(human|person|agent|operator|representative)\b",
    # de
    r"\b(mit )?(einem|einer|nem) (menschen|mitarbeiter|mitarbeiterin|person|berater|beraterin)\b.{0,30}\b(sprechen|reden|chatten|verbinden)\b",
    r"\b(echten|echte|realen|richtigen) (menschen|mensch|person|mitarbeiter)\b",
    r"\b(mensch|mitarbeiter) bitte\b",
    # fr
    r"\b(parler|discuter|passer)\b.{0,30}\b(humain|personne|conseiller|conseillere|agent|operateur|quelqu'un|quelqu un)\b",
    r"\b(vrai|vraie|une) (personne|humain)\b",
    # es
    r"\b(hablar|chatear|comunicarme|contactar)\b.{0,30}\b(humano|persona|agente|asesor|operador|alguien)\b",
    r"\b(persona|humano|agente) real\b",
    # it
    r"\b(parlare|chattare)\b.{0,30}\b(umano|persona|operatore|operatrice|agente|qualcuno)\b",
    r"\b(persona|operatore) (vera|reale|umano)\b",
    # pt
    r"\b(falar|conversar)\b.{0,30}\b(humano|pessoa|atendente|agente|alguem)\b",
    r"\b(pessoa|atendente) (real|de verdade)\b",
    # nl
    r"\b(praten|spreken|chatten)\b.{0,30}\b(mens|persoon|medewerker|medewerkster|iemand)\b",
    r"\b(een|echte|echt) (mens|persoon|medewerker)\b.{0,30}\b(spreken|praten)\b",
    r"\b(echte|echt) (mens|persoon|medewerker)\b",
]
_EXPLICIT = [re.compile(p) for p in _EXPLICIT_PATTERNS]


def is_explicit_request(text: str) -> bool:
    """Whether the visitor explicitly asks for a person (checked before any model)."""
    folded = _fold(text)
    return any(p.search(folded) for p in _EXPLICIT)


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
