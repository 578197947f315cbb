"""The internal API's service token: every /internal route requires it (health and
readiness stay open). Only the gateway holds it; without it nothing of the queue's record
(transcripts, contacts) is served to whatever else reaches the port."""

from __future__ import annotations

import hmac

from fastapi import HTTPException, Request

from services.queue.settings import QueueSettings

MIN_TOKEN_CHARS = 16


def service_token(settings: QueueSettings) -> bytes:
    """The configured token; the queue refuses to serve without a real one."""
    token = settings.queue_api_token.get_secret_value() if settings.queue_api_token else ""
    if len(token) < MIN_TOKEN_CHARS:
        raise RuntimeError(
            f"QUEUE_API_TOKEN must be set (at least {MIN_TOKEN_CHARS} characters): the queue's internal API "
            "serves transcripts and contacts, to the gateway only. The local runner generates one; compose "
            "and Kubernetes take it from their secrets.")
    return token.encode()


async def require_service_token(request: Request) -> None:
    """401 unless the request carries the token (compared in constant time)."""
    expected: bytes = request.app.state.queue_api_token
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected):
        raise HTTPException(401, "The internal API needs the queue's service token.",
                            headers={"WWW-Authenticate": "Bearer"})
