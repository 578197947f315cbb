"""The wait-time SLA's thresholds (Tools → Human Handoff: "Alert after N min", "Urgent after
M min"): whole minutes of waiting, or None (off). The dashboard does the rest in the browser
(services/gateway/static/js/sla.js)."""

from __future__ import annotations

# A threshold longer than a week would never be seen on a row (they show a date by then).
SLA_MAX_MINUTES = 7 * 24 * 60
SLA_LABELS = {"alert_after_min": "Alert after", "urgent_after_min": "Urgent after"}


def sla_minutes(value: object, label: str) -> int | None:
    """A threshold as the form sends it (a number, a digit string, or null/"" for off),
    or a ValueError in words."""
    if value is None or value == "":
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= SLA_MAX_MINUTES:
        raise ValueError(f"{label} must be a whole number of minutes from 1 to {SLA_MAX_MINUTES:,}, or off.")
    return value
