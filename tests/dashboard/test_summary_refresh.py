"""A summary that stays current, in Chromium against the real queue, gateway and summarizer
(with the fake OpenAI server): the banner counts the messages since the summary as they
arrive, an agent's Refresh shows in flight on every open dashboard and brings the new summary
to both (the model got the previous summary and only the new messages), a failed refresh keeps
it with a quiet note, and refreshing too often is refused in words."""

from __future__ import annotations

import asyncio
import re
import uuid

import pytest
from playwright.async_api import expect

from services.summarizer.app import create_app as create_summarizer
from services.summarizer.settings import SummarizerSettings
from tests.conftest import Isolated
from tests.dashboard.pages import row, shot, sign_in
from tests.dashboard.stack import running_stack
from tests.fakes.openai_server import Error, FakeOpenAI, Reply, Slow
from tests.harness import run_in_process, settings_from_env
from tests.support import eventually

pytestmark = pytest.mark.browser

FIRST = "The parcel never came; the visitor wants a refund."
SECOND = "The parcel (order 123) is at the depot; the visitor wants it delivered instead."


async def test_the_summary_banner_counts_new_messages_and_refreshes_on_every_dashboard(browser, infra):
    async with FakeOpenAI() as fake, running_stack(Isolated(infra, uuid.uuid4().hex[:8])) as stack:
        fake.when("Handoff reason", Reply(FIRST))
        # The first refresh takes a moment (it shows in flight); the model then fails.
        fake.when("Previous recap", Slow(3, Reply(SECOND)), Error(500))
        settings = settings_from_env(SummarizerSettings, stack.iso.env(
            "summarizer", OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY="k", OPENAI_MAX_RETRIES="0",
            SUMMARY_REFRESH_AFTER_MESSAGES="100", SUMMARY_REFRESH_AFTER_MINUTES="60"))
        async with run_in_process("summarizer", create_summarizer, settings):
            bot, email = await stack.team("Parcel Shop", "sum", "Sam")
            nora = await stack.handed_off(bot, "Nora", text="My parcel never came.", reason="Topic is a refund")
            context, page = await sign_in(browser, stack, email)
            # A second open dashboard (its own page and websocket; the session is shared, which
            # spares a second sign-in on a slow machine).
            other = await context.new_page()
            other.errors = []
            other.on("pageerror", lambda exc: other.errors.append(str(exc)))
            await other.goto("/")
            panes = []
            for p in (page, other):
                await row(p, nora.conversation_id).click()
                panes.append(p.locator(".pane"))
            mine, theirs = panes
            for pane in panes:
                await expect(pane.locator(".summary-text")).to_have_text(FIRST)
                await expect(pane.locator(".summary-new")).to_have_count(0)

            # The visitor writes: both banners count it, live.
            await stack.visitor_writes(nora, "It was order 123.")
            await expect(theirs.locator(".summary-new")).to_have_text("1 new message since this summary")
            await stack.visitor_writes(nora, "The tracking says it is at the depot.")
            for pane in panes:
                await expect(pane.locator(".summary-new")).to_have_text("2 new messages since this summary")

            # Refresh: in flight on both dashboards, then the new summary on both.
            await mine.get_by_role("button", name="Refresh").click()
            for pane in panes:
                await expect(pane.locator(".summary-refreshing")).to_have_text("Refreshing summary…")
            await shot(page, "summary-refreshing")
            for pane in panes:
                await expect(pane.locator(".summary-text")).to_have_text(SECOND)
                await expect(pane.locator(".summary-refreshing")).to_have_count(0)
                await expect(pane.locator(".summary-new")).to_have_count(0)
            # Incremental: the previous summary and the new messages, not the transcript again.
            [asked] = fake.requests_containing("Previous recap")
            prompt = asked["messages"][1]["content"]
            assert FIRST in prompt and "Visitor: It was order 123.\nVisitor: The tracking says" in prompt
            assert "My parcel never came." not in prompt

            # An agent's reply counts too; a refresh that fails keeps the summary, quietly.
            box = mine.get_by_placeholder("Type your reply...")
            await box.fill("We are on it.")
            await box.press("Enter")
            await expect(theirs.locator(".summary-new")).to_have_text("1 new message since this summary")
            await mine.get_by_role("button", name="Refresh").click()
            failed = re.compile(r"^Couldn't refresh the summary; showing the one from \d\d:\d\d$")
            for pane in panes:
                await expect(pane.locator(".summary-failed")).to_have_text(failed)
                await expect(pane.locator(".summary-text")).to_have_text(SECOND)
                await expect(pane.locator(".summary-new")).to_have_text("1 new message since this summary")
            await shot(other, "summary-refresh-failed")

            # Refreshing too often (3 a minute per conversation) is refused in words.
            await mine.get_by_role("button", name="Refresh").click()  # the third: allowed (and fails)
            await eventually(lambda: asyncio.sleep(0, len(fake.requests_containing("Previous recap")) == 3))
            await mine.get_by_role("button", name="Refresh").click()
            await expect(mine.locator(".summary-failed").last).to_have_text(
                re.compile(r"^This summary was refreshed a moment ago\. Try again in \d+ seconds\.$"))
            assert len(fake.requests_containing("Previous recap")) == 3
            assert not page.errors and not other.errors
