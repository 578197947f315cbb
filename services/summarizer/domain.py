"""The summarizer's rules, without I/O: the model's prompt and the extractive recap.

Policy on a model that keeps failing (timeouts, 429/5xx after retries): the handoff still
gets a summary, the extractive one (mode "extractive"). `status="unavailable"` is used only
when there is nothing at all to summarize (no reason, no visitor message, no contact)."""

from __future__ import annotations

from shared.events import ConversationStateChanged, TranscriptLine

SUMMARY_LIMIT = 4000
QUOTE_LIMIT = 280

SYSTEM_PROMPT = (
    "You write a short recap of a customer conversation for the human support agent who takes "
    "it over. In two to four sentences say what the visitor wants, what was already answered or "
    "tried, and anything the agent must know (mood, urgency, contact details given). Plain text, "
    "no greeting, no preamble, same language as the visitor."
)

SENDER_LABELS = {"visitor": "Visitor", "ai": "AI", "agent": "Agent", "system": "System"}


def summary_event_id(handoff_id: str) -> str:
    """One summary per handoff: a republished summary carries the same event id."""
    return f"summary-{handoff_id}"


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def transcript_text(lines: list[TranscriptLine], max_chars: int) -> str:
    """The transcript as 'Visitor: ...' lines, keeping the most recent part within max_chars."""
    out: list[str] = []
    used = 0
    for line in reversed(lines):
        rendered = f"{SENDER_LABELS.get(line.sender, line.sender)}: {_one_line(line.text, 1000)}"
        if used + len(rendered) + 1 > max_chars and out:
            break
        out.append(rendered)
        used += len(rendered) + 1
    return "\n".join(reversed(out))


def contact_text(event: ConversationStateChanged) -> str:
    c = event.contact
    parts = [p for p in (c.name, c.email, c.phone) if p]
    return ", ".join(parts)


def prompt_messages(event: ConversationStateChanged, max_chars: int) -> list[dict[str, str]]:
    facts = [f"Handoff reason: {event.reason or 'not given'}"]
    if contact := contact_text(event):
        facts.append(f"Contact details: {contact}")
    facts.append("Transcript:\n" + (transcript_text(event.transcript, max_chars) or "(no messages)"))
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "\n\n".join(facts)}]


def extractive_summary(event: ConversationStateChanged) -> str | None:
    """Reason, what the visitor asked (their first and last messages), contact details.
    None when there is nothing to say."""
    visitor = [line.text for line in event.transcript if line.sender == "visitor" and line.text.strip()]
    parts: list[str] = []
    if event.reason:
        parts.append(f"Handed off: {_one_line(event.reason, 500)}.")
    if visitor:
        parts.append(f'Visitor first asked: "{_one_line(visitor[0], QUOTE_LIMIT)}"')
        if len(visitor) > 1:
            parts.append(f'Latest message: "{_one_line(visitor[-1], QUOTE_LIMIT)}"')
    if contact := contact_text(event):
        parts.append(f"Contact: {contact}.")
    return clean_summary("\n".join(parts)) if parts else None


def clean_summary(text: str) -> str:
    text = text.strip()
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1].rstrip() + "…"
