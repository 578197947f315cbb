"""The widget in headless Chromium shows the visitor's place in line under the messages,
updated in place as the line moves, and gone once an agent answers."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from shared.events import LineChanged, LinePlace, OutboundMessage, VisitorIdentity
from shared.ids import conversation_id_for, new_id
from shared.topics import VISITOR_LINE
from tests.channels.test_widget_browser import _on_customer_site, _session

pytestmark = pytest.mark.browser


def _line(chatbot_id: str, *places: tuple[str, int, str]) -> LineChanged:
    return LineChanged(chatbot_id=chatbot_id, places=[LinePlace(visitor_id=v, position=p, text=t) for v, p, t in places])


async def test_the_line_updates_as_the_visitor_ahead_is_answered(stack, browser):
    bot = await stack.add_chatbot()
    async with _on_customer_site(stack, browser, bot.chatbot_id) as (page, errors):
        me = (await _session(page, bot.chatbot_id))["visitor_id"]
        await page.locator(".hf-bubble").click()
        line = page.locator(".hf-line")
        await expect(line).to_be_hidden()

        await stack.publish(VISITOR_LINE.name, _line(
            bot.chatbot_id, ("v-ahead", 1, "You're number 1 in line."),
            (me, 2, "You're number 2 in line. Expected wait: about 4 minutes.")))
        await expect(line).to_have_text("You're number 2 in line. Expected wait: about 4 minutes.", timeout=15000)
        await expect(line).to_be_visible()
        # Under the messages, above the input.
        list_box = await page.locator(".hf-list").bounding_box()
        line_box = await line.bounding_box()
        assert line_box["y"] >= list_box["y"] + list_box["height"] - 1

        # The visitor ahead was answered: the same line, updated in place.
        await stack.publish(VISITOR_LINE.name, _line(
            bot.chatbot_id, (me, 1, "You're number 1 in line. Expected wait: about 2 minutes.")))
        await expect(line).to_have_text("You're number 1 in line. Expected wait: about 2 minutes.", timeout=15000)
        assert await page.locator(".hf-line").count() == 1

        # A reload shows it again, from what channels kept.
        await page.reload()
        await expect(page.locator("#handoff-widget")).to_have_attribute("data-ready", "1", timeout=15000)
        await page.locator(".hf-bubble").click()
        await expect(line).to_have_text("You're number 1 in line. Expected wait: about 2 minutes.", timeout=15000)

        # An agent answers: the line is gone.
        reply = OutboundMessage(chatbot_id=bot.chatbot_id, conversation_id=conversation_id_for(bot.chatbot_id, "web", me),
                                message_id=new_id(), channel="web", visitor=VisitorIdentity(external_id=me),
                                text="Hi, I'm Maria.", sender="agent", sender_name="Maria")
        await stack.outbound(reply)
        await expect(page.locator(f'[data-message-id="{reply.message_id}"]')).to_be_visible(timeout=15000)
        await expect(line).to_be_hidden()
        assert errors == []
