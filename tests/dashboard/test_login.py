"""The login page in Chromium against the real gateway: after signing in it goes back where
the agent was going, but only ever to a page of this site."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from services.gateway.app import create_app
from tests.dashboard.stack import PASSWORD
from tests.harness import run_in_process

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


async def test_too_many_attempts_say_when_to_try_again_and_hold_the_button_until_then(browser, stack):
    _, email = await stack.team("Guarded Shop", "guard", "Gu")
    # A gateway of its own (same agents; its own counts) whose wait starts after one free failure.
    shared = stack.gateway.app.state.gateway.settings
    settings = shared.model_copy(update={"redis_prefix": shared.redis_prefix + "-login", "login_free_failures": 1,
                                         "login_backoff_base_s": 15, "login_backoff_max_s": 15})
    async with run_in_process("gateway-login", create_app, settings) as gateway:
        context = await browser.new_context(base_url=gateway.url)
        page = await context.new_page()
        for _ in range(2):  # the second failure starts a 15 s wait
            r = await page.request.post("/api/login", data={"email": email, "password": "not it"})
            assert r.status == 401
        await page.goto("/login")
        await page.get_by_label("E-mail").fill(email)
        await page.get_by_label("Password").fill(PASSWORD)
        button = page.get_by_role("button", name="Sign in")
        await button.click()
        await expect(page.get_by_role("alert")).to_have_text(
            re.compile(r"Too many sign-in attempts\. Try again in 1?\d seconds\."))
        await expect(button).to_be_disabled()
        # Once the wait is over the button works again and the right password signs in.
        await expect(button).to_be_enabled(timeout=30_000)
        await expect(page.get_by_role("alert")).to_be_hidden()
        await button.click()
        await expect(page.locator("#agent-name")).to_have_text("Gu")
        await context.close()
