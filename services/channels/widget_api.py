"""The web widget's public surface: its script and test page, visitor sessions (token issue and
renewal), messages, contact details and the live socket.

The caller is a browser on any site, so everything is bounded: a visitor's token (visitors.py)
is its only credential (401 without a good one; the socket is closed 4401), and messages and
new sessions are rate-limited per visitor and per IP address (widget_limits.py: 429 with
Retry-After). Nothing is acknowledged before the broker acknowledged the write (inbound.py):
otherwise 503 with Retry-After, and the widget sends again."""

from __future__ import annotations

import html
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, WebSocket
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from pydantic import BaseModel, Field, field_validator

from services.channels.api import RETRY_AFTER_S, chatbot_or_404, retry_later
from services.channels.chatbots import ChatbotTable
from services.channels.domain import inbound_dedupe_key, visitor_message
from services.channels.inbound import InboundPublisher, NotAccepted
from services.channels.store import WebOutbox
from services.channels.visitors import BadToken, VisitorSession, WidgetTokens
from services.channels.web import WebHub
from services.channels.widget_limits import WidgetLimiter
from shared.chatbots import ChatbotSettings
from shared.events import VisitorContactSubmitted, VisitorIdentity
from shared.ids import conversation_id_for
from shared.views import Contact

log = logging.getLogger("handoff.channels.widget")
STATIC = Path(__file__).parent / "static"
CHATBOT_ID = r"^[A-Za-z0-9_-]{1,64}$"


class WebMessageIn(BaseModel):
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
class WidgetApi:
    chatbots: ChatbotTable
    inbound_visitor: InboundPublisher
    outbox: WebOutbox
    hub: WebHub
    tokens: WidgetTokens
    limiter: WidgetLimiter
    socket_auth_timeout_s: float = 10.0


@dataclass(frozen=True)
class Caller:
    """An authenticated widget request: whose, for which chatbot, from where."""

    chatbot: ChatbotSettings
    session: VisitorSession
    ip: str


def unauthorized(exc: BadToken) -> HTTPException:
    return HTTPException(401, str(exc), headers={"WWW-Authenticate": 'Bearer realm="widget"'})


def bearer(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def build_widget_router(api: WidgetApi) -> APIRouter:
    router = APIRouter()

    async def caller(chatbot_id: str, request: Request) -> Caller:
        """Resolved before the body is read: an unknown chatbot is 404, a bad token 401."""
        chatbot = chatbot_or_404(api.chatbots, chatbot_id)
        try:
            session = api.tokens.verify(bearer(request), chatbot_id)
        except BadToken as exc:
            raise unauthorized(exc) from None
        return Caller(chatbot, session, api.limiter.caller(request))

    authenticated = Depends(caller)

    @router.get("/widget.js", include_in_schema=False)
    async def widget_js() -> FileResponse:
        return FileResponse(STATIC / "widget.js", media_type="application/javascript",
                            headers={"Cache-Control": "public, max-age=300"})

    # The test page's icon (browsers ask for /favicon.ico anyway: no 404 in every console).
    @router.get("/favicon.ico", include_in_schema=False)
    async def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml",
                            headers={"Cache-Control": "public, max-age=86400"})

    @router.get("/widget/test", response_class=HTMLResponse, include_in_schema=False)
    async def widget_test(chatbot: str = Query("demo", pattern=CHATBOT_ID)) -> HTMLResponse:
        page = (STATIC / "test.html").read_text().replace("{{chatbot}}", html.escape(chatbot, quote=True))
        return HTMLResponse(page)

    @router.post("/web/{chatbot_id}/session", status_code=201)
    async def new_session(chatbot_id: str, request: Request) -> dict[str, Any]:
        """A new visitor: a fresh visitor id and its token (rate-limited per IP address)."""
        chatbot = chatbot_or_404(api.chatbots, chatbot_id)
        await api.limiter.new_session(chatbot, api.limiter.caller(request))
        now = time.time()
        return api.tokens.issue(chatbot_id, now).answer(now, api.tokens.ttl_s)

    @router.post("/web/{chatbot_id}/session/renew")
    async def renew_session(chatbot_id: str, request: Request) -> Any:
        """The same visitor's next token, for its newest token (expired at most the grace period ago)."""
        chatbot_or_404(api.chatbots, chatbot_id)
        now = time.time()
        try:
            session = await api.tokens.renew(bearer(request), chatbot_id, now)
        except BadToken as exc:
            raise unauthorized(exc) from None
        except Exception:  # noqa: BLE001 - Redis did not answer: the widget keeps its token and asks again
            log.warning("widget token renewal failed: Redis did not answer", exc_info=True)
            return JSONResponse({"detail": "Could not renew the session right now; please retry."}, status_code=503,
                                headers={"Retry-After": str(RETRY_AFTER_S)})
        return session.answer(now, api.tokens.ttl_s)

    @router.post("/web/{chatbot_id}/messages", status_code=202)
    async def web_message(body: WebMessageIn, caller: Caller = authenticated) -> Any:
        chatbot_id, visitor_id = caller.chatbot.chatbot_id, caller.session.visitor_id
        await api.limiter.message(caller.chatbot, visitor_id, caller.ip)
        event = visitor_message(chatbot_id, "web", visitor_id, (body.name or "").strip() or None,
                                body.text, body.client_message_id)
        key = inbound_dedupe_key(chatbot_id, "web", f"{visitor_id}:{body.client_message_id}")
        try:
            outcome = await api.inbound_visitor.publish_once(key, event)
        except NotAccepted:
            return retry_later()
        if outcome == "published":
            entry = {"type": "message", "message_id": body.client_message_id, "sender": "visitor",
                     "sender_name": event.visitor.name, "text": event.text, "at": event.occurred_at.isoformat(),
                     "request_contact_fields": []}
            try:
                await api.outbox.append(chatbot_id, visitor_id, entry)
            except Exception:  # noqa: BLE001 - the message is on the bus; only the replay misses it
                log.exception("could not add the visitor's message to the widget history")
        return {"accepted": True, "duplicate": outcome == "duplicate",
                "conversation_id": event.conversation_id}

    @router.post("/web/{chatbot_id}/contact", status_code=202)
    async def web_contact(body: WebContactIn, caller: Caller = authenticated) -> Any:
        if not (body.name or body.email or body.phone):
            raise HTTPException(422, "Please fill in at least one field.")
        chatbot_id, visitor_id = caller.chatbot.chatbot_id, caller.session.visitor_id
        await api.limiter.message(caller.chatbot, visitor_id, caller.ip)
        event = VisitorContactSubmitted(
            chatbot_id=chatbot_id, conversation_id=conversation_id_for(chatbot_id, "web", visitor_id),
            channel="web", visitor=VisitorIdentity(external_id=visitor_id, name=body.name),
            contact=Contact(name=body.name, email=body.email, phone=body.phone),
        )
        try:
            await api.inbound_visitor.publish(event)
        except NotAccepted:
            return retry_later()
        return {"accepted": True}

    @router.websocket("/web/{chatbot_id}/ws")
    async def web_socket(websocket: WebSocket, chatbot_id: str) -> None:
        # The token comes in the first frame, not the URL: URLs end up in proxy and access logs.
        if api.chatbots.get(chatbot_id) is None:
            await websocket.close(code=4404)
            return
        await websocket.accept()

        def verify(token: str | None) -> VisitorSession:
            return api.tokens.verify(token, chatbot_id)

        session = await api.hub.authenticate(websocket, verify, api.socket_auth_timeout_s)
        if session is not None:
            await api.hub.serve(websocket, chatbot_id, session.visitor_id, expires_at=session.expires_at)

    return router
