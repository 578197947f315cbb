"""The login page in Chromium against the real gateway: after signing in it goes back where
the agent was going, but only ever to a page of this site."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from tests.dashboard.stack import PASSWORD

pytestmark = pytest.mark.browser


async def test_signing_in_never_leaves_the_site(browser, stack):
    bot, email = await stack.team("Home Shop", "home", "Hu")
    for target in ("/%5Cevil.example/x", "//evil.example/x", "https://evil.example/x", f"/%23/{bot}/conversations"):
        # A fresh browser each time: signed out, as someone following a link would be.
        context = await browser.new_context(base_url=stack.url)
        await context.route(re.compile(r"^https?://evil\.example"), lambda route: route.fulfill(body="elsewhere"))
        page = await context.new_page()
        await page.goto(f"/login?next={target}")
        await page.get_by_label("E-mail").fill(email)
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.locator("#agent-name")).to_have_text("Hu")
        assert page.url.startswith(stack.url + "/"), (target, page.url)
        if target.startswith("/%23"):
            # A path of this site is still where signing in goes.
            await expect(page).to_have_url(re.compile(rf"#/{bot}/conversations$"))
        await context.close()
