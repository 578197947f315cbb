"""The widget in headless Chromium, embedded by a page on another origin (as a customer's site
would): the visitor writes -> visitor.messages; an agent's reply appears with the agent's
name above it; the contact form asks for exactly the requested fields and its submission is
published; a reload replays the conversation."""

from __future__ import annotations

import contextlib
import time
import types

import pytest
from fastapi import FastAPI
from fastapi.responses import HTMLResponse
from playwright.async_api import expect

from shared.chatbots import WidgetLimits
from shared.events import OutboundMessage, VisitorIdentity
from shared.ids import conversation_id_for, new_id
from tests.harness import run_in_process

pytestmark = pytest.mark.browser


def _customer_site(channels_url: str, chatbot_id: str):
    def factory(_settings) -> FastAPI:
        app = FastAPI()

        @app.get("/")
        async def home() -> HTMLResponse:
            return HTMLResponse(f"""<!doctype html><html><head><title>Shop</title>
<style>div {{ color: red !important; font-size: 40px !important; }}</style></head>
<body><h1>Acme shop</h1>
<script src="{channels_url}/widget.js" data-chatbot="{chatbot_id}"></script></body></html>""")

        return app
    return factory


async def _session(page, chatbot_id: str) -> dict:
    """What the widget keeps in the page's localStorage: its token, visitor id and renewal time."""
    return await page.evaluate("key => JSON.parse(localStorage.getItem(key))", f"handoff:{chatbot_id}:session")


async def _keep_token(page, chatbot_id: str, token: str) -> None:
    """Put `token` in the widget's storage as if it were fresh (renewal not due for an hour)."""
    await page.evaluate("([key, token]) => localStorage.setItem(key, JSON.stringify({...JSON.parse("
                        "localStorage.getItem(key)), token: token, renew_at: Date.now() + 3600000}))",
                        [f"handoff:{chatbot_id}:session", token])


@contextlib.asynccontextmanager
async def _on_customer_site(stack, browser, chatbot_id: str):
    """A page of a customer's site (another origin) with the widget connected; page errors collected."""
    async with run_in_process("site", _customer_site(stack.url, chatbot_id), types.SimpleNamespace(http_port=0)) as site:
        context = await browser.new_context()
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        try:
            await page.goto(site.url + "/")
            await expect(page.locator("#handoff-widget")).to_have_attribute("data-ready", "1", timeout=15000)
            yield page, errors
        finally:
            await context.close()


async def test_visitor_writes_agent_replies_contact_form_and_reload(stack, browser):
    bot = await stack.add_chatbot()
    async with _on_customer_site(stack, browser, bot.chatbot_id) as (page, errors):
        host = page.locator("#handoff-widget")
        visitor_id = (await _session(page, bot.chatbot_id))["visitor_id"]
        assert visitor_id and visitor_id.startswith("v_") and len(visitor_id) == 18
        assert visitor_id not in await page.content()  # no longer in the page's DOM
        conv = conversation_id_for(bot.chatbot_id, "web", visitor_id)

        # The visitor opens the bubble and writes.
        await page.locator(".hf-bubble").click()
        await page.locator(".hf-input").fill("I want a refund")
        await page.locator(".hf-input").press("Enter")
        got = await stack.visitor_messages.wait_for(lambda r: r["conversation_id"] == conv)
        assert got[0]["type"] == "visitor.message_received" and got[0]["text"] == "I want a refund"
        assert got[0]["visitor"]["external_id"] == visitor_id

        # An agent answers, and the Human Handoff tool asks for name and e-mail.
        reply = OutboundMessage(chatbot_id=bot.chatbot_id, conversation_id=conv, message_id=new_id(),
                                channel="web", visitor=VisitorIdentity(external_id=visitor_id),
                                text="Sorry to hear that, let me check.", sender="agent", sender_name="Maria",
                                request_contact_fields=["name", "email"])
        await stack.outbound(reply)
        agent_msg = page.locator(f'.hf-msg.agent[data-message-id="{reply.message_id}"]')
        await expect(agent_msg).to_be_visible(timeout=15000)
        await expect(agent_msg.locator(".hf-sender")).to_have_text("Maria")
        await expect(agent_msg.locator(".hf-text")).to_have_text("Sorry to hear that, let me check.")
        # The name is above the message text.
        name_box = await agent_msg.locator(".hf-sender").bounding_box()
        text_box = await agent_msg.locator(".hf-text").bounding_box()
        assert name_box["y"] + name_box["height"] <= text_box["y"] + 1
        # The host page's aggressive styles do not leak into the shadow DOM.
        assert await agent_msg.locator(".hf-text").evaluate("e => getComputedStyle(e).fontSize") == "14px"

        form = page.locator(".hf-contact")
        await expect(form).to_be_visible()
        fields = await form.locator("input").evaluate_all("els => els.map(e => e.name)")
        assert fields == ["name", "email"]
        await form.locator('input[name="name"]').fill("Lin Chen")
        await form.locator('input[name="email"]').fill("lin@example.com")
        await form.locator(".hf-contact-send").click()
        await expect(form).to_be_hidden(timeout=15000)
        contact = await stack.visitor_messages.wait_for(
            lambda r: r["conversation_id"] == conv and r["type"] == "visitor.contact_submitted")
        assert contact[0]["contact"] == {"name": "Lin Chen", "email": "lin@example.com", "phone": None}

        # A reload keeps the identity and replays the conversation; the form stays done.
        await page.reload()
        await expect(host).to_have_attribute("data-ready", "1", timeout=15000)
        assert (await _session(page, bot.chatbot_id))["visitor_id"] == visitor_id
        texts = await page.locator(".hf-msg .hf-text").all_inner_texts()
        assert texts == ["I want a refund", "Sorry to hear that, let me check."]
        await expect(page.locator(".hf-contact")).to_be_hidden()

        # Later messages carry the name the visitor gave.
        await page.locator(".hf-bubble").click()
        await page.locator(".hf-input").fill("Thanks!")
        await page.locator(".hf-send").click()
        later = await stack.visitor_messages.wait_for(lambda r: r["conversation_id"] == conv and r.get("text") == "Thanks!")
        assert later[0]["visitor"]["name"] == "Lin Chen"
        assert errors == []


async def test_widget_test_page_embeds_the_widget(stack, browser):
    bot = await stack.add_chatbot()
    context = await browser.new_context()
    page = await context.new_page()
    try:
        await page.goto(f"{stack.url}/widget/test?chatbot={bot.chatbot_id}")
        await expect(page.locator("#handoff-widget")).to_have_attribute("data-ready", "1", timeout=15000)
        await expect(page.locator(".hf-bubble")).to_be_visible()
    finally:
        await context.close()


async def test_widget_reconnects_after_the_socket_drops(stack, browser):
    bot = await stack.add_chatbot()
    context = await browser.new_context()
    page = await context.new_page()
    try:
        await page.goto(f"{stack.url}/widget/test?chatbot={bot.chatbot_id}")
        host = page.locator("#handoff-widget")
        await expect(host).to_have_attribute("data-ready", "1", timeout=15000)
        visitor_id = (await _session(page, bot.chatbot_id))["visitor_id"]

        await stack.service.app.state.widget_api.hub.disconnect_all()  # e.g. an instance restarting
        await expect(host).not_to_have_attribute("data-ready", "1", timeout=5000)
        await expect(page.locator(".hf-status")).to_have_text("reconnecting…")
        await expect(host).to_have_attribute("data-ready", "1", timeout=15000)  # back, after the backoff

        reply = OutboundMessage(chatbot_id=bot.chatbot_id, conversation_id=conversation_id_for(bot.chatbot_id, "web", visitor_id),
                                message_id=new_id(), channel="web", visitor=VisitorIdentity(external_id=visitor_id),
                                text="Still here?", sender="ai")
        await stack.outbound(reply)
        await expect(page.locator(f'.hf-msg.ai[data-message-id="{reply.message_id}"] .hf-text')).to_have_text(
            "Still here?", timeout=15000)
        # AI messages carry no name label.
        assert await page.locator(f'.hf-msg[data-message-id="{reply.message_id}"] .hf-sender').count() == 0
    finally:
        await context.close()


async def test_widget_waits_as_long_as_retry_after_says_then_its_message_lands_once(stack, browser):
    """Embedded on another origin, the widget can read Retry-After (exposed by CORS) and waits
    at least that long before sending a refused message again, instead of its own shorter
    first backoff (0.5 s); the message then lands once."""
    bot = await stack.add_chatbot()
    inbound = stack.service.app.state.channels_api.inbound_visitor
    real = inbound.publisher
    tries: list[float] = []

    class RefusesOnce:
        async def publish(self, event):
            tries.append(time.monotonic())
            if len(tries) == 1:
                raise ConnectionError("broker unreachable")
            await real.publish(event)

    async with run_in_process("site", _customer_site(stack.url, bot.chatbot_id), types.SimpleNamespace(http_port=0)) as site:
        context = await browser.new_context()
        page = await context.new_page()
        inbound.publisher = RefusesOnce()
        try:
            await page.goto(site.url + "/")
            host = page.locator("#handoff-widget")
            await expect(host).to_have_attribute("data-ready", "1", timeout=15000)
            conv = conversation_id_for(bot.chatbot_id, "web", (await _session(page, bot.chatbot_id))["visitor_id"])
            await page.locator(".hf-bubble").click()
            await page.locator(".hf-input").fill("Hello after a hiccup")
            await page.locator(".hf-input").press("Enter")
            got = await stack.visitor_messages.wait_for(lambda r: r["conversation_id"] == conv)
            failed_marks = await page.locator(".hf-failed").count()
        finally:
            inbound.publisher = real
            await context.close()
    assert [r["text"] for r in got] == ["Hello after a hiccup"] and failed_marks == 0
    assert len(tries) == 2 and tries[1] - tries[0] >= 0.95  # Retry-After: 1, not the 0.5 s backoff


async def test_widget_renews_a_refused_token_and_keeps_the_conversation_across_reloads(stack, browser):
    """The stored token expired (the visitor was away for a day): the socket is refused
    (4401), the widget renews the token, the same visitor's history is replayed, and the
    renewed token is stored for the next reload."""
    bot = await stack.add_chatbot()
    tokens = stack.service.app.state.widget_api.tokens
    async with _on_customer_site(stack, browser, bot.chatbot_id) as (page, errors):
        host = page.locator("#handoff-widget")
        issued = await _session(page, bot.chatbot_id)
        conv = conversation_id_for(bot.chatbot_id, "web", issued["visitor_id"])
        await page.locator(".hf-bubble").click()
        await page.locator(".hf-input").fill("Where is my parcel?")
        await page.locator(".hf-input").press("Enter")
        await stack.visitor_messages.wait_for(lambda r: r["conversation_id"] == conv)

        # A day later: the kept token has expired, though the widget thinks it still fresh.
        lapsed = tokens.issue(bot.chatbot_id, now=time.time() - tokens.ttl_s - 3600, visitor_id=issued["visitor_id"])
        await _keep_token(page, bot.chatbot_id, lapsed.token)
        await page.reload()
        await expect(host).to_have_attribute("data-ready", "1", timeout=20000)
        texts = await page.locator(".hf-msg .hf-text").all_inner_texts()
        assert texts == ["Where is my parcel?"]
        renewed = await _session(page, bot.chatbot_id)
        assert renewed["visitor_id"] == issued["visitor_id"]
        assert renewed["token"] not in (lapsed.token, issued["token"])
        assert tokens.verify(renewed["token"], bot.chatbot_id).visitor_id == issued["visitor_id"]

        # The next reload uses the renewed token as it is; the visitor writes on, same conversation.
        await page.reload()
        await expect(host).to_have_attribute("data-ready", "1", timeout=15000)
        assert (await _session(page, bot.chatbot_id))["token"] == renewed["token"]
        assert await page.locator(".hf-msg .hf-text").all_inner_texts() == ["Where is my parcel?"]
        await page.locator(".hf-bubble").click()
        await page.locator(".hf-input").fill("Any news?")
        await page.locator(".hf-input").press("Enter")
        await stack.visitor_messages.wait_for(lambda r: r["conversation_id"] == conv and r.get("text") == "Any news?")
        assert errors == []


async def test_widget_shows_a_note_when_sending_too_fast_and_sends_after_retry_after(stack, browser):
    """Over the chatbot's per-visitor limit, the message waits with a friendly note for as long
    as Retry-After says, then lands once; nothing is marked as failed."""
    bot = await stack.add_chatbot(widget=WidgetLimits(messages_per_visitor="2 per 3 seconds"))
    async with _on_customer_site(stack, browser, bot.chatbot_id) as (page, errors):
        conv = conversation_id_for(bot.chatbot_id, "web", (await _session(page, bot.chatbot_id))["visitor_id"])
        await page.locator(".hf-bubble").click()
        for text in ("one", "two", "three"):
            await page.locator(".hf-input").fill(text)
            await page.locator(".hf-input").press("Enter")
        note = page.locator(".hf-msg.visitor .hf-note")
        await expect(note).to_have_count(1, timeout=10000)
        await expect(note).to_contain_text("too quickly")
        got = await stack.visitor_messages.wait_for(lambda r: r["conversation_id"] == conv, count=3, timeout=30)
        await expect(note).to_have_count(0, timeout=10000)
        failed = await page.locator(".hf-failed").count()
    assert sorted(r["text"] for r in got) == ["one", "three", "two"] and failed == 0 and errors == []


async def test_widget_starts_over_when_its_token_can_no_longer_be_renewed(stack, browser):
    """A token past the renewal grace period (or one already renewed elsewhere) is not renewed:
    the widget starts a new session, a new visitor with an empty conversation, and works on."""
    bot = await stack.add_chatbot()
    tokens = stack.service.app.state.widget_api.tokens
    async with _on_customer_site(stack, browser, bot.chatbot_id) as (page, errors):
        first = await _session(page, bot.chatbot_id)
        await page.locator(".hf-bubble").click()
        await page.locator(".hf-input").fill("Hello from long ago")
        await page.locator(".hf-input").press("Enter")
        await stack.visitor_messages.wait_for(
            lambda r: r["conversation_id"] == conversation_id_for(bot.chatbot_id, "web", first["visitor_id"]))
        ancient = tokens.issue(bot.chatbot_id, now=time.time() - tokens.ttl_s - tokens.grace_s - 60,
                               visitor_id=first["visitor_id"])
        await _keep_token(page, bot.chatbot_id, ancient.token)
        await page.reload()
        host = page.locator("#handoff-widget")
        await expect(host).to_have_attribute("data-ready", "1", timeout=20000)
        second = await _session(page, bot.chatbot_id)
        assert second["visitor_id"] != first["visitor_id"]
        assert await page.locator(".hf-msg").count() == 0
        await page.locator(".hf-bubble").click()
        await page.locator(".hf-input").fill("Hello again")
        await page.locator(".hf-input").press("Enter")
        await stack.visitor_messages.wait_for(
            lambda r: r["conversation_id"] == conversation_id_for(bot.chatbot_id, "web", second["visitor_id"]))
        assert errors == []
