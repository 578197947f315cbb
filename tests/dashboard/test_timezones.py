"""Time zones on the dashboard. A chatbot has one timezone, set in Tools → Human Handoff
whether or not the schedule is on (the schedule, Today and Resolved this week use it; bad
names are refused in words). Times show in the agent's own zone (the browser's), with the
chatbot's on hover; the schedule says which zone its hours are in."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from playwright.async_api import expect

from shared.formatting import MONTHS
from tests.dashboard.pages import row, shot, sign_in

pytestmark = pytest.mark.browser

KIRITIMATI = "Pacific/Kiritimati"  # UTC+14
LOS_ANGELES = "America/Los_Angeles"  # UTC-8 in December: 22 hours behind, another date


def shown_at(at: datetime, zone: str) -> str:
    """format.js's formatMessageTime in `zone`: "14:05" today there, "Nov 3, 14:05" otherwise."""
    local, today = at.astimezone(ZoneInfo(zone)), datetime.now(ZoneInfo(zone))
    time = local.strftime("%H:%M")
    if local.date() == today.date():
        return time
    year = "" if local.year == today.year else f", {local.year}"
    return f"{MONTHS[local.month - 1]} {local.day}{year}, {time}"


def chatbot_title(at: datetime, zone: str) -> str:
    local, today = at.astimezone(ZoneInfo(zone)), datetime.now(ZoneInfo(zone))
    year = "" if local.year == today.year else f", {local.year}"
    return f"Chatbot's time: {MONTHS[local.month - 1]} {local.day}{year}, {local.strftime('%H:%M')} ({zone})"


async def test_the_timezone_is_set_in_tools_with_the_schedule_off(browser, stack):
    bot, email = await stack.team("Zone Shop", "zone", "Zoe", handoff=True)
    context, page = await sign_in(browser, stack, email)
    await page.goto(f"/#/{bot}/tools/human-handoff")
    form = page.locator("form.tool-form")
    zone = form.get_by_label("Timezone", exact=True)
    await expect(zone).to_have_value("UTC")
    await expect(form.get_by_label("Enable Schedule")).not_to_be_checked()
    await expect(zone).to_be_enabled()  # the chatbot's, not only the schedule's

    # A name that is no zone: refused in words, nothing saved.
    await zone.fill("Mars/Base")
    await form.get_by_role("button", name="Save").click()
    await expect(form.get_by_role("alert")).to_contain_text("Unknown timezone: 'Mars/Base'.")
    assert (await stack.queue.app.state.queue.chatbots.record.get_chatbot(bot)).timezone == "UTC"

    await zone.fill(KIRITIMATI)
    await form.get_by_role("button", name="Save").click()
    await expect(form.locator(".form-status")).to_have_text("Saved.")
    settings = await (await page.request.get(f"/api/chatbots/{bot}/settings")).json()
    assert settings["timezone"] == settings["human_handoff"]["timezone"] == KIRITIMATI
    # Today counts by the chatbot's days now.
    stats = await (await page.request.get(f"/api/chatbots/{bot}/stats")).json()
    ends = datetime.fromisoformat(stats["today_ends_at"]).astimezone(ZoneInfo(KIRITIMATI))
    assert (ends.hour, ends.minute) == (0, 0), ends

    # The schedule says which zone its hours are in, and the time there.
    await page.reload()
    await expect(zone).to_have_value(KIRITIMATI)
    await form.get_by_label("Enable Schedule").check()
    hint = form.locator(".schedule-zone")
    await expect(hint).to_contain_text(f"Start Time and End Time are in {KIRITIMATI} (now ")
    there = re.search(r"\(now (\d{2}:\d{2}) there\)\.$", await hint.text_content())
    assert there, await hint.text_content()
    now_there = datetime.now(ZoneInfo(KIRITIMATI))
    assert there.group(1) in {(now_there - timedelta(minutes=m)).strftime("%H:%M") for m in (0, 1)}
    await shot(page, "tools-timezone")
    await context.close()


async def test_times_show_in_the_agents_zone_with_the_chatbots_on_hover(browser, stack):
    bot, email = await stack.team("Far Shop", "far", "Fay", timezone=KIRITIMATI)
    v = await stack.handed_off(bot, "Night Owl", text="Is anyone awake?", reason="User asked for a person")
    context, page = await sign_in(browser, stack, email, timezone_id=LOS_ANGELES,
                                  viewport={"width": 1280, "height": 800})
    assert await page.evaluate("Intl.DateTimeFormat().resolvedOptions().timeZone") == LOS_ANGELES
    await page.goto(f"/#/{bot}/handoff")
    await row(page, v.conversation_id).click()
    stamp = page.locator(".pane .msg-visitor .msg-time").first
    await expect(stamp).to_have_attribute("datetime", re.compile(r"^\d{4}-\d{2}-\d{2}T"))
    at = datetime.fromisoformat(await stamp.get_attribute("datetime")).astimezone(UTC)
    await expect(stamp).to_have_text(shown_at(at, LOS_ANGELES))
    await stamp.hover()
    await expect(stamp).to_have_attribute("title", chatbot_title(at, KIRITIMATI))
    await shot(page, "pane-zones")

    # The Conversations table's Updated column likewise.
    await page.goto(f"/#/{bot}/conversations")
    updated = page.locator(f'.conv-row[data-cid="{v.conversation_id}"] td.cell-time time')
    last_at = datetime.fromisoformat(await updated.get_attribute("datetime")).astimezone(UTC)
    await expect(updated).to_have_text(shown_at(last_at, LOS_ANGELES))
    await updated.hover()
    await expect(updated).to_have_attribute("title", chatbot_title(last_at, KIRITIMATI))
    await context.close()
