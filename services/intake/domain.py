"""Intake's rules, without I/O: explicit-request detection, the handoff decision, the
system prompt and the tool the AI is offered, contact extraction, deterministic ids and the
fixed texts the visitor sees."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from shared.chatbots import ChatbotSettings, ContactField, HumanHandoffSettings
from shared.events import ContactDetails

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


def offline_responder_reply(settings: ChatbotSettings) -> str:
    return OFFLINE_RESPONDER_WITH_HANDOFF if settings.human_handoff.enabled else OFFLINE_RESPONDER_NO_HANDOFF


# ---------------------------------------------------------------- ids
def derived_id(*parts: str) -> str:
    """A stable id from stable inputs: a replayed event yields the same ids, so the queue
    and channels drop the duplicates."""
    return hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:32]


def visitor_message_id(conversation_id: str, channel_message_id: str) -> str:
    return "m_" + derived_id(conversation_id, "visitor", channel_message_id)


def reply_message_id(visitor_msg_id: str, n: int = 0) -> str:
    return "m_" + derived_id(visitor_msg_id, "ai", str(n))


def handoff_event_id(visitor_msg_id: str) -> str:
    return "h_" + derived_id(visitor_msg_id, "handoff")


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
def build_system_prompt(settings: ChatbotSettings) -> str:
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


def tools_for(settings: ChatbotSettings) -> list[dict[str, Any]]:
    """The tool is offered only while the Human Handoff tool is on."""
    return [handoff_tool()] if settings.human_handoff.enabled else []


def clean_reason(raw: Any) -> str:
    """The model's reason, trimmed to what the event allows; a default when it gave none."""
    text = " ".join(str(raw or "").split())
    return text[:500] if text else DEFAULT_TOOL_REASON


# ---------------------------------------------------------------- contact extraction
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
_PHONE = re.compile(r"(?<![\w@])(\+?\d[\d\s().\-/]{5,}\d)(?![\w@])")
_NAME_INTRO = re.compile(
    # Only unambiguous introductions: "I am ..." too often goes on "... having trouble".
    r"(?:my name is|my name's|name:|call me|"
    r"ich heisse|ich heiße|mein name ist|je m'appelle|mon nom est|"
    r"me llamo|mi nombre es|mi chiamo|il mio nome e|il mio nome è|"
    r"meu nome e|meu nome é|me chamo|mijn naam is|ik heet)\s+"
    r"([^\W\d_][^\W\d_'\-]*(?:[ '\-][^\W\d_][^\W\d_'\-]*){0,3})",
    re.IGNORECASE,
)
_BARE_NAME = re.compile(r"^\s*([^\W\d_][^\W\d_'\-]*(?:[ '\-][^\W\d_][^\W\d_'\-]*){0,3})\s*[.!]?\s*$")
_NOT_NAME_WORDS = {
    "yes", "no", "ok", "okay", "thanks", "thank", "you", "hello", "hi", "hey", "sure", "please", "ja", "nein",
    "oui", "non", "si", "sí", "merci", "gracias", "danke", "grazie", "obrigado", "bedankt", "i", "is", "my", "the",
    "a", "what", "where", "how", "why", "when", "who", "can", "could", "do", "does", "not", "help", "order", "bye",
}


def _looks_like_a_name(candidate: str) -> bool:
    """One to three capitalised words, none of them an everyday word ("Where is my order"
    and "Thanks" are not names; "Jane Doe" and "Amélie" are)."""
    words = re.split(r"[ \-]", candidate.strip())
    return (1 <= len(words) <= 3 and all(w[:1].isupper() for w in words)
            and not any(w.casefold() in _NOT_NAME_WORDS for w in words))


def extract_contact(text: str, wanted: list[ContactField]) -> ContactDetails:
    """E-mail, phone and name found in a visitor's message, for the fields still wanted."""
    found: dict[str, str] = {}
    rest = text
    if "email" in wanted and (m := _EMAIL.search(text)):
        found["email"] = m.group(0)
        rest = rest.replace(m.group(0), " ")
    if "phone" in wanted and (m := _PHONE.search(rest)):
        digits = re.sub(r"\D", "", m.group(1))
        if 6 <= len(digits) <= 15:
            found["phone"] = " ".join(m.group(1).split())
            rest = rest.replace(m.group(1), " ")
    if "name" in wanted:
        if m := _NAME_INTRO.search(rest):
            found["name"] = m.group(1).strip()
        elif not found and (m := _BARE_NAME.match(rest)) and _looks_like_a_name(m.group(1)):
            # A message that is only a name, when a name is what we asked for.
            found["name"] = m.group(1).strip()
    return ContactDetails(**found)


def remaining_fields(wanted: list[ContactField], got: ContactDetails) -> list[ContactField]:
    return [f for f in wanted if not getattr(got, f)]


def contact_is_empty(c: ContactDetails) -> bool:
    return not (c.name or c.email or c.phone)
