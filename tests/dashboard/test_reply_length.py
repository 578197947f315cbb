"""The reply box's length (issue #16, 6): a counter against the server's limit (given by
/api/me, not a copy in the page), no more than the limit in the box, Send off when over,
and the server's refusal beside the box, in words."""

from __future__ import annotations

import json
import re

import pytest
from playwright.async_api import expect

from tests.dashboard.pages import row, shot, sign_in

pytestmark = pytest.mark.browser


async def test_the_reply_box_counts_and_stops_at_the_limit(browser, stack):
    bot, email = await stack.team("Long Shop", "long", "Lars")
    v = await stack.handed_off(bot, "Wordy Visitor", text="Tell me everything", reason="User asked for a person")
    context, page = await sign_in(browser, stack, email)
    await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=stack.url)
    await row(page, v.conversation_id).click()
    pane = page.locator(".pane")
    box = pane.get_by_placeholder("Type your reply...")
    counter = pane.locator(".reply-count")
    send = pane.get_by_role("button", name="Send")
    await expect(counter).to_have_text("0 / 4,096")
    await box.fill("Hello there")
    await expect(counter).to_have_text("11 / 4,096")

    # A paste longer than the room left is cut to fit, and the box says so.
    await page.evaluate("(t) => navigator.clipboard.writeText(t)", "x" * 5000)
    await box.fill("")
    await box.focus()
    await page.keyboard.press("ControlOrMeta+V")
    await expect(counter).to_have_text("4,096 / 4,096")
    assert len(await box.input_value()) == 4096
    await expect(pane.locator(".reply-error")).to_have_text("The pasted text was cut to fit: at most 4,096 characters.")
    await expect(send).to_be_enabled()
    await shot(page, "reply-at-the-limit")

    # Text over the limit that got in anyway (set by a script): counted in red, Send off, said why.
    await box.evaluate("(el, t) => { el.value = t; el.dispatchEvent(new Event('input', { bubbles: true })); }", "y" * 5000)
    await expect(counter).to_have_text("5,000 / 4,096")
    await expect(counter).to_have_class(re.compile(r"reply-count--over"))
    await expect(send).to_be_disabled()
    await expect(pane.locator(".reply-error")).to_have_text("The reply is too long: at most 4,096 characters.")
    await box.press("Enter")  # Enter does not send it either
    await expect(pane.locator(".msg-agent")).to_have_count(0)
    await context.close()


async def test_the_servers_refusal_shows_beside_the_box_in_words(browser, stack):
    bot, email = await stack.team("Strict Shop", "strict", "Stu")
    v = await stack.handed_off(bot, "Patient Visitor", text="hi", reason="User asked for a person")
    context, page = await sign_in(browser, stack, email)

    # A page that believes in a larger limit than the gateway's: the gateway refuses.
    async def larger_limit(route):
        response = await route.fetch()
        body = await response.json()
        body["limits"]["reply_max_chars"] = 10000
        await route.fulfill(response=response, body=json.dumps(body))
    await page.route(re.compile(r"/api/me$"), larger_limit)
    await page.reload()
    await row(page, v.conversation_id).click()
    pane = page.locator(".pane")
    box = pane.get_by_placeholder("Type your reply...")
    await box.fill("z" * 5000)
    await expect(pane.locator(".reply-count")).to_have_text("5,000 / 10,000")
    await box.press("Enter")
    refusal = pane.locator("form.reply .reply-error")
    await expect(refusal).to_have_text("The reply is too long: at most 4,096 characters.")
    await expect(pane.locator(".pane > .error")).to_have_count(0)  # beside the box, not at the top
    assert len(await box.input_value()) == 5000  # the text is still there to shorten
    await shot(page, "reply-refused-too-long")
    await context.close()
