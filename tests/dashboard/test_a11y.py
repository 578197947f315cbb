"""Keyboard use of the reply pane in Chromium against the real queue and gateway: after an
action the focus lands on what the pane now offers, and a live re-render does not take it
away."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.dashboard.pages import row, sign_in

pytestmark = pytest.mark.browser


async def test_the_focus_follows_the_actions_of_the_pane(browser, stack):
    bot, email = await stack.team("Keys Shop", "keys", "Kay")
    v = await stack.handed_off(bot, "Keyboard Visitor", text="hello", reason="User asked for a person")
    context, page = await sign_in(browser, stack, email)
    await row(page, v.conversation_id).click()
    pane = page.locator(".pane")
    close = pane.get_by_role("button", name="Close")
    await expect(close).to_be_visible()

    # A message arriving re-renders the pane: the focused button keeps the focus.
    await close.focus()
    await stack.visitor_writes(v, "are you there?")
    await expect(pane.locator(".msg-visitor .msg-text").last).to_have_text("are you there?")
    await expect(close).to_be_focused()

    # Close by keyboard: the focus goes to Reopen, the one button now there.
    await page.keyboard.press("Enter")
    reopen = pane.get_by_role("button", name="Reopen")
    await expect(pane.locator(".notice")).to_have_text("Conversation closed.")
    await expect(reopen).to_be_focused()
    # Reopen: the focus goes to the first of the buttons now there.
    await page.keyboard.press("Enter")
    await expect(pane.locator(".notice")).to_have_text("Conversation reopened.")
    await expect(pane.get_by_role("button", name="Return to AI")).to_be_focused()
    # Return to AI leaves no button: the focus goes to the conversation's heading.
    await page.keyboard.press("Enter")
    await expect(pane.locator(".notice")).to_have_text("Returned to AI.")
    await expect(pane.locator(".pane-name")).to_be_focused()
    assert page.errors == []
    await context.close()
