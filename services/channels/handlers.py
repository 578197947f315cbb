"""Bus handlers: thin and typed; the work is in chatbots.py and outbound.py."""

from __future__ import annotations

import logging

from services.channels.chatbots import ChatbotTable, TelegramWebhooks
from services.channels.line import LineBoard
from services.channels.outbound import OutboundDelivery
from shared.events import ChatbotSettingsChanged, LineChanged, OutboundMessage

log = logging.getLogger("handoff.channels.handlers")


class ChannelsHandlers:
    def __init__(self, chatbots: ChatbotTable, webhooks: TelegramWebhooks, delivery: OutboundDelivery,
                 line: LineBoard) -> None:
        self.chatbots = chatbots
        self.webhooks = webhooks
        self.delivery = delivery
        self.line = line

    async def on_chatbot_settings(self, event: ChatbotSettingsChanged) -> None:
        """The table, and the Telegram webhook (registered once per token, url and secret:
        the replica applies each record again after the start-up read)."""
        if event.deleted:
            self.chatbots.remove(event.settings.chatbot_id)
        else:
            self.chatbots.put(event.settings)
            self.webhooks.schedule(event.settings)

    async def on_outbound(self, event: OutboundMessage) -> None:
        await self.delivery.deliver(event)

    async def on_line(self, event: LineChanged) -> None:
        await self.line.on_line(event)  # the widgets' places in line
