"""More of the dashboard in Chromium against the real queue and gateway: several chatbots
per agent, logging out, waiting times that tick and "Today" refetched at midnight, failed
deliveries, paging, and search that keeps the focus."""

from __future__ import annotations

import re
from datetime import datetime, timezone

import pytest
from playwright.async_api import expect

from shared.formatting import format_row_waiting
from tests.dashboard.pages import bot_id, row, shot, sign_in, stat
from tests.dashboard.test_live import SocketControl
from tests.support import eventually

pytestmark = pytest.mark.browser


async def test_an_agent_of_two_chatbots_switches_between_them(browser, stack):
    alpha, beta = bot_id(), bot_id()
    await stack.seed_chatbot(alpha, "Alpha Store")
    await stack.seed_chatbot(beta, "Beta Store")
    email = f"two-{alpha}@example.com"
    await stack.create_agent(email, "Tom", [alpha, beta])
    await stack.handed_off(alpha, "Alpha Visitor", text="hi alpha", reason="User asked for a person")
    await stack.handed_off(beta, "Beta Visitor", channel="whatsapp", text="hi beta", reason="Topic is billing")

    context, page = await sign_in(browser, stack, email)
    picker = page.get_by_label("Chatbot", exact=True)
    await expect(picker).to_be_visible()
    await expect(picker.locator("option")).to_have_text(["Alpha Store", "Beta Store"])
    await picker.select_option(label="Alpha Store")
    await expect(page).to_have_url(re.compile(rf"#/{alpha}/handoff$"))
    await expect(page.locator(".handoff-row .row-name")).to_have_text(["Alpha Visitor"])

    await picker.select_option(label="Beta Store")
    await expect(page).to_have_url(re.compile(rf"#/{beta}/handoff$"))
    await expect(page.locator(".handoff-row .row-name")).to_have_text(["Beta Visitor"])
    await expect(page.locator(".handoff-row .channel")).to_have_text(["WhatsApp"])
    await expect(page).to_have_title("(1) Handoff — Beta Store")

    # While on Beta, a handoff in Alpha does not land in Beta's list...
    await stack.handed_off(alpha, "Second Alpha", text="me too", reason="User asked for a person")
    await stack.handed_off(beta, "Second Beta", text="me too", reason="User asked for a person")
    await expect(page.locator(".handoff-row .row-name")).to_have_text(["Beta Visitor", "Second Beta"])
    # ...and is there when the agent switches back.
    await page.go_back()
    await expect(page).to_have_url(re.compile(rf"#/{alpha}/handoff$"))
    await expect(page.locator(".handoff-row .row-name")).to_have_text(["Alpha Visitor", "Second Alpha"])
    await expect(picker).to_have_value(alpha)
    await context.close()


async def test_logging_out_ends_the_session(browser, stack):
    bot, email = await stack.team("Exit Shop", "exit", "Eve")
    context, page = await sign_in(browser, stack, email)
    await page.get_by_role("button", name="Log out").click()
    await expect(page).to_have_url(re.compile(r"/login$"))
    await page.goto(f"/#/{bot}/conversations")
    await expect(page).to_have_url(re.compile(r"/login\?next="))
    assert (await page.request.get("/api/me")).status == 401
    # Signing in again goes back where the agent was going.
    await page.get_by_label("E-mail").fill(email)
    await page.get_by_label("Password").fill("a good long password")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page).to_have_url(re.compile(rf"#/{bot}/conversations$"))
    await context.close()


async def test_waiting_times_tick_and_today_is_refetched_at_midnight(browser, stack):
    bot, email = await stack.team("Clock Shop", "clock", "Cleo")
    v = await stack.handed_off(bot, "Waiting Visitor", text="hello", reason="User asked for a person")
    snapshot = await eventually(lambda: _with_rows(stack, bot), timeout=20)

    context, page = await sign_in(browser, stack, email)
    await page.clock.install(time=datetime.now(timezone.utc))
    await page.reload()
    waiting = row(page, v.conversation_id).locator(".row-waiting")
    await expect(waiting).to_have_text("just now")
    await expect(stat(page, "oldest")).to_have_text("just now")  # the row's word: one wording

    await page.clock.fast_forward("02:10")
    await expect(waiting).to_have_text("2m")
    await expect(stat(page, "oldest")).to_have_text("2m")
    await page.clock.fast_forward("02:00:00")
    await expect(waiting).to_have_text("2h")
    await expect(stat(page, "oldest")).to_have_text("2h 2m")

    # At the chatbot's midnight the page asks for fresh stats ("Today" starts again).
    ends = datetime.fromisoformat(snapshot["stats"]["today_ends_at"])
    async with page.expect_request(lambda r: r.url.endswith(f"/api/chatbots/{bot}/stats")):
        await page.clock.fast_forward(int((ends - datetime.now(timezone.utc)).total_seconds() * 1000) + 2000)
    await page.clock.fast_forward("24:00:00")
    page_now = datetime.fromtimestamp(await page.evaluate("Date.now()") / 1000, timezone.utc)
    since = datetime.fromisoformat(snapshot["handoffs"]["items"][0]["waiting_since"])
    expected = format_row_waiting(since, page_now, "UTC")
    assert re.fullmatch(r"[A-Z][a-z]{2} \d{1,2}", expected)
    await expect(waiting).to_have_text(expected)
    await expect(stat(page, "oldest")).to_have_text(re.compile(r"^1d( \d{1,2}h)?$"))
    await context.close()


async def _with_rows(stack, bot: str) -> dict | None:
    snapshot = await stack.snapshot(bot)
    return snapshot if snapshot["handoffs"]["items"] else None


async def test_a_failed_delivery_shows_its_error(browser, stack):
    bot, email = await stack.team("Fail Shop", "fail", "Finn")
    v = await stack.handed_off(bot, "Unreachable", channel="whatsapp", text="help", reason="User asked for a person")
    context, page = await sign_in(browser, stack, email)
    await row(page, v.conversation_id).click()
    pane = page.locator(".pane")
    await pane.get_by_placeholder("Type your reply...").fill("Are you still there?")
    await pane.get_by_placeholder("Type your reply...").press("Enter")
    await expect(pane.locator(".msg-agent .msg-text")).to_have_text("Are you still there?")
    await expect(pane.locator(".msg-error")).to_have_count(0)
    [sent] = await stack.outbound_for(v.conversation_id, 1)
    await stack.delivery_failed(v, sent["message_id"], "The 24-hour WhatsApp window has closed.")
    await expect(pane.locator(".msg-agent .msg-error")).to_have_text(
        "Not delivered: The 24-hour WhatsApp window has closed.")
    await context.close()


async def _open_count(stack, bot: str, expected: int) -> bool:
    return (await stack.snapshot(bot))["stats"]["open"] == expected


async def _message_count(stack, bot: str, conversation_id: str, expected: int) -> bool:
    rows = (await stack.snapshot(bot))["handoffs"]["items"]
    return any(r["conversation_id"] == conversation_id and r["message_count"] == expected for r in rows)


async def test_lists_page_with_load_more_and_search_keeps_the_focus(browser, stack):
    bot, email = await stack.team("Busy Shop", "busy", "Bea")
    names = ["Ann Early", "Ben Middle", "Zed Late"]
    visitors = [await stack.handed_off(bot, name, text=f"I am {name}", reason="User asked for a person")
                for name in names]
    # This test is about paging and the search box: load the page once the queue holds all
    # three (they are on different partitions, so it may apply them in any order; live
    # arrival is tested in test_flow.py).
    await eventually(lambda: _open_count(stack, bot, 3))
    control = SocketControl()
    context, page = await sign_in(browser, stack, email, ws_route=control.route)
    await page.add_init_script("window.HANDOFF_PAGE_SIZE = 2")
    await page.reload()
    # The list pages oldest first.
    await expect(stat(page, "open")).to_have_text("3")
    await expect(page.locator(".handoff-row .row-name")).to_have_text(names[:2])
    await page.locator(".list-panel").get_by_role("button", name="Load more").click()
    await expect(page.locator(".handoff-row .row-name")).to_have_text(names)
    await expect(page.locator(".list-panel").get_by_role("button", name="Load more")).to_be_hidden()
    # A resync (what a seq gap or a reconnect starts) keeps the rows Load more brought in.
    # While the page cannot hear, the last of them gets a message: only the reconnect's
    # snapshot can bring its new count, and it still holds all three rows.
    late = visitors[-1]
    late_count = row(page, late.conversation_id).locator(".row-count")
    await expect(late_count).to_have_text("1 message")
    control.blocked = True
    await control.drop_all()
    await expect(page.locator("#connection")).to_have_text("Reconnecting…")
    control.drop_about.add(late.conversation_id)  # not even a late update of it gets through
    await stack.visitor_writes(late, "still there?")
    await eventually(lambda: _message_count(stack, bot, late.conversation_id, 2))
    control.blocked = False
    await expect(late_count).to_have_text("2 messages", timeout=20000)
    await expect(page.locator("#connection")).to_be_hidden()
    await expect(page.locator(".handoff-row .row-name")).to_have_text(names)
    await expect(page.locator(".list-panel").get_by_role("button", name="Load more")).to_be_hidden()
    control.drop_about.clear()

    await page.locator('#tabs [data-tab="conversations"]').click()
    rows = page.locator(".conv-row")
    await expect(rows).to_have_count(2)
    await page.locator(".table-panel").get_by_role("button", name="Load more").click()
    await expect(rows).to_have_count(3)
    # Most recent activity first.
    await expect(rows.locator(".cell-name")).to_have_text(names[::-1])

    search = page.get_by_label("Search conversations")
    await search.press_sequentially("Zed", delay=120)
    await expect(page).to_have_url(re.compile(r"q=Zed"))
    await expect(rows).to_have_count(1)
    await expect(search).to_be_focused()
    await search.press_sequentially(" Late", delay=120)
    await expect(page).to_have_url(re.compile(r"q=Zed\+Late"))
    await expect(search).to_be_focused()
    await expect(search).to_have_value("Zed Late")
    await expect(rows.locator(".cell-name")).to_have_text(["Zed Late"])
    await context.close()


async def test_the_conversations_table_updates_live(browser, stack):
    bot, email = await stack.team("Table Shop", "table", "Tia")
    old = stack.visitor(bot, "Old Visitor")
    await stack.visitor_writes(old, "earlier question")
    context, page = await sign_in(browser, stack, email)
    await page.goto(f"/#/{bot}/conversations")
    rows = page.locator(".conv-row")
    await expect(rows.locator(".cell-name")).to_have_text(["Old Visitor"])
    await expect(rows.locator("td .badge")).to_have_text(["Active"])

    new = stack.visitor(bot, "New Visitor", channel="telegram")
    await stack.visitor_writes(new, "just arrived")
    await expect(rows.locator(".cell-name")).to_have_text(["New Visitor", "Old Visitor"])
    await stack.handoff(old, "User asked for a person")
    await expect(rows.first.locator(".cell-name")).to_have_text("New Visitor")
    await expect(page.locator('.conv-row[data-cid="%s"] .badge' % old.conversation_id)).to_have_text("Needs reply")
    await context.close()


async def test_the_pane_loads_earlier_messages_on_demand(browser, stack):
    bot, email = await stack.team("Chatty Shop", "chatty", "Cy")
    v = stack.visitor(bot, "Chatty Visitor")
    for n in range(1, 6):
        await stack.visitor_writes(v, f"message {n}")
    await stack.handoff(v, "User asked for a person")
    context, page = await sign_in(browser, stack, email)
    await page.add_init_script("window.HANDOFF_MESSAGE_PAGE_SIZE = 2")
    await page.goto(f"/#/{bot}/handoff?c={v.conversation_id}")
    await page.reload()  # a new document, so the init script applies
    pane = page.locator(".pane")
    texts = pane.locator(".msg-text")
    await expect(pane.locator(".pane-name")).to_have_text("Chatty Visitor")
    # The latest messages first; earlier ones on demand, in order.
    await expect(texts).to_have_text(["message 4", "message 5"])
    await pane.get_by_role("button", name="Load earlier messages").click()
    await expect(texts).to_have_text(["message 2", "message 3", "message 4", "message 5"])
    await pane.get_by_role("button", name="Load earlier messages").click()
    await expect(texts).to_have_text([f"message {n}" for n in range(1, 6)])
    await expect(pane.get_by_role("button", name="Load earlier messages")).to_have_count(0)
    await context.close()


async def test_delivered_and_read_show_quietly_on_replies(browser, stack):
    bot, email = await stack.team("Tick Shop", "tick", "Tia")
    v = stack.visitor(bot, "Dot", channel="whatsapp")
    await stack.visitor_writes(v, "Do you ship to Norway?")
    await stack.ai_writes(v, "Yes, in 3 to 5 days.")
    await stack.visitor_writes(v, "I want to talk to a person")
    await stack.handoff(v, "User asked for a person")
    context, page = await sign_in(browser, stack, email)
    await row(page, v.conversation_id).click()
    pane = page.locator(".pane")
    await pane.get_by_placeholder("Type your reply...").fill("Hi Dot, Tia here.")
    await pane.get_by_placeholder("Type your reply...").press("Enter")
    await expect(pane.locator(".msg-agent .msg-text")).to_have_text("Hi Dot, Tia here.")
    await expect(pane.locator(".msg-delivery")).to_have_count(0)  # nothing claimed before the platform says so

    ai_reply, agent_reply = await stack.outbound_for(v.conversation_id, 2)
    await stack.delivery_status(v, ai_reply["message_id"], "delivered")
    await stack.delivery_status(v, agent_reply["message_id"], "sent")
    await stack.delivery_status(v, agent_reply["message_id"], "read")
    await expect(pane.locator(".msg-ai .msg-delivery")).to_have_text("✓ Delivered")
    await expect(pane.locator(".msg-agent .msg-delivery")).to_have_text("✓✓ Read")
    await expect(pane.locator(".msg-error")).to_have_count(0)
    await shot(page, "delivery-marks")
    await context.close()
