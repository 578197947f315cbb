"""Bus handlers: thin and typed. `dashboard.updates` and `chatbot.settings` are consumed by
every gateway process without a consumer group; each delivers to the sockets it holds."""

from __future__ import annotations

from shared.events import ChatbotSettingsChanged, CommandResult, DashboardUpdate

from services.gateway.domain import ChatbotDirectory, PendingCommands
from services.gateway.live import LiveHub


class GatewayHandlers:
    def __init__(self, hub: LiveHub, pending: PendingCommands, directory: ChatbotDirectory) -> None:
        self.hub = hub
        self.pending = pending
        self.directory = directory
        # The last (epoch, seq) seen per chatbot: the fallback position for "subscribed".
        self.positions: dict[str, tuple[str, int]] = {}

    async def on_dashboard_event(self, event: DashboardUpdate | CommandResult) -> None:
        if isinstance(event, CommandResult):
            self.pending.resolve(event)
            self.hub.broadcast(event.chatbot_id, {"type": "command_result", "chatbot_id": event.chatbot_id,
                                                  "result": event.model_dump(mode="json")})
            return
        self.positions[event.chatbot_id] = (event.epoch, event.seq)
        if event.chatbot_id in self.hub.channels:  # dumped only when someone here watches
            self.hub.update(event.chatbot_id, event.model_dump(mode="json"))

    async def on_settings_changed(self, event: ChatbotSettingsChanged) -> None:
        info = self.directory.apply(event)
        chatbot_id = event.settings.chatbot_id
        self.hub.broadcast(chatbot_id, {"type": "settings", "chatbot_id": chatbot_id,
                                        "handoff_enabled": bool(info and info.handoff_enabled),
                                        "name": info.name if info else event.settings.name,
                                        "settings_version": event.settings.version})
