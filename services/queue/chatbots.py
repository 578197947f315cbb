"""The queue's chatbots: Mongo `chatbots` is the record, this process keeps a cache (for
each chatbot's timezone and AI profile), and every change is published on
`chatbot.settings` for the other services' replicas."""

from __future__ import annotations

from services.queue.domain import UNKNOWN_CHATBOT, CommandRefused
from services.queue.store import QueueRecord
from shared.bus import EventPublisher
from shared.chatbots import ChatbotSettings, HumanHandoffSettings
from shared.events import ChatbotSettingsChanged

# What an agent reads when the settings changed after their form was loaded.
SETTINGS_CHANGED = "These settings were changed elsewhere; reload to see the latest."
# A put retried this often when another change lands between its read and its write.
SAVE_ATTEMPTS = 3


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

    async def save(self, settings: ChatbotSettings, event_id: str | None = None) -> ChatbotSettings:
        """Save these settings as the chatbot's (seeding, the command line), one version on
        from the record's; record, cache, publish. Settings read from the record and edited
        keep the version they were read at: if the record moved on since (an agent's Human
        Handoff save), they are refused rather than undo it. Version 0 puts them regardless."""
        for _ in range(SAVE_ATTEMPTS):
            current = await self.record.get_chatbot(settings.chatbot_id)
            if settings.version and current is not None and current.version != settings.version:
                raise CommandRefused(SETTINGS_CHANGED, 409)
            new = settings.model_copy(update={"version": current.version + 1 if current else 1})
            if await self.record.save_chatbot(new, current.version if current else None):
                await self._saved(new, event_id)
                return new
        raise RuntimeError(f"chatbot {settings.chatbot_id} keeps changing; try again")

    async def update_human_handoff(self, chatbot_id: str, human_handoff: HumanHandoffSettings, based_on: int,
                                   command_id: str, event_id: str) -> ChatbotSettings:
        """Replace the Human Handoff part (and the chatbot's timezone, which it carries) only,
        and only if the settings are still at version `based_on` (whatever else changed
        since, a credential rotation included, stays)."""
        current = await self.record.get_chatbot(chatbot_id)
        if current is None:
            raise CommandRefused(UNKNOWN_CHATBOT, 404)
        if await self.record.chatbot_changed_by(chatbot_id, command_id):
            await self._saved(current, event_id)  # applied before a crash: publish it again
            return current
        if current.version != based_on:
            raise CommandRefused(SETTINGS_CHANGED, 409)
        # The form's timezone is the chatbot's (one per chatbot: the schedule, Today, the stats).
        new = current.model_copy(update={"human_handoff": human_handoff, "timezone": human_handoff.timezone,
                                         "version": current.version + 1})
        if not await self.record.save_chatbot(new, current.version, command_id):
            raise CommandRefused(SETTINGS_CHANGED, 409)
        await self._saved(new, event_id)
        return new

    async def _saved(self, settings: ChatbotSettings, event_id: str | None) -> None:
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
            return
        cached = self._by_id.get(event.chatbot_id)
        if cached is None or cached.version <= event.settings.version:  # never back to an older one
            self._by_id[event.chatbot_id] = event.settings
