"""The dashboard's time formats, in one place (the spec's words in quotes).

- Row waiting time: "just now, 15m, 2h, 15h, or a date for older ones".
- Oldest waiting: "15m, 2h 10m, 1d 4h, or — when there are no open handoffs"; under a
  minute "just now", the row's word, so the two never say it differently.

The dashboard ticks these in the browser with a JavaScript twin
(`services/gateway/static/js/format.js`); both are tested against the same table,
`tests/fixtures/waiting_cases.json`, so they cannot drift apart.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
NO_HANDOFFS = "—"


def format_row_waiting(since: datetime, now: datetime, tz: str = "UTC") -> str:
    """Under a minute: "just now"; under an hour: "15m"; under a day: "15h"; else the date
    the visitor started waiting ("Nov 3", with the year when it is not this year)."""
    seconds = max(0, int((now - since).total_seconds()))
    if seconds < 60:
        return "just now"
    if seconds < 3600:
        return f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h"
    zone = ZoneInfo(tz)
    local, local_now = since.astimezone(zone), now.astimezone(zone)
    label = f"{MONTHS[local.month - 1]} {local.day}"
    return label if local.year == local_now.year else f"{label}, {local.year}"


def format_oldest_waiting(since: datetime | None, now: datetime) -> str:
    """Under a minute: "just now" (the row's word for it); under an hour: "15m"; under a day:
    "2h 10m" (or "2h"); else "1d 4h" (or "1d"); "—" when none."""
    if since is None:
        return NO_HANDOFFS
    minutes = max(0, int((now - since).total_seconds())) // 60
    if minutes < 1:
        return "just now"
    if minutes < 60:
        return f"{minutes}m"
    hours, mins = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {mins}m" if mins else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def local_midnight(now: datetime, tz: str) -> datetime:
    """The start of `now`'s day in `tz` (aware), which is where "Today" begins."""
    local = now.astimezone(ZoneInfo(tz))
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def next_local_midnight(now: datetime, tz: str) -> datetime:
    start = local_midnight(now, tz)
    # Add a day on the wall clock, then normalise (DST days are 23 or 25 hours long).
    nxt = (start.replace(tzinfo=None) + timedelta(days=1)).replace(tzinfo=ZoneInfo(tz))
    return nxt
