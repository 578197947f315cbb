"""The agent dashboard in Chromium against the real queue and gateway (in-process) on the
real broker, Redis and Mongo-wire server. Visitors are simulated by publishing what intake
publishes; summaries by publishing what the summarizer publishes."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from tests.dashboard.pages import ARTIFACTS, XSS, bot_id, row, shot, sign_in, stat

pytestmark = pytest.mark.browser

async def test_wrong_password_is_refused_with_the_servers_message(browser, stack):
    context = await browser.new_context(base_url=stack.url)
    page = await context.new_page()
    await page.goto("/login")
    await page.get_by_label("E-mail").fill("nobody@example.com")
    await page.get_by_label("Password").fill("wrong password here")
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_role("alert")).to_have_text("Invalid e-mail or password.")
    await context.close()


async def test_an_agent_works_through_a_handoff(browser, stack):
    bot, email = await stack.team("Demo Shop", "ada", "Ada")
    context, page = await sign_in(browser, stack, email)

    # Empty: the Handoff tab is where an agent of a chatbot with the tool on lands.
    await expect(page).to_have_url(re.compile(rf"#/{bot}/handoff$"))
    await expect(page.locator(".list-empty")).to_have_text(
        re.compile(r"No open handoffs\s*When a visitor asks for a human, they'll land here."))
    await expect(stat(page, "open")).to_have_text("0")
    await expect(stat(page, "oldest")).to_have_text("—")
    await expect(stat(page, "resolved")).to_have_text("0")
    await expect(page.locator(".pane")).to_contain_text("Select a handoff to reply")
    await expect(page.locator(".pane")).to_contain_text("The visitor's messages and summary appear here.")
    await expect(page).to_have_title("Handoff — Demo Shop")
    await expect(page.locator('#tabs [data-tab]')).to_have_text(["Conversations", "Handoff", "Tools"])
    await expect(page.locator("#connection")).to_be_hidden()
    await shot(page, "empty")

    # A visitor asks for a human: row, counts and title update live; the agent is alerted.
    grace = stack.visitor(bot, "Grace Hopper")
    await stack.visitor_writes(grace, "My order #1234 never arrived.")
    await stack.ai_writes(grace, "I'm sorry to hear that. Let me check.")
    await stack.visitor_writes(grace, "I want to talk to a person, please.")
    handoff_id = await stack.handoff(grace, "User asked for a person")
    grace_row = row(page, grace.conversation_id)
    await expect(grace_row.locator(".row-name")).to_have_text("Grace Hopper")
    await expect(grace_row.locator(".row-waiting")).to_have_text("just now")
    await expect(grace_row.locator(".row-reason")).to_have_text("User asked for a person")
    await expect(grace_row.locator(".channel")).to_have_text("Web widget")
    await expect(grace_row.locator(".row-count")).to_have_text("3 messages")
    await expect(stat(page, "open")).to_have_text("1")
    await expect(stat(page, "today")).to_have_text("1")
    await expect(stat(page, "oldest")).to_have_text("just now")
    await expect(page).to_have_title("(1) Handoff — Demo Shop")
    assert await page.evaluate("window.__notifications") == [
        {"title": "New handoff — Demo Shop", "body": "Grace Hopper: User asked for a person"}]
    assert await page.evaluate("window.__beeps") == 1

    # A second visitor whose name and words are markup: shown as text, nothing runs.
    mallory = await stack.handed_off(bot, XSS, channel="telegram", text=XSS, reason="Topic is a refund")
    mallory_row = row(page, mallory.conversation_id)
    await expect(mallory_row.locator(".row-name")).to_have_text(XSS)
    await expect(mallory_row.locator(".channel")).to_have_text("Telegram")
    await expect(page.locator(".handoff-row")).to_have_count(2)
    # Oldest first: Grace has waited longest.
    await expect(page.locator(".handoff-row .row-name")).to_have_text(["Grace Hopper", XSS])
    await expect(page).to_have_title("(2) Handoff — Demo Shop")
    assert await page.locator(".handoff-list img").count() == 0
    await shot(page, "busy")

    # Keyboard: into the list, arrows move, Enter opens.
    await page.locator(".handoff-row").first.focus()
    await page.keyboard.press("ArrowDown")
    await expect(mallory_row).to_be_focused()
    await page.keyboard.press("ArrowUp")
    await expect(grace_row).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page).to_have_url(re.compile(rf"#/{bot}/handoff\?c={grace.conversation_id}$"))
    pane = page.locator(".pane")
    await expect(pane.locator(".pane-name")).to_have_text("Grace Hopper")
    await expect(grace_row).to_have_attribute("aria-selected", "true")
    await expect(pane.locator(".msg")).to_have_count(3)
    await expect(pane.locator(".msg-visitor .msg-text")).to_have_text(
        ["My order #1234 never arrived.", "I want to talk to a person, please."])
    await expect(pane.locator(".msg-ai .msg-who")).to_have_text("AI")
    await expect(pane.get_by_role("button", name="Return to AI")).to_be_visible()
    await expect(pane.get_by_role("button", name="Close")).to_be_visible()
    await expect(pane.locator(".summary")).to_have_count(0)

    # Contact fields and the summary arrive later and appear by themselves.
    await stack.contact(grace, email="grace@example.com", phone="+1 555 0100")
    await expect(pane.locator('.contact dd[data-field="e-mail"]')).to_have_text("grace@example.com")
    await expect(pane.locator('.contact dd[data-field="phone"]')).to_have_text("+1 555 0100")
    await stack.summary(grace, handoff_id, "Order #1234 did not arrive; the visitor wants a person.")
    await expect(pane.locator(".summary")).to_contain_text("Order #1234 did not arrive; the visitor wants a person.")
    # A new visitor message lands in the open transcript.
    await stack.visitor_writes(grace, "Hello? Anyone there?")
    await expect(pane.locator(".msg-visitor .msg-text").last).to_have_text("Hello? Anyone there?")
    await expect(grace_row.locator(".row-count")).to_have_text("4 messages")
    await shot(page, "pane")

    # Reply: Send is disabled while empty; Enter sends; Shift+Enter is a new line.
    box = pane.get_by_placeholder("Type your reply...")
    send = pane.get_by_role("button", name="Send")
    await expect(send).to_be_disabled()
    await box.fill("   ")
    await expect(send).to_be_disabled()
    await box.fill("Hi Grace, I'm on it.")
    # A message arriving while the agent types re-renders the pane: focus and caret stay.
    await stack.visitor_writes(grace, "Still waiting...")
    await expect(pane.locator(".msg-visitor .msg-text").last).to_have_text("Still waiting...")
    await page.keyboard.press("Shift+Enter")
    await page.keyboard.type("Give me one minute.")
    await expect(send).to_be_enabled()
    await box.press("Enter")
    agent_msg = pane.locator(".msg-agent")
    await expect(agent_msg.locator(".msg-text")).to_have_text("Hi Grace, I'm on it.\nGive me one minute.")
    await expect(agent_msg.locator(".msg-who")).to_have_text("Ada")
    await expect(box).to_have_value("")
    await expect(page).to_have_url(re.compile(rf"#/{bot}/handoff\?c="))
    # What went to Grace: the AI's answer (sent by the queue, which owns the status), then Ada's.
    outbound = await stack.outbound_for(grace.conversation_id, 2)
    assert [(m["sender"], m["sender_name"], m["text"], m["conversation_id"]) for m in outbound] == [
        ("ai", None, "I'm sorry to hear that. Let me check.", grace.conversation_id),
        ("agent", "Ada", "Hi Grace, I'm on it.\nGive me one minute.", grace.conversation_id)]

    # Close: the row leaves, Resolved this week counts it, and we stay on the Handoff tab.
    await pane.get_by_role("button", name="Close").click()
    await expect(grace_row).to_have_count(0)
    await expect(stat(page, "open")).to_have_text("1")
    await expect(stat(page, "resolved")).to_have_text("1")
    await expect(page).to_have_url(re.compile(rf"#/{bot}/handoff"))
    await expect(pane.locator(".badge")).to_have_text("Closed")
    await expect(pane.get_by_role("button", name="Close")).to_have_count(0)
    await expect(pane.get_by_placeholder("Type your reply...")).to_have_count(0)

    # Reopen: back in the list with the two buttons.
    await pane.get_by_role("button", name="Reopen").click()
    await expect(grace_row).to_have_count(1)
    await expect(stat(page, "open")).to_have_text("2")
    await expect(pane.get_by_role("button", name="Return to AI")).to_be_visible()
    await expect(pane.get_by_role("button", name="Reopen")).to_have_count(0)

    # Return to AI: no buttons, no reply box, the row leaves.
    await pane.get_by_role("button", name="Return to AI").click()
    await expect(pane.locator(".badge")).to_have_text("Active")
    await expect(pane.locator(".pane-actions button")).to_have_count(0)
    await expect(pane.get_by_placeholder("Type your reply...")).to_have_count(0)
    await expect(grace_row).to_have_count(0)
    await expect(page).to_have_title("(1) Handoff — Demo Shop")

    # All → opens Conversations filtered to Needs Reply; working there keeps you there.
    await page.get_by_role("link", name="All conversations needing a reply").click()
    await expect(page).to_have_url(re.compile(rf"#/{bot}/conversations\?status=needs_reply$"))
    await expect(page.locator('.filter[aria-pressed="true"]')).to_have_text("Needs Reply")
    conv_rows = page.locator(".conv-row")
    await expect(conv_rows).to_have_count(1)
    await expect(conv_rows.locator(".cell-name")).to_have_text(XSS)
    await conv_rows.first.click()
    await expect(pane.locator(".pane-name")).to_have_text(XSS)
    await expect(pane.locator(".msg-visitor .msg-text")).to_have_text([XSS])
    await pane.get_by_placeholder("Type your reply...").fill("We can refund you.")
    await pane.get_by_role("button", name="Send").click()
    await expect(pane.locator(".msg-agent .msg-text")).to_have_text("We can refund you.")
    await pane.get_by_role("button", name="Close").click()
    await expect(pane.locator(".badge")).to_have_text("Closed")
    await expect(page).to_have_url(re.compile(rf"#/{bot}/conversations"))
    # All shows every conversation; search finds by message text.
    await page.locator('.filter[data-status="all"]').click()
    await expect(conv_rows).to_have_count(2)
    await page.get_by_label("Search conversations").fill("1234")
    await expect(conv_rows).to_have_count(1)
    await expect(conv_rows.locator(".cell-name")).to_have_text("Grace Hopper")
    await shot(page, "conversations")

    assert page.dialogs == [], "visitor text ran as script"
    assert page.errors == []
    await context.close()


async def test_the_handoff_tab_follows_the_tool_and_the_form_refuses_bad_input(browser, stack):
    bot, email = await stack.team("Tool Shop", "tools", "Tess", handoff=False)
    context, page = await sign_in(browser, stack, email)
    # A second dashboard of the same agent learns the change over the websocket only.
    watcher = await context.new_page()
    watcher_errors: list[str] = []
    watcher.on("pageerror", lambda exc: watcher_errors.append(str(exc)))
    await watcher.goto(f"/#/{bot}/conversations")
    await expect(watcher.locator("#connection")).to_be_hidden()

    # The tool is off: no Handoff tab, and its URL falls back to Conversations.
    await expect(page.locator("#tabs [data-tab]")).to_have_text(["Conversations", "Tools"])
    await page.goto(f"/#/{bot}/handoff")
    await expect(page).to_have_url(re.compile(rf"#/{bot}/conversations$"))

    await page.locator('#tabs [data-tab="tools"]').click()
    await expect(page).to_have_url(re.compile(rf"#/{bot}/tools/human-handoff$"))
    form = page.locator("form.tool-form")
    # Every setting with its default.
    await expect(form.get_by_label("Enabled")).not_to_be_checked()
    await expect(form.get_by_label("Handoff Conditions")).to_have_value(re.compile(r"^Hand the conversation over to a human when:"))
    await expect(form.get_by_label("Offline Message")).to_have_value(
        "Our team is currently offline. Please leave your message and we'll get back to you as soon as possible.")
    await expect(form.get_by_label("Enable Schedule")).not_to_be_checked()
    await expect(form.get_by_label("Start Time")).to_have_value("09:00")
    await expect(form.get_by_label("End Time")).to_have_value("17:00")
    await expect(form.get_by_label("Timezone")).to_have_value("UTC")
    days = form.locator('input[name="available_days"]')
    assert [await d.is_checked() for d in await days.all()] == [True] * 5 + [False] * 2
    assert [await c.is_checked() for c in await form.locator('input[name="contact_fields"]').all()] == [False] * 3

    # Saving without edits works.
    await form.get_by_role("button", name="Save").click()
    await expect(form.locator(".form-status")).to_have_text("Saved.")

    # Turning the tool on shows the tab here and in the other dashboard, without a reload.
    await form.get_by_label("Enabled").check()
    await form.get_by_role("button", name="Save").click()
    await expect(form.locator(".form-status")).to_have_text("Saved.")
    await expect(page.locator("#tabs [data-tab]")).to_have_text(["Conversations", "Handoff", "Tools"])
    await expect(watcher.locator("#tabs [data-tab]")).to_have_text(["Conversations", "Handoff", "Tools"])

    # Bad input: the server's clear message next to the form; nothing saved.
    await form.get_by_label("Enable Schedule").check()
    await form.get_by_label("Start Time").fill("18:00")
    await form.get_by_label("End Time").fill("09:00")
    await form.get_by_role("button", name="Save").click()
    await expect(form.get_by_role("alert")).to_have_text("End Time must be after Start Time.")
    await form.get_by_label("End Time").fill("20:00")
    await form.get_by_label("Timezone").fill("Mars/Base")
    await form.get_by_role("button", name="Save").click()
    await expect(form.get_by_role("alert")).to_have_text("Unknown timezone: 'Mars/Base'.")
    await form.get_by_label("Timezone").fill("Europe/Berlin")
    await form.locator('input[name="contact_fields"][value="email"]').check()
    await form.get_by_role("button", name="Save").click()
    await expect(form.locator(".form-status")).to_have_text("Saved.")
    await expect(form.get_by_role("alert")).to_be_hidden()
    await page.screenshot(path=str(ARTIFACTS / "dashboard-tools.png"), full_page=True)

    # What was saved is what the form shows after a reload.
    await page.reload()
    await expect(form.get_by_label("Timezone")).to_have_value("Europe/Berlin")
    await expect(form.get_by_label("Start Time")).to_have_value("18:00")
    await expect(form.get_by_label("Enable Schedule")).to_be_checked()
    await expect(form.locator('input[name="contact_fields"][value="email"]')).to_be_checked()

    # Turning it off: the tab disappears; a dashboard on the Handoff tab moves to Conversations.
    await watcher.locator('#tabs [data-tab="handoff"]').click()
    await expect(watcher).to_have_url(re.compile(rf"#/{bot}/handoff$"))
    await form.get_by_label("Enabled").uncheck()
    await form.get_by_role("button", name="Save").click()
    await expect(form.locator(".form-status")).to_have_text("Saved.")
    await expect(page.locator("#tabs [data-tab]")).to_have_text(["Conversations", "Tools"])
    await expect(watcher.locator("#tabs [data-tab]")).to_have_text(["Conversations", "Tools"])
    await expect(watcher).to_have_url(re.compile(rf"#/{bot}/conversations$"))
    assert page.errors == [] and watcher_errors == []
    await context.close()


async def test_an_agent_of_another_chatbot_sees_none_of_it(browser, stack):
    mine, theirs = bot_id(), bot_id()
    await stack.seed_chatbot(mine, "Mine")
    await stack.seed_chatbot(theirs, "Theirs")
    await stack.create_agent(f"a-{mine}@example.com", "Alice", [mine])
    await stack.create_agent(f"b-{theirs}@example.com", "Bob", [theirs])
    v = await stack.handed_off(mine, "Secret Customer", text="my account number is 42", reason="User asked for a person")

    ctx_a, alice = await sign_in(browser, stack, f"a-{mine}@example.com")
    await expect(row(alice, v.conversation_id)).to_have_count(1)

    ctx_b, bob = await sign_in(browser, stack, f"b-{theirs}@example.com")
    await expect(bob).to_have_url(re.compile(rf"#/{theirs}/handoff$"))
    await expect(bob.locator("#chatbot-name")).to_have_text("Theirs")
    await expect(bob.locator(".list-empty")).to_be_visible()
    # Asking for the other chatbot by URL lands on one's own.
    await bob.goto(f"/#/{mine}/handoff?c={v.conversation_id}")
    await expect(bob).to_have_url(re.compile(rf"#/{theirs}/handoff"))
    await expect(bob.locator(".pane-name")).to_have_count(0)
    # A new handoff in the other chatbot reaches Alice live, never Bob.
    w = await stack.handed_off(mine, "Another Customer", text="hello", reason="Topic is billing")
    await expect(row(alice, w.conversation_id)).to_have_count(1)
    await expect(stat(alice, "open")).to_have_text("2")
    await expect(bob.locator(".handoff-row")).to_have_count(0)
    await expect(stat(bob, "open")).to_have_text("0")
    assert await bob.evaluate("window.__notifications.length") == 0
    assert "Secret Customer" not in await bob.content()
    # And the API refuses Bob outright.
    response = await bob.request.get(f"/api/chatbots/{mine}/snapshot")
    assert response.status == 403
    await ctx_a.close()
    await ctx_b.close()


async def test_alerts_can_be_muted_and_notifications_are_asked_for_politely(browser, stack):
    bot, email = await stack.team("Quiet Shop", "mute", None)
    context, page = await sign_in(browser, stack, email, notifications=False)
    # Without a first name the agent is shown by e-mail.
    await expect(page.locator("#agent-name")).to_have_text(email)
    # Permission is not asked on load: a button offers it.
    assert await page.evaluate("Notification.permission") == "default"
    assert await page.evaluate("window.__permissionRequests") == 0
    await expect(page.get_by_role("button", name="Enable desktop notifications")).to_be_visible()
    await page.get_by_role("button", name="Enable desktop notifications").click()
    assert await page.evaluate("window.__permissionRequests") == 1

    mute = page.locator("#mute")
    await expect(mute).to_have_attribute("aria-pressed", "false")
    await mute.click()
    await expect(mute).to_have_attribute("aria-pressed", "true")
    v = await stack.handed_off(bot, "Muted Visitor", text="hi", reason="User asked for a person")
    await expect(row(page, v.conversation_id)).to_have_count(1)
    assert await page.evaluate("window.__beeps") == 0
    # Remembered for the agent: still muted after a reload.
    await page.reload()
    await expect(page.locator("#mute")).to_have_attribute("aria-pressed", "true")
    await page.locator("#mute").click()
    await expect(page.locator("#mute")).to_have_attribute("aria-pressed", "false")
    w = await stack.handed_off(bot, "Loud Visitor", text="hi", reason="User asked for a person")
    await expect(row(page, w.conversation_id)).to_have_count(1)
    assert await page.evaluate("window.__beeps") == 1
    await context.close()


async def test_phone_width_stacks_list_and_pane(browser, stack):
    bot, email = await stack.team("Pocket Shop", "phone", "Pia")
    v = await stack.handed_off(bot, "Small Screen", text="Can someone help me with my order?", reason="User asked for a person")
    context, page = await sign_in(browser, stack, email, viewport={"width": 390, "height": 844})
    await row(page, v.conversation_id).click()
    await expect(page.locator(".pane-name")).to_have_text("Small Screen")
    list_box = await page.locator(".list-panel").bounding_box()
    pane_box = await page.locator(".pane").bounding_box()
    assert pane_box["y"] >= list_box["y"] + list_box["height"] - 1, (list_box, pane_box)
    assert pane_box["x"] + pane_box["width"] <= 390 + 1
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, f"the page scrolls sideways ({width}px)"
    await shot(page, "phone")
    for tab in ("conversations", "tools"):
        await page.locator(f'#tabs [data-tab="{tab}"]').click()
        await expect(page.locator(".conv-row, .tool-form").first).to_be_visible()
        width = await page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the {tab} tab scrolls sideways ({width}px)"
        await shot(page, f"phone-{tab}")
    await context.close()
