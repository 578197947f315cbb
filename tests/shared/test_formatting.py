"""shared/formatting.py against the table shared with the dashboard's JavaScript twin
(tests/fixtures/waiting_cases.json, never regenerated here), plus explicit boundaries."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from shared.formatting import (
    NO_HANDOFFS,
    format_oldest_waiting,
    format_row_waiting,
    local_midnight,
    next_local_midnight,
)

CASES = json.loads((Path(__file__).resolve().parent.parent / "fixtures" / "waiting_cases.json").read_text())


def _at(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def test_table_has_both_kinds():
    kinds = {c["kind"] for c in CASES}
    assert kinds == {"row", "oldest"}


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c['kind']}:{c['since']}->{c['now']}:{c.get('tz', '')}")
def test_waiting_case(case):
    since, now = _at(case["since"]), _at(case["now"])
    if case["kind"] == "row":
        assert format_row_waiting(since, now, case.get("tz", "UTC")) == case["expected"]
    else:
        assert format_oldest_waiting(since, now) == case["expected"]


NOW = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("seconds", "row", "oldest"),
    [
        (0, "just now", "just now"),  # one wording for a wait under a minute
        (59, "just now", "just now"),
        (60, "1m", "1m"),
        (3599, "59m", "59m"),
        (3600, "1h", "1h"),
        (3600 + 600, "1h", "1h 10m"),
        (86399, "23h", "23h 59m"),
        (86400, "Nov 24", "1d"),
        (86400 + 4 * 3600, "Nov 24", "1d 4h"),
    ],
)
def test_explicit_boundaries(seconds, row, oldest):
    since = NOW - timedelta(seconds=seconds)
    assert format_row_waiting(since, NOW) == row
    assert format_oldest_waiting(since, NOW) == oldest


def test_no_handoffs_is_a_dash_and_future_is_clamped():
    assert format_oldest_waiting(None, NOW) == NO_HANDOFFS == "—"
    assert format_row_waiting(NOW + timedelta(minutes=5), NOW) == "just now"


def test_row_date_carries_the_year_when_not_this_year_and_uses_the_zone():
    assert format_row_waiting(datetime(2025, 12, 30, 12, tzinfo=UTC), NOW) == "Dec 30, 2025"
    # 23:30 UTC on Nov 20 is already Nov 21 in Berlin.
    assert format_row_waiting(datetime(2026, 11, 20, 23, 30, tzinfo=UTC), NOW, "Europe/Berlin") == "Nov 21"


def test_local_midnight_in_a_non_utc_zone_and_across_dst():
    berlin = ZoneInfo("Europe/Berlin")
    # 23:30 UTC on Nov 24 is 00:30 on Nov 25 in Berlin: today began at 23:00 UTC.
    start = local_midnight(datetime(2026, 11, 24, 23, 30, tzinfo=UTC), "Europe/Berlin")
    assert start == datetime(2026, 11, 25, tzinfo=berlin)
    assert start.astimezone(UTC) == datetime(2026, 11, 24, 23, tzinfo=UTC)
    # The day DST ends in Berlin (Oct 25, 2026) is 25 hours long.
    day_start = local_midnight(datetime(2026, 10, 25, 12, tzinfo=UTC), "Europe/Berlin")
    day_end = next_local_midnight(datetime(2026, 10, 25, 12, tzinfo=UTC), "Europe/Berlin")
    assert day_end.astimezone(UTC) - day_start.astimezone(UTC) == timedelta(hours=25)
