"""The wait-time SLA in Chromium against the real queue and gateway, on a fake clock: rows and
the Oldest waiting stat turn amber after "Alert after" and red after "Urgent after" (with words,
not colour alone), an unassigned handoff crossing the urgent threshold alerts again once (not
one an agent has, not for an agent who muted), and Tools → Human Handoff sets the thresholds
(or turns one off): saved, refused in words when urgent is not after alert, applied at once
on every open dashboard."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
from playwright.async_api import expect

from tests.dashboard.pages import row, shot, sign_in
from tests.dashboard.test_live import _has_row
from tests.support import eventually

pytestmark = pytest.mark.browser

STATS = ["Open", "Oldest waiting", "Today", "Resolved this week"]


async def test_rows_turn_amber_then_red_and_an_unassigned_one_alerts_again_once(browser, stack):
    bot, email = await stack.team("Wait Shop", "sla", "Sal")
    muted_email = f"muted-{bot}@example.com"
    await stack.create_agent(muted_email, "Mo", [bot])
    waiting = await stack.handed_off(bot, "Left Waiting", text="hello?", reason="Topic is a refund")
    taken = await stack.handed_off(bot, "Taken Already", text="hi", reason="User asked for a person")
    for v in (waiting, taken):
        await eventually(lambda v=v: _has_row(stack, bot, v.conversation_id), timeout=20)

    # The claim (another part of the dashboard) marks who has a conversation: this one is taken.
    async def with_assignee(route) -> None:
        answer = await route.fetch()
        body = await answer.json()
        for item in body["items"]:
            if item["conversation_id"] == taken.conversation_id:
                item["assignee"] = {"agent_id": "a-other", "name": "Other Agent"}  # shared.views.Assignee
        await route.fulfill(response=answer, body=json.dumps(body))

    context, page = await sign_in(browser, stack, email)
    await page.route(re.compile(rf"/api/chatbots/{bot}/handoffs\?"), with_assignee)
    muted_context, muted = await sign_in(browser, stack, muted_email)
    await muted.locator("#mute").click()
    await expect(muted.locator("#mute")).to_have_text("Alerts off")
    for p in (page, muted):
        await p.clock.install(time=datetime.now(UTC))
        await p.reload()
        await expect(row(p, waiting.conversation_id)).to_have_count(1)
        await expect(p.locator("#connection")).to_be_hidden()

    first = row(page, waiting.conversation_id)
    oldest = page.locator('[data-stat="oldest"]')
    await expect(first).not_to_have_class(re.compile("sla-"))
    await expect(oldest).not_to_have_class(re.compile("sla-"))

    # Past 5 minutes: amber, and said in words.
    # The jumps land just past the later of the two rows' crossings, however long the setup took.
    since = max(r["waiting_since"] for r in (await stack.snapshot(bot))["handoffs"]["items"])
    await page.clock.fast_forward(await _until(page, since, minutes=5))
    await expect(first).to_have_class(re.compile(r"\bsla-alert\b"))
    await expect(first.locator(".row-sla")).to_have_text("Over 5 min")
    await expect(oldest).to_have_class(re.compile(r"\bsla-alert\b"))
    await expect(oldest.locator(".stat-sla")).to_have_text("Over 5 min")
    assert await page.evaluate("window.__notifications") == []

    # Past 15 minutes: red, and the unassigned one alerts again; the taken one does not.
    await page.clock.fast_forward(await _until(page, since, minutes=15))
    await expect(first).to_have_class(re.compile(r"\bsla-urgent\b"))
    await expect(first.locator(".row-sla")).to_have_text("Over 15 min")
    await expect(row(page, taken.conversation_id)).to_have_class(re.compile(r"\bsla-urgent\b"))
    await expect(oldest).to_have_class(re.compile(r"\bsla-urgent\b"))
    await expect(oldest.locator(".stat-sla")).to_have_text("Over 15 min")
    await expect(page.locator(".stat-label")).to_have_text(STATS)
    await shot(page, "sla-urgent")
    await expect(page.locator("#announcer")).to_have_text("Waiting over 15 min: Left Waiting")
    assert await page.evaluate("window.__notifications") == [
        {"title": "Waiting over 15 min — Wait Shop", "body": "Left Waiting: Topic is a refund"}]
    assert await page.evaluate("window.__beeps") == 1
    # Once: more time passing alerts nothing more.
    await page.clock.fast_forward("03:00")
    assert len(await page.evaluate("window.__notifications")) == 1
    assert await page.evaluate("window.__beeps") == 1

    # The agent who muted sees the same red rows, without a sound or a notification.
    await muted.clock.fast_forward(await _until(muted, since, minutes=15))
    await expect(row(muted, waiting.conversation_id)).to_have_class(re.compile(r"\bsla-urgent\b"))
    await expect(muted.locator('[data-stat="oldest"]')).to_have_class(re.compile(r"\bsla-urgent\b"))
    await muted.clock.fast_forward("01:00")
    assert await muted.evaluate("window.__notifications") == []
    assert await muted.evaluate("window.__beeps") == 0

    # Tools → Human Handoff: urgent must come after alert (said in words, nothing saved);
    # alert off and urgent at 30 minutes is saved and applies on every open dashboard.
    await page.locator('#tabs [data-tab="tools"]').click()
    form = page.locator("form.tool-form")
    alert_after, urgent_after = form.get_by_label("Alert after (min)"), form.get_by_label("Urgent after (min)")
    await expect(alert_after).to_have_value("5")
    await expect(urgent_after).to_have_value("15")
    await urgent_after.fill("4")
    await form.get_by_role("button", name="Save").click()
    await expect(form.get_by_role("alert")).to_have_text(
        "Urgent after must be more minutes than Alert after (or turn one of them off).")
    chatbots = stack.queue.app.state.queue.chatbots
    stored = (await chatbots.record.get_chatbot(bot)).human_handoff
    assert (stored.alert_after_min, stored.urgent_after_min) == (5, 15)
    await alert_after.fill("")
    await urgent_after.fill("30")
    await form.get_by_role("button", name="Save").click()
    await expect(form.locator(".form-status")).to_have_text("Saved.")
    stored = (await chatbots.record.get_chatbot(bot)).human_handoff
    assert (stored.alert_after_min, stored.urgent_after_min) == (None, 30)
    # About 18 minutes waited: neither amber (off) nor red (under 30) any more, here and on
    # the other agent's dashboard (the settings change reaches it live).
    await page.locator('#tabs [data-tab="handoff"]').click()
    await expect(row(page, waiting.conversation_id)).not_to_have_class(re.compile("sla-"))
    await expect(row(page, waiting.conversation_id).locator(".sla-badge")).to_have_count(0)
    await expect(page.locator('[data-stat="oldest"]')).not_to_have_class(re.compile("sla-"))
    await expect(row(muted, waiting.conversation_id)).not_to_have_class(re.compile("sla-"))
    assert page.errors == [] and muted.errors == []
    await context.close()
    await muted_context.close()


async def _until(page, since: str, *, minutes: int) -> int:
    """Milliseconds from the page's (fake) now to a few seconds past `minutes` of waiting
    since `since`."""
    crossing = datetime.fromisoformat(since).timestamp() * 1000 + minutes * 60_000
    return max(0, int(crossing + 5_000 - await page.evaluate("Date.now()")))
