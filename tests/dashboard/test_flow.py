"""The agent dashboard in Chromium against the real queue and gateway (in-process) on the
real broker, Redis and Mongo-wire server. Visitors are simulated by publishing what intake
publishes; summaries by publishing what the summarizer publishes."""

from __future__ import annotations

import re
import uuid

import pytest
from playwright.async_api import Page, expect

from tests.conftest import Isolated
from tests.dashboard.conftest import ARTIFACTS
from tests.dashboard.stack import PASSWORD, Stack, running_stack
from tests.support import read_topic

pytestmark = pytest.mark.browser

XSS = "<img src=x onerror=alert(1)>"

# Records desktop notifications and beeps (WebAudio oscillators) the page makes.
RECORD_ALERTS = """
  window.__notifications = [];
  window.__beeps = 0;
  const RealNotification = window.Notification;
  class RecordingNotification extends RealNotification {
    constructor(title, options) { super(title, options); window.__notifications.push({ title, body: options && options.body }); }
  }
  Object.defineProperty(RecordingNotification, 'permission', { get: () => RealNotification.permission });
  RecordingNotification.requestPermission = (...a) => RealNotification.requestPermission(...a);
  window.Notification = RecordingNotification;
  const realOsc = AudioContext.prototype.createOscillator;
  AudioContext.prototype.createOscillator = function () { window.__beeps += 1; return realOsc.call(this); };
"""


@pytest.fixture(scope="module")
async def stack(infra):
    async with running_stack(Isolated(infra, uuid.uuid4().hex[:8])) as running:
        yield running


def bot_id() -> str:
    return f"shop{uuid.uuid4().hex[:6]}"


async def sign_in(browser, stack: Stack, email: str, *, notifications: bool = True, viewport=None):
    context = await browser.new_context(viewport=viewport or {"width": 1366, "height": 860}, base_url=stack.url)
    if notifications:
        await context.grant_permissions(["notifications"], origin=stack.url)
    await context.add_init_script(RECORD_ALERTS)
    page = await context.new_page()
    page.dialogs = []
    page.errors = []
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    await page.goto("/")
    await expect(page).to_have_url(re.compile(r"/login"))
    await page.get_by_label("E-mail").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.locator("#agent-name")).not_to_be_empty()
    return context, page


def stat(page: Page, key: str):
    return page.locator(f'[data-stat="{key}"] .stat-value')


def row(page: Page, cid: str):
    return page.locator(f'.handoff-row[data-cid="{cid}"]')


async def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


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
    bot = bot_id()
    await stack.seed_chatbot(bot, "Demo Shop")
    email = f"ada-{bot}@example.com"
    await stack.create_agent(email, "Ada", [bot])
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
    await expect(stat(page, "oldest")).to_have_text("0m")
    await expect(page).to_have_title("(1) Handoff — Demo Shop")
    assert await page.evaluate("window.__notifications") == [
        {"title": "New handoff — Demo Shop", "body": "Grace Hopper: User asked for a person"}]
    assert await page.evaluate("window.__beeps") == 1

    # A second visitor whose name and words are markup: shown as text, nothing runs.
    mallory = stack.visitor(bot, XSS, channel="telegram")
    await stack.visitor_writes(mallory, XSS)
    await stack.handoff(mallory, "Topic is a refund")
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
    await box.press("Shift+Enter")
    await box.type("Give me one minute.")
    await expect(send).to_be_enabled()
    await box.press("Enter")
    agent_msg = pane.locator(".msg-agent")
    await expect(agent_msg.locator(".msg-text")).to_have_text("Hi Grace, I'm on it.\nGive me one minute.")
    await expect(agent_msg.locator(".msg-who")).to_have_text("Ada")
    await expect(box).to_have_value("")
    await expect(page).to_have_url(re.compile(rf"#/{bot}/handoff\?c="))
    outbound = await read_topic(stack.iso.infra.kafka_bootstrap, stack.topic_prefix + "outbound.messages", 1)
    assert [(m["sender"], m["sender_name"], m["text"], m["conversation_id"]) for m in outbound] == [
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

    assert page.dialogs == [], "visitor text ran as script"
    assert page.errors == []
    await context.close()
