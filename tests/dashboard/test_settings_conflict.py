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


async def test_an_older_answer_of_api_me_after_a_save_does_not_undo_what_the_save_showed(browser, stack):
    """A save shows the Handoff tab at once; the settings update that follows has the page ask
    /api/me again, and the gateway may answer from its copy of the settings before that copy
    has the change (it follows the settings table). Seen in CI: the tab vanished for good
    when that older answer came after the gateway's "settings" frame."""
    import asyncio
    import json

    bot, email = await stack.team("Lagging Shop", "lag", "Lena", handoff=False)
    context, page = await sign_in(browser, stack, email)
    await page.goto(f"/#/{bot}/tools/human-handoff")
    form = page.locator("form.tool-form")
    await expect(form.get_by_label("Enabled")).not_to_be_checked()
    tabs = page.locator("#tabs [data-tab]")
    await expect(tabs).to_have_text(["Conversations", "Tools"])

    # From now on /api/me answers as a gateway whose copy is one version behind, and late.
    before = (await page.evaluate("fetch('/api/me').then((r) => r.json())"))
    stale = json.dumps(before)
    answered = asyncio.Event()

    async def late_and_older(route):  # noqa: ANN001
        await asyncio.sleep(1.5)  # after the gateway's own "settings" frame
        await route.fulfill(status=200, content_type="application/json", body=stale)
        answered.set()

    await page.route("**/api/me", late_and_older)
    await form.get_by_label("Enabled").check()
    await form.get_by_role("button", name="Save").click()
    await expect(form.locator(".form-status")).to_have_text("Saved.")
    await expect(tabs).to_have_text(["Conversations", "Handoff", "Tools"])
    await asyncio.wait_for(answered.wait(), 20)
    await page.wait_for_timeout(300)  # the older answer has been applied, if it is going to be
    await expect(tabs).to_have_text(["Conversations", "Handoff", "Tools"], timeout=1000)
    await context.close()
