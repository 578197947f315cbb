"""The handoff domain: conversation states, what agents may do, and how the four stats are
counted. Plain functions, no I/O; the clock is always passed in.

States (the product specification): active (the AI answers) -> handed_off (waiting for / talking with a
human) -> closed. Close does not give the conversation back to the AI; Reopen moves it back
to handed_off and starts a NEW waiting period (waiting_since = the reopen time): the visitor
is waiting again from that moment, and the list is ordered by who has been waiting longest
now, not by when the first handoff happened long ago.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from shared import reply_window
from shared.formatting import local_midnight, next_local_midnight
from shared.ids import derived_id, short_visitor_label

Status = Literal["active", "handed_off", "closed"]
Transition = Literal["handoff", "close", "reopen", "return_to_ai"]

# transition -> (the only status it may start from, the status it leads to)
TRANSITIONS: dict[str, tuple[Status, Status]] = {
    "handoff": ("active", "handed_off"),
    "close": ("handed_off", "closed"),
    "reopen": ("closed", "handed_off"),
    "return_to_ai": ("handed_off", "active"),
}

REPLY_NOT_ALLOWED = "Can only reply to handed-off conversations."
MARK_SEEN_NOT_CLOSED = "Only a closed conversation has messages after close to mark as seen."
WHATSAPP_WINDOW_CLOSED = "The WhatsApp 24-hour window has closed: the visitor has to write first."
EMPTY_REPLY = "The reply is empty: type a message to send."
UNKNOWN_CONVERSATION = "Unknown conversation."
UNKNOWN_CHATBOT = "Unknown chatbot."
RESOLVED_WINDOW = timedelta(days=7)
TRANSCRIPT_CAP = 50
PREVIEW_CHARS = 140

_ACTION_WORDS = {"handoff": "hand off", "close": "close", "reopen": "reopen", "return_to_ai": "return to AI"}
_STATUS_WORDS = {"active": "active (the AI is answering)", "handed_off": "handed off", "closed": "closed"}


class CommandRefused(Exception):
    """An agent command that cannot be applied; `status_code` is what the gateway answers."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code


class TransitionRefused(CommandRefused):
    def __init__(self, message: str) -> None:
        super().__init__(message, 409)


def plan_transition(current: Status, transition: Transition) -> Status:
    """The status `transition` leads to from `current`, or TransitionRefused (nothing changes)."""
    try:
        start, target = TRANSITIONS[transition]
    except KeyError:
        raise CommandRefused(f"Unknown action: {transition!r}.", 422) from None
    if current != start:
        raise TransitionRefused(
            f"Cannot {_ACTION_WORDS[transition]} a conversation that is {_STATUS_WORDS[current]}."
        )
    return target


# WhatsApp's 24-hour window: the one definition channels enforces too (shared/reply_window.py).
reply_window_ends_at = reply_window.ends_at_for


def check_reply(
    status: Status, text: str | None, channel: str, last_visitor_message_at: datetime | None, now: datetime
) -> str:
    """The reply text to send (trimmed), or CommandRefused (422 empty, 409 not allowed)."""
    cleaned = (text or "").strip()
    if not cleaned:
        raise CommandRefused(EMPTY_REPLY, 422)
    if status != "handed_off":
        raise CommandRefused(REPLY_NOT_ALLOWED, 409)
    if reply_window.applies_to(channel) and not reply_window.is_open(last_visitor_message_at, now):
        raise CommandRefused(WHATSAPP_WINDOW_CLOSED, 409)
    return cleaned


def agent_message_id(command_id: str) -> str:
    """The agent message's id, derived from the command id so a retried command can only
    ever produce the same message (channels send each message id once)."""
    return derived_id("am_", "reply", command_id, length=24)


def derived_event_id(*parts: str) -> str:
    """A deterministic event id for what we publish in answer to an input event, so a replay
    publishes the same ids and downstream dedupe recognises it."""
    return derived_id("q_", *parts)


def display_name(contact_name: str | None, visitor_name: str | None, visitor_id: str) -> str:
    """The name the visitor gave (contact form first), else the short random identifier."""
    for name in (contact_name, visitor_name):
        if name and name.strip():
            return name.strip()
    return short_visitor_label(visitor_id)


def preview(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


DELIVERY_RANK = {"pending": 0, "sent": 1, "delivered": 2, "read": 3}


# What the reply pane marks (✓ Delivered, ✓✓ Read, the failure note): only these reach the
# dashboard live. "sent" (the platform took it) is recorded and read with the conversation.
SHOWN_DELIVERY_STATES = frozenset({"delivered", "read", "failed"})


def next_delivery_state(current: str | None, reported: str) -> str:
    """Delivery reports may arrive out of order: never move backwards (read stays read);
    a failure counts unless the message already got through."""
    if current is None:
        return reported
    if reported == "failed":
        return current if DELIVERY_RANK.get(current, 0) >= DELIVERY_RANK["delivered"] else "failed"
    if current == "failed":
        return reported if DELIVERY_RANK[reported] >= DELIVERY_RANK["delivered"] else current
    return reported if DELIVERY_RANK[reported] > DELIVERY_RANK.get(current, 0) else current


def states_moved_by(reported: str) -> list[str | None]:
    """The delivery states a report of `reported` moves to `reported` (a message with none yet
    included); from any other it changes nothing."""
    return [s for s in (None, *DELIVERY_RANK, "failed") if s != reported and next_delivery_state(s, reported) == reported]


# ---------------------------------------------------------------------- stats
@dataclass(frozen=True)
class StatsWindow:
    """The boundaries the counts use at one instant.

    Days are the chatbot's (its timezone). Today: open handoffs with waiting_since >= local
    midnight (a handoff at exactly 00:00 local counts for the new day). Resolved this week
    ("closed in the last 7 days"): handoffs closed today or on the six days before, i.e.
    closed_at >= the local midnight six days before today's; both turn over together at
    the next local midnight (`today_ends_at`, when the dashboard asks again)."""

    today_starts_at: datetime
    today_ends_at: datetime
    week_starts_at: datetime


def stats_window(now: datetime, timezone: str) -> StatsWindow:
    return StatsWindow(
        today_starts_at=local_midnight(now, timezone),
        today_ends_at=next_local_midnight(now, timezone),
        week_starts_at=days_before_local_midnight(now, timezone, RESOLVED_WINDOW.days - 1),
    )


def days_before_local_midnight(now: datetime, timezone: str, days: int) -> datetime:
    """The local midnight `days` calendar days before today's in `timezone` (on the wall
    clock: a week with a DST change is 167 or 169 hours long)."""
    start = local_midnight(now, timezone)
    return (start.replace(tzinfo=None) - timedelta(days=days)).replace(tzinfo=start.tzinfo)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def to_ms(at: datetime) -> int:
    """Index scores are integer epoch milliseconds: exact in a Redis double (microsecond
    float seconds are not), computed without float rounding."""
    return (at - _EPOCH) // timedelta(milliseconds=1)


def to_us(at: datetime) -> int:
    """Epoch microseconds: the exact order of messages (BSON dates keep only milliseconds)."""
    return (at - _EPOCH) // timedelta(microseconds=1)


def from_ms(ms: int | float) -> datetime:
    return _EPOCH + timedelta(milliseconds=int(ms))


@dataclass(frozen=True)
class StatsCounts:
    open: int
    oldest_waiting_ms: int | None
    today: int
    resolved_this_week: int
    closed_with_new: int = 0  # closed conversations with a visitor message no agent has seen
