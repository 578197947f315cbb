"""The dashboard's live connection in Chromium against the real gateway and queue: a missed
update (a gap in seq) and a dropped websocket both end in a resync from the snapshot; the
page shows "Reconnecting…" meanwhile. Also: errors from the server are shown, and a retried
click reuses its command id."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from playwright.async_api import expect

from tests.dashboard.pages import ARTIFACTS, row, sign_in, stat
from tests.dashboard.stack import PASSWORD
from tests.support import eventually

pytestmark = pytest.mark.browser


class SocketControl:
    """Sits between the page and the gateway's /ws (Playwright's WebSocket routing)."""

    def __init__(self) -> None:
        self.blocked = False  # refuse new connections (the server seems down)
        self.frozen = False  # keep the socket but forward nothing to the page
        self.drop_about: set[str] = set()  # drop update frames about these conversations
        self.dropped = 0
        self.open: list = []

    async def route(self, ws) -> None:
        if self.blocked:
            await ws.close()
            return
        server = ws.connect_to_server()
        self.open.append((ws, server))

        def to_page(message) -> None:
            if self.frozen:
                self.dropped += 1
                return
            frame = json.loads(message) if isinstance(message, str) else {}
            # A coalesced "updates" frame is dropped whole when one of its updates is about them.
            updates = [frame.get("update") or {}] if frame.get("type") == "update" else frame.get("updates") or []
            about = {u.get("conversation_id") for u in updates} | {
                (u.get("row_upserted") or {}).get("conversation_id") for u in updates}
            if frame.get("type") in ("update", "updates") and about & self.drop_about:
                self.dropped += 1
                return
            ws.send(message)

        server.on_message(to_page)

    async def drop_all(self) -> None:
        while self.open:
            ws, server = self.open.pop()
            await server.close()
            await ws.close()


async def test_a_missed_update_and_a_dropped_socket_resync_from_the_snapshot(browser, stack):
    bot, email = await stack.team("Live Shop", "live", "Lin")
    control = SocketControl()
    context, page = await sign_in(browser, stack, email, ws_route=control.route)
    await expect(page.locator("#connection")).to_be_hidden()

    # Every update about the first visitor is lost on the way: the next update shows a gap.
    first = stack.visitor(bot, "Lost Update")
    control.drop_about.add(first.conversation_id)
    await stack.visitor_writes(first, "hello")
    await stack.handoff(first, "User asked for a person")
    await eventually(lambda: _has_row(stack, bot, first.conversation_id), timeout=20)
    second = await stack.handed_off(bot, "Next Update", text="hello", reason="User asked for a person")
    await expect(row(page, second.conversation_id)).to_have_count(1)
    await expect(row(page, first.conversation_id)).to_have_count(1)  # only a resync can bring it
    assert control.dropped >= 1
    await expect(stat(page, "open")).to_have_text("2")

    # The socket drops and the server cannot be reached for a while.
    control.blocked = True
    await control.drop_all()
    await expect(page.locator("#connection")).to_have_text("Reconnecting…")
    await expect(page.locator("#connection")).to_be_visible()
    third = await stack.handed_off(bot, "While Away", text="anyone?", reason="User asked for a person")
    await eventually(lambda: _has_row(stack, bot, third.conversation_id), timeout=20)
    await expect(row(page, third.conversation_id)).to_have_count(0)
    await page.screenshot(path=str(ARTIFACTS / "dashboard-reconnecting.png"))

    # Back: reconnect on its own, resync, and carry on live.
    control.blocked = False
    await expect(row(page, third.conversation_id)).to_have_count(1, timeout=20000)
    await expect(page.locator("#connection")).to_be_hidden()
    await expect(stat(page, "open")).to_have_text("3")
    await expect(page).to_have_title("(3) Handoff — Live Shop")
    fourth = await stack.handed_off(bot, "Live Again", text="hi", reason="User asked for a person")
    await expect(row(page, fourth.conversation_id)).to_have_count(1)
    assert page.errors == []
    await context.close()


async def _has_row(stack, bot: str, cid: str) -> bool:
    snapshot = await stack.snapshot(bot)
    return any(r["conversation_id"] == cid for r in snapshot["handoffs"]["items"])


async def test_a_refused_reply_shows_the_servers_reason(browser, stack):
    bot, email = await stack.team("Race Shop", "race", "Ray")
    v = await stack.handed_off(bot, "Raced Visitor", text="help", reason="User asked for a person")
    control = SocketControl()
    context, page = await sign_in(browser, stack, email, ws_route=control.route)
    await row(page, v.conversation_id).click()
    pane = page.locator(".pane")
    await expect(pane.get_by_role("button", name="Close")).to_be_visible()

    # A colleague closes it; this dashboard does not hear about it in time.
    control.frozen = True
    colleague = await browser.new_context(base_url=stack.url)
    login = await colleague.request.post("/api/login", data={"email": email, "password": PASSWORD})
    csrf = (await login.json())["csrf_token"]
    closed = await colleague.request.post(
        f"/api/chatbots/{bot}/conversations/{v.conversation_id}/close",
        data={"command_id": "colleague-close-1"}, headers={"X-CSRF-Token": csrf})
    assert closed.status == 200, await closed.text()

    await pane.get_by_placeholder("Type your reply...").fill("Sorry for the wait!")
    await pane.get_by_placeholder("Type your reply...").press("Enter")
    await expect(pane.get_by_role("alert")).to_have_text("Can only reply to handed-off conversations.")
    # What was typed is kept.
    await expect(pane.get_by_placeholder("Type your reply...")).to_have_value("Sorry for the wait!")
    await colleague.close()
    await context.close()


async def test_a_retried_click_reuses_its_command_id(browser, stack):
    bot, email = await stack.team("Retry Shop", "retry", "Rita")
    v = await stack.handed_off(bot, "Patient Visitor", text="hello?", reason="User asked for a person")
    context, page = await sign_in(browser, stack, email)
    await row(page, v.conversation_id).click()
    pane = page.locator(".pane")

    sent: list[dict] = []

    async def flaky(route) -> None:
        sent.append({"body": json.loads(route.request.post_data), "csrf": route.request.headers.get("x-csrf-token")})
        if len(sent) == 1:
            await route.abort("connectionreset")  # the network fails before the answer
        else:
            await route.continue_()

    await page.route(re.compile(r"/reply$"), flaky)
    await pane.get_by_placeholder("Type your reply...").fill("First answer")
    await pane.get_by_role("button", name="Send").click()
    await expect(pane.get_by_role("alert")).to_contain_text("Could not reach the server")
    await pane.get_by_role("button", name="Retry").click()
    await expect(pane.locator(".msg-agent .msg-text")).to_have_text(["First answer"])
    # While a reply is on its way, Send is disabled (no double send).
    release = asyncio.Event()

    async def slow(route) -> None:
        sent.append({"body": json.loads(route.request.post_data), "csrf": route.request.headers.get("x-csrf-token")})
        await release.wait()
        await route.continue_()

    await page.unroute(re.compile(r"/reply$"))
    await page.route(re.compile(r"/reply$"), slow)
    await pane.get_by_placeholder("Type your reply...").fill("Second answer")
    await pane.get_by_placeholder("Type your reply...").press("Enter")
    await expect(pane.locator('button[data-action="send"]')).to_have_text("Sending…")
    await expect(pane.locator('button[data-action="send"]')).to_be_disabled()
    await pane.locator('button[data-action="send"]').click(force=True)
    await pane.get_by_placeholder("Type your reply...").press("Enter")
    release.set()
    await expect(pane.locator(".msg-agent .msg-text")).to_have_text(["First answer", "Second answer"])

    ids = [s["body"]["command_id"] for s in sent]
    assert len(ids) == 3 and ids[0] == ids[1] != ids[2], ids
    assert all(re.fullmatch(r"[0-9a-f-]{36}", i) for i in ids)
    me = await page.request.get("/api/me")
    assert {s["csrf"] for s in sent} == {(await me.json())["csrf_token"]}
    await context.close()


async def test_a_failed_load_is_shown_and_retried(browser, stack):
    bot, email = await stack.team("Flaky Shop", "flaky", "Flo")
    v = await stack.handed_off(bot, "Still Here", text="hello", reason="User asked for a person")
    await eventually(lambda: _has_row(stack, bot, v.conversation_id), timeout=20)
    context, page = await sign_in(browser, stack, email)
    await expect(row(page, v.conversation_id)).to_have_count(1)

    failures = {"left": 2}

    async def queue_down(route) -> None:
        if failures["left"] > 0:
            failures["left"] -= 1
            await route.fulfill(status=503, json={"detail": "The queue is not answering."})
        else:
            await route.continue_()

    await page.route(re.compile(r"/api/chatbots/[^/]+/snapshot"), queue_down)
    await page.reload()
    banner = page.locator("#sync-error")
    await expect(banner).to_have_text("Could not load the latest handoffs: The queue is not answering. Retrying…")
    await expect(banner).to_be_hidden(timeout=10000)
    await expect(row(page, v.conversation_id)).to_have_count(1)
    await expect(stat(page, "open")).to_have_text("1")
    assert failures["left"] == 0
    await context.close()
