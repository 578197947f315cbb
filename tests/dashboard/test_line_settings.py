"""Tools → Human Handoff edits the visitor's place-in-line texts beside the other texts: the
defaults work unedited, an edit is saved, and a text with an unknown placeholder is refused
with a message a person can read (nothing saved)."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from shared.chatbots import DEFAULT_LINE_MESSAGE
from tests.dashboard.pages import sign_in

pytestmark = pytest.mark.browser


async def test_the_line_texts_are_edited_with_the_other_texts(browser, stack):
    bot, email = await stack.team("Line Shop", "lines", "Lena", handoff=True)
    context, page = await sign_in(browser, stack, email)
    await page.goto(f"/#/{bot}/tools/human-handoff")
    form = page.locator("form.tool-form")
    message = form.get_by_label("Place in Line Message", exact=True)
    await expect(message).to_have_value(DEFAULT_LINE_MESSAGE)
    await expect(form.get_by_label("Tell visitors their place in line")).to_be_checked()
    chatbots = stack.queue.app.state.queue.chatbots

    await message.fill("You are {place} in line.")
    await form.get_by_role("button", name="Save").click()
    await expect(form.get_by_role("alert")).to_contain_text("must contain {position}")
    assert (await chatbots.record.get_chatbot(bot)).human_handoff.line_message == DEFAULT_LINE_MESSAGE

    await message.fill("Your place: {position}. About {wait}.")
    await form.get_by_label("Place in Line Message without an estimate").fill("Your place: {position}.")
    await form.get_by_role("button", name="Save").click()
    await expect(form.locator(".form-status")).to_have_text("Saved.")
    stored = (await chatbots.record.get_chatbot(bot)).human_handoff
    assert (stored.line_message, stored.line_message_no_estimate) == (
        "Your place: {position}. About {wait}.", "Your place: {position}.")
    await context.close()
