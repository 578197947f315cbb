"""The summarizer's rules, without I/O: the model's prompt and the extractive recap.

Policy on a model that keeps failing (timeouts, 429/5xx after retries): the handoff still
gets a summary, the extractive one (mode "extractive"). `status="unavailable"` is used only
when there is nothing at all to summarize (no reason, no visitor message, no contact)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

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


# ---------------------------------------------------------------- keeping a summary current
REFRESH_SYSTEM_PROMPT = (
    "You keep a short recap of a customer conversation current for the human support agent "
    "who has it. You get the previous recap and only the messages written since. Write the "
    "recap again in two to four sentences: what the visitor wants now, what the agent already "
    "answered or did, and anything new the agent must know. Plain text, no greeting, no "
    "preamble, same language as the visitor."
)

# Lines of an extractive summary that a refresh replaces with the new messages' own.
LATEST_PREFIX = "Latest message: "
AGENT_PREFIX = "Agent's last reply: "


@dataclass(frozen=True)
class RefreshPolicy:
    """When a summary is written again by itself while the conversation waits for the team."""

    after_messages: int  # this many new visitor messages
    after: timedelta  # or the oldest message it does not cover is this old (also the pause after a failure)

    def due(self, new: list[TranscriptLine], now: datetime, failed_at: datetime | None = None) -> bool:
        """`new`: the messages the summary does not cover, oldest first."""
        if not new:
            return False
        if failed_at is not None and now - failed_at < self.after:
            return False  # the model failed a moment ago: not on every message until it is back
        visitor = sum(1 for line in new if line.sender == "visitor")
        return visitor >= self.after_messages or now - new[0].at >= self.after


def uncovered(lines: list[TranscriptLine], covers_until: datetime | None) -> list[TranscriptLine]:
    """The lines after what a summary covers, oldest first."""
    lines = sorted(lines, key=lambda line: line.at)
    return lines if covers_until is None else [line for line in lines if line.at > covers_until]


def covered_until(transcript: list[TranscriptLine], fallback: datetime) -> datetime:
    """What a handoff's first summary covers: its transcript, up to the last line."""
    return max((line.at for line in transcript), default=fallback)


def refresh_prompt(previous: str | None, new: list[TranscriptLine], max_chars: int) -> list[dict[str, str]]:
    """Incremental: the previous summary and the new messages only, never the whole transcript."""
    user = (f"Previous recap:\n{previous or '(none)'}\n\n"
            f"Messages since:\n{transcript_text(new, max_chars) or '(no messages)'}")
    return [{"role": "system", "content": REFRESH_SYSTEM_PROMPT}, {"role": "user", "content": user}]


def extractive_refresh(previous: str | None, new: list[TranscriptLine]) -> str | None:
    """Without a model: the previous summary, its latest-message lines replaced by the new
    messages' (the visitor's latest, the agent's last reply). None when there is nothing."""
    kept = [line for line in (previous or "").splitlines()
            if line.strip() and not line.startswith((LATEST_PREFIX, AGENT_PREFIX))]
    visitor = [line.text for line in new if line.sender == "visitor" and line.text.strip()]
    agent = [line for line in new if line.sender == "agent" and line.text.strip()]
    if visitor:
        kept.append(f'{LATEST_PREFIX}"{_one_line(visitor[-1], QUOTE_LIMIT)}"')
    if agent:
        kept.append(f'{AGENT_PREFIX}"{_one_line(agent[-1].text, QUOTE_LIMIT)}"')
    return clean_summary("\n".join(kept)) if kept else None


def refreshed_event_id(handoff_id: str, revision: int, state: str = "ready") -> str:
    """One event per revision of a summary and state of its refresh: a republish is the same."""
    return f"summary-{handoff_id}-r{revision}-{state}"
