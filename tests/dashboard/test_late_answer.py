"""An AI answer that arrived after the conversation was handed off: the agent sees it in the
transcript, quietly marked as not sent (it never reached the visitor), not as a failure."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.dashboard.pages import row, shot, sign_in

pytestmark = pytest.mark.browser


async def test_a_late_ai_answer_shows_as_not_sent(browser, stack):
    bot, email = await stack.team("Late Shop", "late", "Lee")

    v = stack.visitor(bot, "Quinn")
    await stack.visitor_writes(v, "Has my parcel shipped?")  # the model takes its time over this one
    await stack.visitor_writes(v, "Actually, let me talk to a person.")
    await stack.handoff(v, "User asked for a person")
    await stack.ai_writes(v, "Yes, it shipped yesterday.", to=0)  # too late: handed off meanwhile

    context, page = await sign_in(browser, stack, email)
    await row(page, v.conversation_id).click()
    late = page.locator(".pane .msg-ai").filter(has_text="Yes, it shipped yesterday.")
    await expect(late.locator(".msg-note")).to_have_text(
        "Not sent: this answer came after the conversation was handed to the team.")
    await expect(late.locator(".msg-error")).to_have_count(0)
    await expect(page.locator(".pane .msg-error")).to_have_count(0)
    await shot(page, "late-ai-answer")
    await context.close()
