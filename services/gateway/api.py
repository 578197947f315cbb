"""The gateway's public HTTP API and the live protocol (`/ws`), per docs/contracts.md.

Order of checks on `/api/chatbots/{id}/...`: session (401), membership (403), CSRF on
state-changing calls (403), then the body. Bodies are parsed by hand after those checks
so that even a malformed body from a non-member gets the 403, not a 422."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from datetime import timedelta
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, ValidationError
from starlette.websockets import WebSocket, WebSocketDisconnect

from services.gateway import domain
from services.gateway.domain import (
    AgentView,
    ChatbotDirectory,
    CommandBody,
    LoginBody,
    PendingCommands,
    PingFrame,
    PreferencesBody,
    ReplyBody,
    SubscribeFrame,
    error_frame,
    parse_client_frame,
)
from services.gateway.handlers import GatewayHandlers
from services.gateway.live import LiveClient, LiveHub
from services.gateway.queue_client import QueueClient, QueueError
from services.gateway.settings import GatewaySettings
from services.gateway.store import AgentStore, LoginThrottle, Session
from shared.bus import EventPublisher
from shared.chatbots import ChatbotSettings, HumanHandoffSettings
from shared.events import AgentCommand, ChatbotSettingsUpdate, CommandResult
from shared.ids import new_id
from shared.views import ConversationDetail, ConversationView, HandoffRow, Page, Snapshot, Stats

log = logging.getLogger("handoff.gateway.api")

SESSION_COOKIE = "handoff_session"
CSRF_HEADER = "X-CSRF-Token"
STATIC_DIR = Path(__file__).resolve().parent / "static"
CLOSE_NO_SESSION = 4401
CLOSE_BAD_ORIGIN = 4403

B = TypeVar("B", bound=BaseModel)


@dataclass
class Gateway:
    """Everything the routes need, wired once by the composition root."""

    settings: GatewaySettings
    store: AgentStore
    throttle: LoginThrottle
    queue: QueueClient
    hub: LiveHub
    pending: PendingCommands
    directory: ChatbotDirectory
    handlers: GatewayHandlers
    commands: EventPublisher

    async def await_result(self, command_id: str, event: AgentCommand | ChatbotSettingsUpdate) -> CommandResult | None:
        """Publish the command and wait for its CommandResult; None when it did not come in time."""
        fut = self.pending.expect(command_id)
        try:
            try:
                await self.commands.publish(event)
            except Exception as exc:  # noqa: BLE001 - the broker did not confirm it (it may
                # still have it, e.g. after a timeout): a retry with the same command id is
                # applied once all the same, since the queue answers a known id from its record.
                log.exception("could not publish command %s", command_id)
                raise HTTPException(503, "Could not send the command. Try again in a moment.") from exc
            try:
                return await asyncio.wait_for(asyncio.shield(fut), self.settings.command_timeout_s)
            except TimeoutError:
                return None
        finally:
            self.pending.forget(command_id, fut)


def me_body(gw: Gateway, session: Session) -> dict[str, Any]:
    return {
        "agent": session.agent.model_dump(),
        "chatbots": [gw.directory.describe(c) for c in sorted(session.chatbot_ids)],
        "csrf_token": session.csrf_token,
    }


async def parse_body(request: Request, model: type[B]) -> B:
    raw = await request.body()
    try:
        data = json.loads(raw or b"null")
    except ValueError:
        raise HTTPException(422, "The request body must be JSON.") from None
    if not isinstance(data, dict):
        raise HTTPException(422, "The request body must be a JSON object.")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise HTTPException(422, domain.validation_message(exc)) from None


def proxied(body: bytes) -> Response:
    return Response(content=body, media_type="application/json")


def command_answer(result: CommandResult | None, command_id: str) -> JSONResponse:
    if result is None:
        return JSONResponse({"command_id": command_id, "status": "pending", "detail": domain.COMMAND_PENDING},
                            status_code=202)
    status, body = domain.command_response(result)
    return JSONResponse(body, status_code=status)


def build_router(gw: Gateway) -> APIRouter:
    router = APIRouter()
    settings = gw.settings

    # ------------------------------------------------------------ dependencies
    async def current_session(request: Request) -> Session:
        session = await gw.store.session(request.cookies.get(SESSION_COOKIE))
        if session is None:
            raise HTTPException(401, domain.NOT_SIGNED_IN)
        return session

    def check_csrf(request: Request, session: Session) -> None:
        if not domain.csrf_matches(session.csrf_token, request.headers.get(CSRF_HEADER)):
            raise HTTPException(403, domain.BAD_CSRF)

    async def session_with_csrf(request: Request, session: Session = Depends(current_session)) -> Session:
        check_csrf(request, session)
        return session

    async def member(chatbot_id: str, session: Session = Depends(current_session)) -> Session:
        if chatbot_id not in session.chatbot_ids:
            raise HTTPException(403, domain.NOT_A_MEMBER)
        return session

    async def member_with_csrf(request: Request, session: Session = Depends(member)) -> Session:
        check_csrf(request, session)
        return session

    # ------------------------------------------------------------ sign-in
    @router.post("/api/login", tags=["session"], summary="Sign in; sets the session cookie")
    async def login(request: Request) -> JSONResponse:
        # JSON only: a cross-site HTML form cannot send it without a preflight.
        if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/json":
            raise HTTPException(415, "Send the e-mail and password as JSON.")
        try:
            body = LoginBody.model_validate_json(await request.body())
        except ValidationError:
            raise HTTPException(401, domain.INVALID_LOGIN) from None
        if not await gw.throttle.attempt(body.email):  # counted now; cleared by a success
            raise HTTPException(429, domain.TOO_MANY_ATTEMPTS)
        found = await gw.store.find_login(body.email)
        # Verify even for an unknown e-mail so that both failures look (and take) the same.
        # Argon2 is deliberately slow: off the event loop, so live sockets never stall on it.
        ok = await asyncio.to_thread(domain.verify_password, found[1] if found else None, body.password)
        if found is None or not ok:
            raise HTTPException(401, domain.INVALID_LOGIN)
        agent, password_hash = found
        await gw.throttle.succeeded(body.email)
        if domain.needs_rehash(password_hash):
            await gw.store.set_password_hash(agent.agent_id, await asyncio.to_thread(domain.hash_password,
                                                                                      body.password))
        new = await gw.store.create_session(agent.agent_id, timedelta(seconds=settings.session_ttl_s))
        response = JSONResponse({"agent": agent.model_dump(), "csrf_token": new.csrf_token})
        response.set_cookie(SESSION_COOKIE, new.token, max_age=settings.session_ttl_s, path="/", httponly=True,
                            samesite="lax", secure=settings.cookie_secure)
        return response

    @router.post("/api/logout", tags=["session"], status_code=204, summary="Sign out; deletes the session")
    async def logout(request: Request, session: Session = Depends(session_with_csrf)) -> Response:
        await gw.store.delete_session(request.cookies.get(SESSION_COOKIE))
        gw.hub.end_session(session.token_digest, CLOSE_NO_SESSION)
        response = Response(status_code=204)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=settings.cookie_secure)
        return response

    @router.get("/api/me", tags=["session"], summary="The signed-in agent, their chatbots and the CSRF token")
    async def me(session: Session = Depends(current_session)) -> dict[str, Any]:
        return me_body(gw, session)

    @router.put("/api/me/preferences", tags=["session"], response_model=AgentView,
                summary="The agent's preferences (notification mute switch)")
    async def preferences(request: Request, session: Session = Depends(session_with_csrf)) -> AgentView:
        body = await parse_body(request, PreferencesBody)
        agent = await gw.store.set_muted(session.agent.agent_id, body.muted)
        if agent is None:
            raise HTTPException(401, domain.NOT_SIGNED_IN)
        return agent

    # ------------------------------------------------------------ reads (proxied to the queue)
    base = "/api/chatbots/{chatbot_id}"

    def internal_path(chatbot_id: str, *rest: str) -> str:
        """The queue's path for these ids, each quoted as one segment (no "..", no "/")."""
        segments = [chatbot_id, *rest]
        if any(s in (".", "..") for s in segments):
            raise HTTPException(404, "Not found.")
        return "/internal/chatbots/" + "/".join(quote(s, safe="") for s in segments)

    @router.get(base + "/snapshot", tags=["dashboard"], response_model=Snapshot)
    async def snapshot(chatbot_id: str, limit: int = Query(50, ge=1, le=200), _: Session = Depends(member)) -> Response:
        return proxied(await gw.queue.get(internal_path(chatbot_id, "snapshot"), {"limit": limit}))

    @router.get(base + "/stats", tags=["dashboard"], response_model=Stats)
    async def stats(chatbot_id: str, _: Session = Depends(member)) -> Response:
        return proxied(await gw.queue.get(internal_path(chatbot_id, "stats")))

    @router.get(base + "/handoffs", tags=["dashboard"], response_model=Page[HandoffRow])
    async def handoffs(chatbot_id: str, cursor: str | None = Query(None, max_length=512),
                       limit: int = Query(50, ge=1, le=200), _: Session = Depends(member)) -> Response:
        return proxied(await gw.queue.get(internal_path(chatbot_id, "handoffs"),
                                          {"cursor": cursor, "limit": limit}))

    @router.get(base + "/conversations", tags=["conversations"], response_model=Page[ConversationView])
    async def conversations(chatbot_id: str,
                            status: Literal["all", "needs_reply", "active", "closed"] = "all",
                            q: str | None = Query(None, max_length=200), cursor: str | None = Query(None, max_length=512),
                            limit: int = Query(50, ge=1, le=200), _: Session = Depends(member)) -> Response:
        return proxied(await gw.queue.get(internal_path(chatbot_id, "conversations"),
                                          {"status": status, "q": q, "cursor": cursor, "limit": limit}))

    @router.get(base + "/conversations/{conversation_id}", tags=["conversations"], response_model=ConversationDetail)
    async def conversation(chatbot_id: str, conversation_id: str, before: str | None = Query(None, max_length=512),
                           limit: int = Query(100, ge=1, le=500), _: Session = Depends(member)) -> Response:
        return proxied(await gw.queue.get(
            internal_path(chatbot_id, "conversations", conversation_id),
            {"before": before, "limit": limit}))

    # ------------------------------------------------------------ agent actions
    async def act(chatbot_id: str, conversation_id: str, action: str, request: Request, session: Session,
                  body_model: type[CommandBody]) -> JSONResponse:
        body = await parse_body(request, body_model)
        try:
            command = AgentCommand(chatbot_id=chatbot_id, conversation_id=conversation_id, command_id=body.command_id,
                                   action=action, text=getattr(body, "text", None), agent=session.agent.ref())
        except ValidationError as exc:
            raise HTTPException(422, domain.validation_message(exc)) from None
        return command_answer(await gw.await_result(body.command_id, command), body.command_id)

    action_doc = {"requestBody": {"content": {"application/json": {"schema": CommandBody.model_json_schema()}}}}
    reply_doc = {"requestBody": {"content": {"application/json": {"schema": ReplyBody.model_json_schema()}}}}
    answers = {200: {"model": CommandResult}, 202: {"description": "Not answered in time; applied once later"},
               404: {"description": "Unknown conversation"}, 409: {"description": "Refused (invalid transition)"},
               422: {"description": "Invalid body"}}

    @router.post(base + "/conversations/{conversation_id}/reply", tags=["actions"], responses=answers,
                 openapi_extra=reply_doc)
    async def reply(chatbot_id: str, conversation_id: str, request: Request,
                    session: Session = Depends(member_with_csrf)) -> JSONResponse:
        return await act(chatbot_id, conversation_id, "reply", request, session, ReplyBody)

    @router.post(base + "/conversations/{conversation_id}/close", tags=["actions"], responses=answers,
                 openapi_extra=action_doc)
    async def close(chatbot_id: str, conversation_id: str, request: Request,
                    session: Session = Depends(member_with_csrf)) -> JSONResponse:
        return await act(chatbot_id, conversation_id, "close", request, session, CommandBody)

    @router.post(base + "/conversations/{conversation_id}/reopen", tags=["actions"], responses=answers,
                 openapi_extra=action_doc)
    async def reopen(chatbot_id: str, conversation_id: str, request: Request,
                     session: Session = Depends(member_with_csrf)) -> JSONResponse:
        return await act(chatbot_id, conversation_id, "reopen", request, session, CommandBody)

    @router.post(base + "/conversations/{conversation_id}/return-to-ai", tags=["actions"], responses=answers,
                 openapi_extra=action_doc)
    async def return_to_ai(chatbot_id: str, conversation_id: str, request: Request,
                           session: Session = Depends(member_with_csrf)) -> JSONResponse:
        return await act(chatbot_id, conversation_id, "return_to_ai", request, session, CommandBody)

    # ------------------------------------------------------------ settings
    @router.get(base + "/settings", tags=["settings"], summary="The chatbot's settings, without secrets")
    async def get_settings(chatbot_id: str, _: Session = Depends(member)) -> dict[str, Any]:
        return domain.public_settings(await gw.queue.chatbot_settings(chatbot_id))

    hh_doc = {"requestBody": {"content": {"application/json": {"schema": HumanHandoffSettings.model_json_schema()}}}}

    @router.put(base + "/settings/human-handoff", tags=["settings"], openapi_extra=hh_doc,
                summary="Replace the Human Handoff tool's settings (optional `command_id` in the body)")
    async def put_human_handoff(chatbot_id: str, request: Request,
                                session: Session = Depends(member_with_csrf)) -> JSONResponse:
        raw = await request.body()
        try:
            data = json.loads(raw or b"null")
        except ValueError:
            raise HTTPException(422, "The request body must be JSON.") from None
        if not isinstance(data, dict):
            raise HTTPException(422, "The request body must be a JSON object.")
        command_id = str(data.pop("command_id", None) or new_id())
        try:
            human_handoff = HumanHandoffSettings.model_validate(data)
        except ValidationError as exc:
            raise HTTPException(422, domain.validation_message(exc)) from None
        current = await gw.queue.chatbot_settings(chatbot_id)
        new_settings = ChatbotSettings.model_validate({**current.model_dump(), "human_handoff": human_handoff})
        try:
            update = ChatbotSettingsUpdate(chatbot_id=chatbot_id, command_id=command_id, settings=new_settings,
                                           agent=session.agent.ref())
        except ValidationError as exc:
            raise HTTPException(422, domain.validation_message(exc)) from None
        result = await gw.await_result(command_id, update)
        if result is not None and result.ok:
            return JSONResponse(domain.public_settings(new_settings))
        return command_answer(result, command_id)

    # ------------------------------------------------------------ live protocol
    @router.websocket("/ws")
    async def live(websocket: WebSocket) -> None:
        # Accept first so the client sees the close code (a refused handshake shows none).
        await websocket.accept()
        # Decision: a handshake WITHOUT an Origin header is let through (the cookie is still
        # required). The check exists against cross-site websocket hijacking, which needs a
        # browser, and browsers always send Origin on a websocket handshake (page script
        # cannot remove it). A client that sends none is not a browser, so it holds the
        # cookie itself and could use the REST API with it just as well.
        if not domain.origin_allowed(websocket.headers.get("origin"), websocket.headers.get("host"),
                                     settings.allowed_origin_list):
            await websocket.close(CLOSE_BAD_ORIGIN, "Origin not allowed.")
            return
        session = await gw.store.session(websocket.cookies.get(SESSION_COOKIE))
        if session is None:
            await websocket.close(CLOSE_NO_SESSION, domain.NOT_SIGNED_IN)
            return
        client = LiveClient(websocket, session.agent.agent_id, session.chatbot_ids, settings.ws_send_queue_size,
                            session_digest=session.token_digest)
        gw.hub.add(client)
        writer = asyncio.create_task(client.run_writer())
        try:
            while not writer.done():
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if session.expires_at <= datetime.now(UTC):
                    await websocket.close(CLOSE_NO_SESSION, "Session expired.")
                    break
                frame = parse_client_frame(message.get("text"))
                if isinstance(frame, str):
                    client.offer(error_frame(frame))
                elif isinstance(frame, PingFrame):
                    client.offer({"type": "pong"})
                elif frame.chatbot_id not in client.member_of:
                    client.offer(error_frame(domain.NOT_A_MEMBER, frame.chatbot_id, 403))
                elif isinstance(frame, SubscribeFrame):
                    epoch, seq = await position(frame.chatbot_id)
                    if client not in gw.hub.clients:
                        continue  # dropped meanwhile (session ended, too slow): it is being closed
                    if frame.chatbot_id not in client.member_of:  # revalidated meanwhile
                        client.offer(error_frame(domain.NOT_A_MEMBER, frame.chatbot_id, 403))
                        continue
                    # No await between these two: "subscribed" precedes every update it covers.
                    gw.hub.subscribe(client, frame.chatbot_id)
                    # `at` (server time) lets a client that reconnects ask what it missed since.
                    client.offer({"type": "subscribed", "chatbot_id": frame.chatbot_id, "epoch": epoch, "seq": seq,
                                  "at": datetime.now(UTC).isoformat()})
                else:
                    gw.hub.unsubscribe(client, frame.chatbot_id)
        except (WebSocketDisconnect, RuntimeError):
            pass  # the client went away (or was dropped as too slow)
        finally:
            gw.hub.remove(client)
            client.stop_writer()
            # The writer's own failure (a dead socket) is not ours to raise; a stuck one is cancelled.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer, 2)

    async def position(chatbot_id: str) -> tuple[str, int]:
        """Where the chatbot's sequence stands: from the queue, else the last update seen."""
        try:
            snap = json.loads(await gw.queue.get(internal_path(chatbot_id, "snapshot"), {"limit": 1}))
            return str(snap["epoch"]), int(snap["seq"])
        except (QueueError, KeyError, ValueError, TypeError):
            return gw.handlers.positions.get(chatbot_id, ("", 0))

    # ------------------------------------------------------------ the dashboard page
    @router.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return page("index.html")

    @router.get("/login", include_in_schema=False)
    async def login_page() -> FileResponse:
        return page("login.html")

    return router


def page(name: str) -> FileResponse:
    path = STATIC_DIR / name
    if not path.is_file():
        raise HTTPException(404, f"{name} is not there yet.")
    return FileResponse(path, media_type="text/html", headers={"Cache-Control": "no-cache"})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(QueueError)
    async def queue_error(_: Request, exc: QueueError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
