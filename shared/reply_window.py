"""WhatsApp's 24-hour customer-service window: the one definition the queue (the dashboard's
view, the row's countdown, an agent's reply) and channels (delivery) both use, so the pane
never says "open" while delivery fails.

The window's fact is the visitor's latest message **as the platform stamped it** (WhatsApp's
`timestamp`), falling back to when we received it only when the platform gave no stamp; a
stamp in the future counts as the time received (it must not hold the window open). A message
the platform delivers late (Meta retries webhooks for days) never moves the window back: the
latest stamp wins. Free-form messages may be sent while `now < last + 24 h`.
"""

from __future__ import annotations

from datetime import datetime, timedelta

WINDOW = timedelta(hours=24)
# The only channel with such a window.
WINDOW_CHANNEL = "whatsapp"
# The dashboard flags a row whose window closes within this long (and lifts it in the list);
# the gateway's REPLY_WINDOW_WARNING_MIN overrides it for the page.
WARNING = timedelta(minutes=60)


def inbound_at(platform_at: datetime | None, received_at: datetime) -> datetime:
    """The window's fact for one visitor message: the platform's stamp, else when it was
    received; never later than when it was received."""
    if platform_at is None:
        return received_at
    return min(platform_at, received_at)


def latest(current: datetime | None, new: datetime) -> datetime:
    """The window's fact after one more message: a late-delivered older one changes nothing."""
    return new if current is None or new > current else current


def applies_to(channel: str) -> bool:
    return channel == WINDOW_CHANNEL


def window_ends_at(last_inbound_at: datetime | None) -> datetime | None:
    """When free-form messages stop being allowed; None when the visitor never wrote."""
    return None if last_inbound_at is None else last_inbound_at + WINDOW


def is_open(last_inbound_at: datetime | None, now: datetime) -> bool:
    ends = window_ends_at(last_inbound_at)
    return ends is not None and now < ends


def ends_at_for(channel: str, last_inbound_at: datetime | None) -> datetime | None:
    """What a view shows: the window's end on WhatsApp, None on channels without a window."""
    return window_ends_at(last_inbound_at) if applies_to(channel) else None
