"""The dashboard under the gateway's Content-Security-Policy, and a second sign-in in another
tab of the same browser."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from tests.dashboard.pages import CSP_VIOLATIONS, row, sign_in
from tests.dashboard.stack import PASSWORD
from tests.support import eventually

pytestmark = pytest.mark.browser


async def test_the_dashboard_works_under_its_csp_and_inline_script_is_blocked(browser, stack):
    bot, email = await stack.team("Policy Shop", "csp", "Cy")
    v = await stack.handed_off(bot, "Polly", text="a person please", reason="User asked for a person")
    context, page = await sign_in(browser, stack, email)
    await page.goto(f"/#/{bot}/handoffs")
    response = await page.reload()
    csp = response.headers["content-security-policy"]
    assert "script-src 'self';" in csp and "frame-ancestors 'none'" in csp
    # Live updates over the websocket, stats, a row, the pane and a reply: all under the policy.
    await expect(page.locator("#connection")).to_have_text("Live")
    await row(page, v.conversation_id).click()
    pane = page.locator(".pane")
    await pane.get_by_placeholder("Type your reply...").fill("Here to help.")
    await pane.get_by_placeholder("Type your reply...").press("Enter")
    await expect(pane.locator(".msg-agent .msg-text")).to_have_text("Here to help.")
    await page.locator('#tabs [data-tab="conversations"]').click()
    await expect(page.locator(".table-panel")).to_contain_text("Polly")
    assert CSP_VIOLATIONS == [] and page.errors == []

    # Script injected into the page as markup does not run, and the browser says so.
    await page.evaluate("""() => {
        const s = document.createElement('script');
        s.textContent = 'window.__inlineRan = true';
        document.body.append(s);
        const img = document.createElement('img');
        img.setAttribute('onerror', 'window.__handlerRan = true');
        img.src = '/nope.png';
        document.body.append(img);
    }""")
    async def both_refused() -> bool:
        return len(CSP_VIOLATIONS) >= 2

    await eventually(both_refused, timeout=10)
    assert await page.evaluate("[window.__inlineRan, window.__handlerRan]") == [None, None]
    assert all("script-src" in m for m in CSP_VIOLATIONS), CSP_VIOLATIONS
    CSP_VIOLATIONS.clear()  # provoked on purpose
    await context.close()


async def test_a_second_sign_in_does_not_break_the_first_tab(browser, stack):
    bot, email = await stack.team("Twin Shop", "twin", "Tom")
    v = await stack.handed_off(bot, "Tabitha", text="anyone?", reason="User asked for a person")
    context, first = await sign_in(browser, stack, email)
    await first.goto(f"/#/{bot}/handoffs")
    await expect(first.locator("#connection")).to_have_text("Live")

    # The same agent signs in again in another tab: a new session replaces the cookie.
    second = await context.new_page()
    await second.goto("/login")
    await second.get_by_label("E-mail").fill(email)
    await second.get_by_label("Password").fill(PASSWORD)
    await second.get_by_role("button", name="Sign in").click()
    await expect(second.locator("#agent-name")).to_have_text("Tom")

    # The first tab still acts: mute, a reply, the conversations table.
    mute = first.locator("#mute")
    await expect(mute).to_have_attribute("aria-pressed", "false")
    await mute.click()
    await expect(mute).to_have_attribute("aria-pressed", "true")
    await row(first, v.conversation_id).click()
    pane = first.locator(".pane")
    await pane.get_by_placeholder("Type your reply...").fill("Still here.")
    await pane.get_by_placeholder("Type your reply...").press("Enter")
    await expect(pane.locator(".msg-agent .msg-text")).to_have_text("Still here.")
    await expect(pane.get_by_role("alert")).to_have_count(0)
    await first.locator('#tabs [data-tab="conversations"]').click()
    await expect(first.locator(".table-panel")).to_contain_text("Tabitha")
    assert first.dialogs == [] and first.errors == []
    # And the second tab too. Its button shows the preference as that tab last read it (the
    # first tab's mute reaches it only when it reads /api/me again): a click turns it over.
    shown = await second.locator("#mute").get_attribute("aria-pressed")
    await second.locator("#mute").click()
    await expect(second.locator("#mute")).to_have_attribute("aria-pressed", "false" if shown == "true" else "true")
    await context.close()


async def test_a_different_agent_signing_in_reloads_the_first_tab_as_them(browser, stack):
    bot, email = await stack.team("Swap Shop", "swap-a", "Ann")
    other = f"swap-b-{bot}@example.com"
    await stack.create_agent(other, "Bob", [bot])
    context, first = await sign_in(browser, stack, email)
    await expect(first.locator("#agent-name")).to_have_text("Ann")
    second = await context.new_page()
    await second.goto("/login")
    await second.get_by_label("E-mail").fill(other)
    await second.get_by_label("Password").fill(PASSWORD)
    await second.get_by_role("button", name="Sign in").click()
    await expect(second.locator("#agent-name")).to_have_text("Bob")
    # The first tab acts: the browser's cookie is Bob's now, so it does not act for Bob under
    # Ann's name; it reloads as Bob.
    await first.locator("#mute").click()
    await expect(first.locator("#agent-name")).to_have_text("Bob")
    await expect(first).to_have_url(re.compile(rf"^{re.escape(stack.url)}/"))
    assert (await first.evaluate("fetch('/api/me').then(r => r.json())"))["agent"]["display_name"] == "Bob"
    await context.close()
