"""The WhatsApp 24-hour reply window in the reply pane: open until a time after a fresh
visitor message, closed (and a reply refused with the queue's text) once it has passed. In
the list (a fake clock): a row whose window closes within the hour counts down and is listed
right after the oldest, then says "window closed" and goes back to its place, while the open
pane turns to "closed" by itself and its reply box says only a template can reach the visitor."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.async_api import expect

from tests.dashboard.pages import row, shot, sign_in
from tests.support import eventually

pytestmark = pytest.mark.browser


async def test_the_pane_shows_the_whatsapp_reply_window(browser, stack):
    bot, email = await stack.team("Window Shop", "window", "Wes")

    fresh = await stack.handed_off(bot, "Fresh Visitor", channel="whatsapp", text="hi, quick question", reason="User asked for a person")

    late = stack.visitor(bot, "Late Visitor", channel="whatsapp")
    await stack.visitor_writes(late, "are you there?", at=datetime.now(UTC) - timedelta(hours=25))
    await stack.handoff(late, "User asked for a person")

    web = await stack.handed_off(bot, "Web Visitor", text="hello", reason="User asked for a person")

    # Wrote 22 h 50 m ago: the window closes in 70 minutes, outside the 60-minute warning.
    soon = stack.visitor(bot, "Soon Visitor", channel="whatsapp")
    await stack.visitor_writes(soon, "can you check my order?", at=datetime.now(UTC) - timedelta(hours=22, minutes=50))
    await stack.handoff(soon, "User asked for a person")
    soon_row = await eventually(lambda: _row_of(stack, bot, soon.conversation_id), timeout=20)
    assert soon_row["reply_window_ends_at"], "the queue's row carries the window's end"
    ends_ms = datetime.fromisoformat(soon_row["reply_window_ends_at"]).timestamp() * 1000

    context, page = await sign_in(browser, stack, email)
    await page.clock.install(time=datetime.now(UTC))
    await page.reload()
    pane = page.locator(".pane")

    await row(page, fresh.conversation_id).click()
    await expect(pane.locator(".reply-window-open")).to_have_text(
        re.compile(r"^WhatsApp reply window open until (\w{3} \d{1,2}, )?\d{2}:\d{2}\.$"))

    await row(page, late.conversation_id).click()
    await expect(pane.locator(".reply-window-closed")).to_have_text(
        "WhatsApp's 24-hour reply window has closed: the visitor has to write first.")
    box = pane.get_by_placeholder("Type your reply...")
    await box.fill("Sorry for the wait!")
    await box.press("Enter")
    await expect(pane.get_by_text("The WhatsApp 24-hour window has closed: the visitor has to write first.")).to_be_visible()
    await shot(page, "whatsapp-window-closed")

    await row(page, web.conversation_id).click()
    await expect(pane.locator(".pane-name")).to_have_text("Web Visitor")
    await expect(pane.locator(".reply-window")).to_have_count(0)

    # The list, oldest first: the late visitor's row says its window has closed; the soon
    # visitor's (70 minutes left) is not flagged yet.
    names = page.locator(".handoff-row .row-name")
    await expect(names).to_have_text(["Fresh Visitor", "Late Visitor", "Web Visitor", "Soon Visitor"])
    await expect(row(page, late.conversation_id).locator(".row-window--closed")).to_have_text("window closed")
    soon_badge = row(page, soon.conversation_id).locator(".row-window")
    await expect(soon_badge).to_have_count(0)
    await expect(row(page, fresh.conversation_id).locator(".row-window")).to_have_count(0)
    await expect(page.locator(".list-legend")).to_have_count(0)

    # 38 and a half minutes before it closes: flagged, counting down, right after the oldest.
    page_now = await page.evaluate("Date.now()")
    await page.clock.fast_forward(int(ends_ms - page_now - 38.5 * 60_000))
    await expect(soon_badge).to_have_text("window closes in 38m")
    await expect(names).to_have_text(["Fresh Visitor", "Soon Visitor", "Late Visitor", "Web Visitor"])
    await expect(page.locator(".list-legend")).to_have_text(
        "WhatsApp chats whose reply window closes within 60 minutes are listed right after the longest-waiting one.")
    await row(page, soon.conversation_id).click()
    await expect(pane.locator(".reply-window-open")).to_be_visible()
    await expect(pane.locator(".reply-template-only")).to_have_count(0)
    await page.clock.fast_forward("10:00")
    await expect(soon_badge).to_have_text("window closes in 28m")
    await shot(page, "whatsapp-window-closes-soon")

    # Past its end: "window closed", back in its place; the open pane says so by itself and
    # its reply box explains that only a template message can reach the visitor.
    await page.clock.fast_forward("29:00")
    await expect(soon_badge).to_have_text("window closed")
    await expect(names).to_have_text(["Fresh Visitor", "Late Visitor", "Web Visitor", "Soon Visitor"])
    await expect(pane.locator(".reply-window-closed")).to_have_text(
        "WhatsApp's 24-hour reply window has closed: the visitor has to write first.")
    await expect(pane.locator(".reply .reply-template-only")).to_have_text(
        "WhatsApp's reply window has closed: only a template message can reach this visitor until they "
        "write again. A reply typed here is not sent.")
    await expect(page.locator(".list-legend")).to_have_count(0)
    assert not page.errors, page.errors
    await context.close()


async def _row_of(stack, chatbot_id: str, conversation_id: str) -> dict | None:
    rows = (await stack.snapshot(chatbot_id))["handoffs"]["items"]
    return next((r for r in rows if r["conversation_id"] == conversation_id), None)


async def test_the_lift_rule_keeps_the_oldest_first_and_never_lifts_a_closed_window(module_page):
    """window.js's rule over one list: the first row stays; rows closing within the warning
    come next, soonest first; closed, far and non-WhatsApp rows keep the list's order."""
    got = await module_page.evaluate("""async () => {
        const w = await import('/static/js/window.js');
        const now = Date.parse('2026-11-25T12:00:00Z');
        const at = (min) => new Date(now + min * 60000).toISOString();
        const r = (id, channel, endsMin) => ({ conversation_id: id, channel,
            reply_window_ends_at: endsMin === null ? null : at(endsMin) });
        const rows = [r('oldest', 'whatsapp', 500), r('web', 'web', null), r('closed', 'whatsapp', -5),
                      r('soon50', 'whatsapp', 50), r('far', 'whatsapp', 61), r('soon10', 'whatsapp', 10)];
        const ids = (list) => list.map((x) => x.conversation_id);
        return {
            order: ids(w.windowOrder(rows, now, 3600000)),
            untouched: ids(rows),
            off: ids(w.windowOrder(rows, now, 0)),
            firstSoon: ids(w.windowOrder([r('a', 'whatsapp', 5), r('b', 'web', null), r('c', 'whatsapp', 1)], now, 3600000)),
            texts: [w.countdownText(now + 38 * 60000 + 59000, now), w.countdownText(now + 59000, now),
                    w.countdownText(now + 65 * 60000, now), w.countdownText(now + 120 * 60000, now)],
            states: rows.map((x) => w.windowState(x, now, 3600000)),
        };
    }""")
    assert got["order"] == ["oldest", "soon10", "soon50", "web", "closed", "far"]
    assert got["untouched"] == ["oldest", "web", "closed", "soon50", "far", "soon10"]
    assert got["off"] == got["untouched"]
    assert got["firstSoon"] == ["a", "c", "b"]
    assert got["texts"] == ["window closes in 38m", "window closes in less than a minute",
                            "window closes in 1h 5m", "window closes in 2h"]
    assert got["states"] == ["open", "none", "closed", "soon", "open", "soon"]
