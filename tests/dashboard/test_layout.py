"""The dashboard's layout on a laptop: the Conversations table fits its panel at 1280 and
1400 px (every column, "Updated" too, without sideways scrolling), the Summary banner
scrolls away with the transcript instead of staying over it, and every page has an icon (no
404 for /favicon.ico in the console)."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.dashboard.pages import row, shot, sign_in
from tests.support import eventually

pytestmark = pytest.mark.browser

LONG_MESSAGE = ("My order #1234 from last Tuesday has still not arrived, the tracking page says it was "
                "delivered to a neighbour I do not know, and I would like a refund or a new parcel please")


async def _table_fits(page) -> None:
    table = page.locator("table.conversations")
    panel = page.locator(".table-panel")
    sizes = await panel.evaluate("p => ({ scroll: p.scrollWidth, client: p.clientWidth, "
                                 "table: p.querySelector('table').getBoundingClientRect().width })")
    assert sizes["scroll"] <= sizes["client"], f"the table scrolls sideways in its panel: {sizes}"
    panel_box = await panel.bounding_box()
    for header in ("Visitor", "Status", "Channel", "Last message", "Messages", "Updated"):
        box = await table.get_by_role("columnheader", name=header, exact=True).bounding_box()
        assert box and box["width"] > 0, header
        assert box["x"] + box["width"] <= panel_box["x"] + panel_box["width"] + 0.5, (header, box, panel_box)
    # The Updated cells show their whole time, not cut.
    cut = await page.locator("td.cell-time").evaluate_all(
        "cells => cells.filter(c => c.scrollWidth > c.clientWidth).map(c => c.textContent)")
    assert not cut, cut


async def test_the_conversations_table_fits_its_panel_at_laptop_widths(browser, stack):
    bot, email = await stack.team("Layout Shop", "layout", "Lou")
    visitors = [await stack.handed_off(bot, name, text=LONG_MESSAGE, reason="User asked for a person", channel=channel)
                for name, channel in (("Maximilian Alexander Featherstonehaugh", "whatsapp"),
                                      ("Grace", "telegram"), ("Lin", "web"))]
    context, page = await sign_in(browser, stack, email, viewport={"width": 1280, "height": 800})
    await page.goto(f"/#/{bot}/conversations")
    await expect(page.locator(".conv-row")).to_have_count(3)
    await _table_fits(page)
    # With a conversation open beside it, too.
    await page.locator(f'.conv-row[data-cid="{visitors[0].conversation_id}"]').click()
    await expect(page.locator(".pane-name")).to_have_text("Maximilian Alexander Featherstonehaugh")
    await _table_fits(page)
    await shot(page, "conversations-1280")
    await page.set_viewport_size({"width": 1400, "height": 900})
    await _table_fits(page)
    await shot(page, "conversations-1400")
    await context.close()


# The Summary banner is the transcript's first item (pane.js): it scrolls away with the
# messages instead of sticking over them.
async def test_the_summary_scrolls_away_with_the_transcript(browser, stack):
    bot, email = await stack.team("Scroll Shop", "scroll", "Sam")
    v = stack.visitor(bot, "Long Talker")
    for n in range(1, 31):
        await stack.visitor_writes(v, f"Message number {n} about my parcel.")
    handoff_id = await stack.handoff(v, "User asked for a person")
    await eventually(lambda: _open(stack, bot), timeout=20)  # the summary lands on a known handoff
    await stack.summary(v, handoff_id, "The parcel is late; the visitor wrote thirty times and wants a person.")
    context, page = await sign_in(browser, stack, email, viewport={"width": 1280, "height": 800})
    await page.goto(f"/#/{bot}/handoff")
    await row(page, v.conversation_id).click()
    pane = page.locator(".pane")
    summary = pane.locator(".summary")
    await expect(summary).to_contain_text("wrote thirty times")
    last = pane.locator(".msg-visitor .msg-text").last
    await expect(last).to_have_text("Message number 30 about my parcel.")
    assert await summary.evaluate("e => getComputedStyle(e).position") not in ("sticky", "fixed")

    async def visible(locator) -> bool:
        """Whether any of it shows between the pane's header and its reply box."""
        return await locator.evaluate("""(el) => {
            const pane = el.closest('.pane');
            const top = pane.querySelector('.pane-header').getBoundingClientRect().bottom;
            const reply = pane.querySelector('.reply');
            const bottom = reply ? reply.getBoundingClientRect().top : pane.getBoundingClientRect().bottom;
            const r = el.getBoundingClientRect();
            return r.bottom > top + 1 && r.top < bottom - 1;
        }""")

    # Opened at the latest message: it shows, the summary (far above it) is scrolled away.
    assert await visible(last)
    assert not await visible(summary), "the Summary banner stays over the transcript"
    # Scrolling up through the transcript brings it back, above the first message.
    await last.hover()
    for _ in range(30):
        await page.mouse.wheel(0, -400)
        if await visible(summary):
            break
    assert await visible(summary)
    assert await visible(pane.locator(".msg-visitor .msg-text").first)
    assert not await visible(last)
    await shot(page, "pane-scrolled-up")
    await context.close()


async def _open(stack, bot: str) -> bool:
    return bool((await stack.snapshot(bot))["handoffs"]["items"])


async def test_every_page_has_an_icon(browser, stack):
    bot, email = await stack.team("Icon Shop", "icon", "Ida")
    context, page = await sign_in(browser, stack, email)
    failed: list[str] = []
    page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
    page.on("console", lambda m: failed.append(m.text) if m.type == "error" else None)
    for path in ("/login", f"/#/{bot}/handoff"):
        await page.goto(path)
        await expect(page.locator('link[rel="icon"]')).to_have_attribute("href", "/favicon.ico")
    icon = await page.request.get("/favicon.ico")
    assert icon.status == 200 and icon.headers["content-type"] == "image/svg+xml"
    assert (await icon.text()).startswith("<svg")
    await page.reload()
    await expect(page.locator("#agent-name")).not_to_be_empty()
    assert not failed, failed
    await context.close()
