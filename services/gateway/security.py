"""Security headers on every gateway response: CSP with no inline script, frame-ancestors,
nosniff, Referrer-Policy, X-Frame-Options. Plain ASGI middleware, so it covers everything:
routes, static files, error answers, the body limit's 413 and the health endpoints.

Bodies are capped by `shared.http_limits.BodyLimit`; JSON nesting is bounded where bodies
are parsed (deps.json_object and the websocket's frame parser)."""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.http_limits import header

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
        host = header(scope, b"host")
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
