"""Sign-in and the agent's own session: login, logout, me, preferences."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from services.gateway import domain
from services.gateway.deps import SESSION_COOKIE, GatewayDep, SignedIn, SignedInWithCsrf, parse_body
from services.gateway.domain import AgentView, LoginBody, PreferencesBody
from services.gateway.live import CLOSE_NO_SESSION

router = APIRouter(tags=["session"])


@router.post("/api/login", summary="Sign in; sets the session cookie")
async def login(request: Request, gw: GatewayDep) -> JSONResponse:
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
        await gw.store.set_password_hash(agent.agent_id, await asyncio.to_thread(domain.hash_password, body.password))
    settings = gw.settings
    new = await gw.store.create_session(agent.agent_id, timedelta(seconds=settings.session_ttl_s))
    response = JSONResponse({"agent": agent.model_dump(), "csrf_token": new.csrf_token})
    response.set_cookie(SESSION_COOKIE, new.token, max_age=settings.session_ttl_s, path="/", httponly=True,
                        samesite="lax", secure=settings.cookie_secure)
    return response


@router.post("/api/logout", status_code=204, summary="Sign out; deletes the session")
async def logout(request: Request, gw: GatewayDep, session: SignedInWithCsrf) -> Response:
    await gw.store.delete_session(request.cookies.get(SESSION_COOKIE))
    gw.hub.end_session(session.token_digest, CLOSE_NO_SESSION)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=gw.settings.cookie_secure)
    return response


@router.get("/api/me", summary="The signed-in agent, their chatbots and the CSRF token")
async def me(gw: GatewayDep, session: SignedIn) -> dict[str, Any]:
    return {
        "agent": session.agent.model_dump(),
        "chatbots": [gw.directory.describe(c) for c in sorted(session.chatbot_ids)],
        "csrf_token": session.csrf_token,
    }


@router.put("/api/me/preferences", response_model=AgentView,
            summary="The agent's preferences (notification mute switch)")
async def preferences(request: Request, gw: GatewayDep, session: SignedInWithCsrf) -> AgentView:
    body = await parse_body(request, PreferencesBody)
    agent = await gw.store.set_muted(session.agent.agent_id, body.muted)
    if agent is None:
        raise HTTPException(401, domain.NOT_SIGNED_IN)
    return agent
