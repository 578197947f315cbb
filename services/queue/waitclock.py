"""The wait clock: how long a handed-off visitor has been waiting for a human
(docs/contracts.md, "The wait clock"). Rules only, no I/O; the clock is passed in.

The clock starts at the handoff (or reopen), is not touched by anything the bot or the
system sends, stops at an agent's reply ("replied"/"in conversation") and starts again
with the visitor's next message after that reply. `waiting_since` (when the current
handoff period began) is not the clock: the stats, "Today" and the alerts keep using it.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from services.queue.domain import from_ms, to_ms

WaitState = Literal["waiting", "replied"]

# "Replied" rows sort after every waiting one (by their last agent reply, oldest first):
# an epoch-ms score plus this offset stays an exact Redis double (< 2**53) and above any
# waiting row's score, so no conversation in conversation ever sits above a waiter.
REPLIED_AFTER_MS = 2 ** 50


def started(at: datetime) -> dict[str, Any]:
    """A handoff or a reopen: the visitor waits from `at`, nothing answered yet."""
    return {"wait_started_at": at, "nudges": 0, "last_agent_reply_at": None}


def stopped() -> dict[str, Any]:
    """Close or Return to AI: nobody waits for the team any more."""
    return {"wait_started_at": None, "nudges": 0}


def agent_replied(at: datetime) -> dict[str, Any]:
    """An agent answered: "in conversation" until the visitor writes again."""
    return {"wait_started_at": None, "nudges": 0, "last_agent_reply_at": at}


def visitor_wrote(status: str, wait_started_at: datetime | None, last_agent_reply_at: datetime | None,
                  at: datetime) -> tuple[dict[str, Any], int]:
    """What a visitor message at `at` does to the clock: fields to set, nudges to add.

    Only while handed off. Waiting: one more nudge (unless the message is older than the
    clock, e.g. the one the handoff answered, replayed). Replied: the clock starts again at
    `at` and the message is the first nudge — unless the reply came after it (a replay of a
    message the agent had already answered)."""
    if status != "handed_off":
        return {}, 0
    if wait_started_at is None:
        if last_agent_reply_at is not None and at < last_agent_reply_at:
            return {}, 0
        return {"wait_started_at": from_ms(to_ms(at))}, 1  # as Mongo keeps it (milliseconds)
    if at < wait_started_at:
        return {}, 0
    return {}, 1


def clock_start(wait_started_at: datetime | None, last_agent_reply_at: datetime | None,
                first_reply_at: datetime | None, waiting_since: datetime | None) -> datetime | None:
    """The clock's start as stored; a handed-off conversation never answered and written
    before the clock existed (no `wait_started_at`) waits since its handoff."""
    if wait_started_at is not None:
        return wait_started_at
    if last_agent_reply_at is None and first_reply_at is None:
        return waiting_since
    return None


def wait_state(clock: datetime | None) -> WaitState:
    return "replied" if clock is None else "waiting"


def order_score(wait_started_at: datetime | None, last_agent_reply_at: datetime | None,
                waiting_since: datetime) -> int:
    """The open list's order (Redis score, ascending): waiting rows by the clock's start,
    oldest first; then replied rows by their last agent reply (answered longest ago first)."""
    if wait_started_at is not None:
        return to_ms(wait_started_at)
    return REPLIED_AFTER_MS + to_ms(last_agent_reply_at or waiting_since)
