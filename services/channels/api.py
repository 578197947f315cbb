"""HTTP surfaces: the Telegram and WhatsApp webhooks (the web widget's are in widget_api.py).
Webhooks authenticate first (nothing is published for a bad signature or secret), publish,
and only then answer 200; an authenticated body they cannot use is answered 200 "ignored" and
logged (limits.py bounds bodies and JSON nesting). Nothing is acknowledged before the broker
acknowledged the write (inbound.py): otherwise 503 with Retry-After, so the platform retries."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from services.channels.chatbots import ChatbotTable
from services.channels.domain import (
    inbound_dedupe_key,
    parse_telegram_update,
    TransientDeliveryError,
    parse_whatsapp_payload,
    status_event,
    telegram_from_group,
    telegram_webhook_secret,
    valid_telegram_secret,
    valid_whatsapp_signature,
    valid_whatsapp_verification,
)
from services.channels.inbound import InboundPublisher, NotAccepted
from services.channels.platforms import TelegramClient
from shared.http_limits import UnusableJson, json_object
from services.channels.store import DeliveryRecords, WhatsAppWindowStore
from shared.bus import EventPublisher
from shared.chatbots import ChatbotSettings
from shared.ids import conversation_id_for

log = logging.getLogger("handoff.channels.api")


@dataclass
class ChannelsApi:
    chatbots: ChatbotTable
    inbound_visitor: InboundPublisher
    statuses: EventPublisher
    window: WhatsAppWindowStore
    records: DeliveryRecords
    max_json_depth: int = 32
    # Who each chatbot's bot is (getMe), asked only for group messages.
    telegram: TelegramClient | None = None

    def chatbot_or_404(self, chatbot_id: str) -> ChatbotSettings:
        return chatbot_or_404(self.chatbots, chatbot_id)


def chatbot_or_404(chatbots: ChatbotTable, chatbot_id: str) -> ChatbotSettings:
    chatbot = chatbots.get(chatbot_id)
    if chatbot is None:
        raise HTTPException(404, "Unknown chatbot.")
    return chatbot


RETRY_AFTER_S = 1


def retry_later() -> JSONResponse:
    return JSONResponse({"detail": "Could not accept the message right now; please retry."}, status_code=503,
                        headers={"Retry-After": str(RETRY_AFTER_S)})


def _ignored(channel: str, chatbot_id: str, why: str) -> dict[str, Any]:
    """A signed webhook body we cannot use: acknowledged, so the platform does not redeliver
    it for days, and logged (why, never the body or a secret)."""
    log.info("%s webhook ignored for chatbot %s: %s", channel, chatbot_id, why)
    return {"ok": True, "ignored": True, "status": "ignored"}


def build_router(api: ChannelsApi) -> APIRouter:
    router = APIRouter()

    # ------------------------------------------------------------ Telegram
    @router.get("/telegram/{chatbot_id}/webhook", include_in_schema=False)
    async def telegram_probe(chatbot_id: str) -> dict:
        api.chatbot_or_404(chatbot_id)
        return {"webhook": "telegram", "chatbot_id": chatbot_id}

    @router.post("/telegram/{chatbot_id}/webhook")
    async def telegram_webhook(chatbot_id: str, request: Request) -> Any:
        chatbot = api.chatbot_or_404(chatbot_id)
        creds = chatbot.channels
        expected = telegram_webhook_secret(chatbot_id, creds.telegram_bot_token, creds.telegram_webhook_secret)
        if not valid_telegram_secret(expected, request.headers.get("x-telegram-bot-api-secret-token")):
            raise HTTPException(401, "Invalid secret token.")
        try:
            update = json_object(await request.body(), api.max_json_depth)
        except UnusableJson as exc:
            return _ignored("telegram", chatbot_id, str(exc))
        bot = None
        if api.telegram is not None and creds.telegram_bot_token and telegram_from_group(update):
            try:  # whether a group message addresses the bot needs the bot's @username
                bot = await api.telegram.identity(creds.telegram_bot_token)
            except Exception as exc:  # noqa: BLE001 - getMe did not answer (TransientDeliveryError) or failed oddly
                log.warning("telegram update for chatbot %s not read, Telegram retries: %s", chatbot_id,
                            exc if isinstance(exc, TransientDeliveryError) else type(exc).__name__)
                return retry_later()
        try:
            event = parse_telegram_update(chatbot_id, update, bot)
        except Exception as exc:  # noqa: BLE001 - a shape we did not foresee: never a 5xx Telegram retries
            return _ignored("telegram", chatbot_id, f"the update could not be read ({type(exc).__name__})")
        if event is None:
            return _ignored("telegram", chatbot_id, "not a visitor message for the bot (a service message, a channel "
                                                    "post, a group message not addressed to the bot or an unknown kind)")
        try:
            outcome = await api.inbound_visitor.publish_once(
                inbound_dedupe_key(chatbot_id, "telegram", event.channel_message_id), event)
        except NotAccepted:
            return retry_later()
        return {"ok": True, "duplicate": outcome == "duplicate"}

    # ------------------------------------------------------------ WhatsApp
    @router.get("/whatsapp/{chatbot_id}/webhook", include_in_schema=False)
    async def whatsapp_verify(chatbot_id: str, request: Request) -> PlainTextResponse:
        chatbot = api.chatbots.get(chatbot_id)
        q = request.query_params
        if chatbot is None or not valid_whatsapp_verification(
                chatbot.channels.whatsapp_verify_token, q.get("hub.mode"), q.get("hub.verify_token")):
            return PlainTextResponse("Verification failed.", status_code=403)
        return PlainTextResponse(q.get("hub.challenge", ""))

    @router.post("/whatsapp/{chatbot_id}/webhook")
    async def whatsapp_webhook(chatbot_id: str, request: Request) -> Any:
        chatbot = api.chatbot_or_404(chatbot_id)
        raw = await request.body()
        if not valid_whatsapp_signature(chatbot.channels.whatsapp_app_secret, raw,
                                        request.headers.get("x-hub-signature-256")):
            raise HTTPException(401, "Invalid signature.")
        try:
            payload = parse_whatsapp_payload(chatbot_id, json_object(raw, api.max_json_depth),
                                             chatbot.channels.whatsapp_phone_number_id)
        except UnusableJson as exc:
            return _ignored("whatsapp", chatbot_id, str(exc))
        except Exception as exc:  # noqa: BLE001 - a shape we did not foresee: never a 5xx Meta retries
            return _ignored("whatsapp", chatbot_id, f"the payload could not be read ({type(exc).__name__})")
        inbound, statuses = payload.inbound, payload.statuses
        if payload.skipped:
            reasons = "; ".join(dict.fromkeys(payload.skipped))
            if not inbound and not statuses:
                return _ignored("whatsapp", chatbot_id, reasons)
            log.info("whatsapp webhook for chatbot %s: parts skipped: %s", chatbot_id, reasons)
        elif not inbound and not statuses:
            return _ignored("whatsapp", chatbot_id, "no messages or statuses in it")
        try:
            for item in inbound:
                conversation_id = conversation_id_for(chatbot_id, "whatsapp", item.wa_id)
                await api.window.record_inbound(chatbot_id, conversation_id, item.sent_at)
                if item.message is not None:
                    await api.inbound_visitor.publish_once(
                        inbound_dedupe_key(chatbot_id, "whatsapp", item.wamid), item.message)
            for st in statuses:
                if st.status == "sent":
                    continue  # already recorded when the Graph API accepted the message
                known = await api.records.message_for_wamid(st.wamid)
                if known is None or known.get("chatbot_id") != chatbot_id:
                    log.info("status %s for a message we did not send; ignored", st.status)
                    continue
                await api.inbound_visitor.publish(status_event(
                    chatbot_id, known.get("conversation_id"), known["message_id"], st.status, st.wamid,
                    st.error, permanent=st.status == "failed"), api.statuses)
        except NotAccepted:
            return retry_later()
        except Exception:  # noqa: BLE001 - a store or bus failure: let Meta retry the whole payload
            log.exception("whatsapp webhook not processed; asking Meta to retry")
            return retry_later()
        return {"ok": True}

    # No public endpoint for the WhatsApp window: it would tell anyone who knows a chatbot id
    # whether (and when) a phone number wrote to it. The dashboard shows the window from the
    # queue's ConversationView.reply_window_ends_at; channels enforces it on delivery.

    return router
