"""A conversation's handoffs, one record each (Mongo `handoffs`), as the reply pane shows
them, and the loop they may make: a conversation bounced between the AI and the team
(docs/contracts.md, "Handoff history and loops"). Rules only, no I/O; times are passed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from shared.views import HandoffHistoryItem


@dataclass(frozen=True)
class LoopRule:
    """A handoff makes a loop when it is the `handoffs`-th within `window`, or comes within
    `after_return` of a Return to AI (the bot's conditions handed back what it cannot do)."""

    handoffs: int = 3
    window: timedelta = timedelta(hours=24)
    after_return: timedelta = timedelta(minutes=10)


def loop_rule_of(settings: Any) -> LoopRule:
    """The rule as the queue's settings say (LOOP_HANDOFFS, LOOP_WINDOW_H, LOOP_RETURN_MIN)."""
    return LoopRule(settings.loop_handoffs, timedelta(hours=settings.loop_window_h),
                    timedelta(minutes=settings.loop_return_min))


@dataclass(frozen=True)
class PastHandoff:
    requested_at: datetime
    returned_at: datetime | None = None  # when an agent returned it to the AI, if one did


def past_handoffs(docs: list[dict], but: str | None = None) -> list[PastHandoff]:
    """The loop rule's view of stored handoff records (except the one with id `but`)."""
    return [PastHandoff(d["requested_at"], d.get("ended_at") if d.get("status") == "returned_to_ai" else None)
            for d in docs if d["_id"] != but and d.get("requested_at") is not None]


def loop_count(past: list[PastHandoff], at: datetime, rule: LoopRule) -> int:
    """How many handoffs the loop a handoff at `at` closes counts (itself included: "loop ×3"),
    or 0 when it makes none."""
    recent = 1 + sum(1 for p in past if at - rule.window < p.requested_at <= at)
    returns = [p.returned_at for p in past if p.returned_at is not None and p.returned_at <= at]
    quick = bool(returns) and at - max(returns) <= rule.after_return
    if recent >= rule.handoffs:
        return recent
    return max(recent, 2) if quick else 0


def history_items(docs: list[dict], *, current_id: str | None, current_first_reply_at: datetime | None) -> list[HandoffHistoryItem]:
    """Each handoff, oldest first: when and why, how it ended and by whom, the first reply
    and how long the visitor waited for it. The open one's first reply is the
    conversation's (it is written on the handoff record when the handoff ends)."""
    items = []
    for d in sorted(docs, key=lambda d: (d["requested_at"], d["_id"])):
        status = d.get("status", "open")
        first = d.get("first_reply_at")
        if d["_id"] == current_id and status == "open":
            first = current_first_reply_at
        ended = d.get("closed_at") if status == "closed" else d.get("ended_at") if status == "returned_to_ai" else None
        since = d.get("waiting_since") or d["requested_at"]
        until = first or ended
        items.append(HandoffHistoryItem(
            handoff_id=d["_id"], reason=d.get("reason"), requested_at=d["requested_at"], waiting_since=since,
            status=status, ended_at=ended, ended_by=d.get("ended_by"), first_reply_at=first,
            waited_s=max(0, int((until - since).total_seconds())) if until is not None else None,
            loop=int(d.get("loop") or 0),
        ))
    return items
