"""Reply drafts are kept in the browser per agent and conversation until sent (issue #16, 5):
across a reload, and when another agent closes the conversation under the agent's typing
(shown read-only, to copy), back in the box when it is reopened, gone once sent."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.dashboard.pages import row, shot, sign_in

pytestmark = pytest.mark.browser

DRAFT = "Hi! I checked your parcel: it left our warehouse this morning and"


async def test_a_draft_survives_a_reload_and_a_colleagues_close(browser, stack):
    bot, email = await stack.team("Draft Shop", "draft", "Dana")
    other = f"other-{bot}@example.com"
    await stack.create_agent(other, "Olga", [bot])
    v = await stack.handed_off(bot, "Parcel Visitor", text="Where is my parcel?", reason="User asked for a person")
    w = await stack.handed_off(bot, "Second Visitor", text="Hello", reason="User asked for a person")

    context, page = await sign_in(browser, stack, email)
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.url)
    pane = page.locator(".pane")
    box = pane.get_by_placeholder("Type your reply...")
    await row(page, v.conversation_id).click()
    await box.fill(DRAFT)

    # Another conversation has its own (empty) box; coming back brings the draft back.
    await row(page, w.conversation_id).click()
    await expect(pane.locator(".pane-name")).to_have_text("Second Visitor")
    await expect(box).to_have_value("")
    await row(page, v.conversation_id).click()
    await expect(box).to_have_value(DRAFT)
    await page.reload()
    await expect(box).to_have_value(DRAFT)

    # A colleague closes it in another tab while the draft sits in the box.
    other_context, other_page = await sign_in(browser, stack, other)
    await row(other_page, v.conversation_id).click()
    await expect(other_page.locator(".pane").get_by_placeholder("Type your reply...")).to_have_value("")  # per agent
    await other_page.locator(".pane").get_by_role("button", name="Close").click()
    await expect(pane.locator(".badge-closed")).to_have_text("Closed")
    kept = pane.locator(".draft-kept")
    await expect(kept.locator(".draft-note")).to_have_text(
        "This conversation was closed before your reply was sent; your draft is kept.")
    await expect(kept.locator("textarea")).to_have_value(DRAFT)
    await expect(kept.locator("textarea")).to_have_attribute("readonly", "readonly")
    await kept.get_by_role("button", name="Copy draft").click()
    await expect(kept.get_by_role("button", name="Copied")).to_be_visible()
    assert await page.evaluate("navigator.clipboard.readText()") == DRAFT
    await shot(page, "draft-kept-after-close")

    # Still there after a reload; back in the box when the colleague reopens it.
    await page.reload()
    await expect(pane.locator(".draft-kept textarea")).to_have_value(DRAFT)
    await other_page.locator(".pane").get_by_role("button", name="Reopen").click()
    await expect(box).to_have_value(DRAFT)
    await expect(pane.locator(".draft-kept")).to_have_count(0)

    # Sent: gone from the box, and from the browser.
    await box.fill(DRAFT + " it should reach you tomorrow.")
    await box.press("Enter")
    await expect(pane.locator(".msg-agent .msg-text")).to_have_text([DRAFT + " it should reach you tomorrow."])
    await expect(box).to_have_value("")
    await page.reload()
    await expect(pane.locator(".msg-agent")).to_have_count(1)
    await expect(box).to_have_value("")
    assert page.errors == [] and other_page.errors == []
    await other_context.close()
    await context.close()
