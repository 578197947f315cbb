"""The place in line end to end, in headless Chromium: the widget's visitor is handed off
behind another visitor (queue and channels on the real broker, this test acting as intake
and as the agent), sees "number 2", then "number 1" when the one ahead is answered, and the
line is gone when an agent answers them."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from shared.chatbots import ChatbotSettings, HumanHandoffSettings
from shared.topics import AGENT_COMMANDS, CONVERSATION_STATE
from tests.channels.test_widget_browser import _on_customer_site, _session
from tests.queue.support import command, conv_id, queue_under_test
from tests.support import eventually

pytestmark = pytest.mark.browser


async def test_the_widget_shows_its_place_as_the_line_moves(stack, browser):
    async with queue_under_test(stack.iso) as q:
        bot = "linebot"
        await q.queue.chatbots.save(ChatbotSettings(chatbot_id=bot, name="Line bot",
                                                    human_handoff=HumanHandoffSettings(enabled=True)))
        await eventually(lambda: _known(stack, bot))
        await q.hand_off(bot, "v-ahead")  # someone waits already
        async with _on_customer_site(stack, browser, bot) as (page, errors):
            me = (await _session(page, bot))["visitor_id"]
            await page.locator(".hf-bubble").click()
            await page.locator(".hf-input").fill("I need a person")
            await page.locator(".hf-input").press("Enter")
            turn = (await q.seen.wait_for("ai.turns", lambda r: r["conversation_id"] == conv_id(bot, me)))[0]
            await q.ai_answers(turn, "I'm connecting you with a member of our team.", handoff="asked")
            await q.seen.wait_for(CONVERSATION_STATE, lambda r: r["conversation_id"] == conv_id(bot, me))
            line = page.locator(".hf-line")
            # No answered handoff yet: the position only, never a made-up wait.
            await expect(line).to_have_text("You're number 2 in line.", timeout=15000)

            ahead = command(bot, conv_id(bot, "v-ahead"), "reply", "Hello, how can I help?")
            await q.send(AGENT_COMMANDS, ahead)
            await expect(line).to_have_text("You're number 1 in line.", timeout=15000)

            mine = command(bot, conv_id(bot, me), "reply", "Hi, I'm here now.")
            await q.send(AGENT_COMMANDS, mine)
            await expect(page.locator(".hf-msg.agent .hf-text")).to_have_text("Hi, I'm here now.", timeout=15000)
            await expect(line).to_be_hidden()
            assert errors == []


async def _known(stack, chatbot_id: str) -> bool:
    return stack.handlers.chatbots.get(chatbot_id) is not None
