"""The Human Handoff form sends the settings version it was loaded at: a save after the
settings changed elsewhere (here a credential rotation, as `set-channels` does it) is refused
with a clear message and a way to reload; nothing it shows undoes the rotation."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from shared.chatbots import ChannelCredentials
from tests.dashboard.pages import sign_in

pytestmark = pytest.mark.browser

CONFLICT = "These settings were changed elsewhere; reload to see the latest."


async def test_a_stale_form_is_refused_with_a_reload_and_the_rotation_stays(browser, stack):
    bot, email = await stack.team("Rotating Shop", "rot", "Rita", handoff=False)
    context, page = await sign_in(browser, stack, email)
    await page.goto(f"/#/{bot}/tools/human-handoff")
    form = page.locator("form.tool-form")
    await expect(form.get_by_label("Enabled")).not_to_be_checked()

    # While the form is open, the operator rotates the chatbot's Telegram token.
    chatbots = stack.queue.app.state.queue.chatbots
    current = await chatbots.record.get_chatbot(bot)
    await chatbots.save(current.model_copy(update={"channels": ChannelCredentials(telegram_bot_token="9:rotated")}))

    await form.get_by_label("Enabled").check()
    await form.get_by_role("button", name="Save").click()
    alert = form.get_by_role("alert")
    await expect(alert).to_contain_text(CONFLICT)
    await expect(form.locator(".form-status")).to_have_text("")
    stored = await chatbots.record.get_chatbot(bot)
    assert stored.channels.telegram_bot_token == "9:rotated" and stored.human_handoff.enabled is False

    # Reload shows the latest; saving from it merges the tool's part only.
    await alert.get_by_role("button", name="Reload settings").click()
    await expect(form.get_by_label("Enabled")).not_to_be_checked()
    await form.get_by_label("Enabled").check()
    await form.get_by_role("button", name="Save").click()
    await expect(form.locator(".form-status")).to_have_text("Saved.")
    await expect(page.locator("#tabs [data-tab]")).to_have_text(["Conversations", "Handoff", "Tools"])
    # A second save from the same form is based on the version the first one produced.
    await form.get_by_label("Offline Message").fill("Back soon.")
    await form.get_by_role("button", name="Save").click()
    await expect(form.locator(".form-status")).to_have_text("Saved.")
    stored = await chatbots.record.get_chatbot(bot)
    assert stored.channels.telegram_bot_token == "9:rotated"
    assert stored.human_handoff.enabled is True and stored.human_handoff.offline_message == "Back soon."
    await context.close()
