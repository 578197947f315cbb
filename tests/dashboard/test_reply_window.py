"""The WhatsApp 24-hour reply window in the reply pane: open until a time after a fresh
visitor message, closed (and a reply refused with the queue's text) once it has passed."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from playwright.async_api import expect

from tests.dashboard.pages import row, shot, sign_in

pytestmark = pytest.mark.browser


async def test_the_pane_shows_the_whatsapp_reply_window(browser, stack):
    bot, email = await stack.team("Window Shop", "window", "Wes")

    fresh = await stack.handed_off(bot, "Fresh Visitor", channel="whatsapp", text="hi, quick question", reason="User asked for a person")

    late = stack.visitor(bot, "Late Visitor", channel="whatsapp")
    await stack.visitor_writes(late, "are you there?", at=datetime.now(UTC) - timedelta(hours=25))
    await stack.handoff(late, "User asked for a person")

    web = await stack.handed_off(bot, "Web Visitor", text="hello", reason="User asked for a person")

    context, page = await sign_in(browser, stack, email)
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
    await context.close()
