"""What the routes depend on: the `Gateway` wiring (from `app.state`), the session, the
membership and the CSRF checks, and the request body.

Order of checks on `/api/chatbots/{id}/...`: session (401), membership (403), CSRF on
state-changing calls (403), then the body. Bodies are parsed by hand after those checks
(`parse_body`, not a pydantic parameter) so that even a malformed body from a non-member
gets the 403, not a 422."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, HTTPException, Request
from pydantic import BaseModel, ValidationError
from starlette.requests import HTTPConnection

from services.gateway import domain
from services.gateway.domain import ChatbotDirectory, PendingCommands
from services.gateway.handlers import GatewayHandlers
from services.gateway.live import LiveHub
from services.gateway.queue_client import QueueClient
from services.gateway.settings import GatewaySettings
from services.gateway.passwords import PasswordChecks
from services.gateway.store import AgentStore, LoginLimits, Session
from shared.bus import EventPublisher
from shared.http_limits import NestedTooDeeply, UnusableJson
from shared.http_limits import json_object as parse_json_object

SESSION_COOKIE = "handoff_session"
CSRF_HEADER = "X-CSRF-Token"

B = TypeVar("B", bound=BaseModel)


@dataclass
class Gateway:
    """Everything the routes need, wired once by the composition root (app.py) and kept in
    `app.state.gateway`."""

    settings: GatewaySettings
    store: AgentStore
    login_limits: LoginLimits
    passwords: PasswordChecks
    queue: QueueClient
    hub: LiveHub
    pending: PendingCommands
    directory: ChatbotDirectory
    handlers: GatewayHandlers
    commands: EventPublisher


def gateway(connection: HTTPConnection) -> Gateway:
    """The app's `Gateway`, for HTTP routes and the websocket alike."""
    return connection.app.state.gateway


GatewayDep = Annotated[Gateway, Depends(gateway)]


async def current_session(request: Request, gw: GatewayDep) -> Session:
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


SignedIn = Annotated[Session, Depends(current_session)]
SignedInWithCsrf = Annotated[Session, Depends(session_with_csrf)]
Member = Annotated[Session, Depends(member)]
MemberWithCsrf = Annotated[Session, Depends(member_with_csrf)]


async def json_object(request: Request) -> dict[str, Any]:
    """The body as a JSON object, or a 422 (a 400 when nested too deeply to parse safely)."""
    depth = request.app.state.gateway.settings.max_json_depth
    try:
        return parse_json_object(await request.body() or b"null", depth)
    except NestedTooDeeply as exc:
        raise HTTPException(400, str(exc)) from None
    except UnusableJson as exc:
        raise HTTPException(422, str(exc)) from None


async def parse_body(request: Request, model: type[B]) -> B:
    return validated(model, await json_object(request))


def validated(model: type[B], data: dict[str, Any]) -> B:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise HTTPException(422, domain.validation_message(exc)) from None
