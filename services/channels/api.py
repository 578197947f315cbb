"""HTTP surfaces: the web widget (script, test page, messages, contact, live socket) and the
Telegram and WhatsApp webhooks. Webhooks authenticate first (nothing is published for a bad
signature or secret), publish, and only then answer 200; an authenticated body they cannot
use is answered 200 "ignored" and logged (limits.py bounds bodies and JSON nesting). Nothing is acknowledged before the
broker acknowledged the write (inbound.py): otherwise 503 with Retry-After, so the widget or
the platform retries."""

from __future__ import annotations

import html
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Query, Request, WebSocket
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field, field_validator

from services.channels.chatbots import ChatbotTable
from services.channels.domain import (
    inbound_dedupe_key,
    parse_telegram_update,
    parse_whatsapp_payload,
    status_event,
    telegram_webhook_secret,
    valid_telegram_secret,
    valid_whatsapp_signature,
    valid_whatsapp_verification,
    visitor_message,
)
from services.channels.inbound import InboundPublisher, NotAccepted
from shared.http_limits import UnusableJson, json_object
from services.channels.store import DeliveryRecords, WebOutbox, WhatsAppWindowStore
from services.channels.web import WebHub
from shared.bus import EventPublisher
from shared.chatbots import ChatbotSettings
from shared.events import VisitorContactSubmitted, VisitorIdentity
from shared.views import Contact
from shared.ids import conversation_id_for

log = logging.getLogger("handoff.channels.api")
STATIC = Path(__file__).parent / "static"
VISITOR_ID = r"^v_[0-9a-f]{16}$"
CHATBOT_ID = r"^[A-Za-z0-9_-]{1,64}$"


class WebMessageIn(BaseModel):
    visitor_id: str = Field(pattern=VISITOR_ID)
    client_message_id: str = Field(pattern=r"^[A-Za-z0-9_-]{1,128}$")
    text: str = Field(max_length=4096)
    name: str | None = Field(default=None, max_length=200)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("The message is empty.")
        return v


class WebContactIn(BaseModel):
    visitor_id: str = Field(pattern=VISITOR_ID)
    name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=320)
    phone: str | None = Field(default=None, max_length=64)

    @field_validator("name", "email", "phone")
    @classmethod
    def _blank_is_none(cls, v: str | None) -> str | None:
        return v.strip() or None if v is not None else None

    @field_validator("email")
    @classmethod
    def _email_shape(cls, v: str | None) -> str | None:
        if v is not None and ("@" not in v or v.startswith("@") or v.endswith("@") or " " in v):
            raise ValueError("Please enter a valid e-mail address.")
        return v


@dataclass
class ChannelsApi:
    chatbots: ChatbotTable
    inbound_visitor: InboundPublisher
    statuses: EventPublisher
    outbox: WebOutbox
    hub: WebHub
    window: WhatsAppWindowStore
    records: DeliveryRecords
    max_json_depth: int = 32

    def chatbot_or_404(self, chatbot_id: str) -> ChatbotSettings:
        chatbot = self.chatbots.get(chatbot_id)
        if chatbot is None:
            raise HTTPException(404, "Unknown chatbot.")
        return chatbot


RETRY_AFTER_S = 1


def _retry_later() -> JSONResponse:
    return JSONResponse({"detail": "Could not accept the message right now; please retry."}, status_code=503,
                        headers={"Retry-After": str(RETRY_AFTER_S)})


def _ignored(channel: str, chatbot_id: str, why: str) -> dict[str, Any]:
    """A signed webhook body we cannot use: acknowledged, so the platform does not redeliver
    it for days, and logged (why, never the body or a secret)."""
    log.info("%s webhook ignored for chatbot %s: %s", channel, chatbot_id, why)
    return {"ok": True, "ignored": True, "status": "ignored"}


def build_router(api: ChannelsApi) -> APIRouter:
    router = APIRouter()

    # ------------------------------------------------------------ web widget
    @router.get("/widget.js", include_in_schema=False)
    async def widget_js() -> FileResponse:
        return FileResponse(STATIC / "widget.js", media_type="application/javascript",
                            headers={"Cache-Control": "public, max-age=300"})

    @router.get("/widget/test", response_class=HTMLResponse, include_in_schema=False)
    async def widget_test(chatbot: str = Query("demo", pattern=CHATBOT_ID)) -> HTMLResponse:
        page = (STATIC / "test.html").read_text().replace("{{chatbot}}", html.escape(chatbot, quote=True))
        return HTMLResponse(page)

    @router.post("/web/{chatbot_id}/messages", status_code=202)
    async def web_message(chatbot_id: str, body: WebMessageIn) -> Any:
        api.chatbot_or_404(chatbot_id)
        event = visitor_message(chatbot_id, "web", body.visitor_id, (body.name or "").strip() or None,
                                body.text, body.client_message_id)
        key = inbound_dedupe_key(chatbot_id, "web", f"{body.visitor_id}:{body.client_message_id}")
        try:
            outcome = await api.inbound_visitor.publish_once(key, event)
        except NotAccepted:
            return _retry_later()
        if outcome == "published":
            entry = {"type": "message", "message_id": body.client_message_id, "sender": "visitor",
                     "sender_name": event.visitor.name, "text": event.text, "at": event.occurred_at.isoformat(),
                     "request_contact_fields": []}
            try:
                await api.outbox.append(chatbot_id, body.visitor_id, entry)
            except Exception:  # noqa: BLE001 - the message is on the bus; only the replay misses it
                log.exception("could not add the visitor's message to the widget history")
        return {"accepted": True, "duplicate": outcome == "duplicate",
                "conversation_id": event.conversation_id}

    @router.post("/web/{chatbot_id}/contact", status_code=202)
    async def web_contact(chatbot_id: str, body: WebContactIn) -> Any:
        api.chatbot_or_404(chatbot_id)
        if not (body.name or body.email or body.phone):
            raise HTTPException(422, "Please fill in at least one field.")
        event = VisitorContactSubmitted(
            chatbot_id=chatbot_id, conversation_id=conversation_id_for(chatbot_id, "web", body.visitor_id),
            channel="web", visitor=VisitorIdentity(external_id=body.visitor_id, name=body.name),
            contact=Contact(name=body.name, email=body.email, phone=body.phone),
        )
        try:
            await api.inbound_visitor.publish(event)
        except NotAccepted:
            return _retry_later()
        return {"accepted": True}

    @router.websocket("/web/{chatbot_id}/ws")
    async def web_socket(websocket: WebSocket, chatbot_id: str, visitor_id: str = "") -> None:
        if not re.fullmatch(VISITOR_ID, visitor_id) or api.chatbots.get(chatbot_id) is None:
            await websocket.close(code=4404 if re.fullmatch(VISITOR_ID, visitor_id) else 4400)
            return
        await websocket.accept()
        await api.hub.serve(websocket, chatbot_id, visitor_id)

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
        try:
            event = parse_telegram_update(chatbot_id, update)
        except Exception as exc:  # noqa: BLE001 - a shape we did not foresee: never a 5xx Telegram retries
            return _ignored("telegram", chatbot_id, f"the update could not be read ({type(exc).__name__})")
        if event is None:
            return _ignored("telegram", chatbot_id, "not a visitor message (an edit, a service message or an unknown kind)")
        try:
            outcome = await api.inbound_visitor.publish_once(
                inbound_dedupe_key(chatbot_id, "telegram", event.channel_message_id), event)
        except NotAccepted:
            return _retry_later()
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
            return _retry_later()
        except Exception:  # noqa: BLE001 - a store or bus failure: let Meta retry the whole payload
            log.exception("whatsapp webhook not processed; asking Meta to retry")
            return _retry_later()
        return {"ok": True}

    # No public endpoint for the WhatsApp window: it would tell anyone who knows a chatbot id
    # whether (and when) a phone number wrote to it. The dashboard shows the window from the
    # queue's ConversationView.reply_window_ends_at; channels enforces it on delivery.

    return router
