"""The two platform clients: Telegram through python-telegram-bot, WhatsApp through the
Graph API over httpx. They translate platform failures into Transient/PermanentDeliveryError
with texts that never contain a token."""

from __future__ import annotations

import asyncio
import logging
import warnings
from datetime import timedelta

import httpx
from telegram import Bot
from telegram.error import (
    BadRequest,
    ChatMigrated,
    Conflict,
    Forbidden,
    InvalidToken,
    NetworkError,
    RetryAfter,
    TelegramError,
)
from telegram.request import HTTPXRequest

from services.channels.domain import TELEGRAM_UPDATES, PermanentDeliveryError, TelegramBot, TransientDeliveryError
from shared.ids import redact

log = logging.getLogger("handoff.channels.platforms")


def _retry_after_s(exc: RetryAfter) -> float:
    with warnings.catch_warnings():  # PTB 22 warns that the int form becomes a timedelta
        warnings.simplefilter("ignore")
        value = exc.retry_after
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


class TelegramClient:
    """One PTB Bot per bot token, talking to `base_url` (the real Bot API or a fake)."""

    def __init__(self, base_url: str, timeout_s: float) -> None:
        self.base_url = base_url
        self.timeout_s = timeout_s
        self._bots: dict[str, tuple[Bot, HTTPXRequest]] = {}
        self._identities: dict[str, TelegramBot | None] = {}
        self._lock = asyncio.Lock()

    async def _bot(self, token: str) -> Bot:
        async with self._lock:
            if token not in self._bots:
                # Our own request object, initialised without Bot.initialize() (whose getMe
                # error text would carry the token).
                request = HTTPXRequest(connection_pool_size=8, read_timeout=self.timeout_s,
                                       write_timeout=self.timeout_s, connect_timeout=self.timeout_s)
                await request.initialize()
                self._bots[token] = (Bot(token, base_url=self.base_url, request=request), request)
            return self._bots[token][0]

    async def close(self) -> None:
        for _, request in self._bots.values():
            await request.shutdown()
        self._bots.clear()

    async def send_text(self, token: str, chat_id: str, text: str) -> str:
        bot = await self._bot(token)
        try:
            message = await bot.send_message(chat_id=chat_id, text=text)
        except TelegramError as exc:
            raise _classify(exc, token) from None
        return str(message.message_id)

    async def set_webhook(self, token: str, url: str, secret: str | None) -> None:
        bot = await self._bot(token)
        try:
            await bot.set_webhook(url=url, secret_token=secret, allowed_updates=list(TELEGRAM_UPDATES))
        except TelegramError as exc:
            raise _classify(exc, token) from None

    async def identity(self, token: str) -> TelegramBot | None:
        """The bot's id and @username (getMe, once per token and process): group messages are
        taken only when they address the bot. Raises TransientDeliveryError (the webhook then
        answers 503 and Telegram retries); a token Telegram refuses gives the id from the
        token alone (replies to the bot still count, @mentions cannot be recognised)."""
        if token in self._identities:
            return self._identities[token]
        bot = await self._bot(token)
        try:
            me = await bot.get_me()
        except TelegramError as exc:
            error = _classify(exc, token)
            if isinstance(error, TransientDeliveryError):
                raise error from None
            log.warning("telegram getMe refused (%s): @mentions in groups are not recognised", error)
            known = TelegramBot.from_token(token)
        else:
            known = TelegramBot(str(me.id), me.username)
        self._identities[token] = known
        return known


def _classify(exc: TelegramError, token: str) -> Exception:
    text = redact(f"Telegram: {exc}", [token])
    if isinstance(exc, RetryAfter):
        return TransientDeliveryError(text, retry_after=_retry_after_s(exc))
    # BadRequest is a NetworkError subclass in PTB: the permanent kinds are checked first.
    if isinstance(exc, (BadRequest, Forbidden, InvalidToken, ChatMigrated, Conflict)):
        return PermanentDeliveryError(text)
    if isinstance(exc, NetworkError):
        return TransientDeliveryError(text)
    return TransientDeliveryError(text)


class WhatsAppClient:
    """POST {base}/{version}/{phone_number_id}/messages with the chatbot's access token."""

    def __init__(self, base_url: str, version: str, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.version = version
        self.http = httpx.AsyncClient(timeout=timeout_s)

    async def close(self) -> None:
        await self.http.aclose()

    async def send_text(self, phone_number_id: str, access_token: str, to: str, text: str) -> str:
        url = f"{self.base_url}/{self.version}/{phone_number_id}/messages"
        body = {"messaging_product": "whatsapp", "recipient_type": "individual", "to": to,
                "type": "text", "text": {"preview_url": False, "body": text}}
        try:
            resp = await self.http.post(url, json=body, headers={"Authorization": f"Bearer {access_token}"})
        except httpx.TransportError as exc:
            raise TransientDeliveryError(f"WhatsApp: network error ({type(exc).__name__})") from None
        if resp.status_code == 200:
            try:
                return str(resp.json()["messages"][0]["id"])
            except (ValueError, KeyError, IndexError, TypeError):
                raise PermanentDeliveryError("WhatsApp: unexpected response from the Graph API.") from None
        detail = _graph_error(resp)
        text = redact(f"WhatsApp: {detail} (HTTP {resp.status_code})", [access_token])
        if resp.status_code == 429:
            return_after = resp.headers.get("retry-after")
            try:
                wait = float(return_after) if return_after else None
            except ValueError:
                wait = None
            raise TransientDeliveryError(text, retry_after=wait)
        if resp.status_code >= 500:
            raise TransientDeliveryError(text)
        raise PermanentDeliveryError(text)


def _graph_error(resp: httpx.Response) -> str:
    try:
        err = resp.json().get("error") or {}
        message = err.get("message") or "error"
        return f"{message} (code {err['code']})" if err.get("code") else message
    except (ValueError, AttributeError):
        return "error"
