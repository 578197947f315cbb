"""`/ws`, the live protocol (docs/contracts.md "Live protocol"): subscribe / unsubscribe /
ping / presence from the client; updates reach the socket through the LiveHub (handlers.py)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from fastapi import APIRouter
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from services.gateway import domain
from services.gateway.deps import SESSION_COOKIE, Gateway, gateway
from services.gateway.domain import PingFrame, PresenceFrame, SubscribeFrame, error_frame, parse_client_frame
from services.gateway.live import CLOSE_BAD_ORIGIN, CLOSE_NO_SESSION, CLOSE_TOO_BIG, LiveClient
from services.gateway.presence import Presence
from services.gateway.queue_client import QueueError, internal_path

router = APIRouter()


async def live(websocket: WebSocket) -> None:
    gw: Gateway = gateway(websocket)
    settings = gw.settings
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
    expires_at = session.expires_at
    agent = session.agent.ref()  # named on presence (who views, who types)
    presence: Presence = websocket.app.state.presence
    del session  # held for the socket's life otherwise: memory per idle socket counts
    gw.hub.add(client)
    try:
        while True:
            message = await websocket.receive()
            if message["type"] == "websocket.disconnect":
                break
            if expires_at <= datetime.now(UTC):
                await websocket.close(CLOSE_NO_SESSION, "Session expired.")
                break
            if len(message.get("text") or message.get("bytes") or b"") > settings.ws_max_message_bytes:
                await websocket.close(CLOSE_TOO_BIG, "Message too big.")
                break
            frame = parse_client_frame(message.get("text"), settings.max_json_depth)
            if isinstance(frame, str):
                client.offer(error_frame(frame))
            elif isinstance(frame, PingFrame):
                client.offer({"type": "pong"})
            elif frame.chatbot_id not in client.member_of:
                client.offer(error_frame(domain.NOT_A_MEMBER, frame.chatbot_id, 403))
            elif isinstance(frame, PresenceFrame):
                refused = await presence.on_frame(client, agent, frame)
                if refused:
                    client.offer(error_frame(refused, frame.chatbot_id, 429))
            elif isinstance(frame, SubscribeFrame):
                epoch, seq = await position(gw, frame.chatbot_id)
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
                there = await presence.snapshot(frame.chatbot_id)  # who is there now, if anyone
                if there["entries"]:
                    client.offer(there)
            else:
                gw.hub.unsubscribe(client, frame.chatbot_id)
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client went away (or was dropped as too slow)
    finally:
        gw.hub.remove(client)
        client.stop_now()
        await presence.disconnected(client)  # what it showed is left, on every gateway


# A plain Starlette route, not FastAPI's: no dependency solving and its two exit stacks held
# for the whole life of every socket (memory per idle socket is what bounds a process).
router.routes.append(WebSocketRoute("/ws", live))


async def position(gw: Gateway, chatbot_id: str) -> tuple[str, int]:
    """Where the chatbot's sequence stands: from the queue, else the last update seen."""
    try:
        snap = json.loads(await gw.queue.get(internal_path(chatbot_id, "snapshot"), {"limit": 1}))
        return str(snap["epoch"]), int(snap["seq"])
    except (QueueError, KeyError, ValueError, TypeError):
        return gw.handlers.positions.get(chatbot_id, ("", 0))
