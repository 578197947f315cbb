"""Sign-in and the agent's own session: login, logout, me, preferences."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from services.gateway import domain
from services.gateway.deps import SESSION_COOKIE, GatewayDep, SignedIn, SignedInWithCsrf, parse_body
from services.gateway.domain import AgentView, LoginBody, PreferencesBody
from services.gateway.live import CLOSE_NO_SESSION
from services.gateway.passwords import Busy
from shared.ratelimit import RateLimited, client_address
from shared.views import REPLY_MAX_CHARS

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
    peer = request.client.host if request.client else None
    address = client_address(peer, request.headers.get("x-forwarded-for"), gw.settings.trusted_proxy_networks)
    admitted = await gw.login_limits.admit(body.email, address)  # counted now; cleared by a success
    if not admitted.allowed:
        raise RateLimited(admitted.retry_after_s, domain.TOO_MANY_ATTEMPTS.format(
            wait=domain.in_words(admitted.retry_after_s)))
    found = await gw.store.find_login(body.email)
    # Verify even for an unknown e-mail so that both failures look (and take) the same.
    # Argon2 is deliberately slow and large: off the event loop, a few at a time.
    try:
        ok = await gw.passwords.verify(found[1] if found else None, body.password)
    except Busy as busy:
        raise HTTPException(503, domain.SIGN_IN_BUSY.format(wait=domain.in_words(busy.retry_after_s)),
                            headers={"Retry-After": str(busy.retry_after_s)}) from None
    if found is None or not ok:
        raise HTTPException(401, domain.INVALID_LOGIN)
    agent, password_hash = found
    await gw.login_limits.succeeded(body.email)
    if domain.needs_rehash(password_hash):
        with contextlib.suppress(Busy):  # rehashed at a later sign-in instead
            await gw.store.set_password_hash(agent.agent_id, await gw.passwords.hash(body.password))
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
        # What the dashboard must respect, from the one place the server keeps it.
        "limits": {"reply_max_chars": REPLY_MAX_CHARS,
                   "reply_window_warning_s": gw.settings.reply_window_warning_min * 60},
    }


@router.put("/api/me/preferences", response_model=AgentView,
            summary="The agent's preferences (notification mute switch)")
async def preferences(request: Request, gw: GatewayDep, session: SignedInWithCsrf) -> AgentView:
    body = await parse_body(request, PreferencesBody)
    agent = await gw.store.set_muted(session.agent.agent_id, body.muted)
    if agent is None:
        raise HTTPException(401, domain.NOT_SIGNED_IN)
    return agent
