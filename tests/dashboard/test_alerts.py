"""Alerts and the live connection's edges in Chromium against the real queue and gateway:
only a real new handoff alerts (not a visitor message or contact details on a row of a list
page not loaded yet, not the agent's own Reopen), a handoff in another chatbot of the agent
alerts too and its notification opens it, a silent socket is dropped and replaced, a 202
waits for its command_result over the websocket, and the login page only goes back to this
origin."""

from __future__ import annotations

import asyncio
import json
import re
from datetime import UTC, datetime

import pytest
from playwright.async_api import expect

from tests.dashboard.pages import bot_id, row, sign_in, stat, wait_until
from tests.dashboard.test_live import SocketControl, _has_row
from tests.support import eventually

pytestmark = pytest.mark.browser


async def test_only_a_real_new_handoff_alerts(browser, stack):
    bot, email = await stack.team("Alert Shop", "alert", "Al")
    first = await stack.handed_off(bot, "First Waiting", text="hello", reason="User asked for a person")
    await eventually(lambda: _has_row(stack, bot, first.conversation_id), timeout=20)
    second = await stack.handed_off(bot, "Second Waiting", text="hello", reason="User asked for a person")
    await eventually(lambda: _has_row(stack, bot, second.conversation_id), timeout=20)

    context, page = await sign_in(browser, stack, email)
    await page.add_init_script("window.HANDOFF_PAGE_SIZE = 1")
    await page.reload()
    await expect(stat(page, "open")).to_have_text("2")
    await expect(page.locator(".handoff-row .row-name")).to_have_text(["First Waiting"])
    await expect(page.locator("#connection")).to_be_hidden()

    # The second handoff is on a page not loaded yet: its visitor writing again and giving
    # contact details are not new handoffs.
    await stack.visitor_writes(second, "Is anybody there?")
    await stack.contact(second, email="second@example.com")
    # A real one: row and alert. Updates come in order, so the two above were seen first.
    third = await stack.handed_off(bot, "Third Arrives", text="hi", reason="Topic is a refund")
    await expect(row(page, third.conversation_id)).to_have_count(1)
    assert await page.evaluate("window.__notifications") == [
        {"title": "New handoff — Alert Shop", "body": "Third Arrives: Topic is a refund"}]
    assert await page.evaluate("window.__beeps") == 1

    # The agent's own Close then Reopen puts a row back: no alert for that.
    await row(page, first.conversation_id).click()
    pane = page.locator(".pane")
    await pane.get_by_role("button", name="Close").click()
    await expect(row(page, first.conversation_id)).to_have_count(0)
    await pane.get_by_role("button", name="Reopen").click()
    await expect(row(page, first.conversation_id)).to_have_count(1)
    await expect(pane.locator(".notice")).to_have_text("Conversation reopened.")
    fourth = await stack.handed_off(bot, "Fourth Arrives", text="hi", reason="User asked for a person")
    await expect(row(page, fourth.conversation_id)).to_have_count(1)
    assert [n["body"] for n in await page.evaluate("window.__notifications")] == [
        "Third Arrives: Topic is a refund", "Fourth Arrives: User asked for a person"]
    assert await page.evaluate("window.__beeps") == 2
    assert page.errors == []
    await context.close()


async def test_a_handoff_in_another_chatbot_alerts_and_its_notification_opens_it(browser, stack):
    alpha, beta = bot_id(), bot_id()
    await stack.seed_chatbot(alpha, "Alpha Store")
    await stack.seed_chatbot(beta, "Beta Store")
    email = f"both-{alpha}@example.com"
    await stack.create_agent(email, "Bo", [alpha, beta])
    context, page = await sign_in(browser, stack, email)
    await page.get_by_label("Chatbot", exact=True).select_option(label="Alpha Store")
    await expect(page).to_have_url(re.compile(rf"#/{alpha}/handoff$"))
    await expect(page.locator("#connection")).to_be_hidden()

    v = await stack.handed_off(beta, "Beta Caller", channel="telegram", text="hello beta", reason="Topic is billing")
    await wait_until(page, "window.__notifications.length === 1")
    assert await page.evaluate("window.__notifications") == [
        {"title": "New handoff — Beta Store", "body": "Beta Caller: Topic is billing"}]
    assert await page.evaluate("window.__beeps") == 1
    await expect(page.locator("#announcer")).to_have_text("New handoff in Beta Store: Beta Caller — Topic is billing")
    # Alpha's screen is not touched.
    await expect(page.locator(".list-empty")).to_be_visible()
    await expect(stat(page, "open")).to_have_text("0")

    # Clicking the notification opens the conversation in its own chatbot.
    await page.evaluate("window.__notificationObjects[0].onclick()")
    await expect(page).to_have_url(re.compile(rf"#/{beta}/handoff\?c={v.conversation_id}$"))
    await expect(page.locator(".pane .pane-name")).to_have_text("Beta Caller")
    await expect(row(page, v.conversation_id)).to_have_attribute("aria-selected", "true")
    await expect(stat(page, "open")).to_have_text("1")
    # Back on Alpha, Alpha's handoffs still alert (and Beta's too).
    await page.get_by_label("Chatbot", exact=True).select_option(label="Alpha Store")
    a = await stack.handed_off(alpha, "Alpha Caller", text="hello alpha", reason="User asked for a person")
    await expect(row(page, a.conversation_id)).to_have_count(1)
    await wait_until(page, "window.__notifications.length === 2")
    assert (await page.evaluate("window.__notifications"))[1]["title"] == "New handoff — Alpha Store"
    assert page.errors == []
    await context.close()


async def test_a_silent_socket_is_dropped_and_replaced(browser, stack):
    bot, email = await stack.team("Quiet Line", "silent", "Si")
    control = SocketControl()
    context, page = await sign_in(browser, stack, email, ws_route=control.route)
    await page.clock.install(time=datetime.now(UTC))
    await page.reload()
    await expect(page.locator("#connection")).to_be_hidden()
    sockets = len(control.open)

    # The socket stays open but nothing comes through any more (no pong, no update).
    control.frozen = True
    await page.clock.run_for(44_000)
    await expect(page.locator("#connection")).to_be_hidden()
    assert len(control.open) == sockets
    await page.clock.run_for(17_000)  # the ping at 60 s finds it silent for more than 45 s
    await expect(page.locator("#connection")).to_have_text("Reconnecting…")
    await eventually(lambda: _more(control, sockets), timeout=10)

    # Frames flow again: the new socket answers and the page is live.
    control.frozen = False
    await page.clock.run_for(21_000)  # its next ping gets a pong
    await expect(page.locator("#connection")).to_be_hidden()
    v = await stack.handed_off(bot, "After The Silence", text="hi", reason="User asked for a person")
    await expect(row(page, v.conversation_id)).to_have_count(1)
    assert page.errors == []
    await context.close()


async def test_handoffs_the_page_could_not_hear_about_still_alert_once(browser, stack):
    alpha, beta = bot_id(), bot_id()
    await stack.seed_chatbot(alpha, "Alpha Store")
    await stack.seed_chatbot(beta, "Beta Store")
    email = f"away-{alpha}@example.com"
    await stack.create_agent(email, "Aw", [alpha, beta])
    # Waiting before the page opened: on the list, not news.
    before = await stack.handed_off(alpha, "Already Waiting", text="hello", reason="User asked for a person")
    await eventually(lambda: _has_row(stack, alpha, before.conversation_id), timeout=20)
    control = SocketControl()
    context, page = await sign_in(browser, stack, email, ws_route=control.route)
    await page.get_by_label("Chatbot", exact=True).select_option(label="Alpha Store")
    await expect(row(page, before.conversation_id)).to_have_count(1)
    await expect(page.locator("#connection")).to_be_hidden()

    # Every update about this handoff is lost on the way; the next update shows the gap.
    lost = stack.visitor(alpha, "Lost On The Way")
    control.drop_about.add(lost.conversation_id)
    await stack.visitor_writes(lost, "hello?")
    await stack.handoff(lost, "Topic is a refund")
    await eventually(lambda: _has_row(stack, alpha, lost.conversation_id), timeout=20)
    await stack.visitor_writes(before, "still there")
    await wait_until(page, "window.__notifications.length === 1")
    assert await page.evaluate("window.__notifications") == [
        {"title": "New handoff — Alpha Store", "body": "Lost On The Way: Topic is a refund"}]
    assert await page.evaluate("window.__beeps") == 1
    await expect(page.locator("#announcer")).to_have_text("New handoff: Lost On The Way — Topic is a refund")

    # The socket drops and the server cannot be reached; handoffs arrive in both chatbots.
    control.blocked = True
    await control.drop_all()
    await expect(page.locator("#connection")).to_have_text("Reconnecting…")
    away = [stack.visitor(alpha, "Away Alpha"), stack.visitor(beta, "Away Beta One"), stack.visitor(beta, "Away Beta Two")]
    for v in away:
        await stack.visitor_writes(v, "anyone?")
        await stack.handoff(v, "User asked for a person")
    for v in away:
        await eventually(lambda v=v: _has_row(stack, v.chatbot_id, v.conversation_id), timeout=20)

    # Back: each missed handoff alerts once (one beep per chatbot); what was alerted or was
    # waiting before the page opened does not alert again.
    control.blocked = False
    await expect(page.locator("#connection")).to_be_hidden(timeout=20000)
    await wait_until(page, "window.__notifications.length >= 4")
    alerted = await page.evaluate("window.__notifications")
    assert sorted((n["title"], n["body"]) for n in alerted[1:]) == [
        ("New handoff — Alpha Store", "Away Alpha: User asked for a person"),
        ("New handoff — Beta Store", "Away Beta One: User asked for a person"),
        ("New handoff — Beta Store", "Away Beta Two: User asked for a person"),
    ]
    assert await page.evaluate("window.__beeps") == 3
    # Live again: the next one alerts as usual, and only it.
    await stack.handed_off(alpha, "Live Again", text="hi", reason="User asked for a person")
    await wait_until(page, "window.__notifications.length >= 5")
    assert [n["body"] for n in await page.evaluate("window.__notifications")][4:] == ["Live Again: User asked for a person"]
    assert await page.evaluate("window.__beeps") == 4
    assert page.errors == []
    await context.close()


async def _more(control: SocketControl, than: int) -> bool:
    return len(control.open) > than


async def test_a_202_waits_for_the_command_result_on_the_websocket(browser, stack):
    bot, email = await stack.team("Slow Queue Shop", "slowq", "Sal")
    v = await stack.handed_off(bot, "Patient Person", text="hello", reason="User asked for a person")
    context, page = await sign_in(browser, stack, email)
    await row(page, v.conversation_id).click()
    pane = page.locator(".pane")
    await expect(pane.get_by_role("button", name="Close")).to_be_visible()
    csrf = (await (await page.request.get("/api/me")).json())["csrf_token"]

    # The gateway answers 202 (the queue was slow) only after the command_result has already
    # reached the page over the websocket.
    async def late_202(route) -> None:
        answer = await route.fetch()
        assert answer.status == 200, await answer.text()
        await asyncio.sleep(0.5)
        body = json.loads(route.request.post_data)
        await route.fulfill(status=202, json={"command_id": body["command_id"], "status": "pending"})

    await page.route(re.compile(r"/close$"), late_202)
    await pane.get_by_role("button", name="Close").click()
    await expect(pane.locator(".notice")).to_have_text("Conversation closed.", timeout=8000)
    await expect(pane.locator(".badge")).to_have_text("Closed")

    # The usual order: 202 first, the queue applies the command later and its result comes
    # over the websocket.
    async def early_202(route) -> None:
        body = json.loads(route.request.post_data)
        await route.fulfill(status=202, json={"command_id": body["command_id"], "status": "pending"})
        await asyncio.sleep(0.5)
        applied = await context.request.post(route.request.url, data=body, headers={"X-CSRF-Token": csrf})
        assert applied.status == 200, await applied.text()

    await page.route(re.compile(r"/reopen$"), early_202)
    await pane.get_by_role("button", name="Reopen").click()
    await expect(pane.locator(".notice")).to_have_text("Conversation reopened.", timeout=8000)
    await expect(pane.locator(".badge")).to_have_text("Needs reply")
    assert await page.evaluate("window.handoffDashboard.waitingCommandResults()") == 0
    assert page.errors == []
    await context.close()


async def test_only_the_update_that_starts_a_waiting_period_is_a_new_handoff(module_page):
    cases = await module_page.evaluate("""async () => {
      const { isNewHandoff } = await import("/static/js/alerts.js");
      const at = "2026-11-25T03:24:29.123456Z";
      const later = "2026-11-25T03:25:01.5Z";
      const row = { conversation_id: "c1", chatbot_id: "b", display_name: "V", waiting_since: at, channel: "web", message_count: 1 };
      const conv = (extra) => ({ conversation_id: "c1", status: "handed_off", waiting_since: at, updated_at: at, ...extra });
      return {
        handoff: isNewHandoff({ row_upserted: row, conversation: conv() }),
        message: isNewHandoff({ row_upserted: row, conversation: conv({ updated_at: later }), message: { message_id: "m" } }),
        messageSameInstant: isNewHandoff({ row_upserted: row, conversation: conv(), message: { message_id: "m" } }),
        contact: isNewHandoff({ row_upserted: row, conversation: conv({ updated_at: later }) }),
        noRow: isNewHandoff({ conversation: conv() }),
        closed: isNewHandoff({ row_upserted: row, conversation: conv({ status: "closed" }) }),
      };
    }""")
    assert cases == {"handoff": True, "message": False, "messageSameInstant": False, "contact": False,
                     "noRow": False, "closed": False}
