"""Channels' deliveries on its /metrics, by platform and outcome: a web reply and a Telegram
reply sent, a Telegram reply the platform refused (failed)."""

from __future__ import annotations

import pytest

from shared.events import OutboundMessage, VisitorIdentity
from shared.ids import conversation_id_for, new_id
from tests.fakes.telegram_api import Answer
from tests.metrics_support import scrape, value

pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

DELIVERIES = "handoff_channels_deliveries_total"


def _outbound(chatbot_id: str, channel: str, visitor_id: str, text: str) -> OutboundMessage:
    return OutboundMessage(chatbot_id=chatbot_id, conversation_id=conversation_id_for(chatbot_id, channel, visitor_id),
                           message_id=new_id(), channel=channel, visitor=VisitorIdentity(external_id=visitor_id),
                           text=text, sender="agent", sender_name="Maria")


async def test_deliveries_are_counted_by_platform_and_outcome(stack):
    n = new_id()[:6]
    bot = await stack.add_chatbot(telegram_bot_token=f"7123{n[:2].encode().hex()}:AAFakeMetricsToken{n}",
                                  telegram_webhook_secret=f"metrics-secret-{n}")
    before = await scrape(stack.url)
    web = _outbound(bot.chatbot_id, "web", "wv-1", "Hello on the web")
    telegram = _outbound(bot.chatbot_id, "telegram", "8181", "Hello on Telegram")
    for event in (web, telegram):
        await stack.outbound(event)
        [status] = await stack.delivery_status.wait_for(lambda r, e=event: r["message_id"] == e.message_id)
        assert status["status"] == "sent"
    stack.telegram.script("sendMessage", Answer(400, description="Bad Request: chat not found"))
    refused = _outbound(bot.chatbot_id, "telegram", "8282", "Nobody there")
    await stack.outbound(refused)
    [status] = await stack.delivery_status.wait_for(lambda r: r["message_id"] == refused.message_id)
    assert status["status"] == "failed"
    after = await scrape(stack.url)

    def delta(platform: str, outcome: str) -> float:
        return (value(after, DELIVERIES, platform=platform, outcome=outcome)
                - value(before, DELIVERIES, platform=platform, outcome=outcome))

    assert delta("web", "sent") == 1
    assert delta("telegram", "sent") == 1
    assert delta("telegram", "failed") == 1
    assert delta("web", "failed") == 0
