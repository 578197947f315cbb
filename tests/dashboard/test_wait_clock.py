"""The wait clock and the handoff history in Chromium against the real queue and gateway, on a
fake clock: a row waits ("waiting 12m"), an agent's reply stops the clock ("replied 3m ago"),
the visitor writing again starts it anew ("waiting 2m", "1 new message · wrote again 2m ago");
a conversation bounced between the AI and the team is flagged ("loop ×3") and its reply pane
tells its handoffs."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest
from playwright.async_api import expect

from tests.dashboard.pages import row, shot, sign_in
from tests.dashboard.test_live import _has_row
from tests.support import eventually

pytestmark = pytest.mark.browser


async def test_the_row_clock_ticks_stops_at_a_reply_and_a_loop_is_flagged(browser, stack):
    bot, email = await stack.team("Clock Shop", "waitclock", "Wes")
    wendy = await stack.handed_off(bot, "Wendy", text="Where is my parcel?", reason="User asked for a person")
    lou = await stack.handed_off(bot, "Lou", text="I want a refund", reason="Topic is a refund")
    for v in (wendy, lou):
        await eventually(lambda v=v: _has_row(stack, bot, v.conversation_id), timeout=20)
    context, page = await sign_in(browser, stack, email)
    pane = page.locator(".pane")

    # Lou is returned to the AI and handed off again, twice: a loop.
    lou_row = row(page, lou.conversation_id)
    for n, reason in ((2, "still no refund"), (3, "refund, third time")):
        await lou_row.click()
        await pane.get_by_role("button", name="Return to AI").click()
        await expect(lou_row).to_have_count(0)
        await stack.visitor_writes(lou, reason)
        await stack.handoff(lou, reason)
        await expect(lou_row.locator(".row-loop")).to_have_text(f"loop ×{n}")
    await lou_row.click()
    await expect(pane.locator(".handoff-history-headline")).to_have_text(re.compile(
        r"^3rd handoff( today)? — returned to AI \d{2}:\d{2}, handed off again \d{2}:\d{2}: 'refund, third time'loop ×3$"))
    await expect(pane.locator(".handoff-history-item")).to_have_count(3)
    await expect(pane.locator(".handoff-history-item").first).to_have_text(re.compile(
        r"^Handed off \d{2}:\d{2}: 'Topic is a refund' · no reply · returned to AI \d{2}:\d{2} by Wes$"))

    await page.clock.install(time=datetime.now(UTC))
    await page.reload()
    clock = row(page, wendy.conversation_id).locator(".row-clock")
    # Waiting: the seed's row time, worded "waiting 12m" (the stylesheet adds the word).
    await expect(clock).to_have_attribute("aria-label", "waiting just now")
    # The stylesheet may still be loading after the reload: wait for the word (polled from
    # here: the page's own timers and animation frames are the fake clock's, held still).
    await eventually(lambda: _word_before(clock), timeout=10)
    await page.clock.fast_forward("12:00")
    await expect(clock).to_have_text("12m")
    await expect(clock).to_have_attribute("aria-label", "waiting 12m")
    # Wendy waits longest (Lou's clock started at his third handoff): on top.
    await expect(page.locator(".handoff-row").first).to_have_attribute("data-cid", wendy.conversation_id)

    # Back to the server's time (the reply is stamped by it), then an agent replies.
    await page.clock.set_system_time(datetime.now(UTC))
    await row(page, wendy.conversation_id).click()
    box = pane.get_by_placeholder("Type your reply...")
    await box.fill("It left the warehouse today.")
    await box.press("Enter")
    await expect(clock).to_have_text("replied just now")
    await page.clock.fast_forward("03:00")
    await expect(clock).to_have_text("replied 3m ago")
    # In conversation: below Lou, who still waits.
    await expect(page.locator(".handoff-row").last).to_have_attribute("data-cid", wendy.conversation_id)

    # The visitor writes again (at the page's time): waiting anew, the message counted.
    page_now = datetime.fromtimestamp(await page.evaluate("Date.now()") / 1000, UTC)
    await stack.visitor_writes(wendy, "Thanks! And the tracking number?", at=page_now)
    await expect(clock).to_have_attribute("aria-label", "waiting just now")
    nudges = row(page, wendy.conversation_id).locator(".row-nudges")
    await expect(nudges).to_have_text("1 new message · wrote again just now")
    await page.clock.fast_forward("02:00")
    await expect(clock).to_have_text("2m")
    await expect(clock).to_have_attribute("aria-label", "waiting 2m")
    await expect(nudges).to_have_text("1 new message · wrote again 2m ago")
    await shot(page, "wait-clock-and-loop")
    assert not page.errors, page.errors
    await context.close()


async def _word_before(clock) -> bool:
    return await clock.evaluate("el => getComputedStyle(el, '::before').content") == '"waiting "'
