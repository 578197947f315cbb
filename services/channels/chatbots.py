"""The chatbots this instance knows (from `chatbot.settings`, read from the beginning into
memory) and the Telegram webhook registration that follows a token appearing or changing."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from services.channels.domain import (
    TELEGRAM_UPDATES,
    PermanentDeliveryError,
    TransientDeliveryError,
    retry_delay,
    telegram_webhook_secret,
)
from services.channels.platforms import TelegramClient
from services.channels.store import TelegramWebhookRegistry
from shared.chatbots import ChatbotSettings
from shared.ids import derived_id, redact

log = logging.getLogger("handoff.channels.chatbots")


class ChatbotTable:
    def __init__(self) -> None:
        self._by_id: dict[str, ChatbotSettings] = {}

    def get(self, chatbot_id: str) -> ChatbotSettings | None:
        return self._by_id.get(chatbot_id)

    def put(self, settings: ChatbotSettings) -> ChatbotSettings | None:
        previous = self._by_id.get(settings.chatbot_id)
        self._by_id[settings.chatbot_id] = settings
        return previous

    def remove(self, chatbot_id: str) -> None:
        self._by_id.pop(chatbot_id, None)

    def __len__(self) -> int:
        return len(self._by_id)


class TelegramWebhooks:
    """Calls setWebhook(url, secret_token) in the background (the settings table must load
    fast), once per (token, url, secret): the fingerprint in Redis spares restarts and other
    instances a repeat call."""

    def __init__(self, client: TelegramClient, registry: TelegramWebhookRegistry, public_url: str,
                 attempts: int = 5, backoff_s: float = 1.0, max_backoff_s: float = 30.0) -> None:
        self.client, self.registry = client, registry
        self.public_url = public_url.rstrip("/")
        self.attempts, self.backoff_s, self.max_backoff_s = attempts, backoff_s, max_backoff_s
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def url_for(self, chatbot_id: str) -> str:
        return f"{self.public_url}/telegram/{chatbot_id}/webhook"

    def schedule(self, settings: ChatbotSettings) -> None:
        creds = settings.channels
        if not self.public_url or not creds.telegram_bot_token:
            return
        running = self._tasks.pop(settings.chatbot_id, None)
        if running and not running.done():
            running.cancel()  # a newer token/secret replaces the pending registration
        secret = telegram_webhook_secret(settings.chatbot_id, creds.telegram_bot_token, creds.telegram_webhook_secret)
        self._tasks[settings.chatbot_id] = asyncio.create_task(
            self._register(settings.chatbot_id, creds.telegram_bot_token, secret))

    async def _register(self, chatbot_id: str, token: str, secret: str | None) -> None:
        url = self.url_for(chatbot_id)
        # A hash (no secret in Redis); the update kinds are part of it, so a bot registered
        # before edits were asked for is registered again.
        fingerprint = derived_id("", token, url, secret or "", *TELEGRAM_UPDATES, length=64)
        try:
            if await self.registry.registered(chatbot_id) == fingerprint:
                return
            for attempt in range(1, self.attempts + 1):
                try:
                    await self.client.set_webhook(token, url, secret)
                    await self.registry.remember(chatbot_id, fingerprint)
                    log.info("telegram webhook set for chatbot %s", chatbot_id)
                    return
                except PermanentDeliveryError as exc:
                    log.error("telegram webhook for chatbot %s refused: %s", chatbot_id, exc)
                    return
                except TransientDeliveryError as exc:
                    if attempt == self.attempts:
                        log.error("telegram webhook for chatbot %s not set: %s", chatbot_id, exc)
                        return
                    await asyncio.sleep(retry_delay(attempt, self.backoff_s, self.max_backoff_s, exc.retry_after))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a background task must log, not die silently
            log.error("telegram webhook for chatbot %s failed: %s", chatbot_id, redact(repr(exc), [token, secret]))

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(BaseException):
                await task
        self._tasks.clear()
