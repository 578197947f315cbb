"""Issue 12 for the gateway: security headers on every response, Secure cookies by default,
request bodies capped (413), JSON nesting bounded (400, never a 500) and websocket messages
capped (close 1009)."""

from __future__ import annotations

import asyncio
import json
import re
from html.parser import HTMLParser

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from services.gateway.deps import SESSION_COOKIE
from services.gateway.routes.pages import STATIC_DIR
from services.gateway.settings import GatewaySettings
from tests.gateway.conftest import add_agent, gateway, login
from tests.gateway.test_live_ws import open_ws, recv, session_cookie

REPLY = "/api/chatbots/alpha/conversations/cv_1/reply"


def assert_security_headers(r: httpx.Response, host: str) -> None:
    what = f"{r.request.method} {r.request.url.path} -> {r.status_code}"
    csp = r.headers.get("content-security-policy")
    assert csp, what
    directives = {d.split()[0]: d.split()[1:] for d in (p.strip() for p in csp.split(";")) if d}
    assert directives["script-src"] == ["'self'"], what  # no inline script, no eval
    assert directives["style-src"] == ["'self'"], what
    assert directives["frame-ancestors"] == ["'none'"], what
    assert directives["object-src"] == ["'none'"], what
    assert "'self'" in directives["connect-src"] and f"ws://{host}" in directives["connect-src"], what
    assert r.headers.get("x-content-type-options") == "nosniff", what
    assert r.headers.get("x-frame-options") == "DENY", what
    assert r.headers.get("referrer-policy") == "same-origin", what


async def test_security_headers_on_every_response(stack):
    settings = stack.gateway_settings()
    await add_agent(settings, "hdr@example.com", ["alpha"])
    async with gateway(stack, MAX_BODY_BYTES="1000") as gw, httpx.AsyncClient(base_url=gw.url) as client:
        host = gw.url.removeprefix("http://")
        answers = [await client.get(path) for path in
                   ("/", "/login", "/static/js/app.js", "/static/css/app.css", "/static/nope.js", "/api/me",
                    "/healthz", "/readyz", "/openapi.json", "/no/such/page")]
        answers.append(await client.post("/api/login", json={"email": "hdr@example.com", "password": "wrong"}))
        csrf = await login(client, "hdr@example.com")
        answers += [await client.get("/api/me"), await client.get("/api/chatbots/alpha/stats"),
                    await client.get("/api/chatbots/beta/stats"),  # 403, not a member
                    await client.post(REPLY, json={"text": "x" * 5000}, headers={"X-CSRF-Token": csrf})]  # 413
        assert {r.status_code for r in answers} >= {200, 401, 403, 404, 413}
        for r in answers:
            assert_security_headers(r, host)
        # The interactive API docs keep working under a policy of their own, framed by nobody.
        docs = await client.get("/docs")
        assert docs.status_code == 200 and "frame-ancestors 'none'" in docs.headers["content-security-policy"]
        assert docs.headers["x-frame-options"] == "DENY"


class _InlineFinder(HTMLParser):
    """What a `script-src 'self'; style-src 'self'` policy would block in a page."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        names = {k for k, _ in attrs}
        if tag == "script" and "src" not in names:
            self.blocked.append("inline <script>")
            self._in_script = True
        if tag == "style":
            self.blocked.append("inline <style>")
        self.blocked += [f"{k}= on <{tag}>" for k in names if k.startswith("on") or k == "style"]
        self.blocked += [f"javascript: URL on <{tag}>" for _, v in attrs if v and v.strip().lower().startswith("javascript:")]


def test_dashboard_pages_have_nothing_inline_the_policy_would_block():
    pages = sorted(STATIC_DIR.glob("*.html"))
    assert {p.name for p in pages} >= {"index.html", "login.html"}
    for page in pages:
        finder = _InlineFinder()
        finder.feed(page.read_text())
        assert finder.blocked == [], (page.name, finder.blocked)
    # Nor do the scripts build inline handlers or style attributes, or evaluate strings.
    for script in STATIC_DIR.rglob("*.js"):
        text = script.read_text()
        for pattern in (r"\binnerHTML\b", r"\beval\(", r"new Function\(", r"setAttribute\(\s*[\"'](style|on\w+)",
                        r"\bstyle\s*:\s*[\"']"):
            assert not re.search(pattern, text), (script.name, pattern)


async def test_session_cookie_is_secure_by_default(stack):
    assert GatewaySettings.model_fields["cookie_secure"].default is True
    settings = stack.gateway_settings()
    await add_agent(settings, "secure-default@example.com", ["alpha"])
    # COOKIE_SECURE left out entirely: the default holds.
    async with gateway(stack, COOKIE_SECURE=None) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        assert gw.app.state.gateway.settings.cookie_secure is True
        r = await client.post("/api/login", json={"email": "secure-default@example.com", "password": "correct horse 1"})
        assert r.status_code == 200, r.text
        assert "Secure" in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
        # The sign-out's deletion carries the same attributes (a browser would not apply it otherwise).
        token, csrf = r.cookies[SESSION_COOKIE], r.json()["csrf_token"]
        out = await client.post("/api/logout", headers={"X-CSRF-Token": csrf, "Cookie": f"{SESSION_COOKIE}={token}"})
        assert out.status_code == 204 and "Secure" in out.headers["set-cookie"]


async def test_request_bodies_are_capped_with_a_clear_413(stack):
    settings = stack.gateway_settings()
    await add_agent(settings, "big@example.com", ["alpha"])
    async with gateway(stack) as gw, httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        csrf = await login(client, "big@example.com")
        headers = {"X-CSRF-Token": csrf}
        limit = 64 * 1024
        # Just under the cap is read and judged on its content (the reply text is too long: 422).
        r = await client.post(REPLY, content=json.dumps({"text": "x" * (limit - 100)}),
                              headers={**headers, "Content-Type": "application/json"})
        assert r.status_code == 422, r.text
        # Over the cap, by its Content-Length: refused before it is read.
        for path in (REPLY, "/api/login", "/api/chatbots/alpha/settings/human-handoff", "/api/me/preferences"):
            method = "PUT" if "settings" in path or "preferences" in path else "POST"
            r = await client.request(method, path, content=b"{" + b" " * (limit + 1) + b"}",
                                     headers={**headers, "Content-Type": "application/json"})
            assert r.status_code == 413, (path, r.status_code, r.text)
            assert r.json() == {"detail": f"The request body is too large (at most {limit} bytes)."}
        # Without a Content-Length (chunked), as soon as the bytes read pass the cap.
        sent = 0

        async def chunks():
            nonlocal sent
            for _ in range(200):  # up to 12.8 MB if nobody stopped reading
                sent += 65536
                yield b"[" * 65536

        try:
            r = await client.post(REPLY, content=chunks(), headers={**headers, "Content-Type": "application/json"})
            assert r.status_code == 413 and "too large" in r.json()["detail"]
        except httpx.TransportError:
            pass  # the server answered 413 and closed while the client was still sending
        assert sent < 50 * 65536, sent
        # The session still works afterwards.
        assert (await client.get("/api/me")).status_code == 200

    # The cap is a setting.
    async with gateway(stack, MAX_BODY_BYTES="100") as gw, httpx.AsyncClient(base_url=gw.url) as client:
        r = await client.post("/api/login", json={"email": "big@example.com", "password": "p" * 200})
        assert r.status_code == 413 and r.json()["detail"] == "The request body is too large (at most 100 bytes)."


async def test_deeply_nested_json_is_a_400_never_a_500(stack):
    settings = stack.gateway_settings()
    await add_agent(settings, "deep@example.com", ["alpha"])
    async with gateway(stack) as gw, httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        csrf = await login(client, "deep@example.com")
        headers = {"X-CSRF-Token": csrf, "Content-Type": "application/json"}
        for depth in (20_000, 2_000):
            for method, path in (("POST", REPLY), ("PUT", "/api/chatbots/alpha/settings/human-handoff"),
                                 ("PUT", "/api/me/preferences")):
                r = await client.request(method, path, content=b"[" * depth, headers=headers)
                assert r.status_code == 400, (method, path, depth, r.status_code, r.text)
                assert r.json()["detail"] == "The JSON body is nested too deeply (at most 32 levels)."
            r = await client.post("/api/login", content=b"[" * depth, headers={"Content-Type": "application/json"})
            assert r.status_code == 401, r.text
        # 100,000 `[` is over the body cap before its depth matters.
        r = await client.post(REPLY, content=b"[" * 100_000, headers=headers)
        assert r.status_code == 413
        # Brackets inside strings are text, not nesting; a normal nested body still works.
        r = await client.post(REPLY, json={"text": "[[[[" * 100 + "{{{{" * 100, "command_id": "cmd-brackets-1"},
                              headers={"X-CSRF-Token": csrf})
        assert r.status_code in (200, 202), r.text


async def test_websocket_messages_are_capped(stack):
    settings = stack.gateway_settings()
    await add_agent(settings, "ws-big@example.com", ["alpha"])
    async with gateway(stack, WS_MAX_MESSAGE_BYTES="20000") as gw:
        cookie = await session_cookie(gw.url, "ws-big@example.com")
        # Deeply nested but small: an error frame, and the socket goes on.
        async with open_ws(gw, cookie) as ws:
            await ws.send("[" * 3000)
            assert (await recv(ws))["type"] == "error"
            await ws.send(json.dumps({"type": "ping"}))
            assert await recv(ws) == {"type": "pong"}
        # Over the cap: closed with 1009 (message too big).
        for big in ("x" * 30_000, b"x" * 30_000):
            async with open_ws(gw, cookie) as ws:
                await ws.send(big)
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(ws.recv(), 10)
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


async def test_the_served_process_caps_websocket_messages_in_the_server(stack, monkeypatch):
    """`python -m services.gateway` has uvicorn refuse to read a bigger websocket message at all
    (the app's own check above only sees what the server already read)."""
    import services.gateway.__main__ as main
    import shared.service

    seen: dict = {}
    monkeypatch.setattr(shared.service.QuietServer, "run",
                        lambda server: seen.update(ws_max_size=server.config.ws_max_size, ws=server.config.ws))
    monkeypatch.setattr(shared.service, "configure_logging", lambda *a, **kw: None)
    monkeypatch.setattr(main, "create_app", lambda settings: None)
    settings = stack.gateway_settings(WS_MAX_MESSAGE_BYTES="12345")
    monkeypatch.setattr(main, "GatewaySettings", lambda: settings)
    assert main.main([]) == 0
    assert seen["ws_max_size"] == 12345 and seen["ws"] == "websockets-sansio"
