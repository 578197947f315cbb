"""The JavaScript twin of shared/formatting.py, run in Chromium against the one table of
cases both must satisfy (tests/fixtures/waiting_cases.json)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from shared.formatting import format_oldest_waiting, format_row_waiting

pytestmark = pytest.mark.browser

CASES = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "waiting_cases.json").read_text())


async def test_js_formats_match_every_case_of_the_table(module_page):
    results = await module_page.evaluate(
        """async (cases) => {
            const f = await import('/static/js/format.js');
            return cases.map((c) => c.kind === 'row'
                ? f.formatRowWaiting(c.since, c.now, c.tz)
                : f.formatOldestWaiting(c.since, c.now));
        }""",
        CASES,
    )
    assert len(results) == len(CASES) > 0
    mismatches = [(c, got) for c, got in zip(CASES, results, strict=True) if got != c["expected"]]
    assert not mismatches, mismatches


async def test_js_and_python_agree_beyond_the_table(module_page):
    """A sweep of offsets (seconds to years) and zones: the two implementations never differ."""
    now = "2026-03-29T01:30:00+00:00"  # the night Europe moves its clocks
    offsets = [0, 1, 59, 60, 61, 3599, 3600, 3601, 7199, 86399, 86400, 86401, 90061, 172800,
               400000, 2_000_000, 31_536_000, 40_000_000, -30]
    zones = ["UTC", "Europe/Berlin", "Pacific/Auckland", "America/Los_Angeles", "Asia/Kolkata"]
    now_dt = datetime.fromisoformat(now)
    cases = []
    for off in offsets:
        since = datetime.fromtimestamp(now_dt.timestamp() - off, now_dt.tzinfo).isoformat()
        for tz in zones:
            cases.append({"kind": "row", "since": since, "tz": tz,
                          "expected": format_row_waiting(datetime.fromisoformat(since), now_dt, tz)})
        cases.append({"kind": "oldest", "since": since,
                      "expected": format_oldest_waiting(datetime.fromisoformat(since), now_dt)})
    results = await module_page.evaluate(
        """async ([cases, now]) => {
            const f = await import('/static/js/format.js');
            return cases.map((c) => c.kind === 'row'
                ? f.formatRowWaiting(c.since, now, c.tz) : f.formatOldestWaiting(c.since, now));
        }""",
        [cases, now],
    )
    mismatches = [(c, got) for c, got in zip(cases, results, strict=True) if got != c["expected"]]
    assert not mismatches, mismatches
