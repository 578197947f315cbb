"""The queue's chatbots: Mongo `chatbots` is the record, this process keeps a cache (for
each chatbot's timezone and AI profile), and every change is published on
`chatbot.settings` for the other services' replicas."""

from __future__ import annotations

from services.queue.store import QueueRecord
from shared.bus import EventPublisher
from shared.chatbots import ChatbotSettings
from shared.events import ChatbotSettingsChanged


class ChatbotCatalog:
    def __init__(self, record: QueueRecord, settings_out: EventPublisher) -> None:
        self.record = record
        self.settings_out = settings_out
        self._by_id: dict[str, ChatbotSettings] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def ids(self) -> set[str]:
        return set(self._by_id)

    async def load(self) -> None:
        self._by_id = {c.chatbot_id: c for c in await self.record.list_chatbots()}

    async def get(self, chatbot_id: str) -> ChatbotSettings | None:
        found = self._by_id.get(chatbot_id)
        if found is None:
            found = await self.record.get_chatbot(chatbot_id)
            if found is not None:
                self._by_id[chatbot_id] = found
        return found

    async def timezone(self, chatbot_id: str) -> str:
        bot = await self.get(chatbot_id)
        return bot.timezone if bot else "UTC"

    async def save(self, settings: ChatbotSettings, event_id: str | None = None) -> None:
        """Record, cache, publish (the event id derived from the command that saved it)."""
        await self.record.save_chatbot(settings)
        self._by_id[settings.chatbot_id] = settings
        extra = {"event_id": event_id} if event_id else {}
        await self.settings_out.publish(ChatbotSettingsChanged(chatbot_id=settings.chatbot_id, settings=settings, **extra))

    async def publish_all(self) -> None:
        """The embedded broker keeps topics in memory only: republish what Mongo holds."""
        for bot in self._by_id.values():
            await self.settings_out.publish(ChatbotSettingsChanged(chatbot_id=bot.chatbot_id, settings=bot))

    def apply(self, event: ChatbotSettingsChanged) -> None:
        """Another queue instance changed a chatbot: keep this cache current (Mongo stays
        the record)."""
        if event.deleted:
            self._by_id.pop(event.chatbot_id, None)
        else:
            self._by_id[event.chatbot_id] = event.settings
