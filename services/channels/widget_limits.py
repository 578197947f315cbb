"""How much the public widget API takes from one caller (the chatbot's `widget` settings):
messages and contact submissions per visitor and per IP address, new visitor sessions per IP
address. Over a limit: 429 with Retry-After (the widget waits that long and sends again).
Counted in Redis (`shared.ratelimit`), so every channels instance shares the counts."""

from __future__ import annotations

from functools import lru_cache

from limits import RateLimitItem
from starlette.requests import HTTPConnection

from shared.chatbots import ChatbotSettings
from shared.ratelimit import Network, RateLimited, RateLimits, client_address, rule

TOO_MANY_MESSAGES = "You are sending messages too quickly. Please wait a moment; your message will be sent then."
TOO_MANY_SESSIONS = "Too many new chats from your network. Please try again later."


@lru_cache(maxsize=256)
def _rule(text: str) -> RateLimitItem:
    return rule(text)  # validated when the chatbot's settings were saved


class WidgetLimiter:
    def __init__(self, limits: RateLimits, trusted_proxies: list[Network]) -> None:
        self.limits, self.trusted_proxies = limits, trusted_proxies

    def caller(self, connection: HTTPConnection) -> str:
        """The client's address; X-Forwarded-For only from a trusted proxy (TRUSTED_PROXIES)."""
        peer = connection.client.host if connection.client else None
        return client_address(peer, connection.headers.get("x-forwarded-for"), self.trusted_proxies)

    async def message(self, chatbot: ChatbotSettings, visitor_id: str, ip: str) -> None:
        """Counts one message (or contact submission); raises RateLimited past either limit.
        The visitor's limit first: a visitor over it does not use up its network's."""
        await self._hit(chatbot.widget.messages_per_visitor, TOO_MANY_MESSAGES, chatbot.chatbot_id, "visitor", visitor_id)
        await self._hit(chatbot.widget.messages_per_ip, TOO_MANY_MESSAGES, chatbot.chatbot_id, "ip", ip)

    async def new_session(self, chatbot: ChatbotSettings, ip: str) -> None:
        await self._hit(chatbot.widget.sessions_per_ip, TOO_MANY_SESSIONS, chatbot.chatbot_id, "sessions", ip)

    async def _hit(self, rate: str, detail: str, *key: str) -> None:
        decision = await self.limits.hit(_rule(rate), "widget", *key)
        if not decision.allowed:
            raise RateLimited(decision.retry_after_s, detail)
