"""HTTP hardening for every gateway response: security headers (CSP with no inline script,
frame-ancestors, nosniff, Referrer-Policy, X-Frame-Options) and a cap on request bodies
(413 with a JSON message, read no further than the cap). Both are plain ASGI middleware so
they cover everything: routes, static files, error answers and the health endpoints.

JSON nesting is bounded where bodies are parsed (`json_depth_ok`, used by deps.json_object
and the websocket's frame parser): Python's parser recurses and would fail with a
RecursionError (a 500) on a few thousand `[`."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

TOO_LARGE = "The request body is too large (at most {limit} bytes)."
TOO_DEEP = "The JSON body is nested too deeply (at most {limit} levels)."

# The dashboard: its own scripts, styles and images only; live updates over its own socket.
# `'self'` matches ws:/wss: of the page's host in CSP Level 3 browsers; the explicit ws/wss
# sources (from the request's Host) cover the others.
DASHBOARD_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                 "font-src 'self'; connect-src 'self'{sockets}; object-src 'none'; base-uri 'none'; "
                 "form-action 'self'; frame-ancestors 'none'")
# FastAPI's interactive API docs (/docs, /redoc) are pages of its own with an inline
# bootstrap script and assets from a CDN; they hold no agent data and get a policy of their own.
DOCS_CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
            "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net https://fonts.googleapis.com; "
            "font-src 'self' https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com "
            "https://cdn.redoc.ly; worker-src 'self' blob:; connect-src 'self'; object-src 'none'; "
            "base-uri 'none'; frame-ancestors 'none'")
DOCS_PATHS = ("/docs", "/redoc")
_HOST = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


def content_security_policy(path: str, host: str | None) -> str:
    if path in DOCS_PATHS or path.startswith("/docs/"):
        return DOCS_CSP
    # The Host header goes into the policy only when it is a plain host[:port].
    sockets = f" ws://{host} wss://{host}" if host and _HOST.match(host) else ""
    return DASHBOARD_CSP.format(sockets=sockets)


class SecurityHeaders:
    """Adds the security headers to every HTTP response (an app's own value is kept)."""

    def __init__(self, app: ASGIApp, referrer_policy: str = "same-origin") -> None:
        self.app = app
        self.referrer_policy = referrer_policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        extra = [
            (b"content-security-policy", content_security_policy(scope.get("path", ""), host).encode()),
            (b"x-content-type-options", b"nosniff"),
            (b"x-frame-options", b"DENY"),
            (b"referrer-policy", self.referrer_policy.encode()),
        ]

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k, v) for k, v in extra if k not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)


class BodyLimit:
    """Refuses a request body over `max_bytes` with 413 and a JSON message: by its
    Content-Length before reading anything, else (chunked) as soon as the bytes read pass the
    cap. The body is read (at most the cap) before the app runs and then handed to it."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = _header(scope, b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                declared = -1
            if declared < 0:
                await _json_answer(send, 400, "Invalid Content-Length.")
                return
            if declared > self.max_bytes:
                await _json_answer(send, 413, TOO_LARGE.format(limit=self.max_bytes))
                return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await _json_answer(send, 413, TOO_LARGE.format(limit=self.max_bytes))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


def json_depth_ok(raw: str | bytes, max_depth: int) -> bool:
    """True when no array/object in `raw` (JSON text) is nested deeper than `max_depth`.
    Linear, without recursion; brackets inside strings do not count."""
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > max_depth:
                return False
        elif ch in "]}":
            depth -= 1
    return True


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return None


async def _json_answer(send: Send, status: int, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    headers: list[Any] = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                          (b"connection", b"close")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
