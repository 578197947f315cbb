"""The public REST API against the real broker/Redis/Mongo-wire server and a fake queue:
sessions, CSRF, throttling, proxying, command round-trips and the permission matrix."""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import UTC, datetime, timedelta

import httpx

from services.gateway.deps import SESSION_COOKIE
from services.gateway.domain import token_digest
from shared.stores import open_mongo
from tests.gateway.conftest import (
    CONV_ACTIVE,
    CONV_SILENT,
    CONV_UNKNOWN,
    PASSWORD,
    add_agent,
    gateway,
    login,
    publish_settings,
)
from tests.support import eventually


def cid() -> str:
    return "cmd-" + uuid.uuid4().hex


async def test_login_sets_secure_session_cookie_and_me_works(stack):
    settings = stack.gateway_settings()
    await add_agent(settings, "Dana@Example.com", ["alpha"], first_name="Dana")
    await publish_settings(stack, "alpha", enabled=True, name="Alpha Bot")
    async with gateway(stack) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        assert (await client.get("/api/me")).status_code == 401
        # E-mail is matched case-insensitively.
        r = await client.post("/api/login", json={"email": "dana@EXAMPLE.com", "password": PASSWORD})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["agent"]["display_name"] == "Dana" and body["agent"]["email"] == "Dana@Example.com"
        cookie = r.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=")
        assert "HttpOnly" in cookie and re.search(r"SameSite=lax", cookie, re.I) and "Secure" not in cookie

        async def me_has_settings():
            me = (await client.get("/api/me")).json()
            return me if me["chatbots"] == [{"chatbot_id": "alpha", "name": "Alpha Bot", "handoff_enabled": True,
                                                   "settings_version": 0}] else None

        me = await eventually(me_has_settings, timeout=15)
        assert me["csrf_token"] == body["csrf_token"]
        assert me["agent"] == {"agent_id": body["agent"]["agent_id"], "email": "Dana@Example.com",
                               "first_name": "Dana", "display_name": "Dana", "muted": False}

        # The session is stored by digest only: the cookie value itself is nowhere in Mongo.
        token = client.cookies[SESSION_COOKIE]
        mongo, db = open_mongo(settings)
        try:
            assert await db["sessions"].find_one({"_id": token}) is None
            assert await db["sessions"].find_one({"_id": token_digest(token)}) is not None
        finally:
            await mongo.close()


async def test_cookie_secure_flag_when_configured(stack):
    settings = stack.gateway_settings(COOKIE_SECURE="true")
    await add_agent(settings, "sec@example.com", ["alpha"])
    async with gateway(stack, COOKIE_SECURE="true") as gw, httpx.AsyncClient(base_url=gw.url) as client:
        r = await client.post("/api/login", json={"email": "sec@example.com", "password": PASSWORD})
        assert r.status_code == 200
        assert "Secure" in r.headers["set-cookie"]


async def test_bad_logins_get_one_generic_error_then_throttled(stack):
    # Two failures free, then a minute's wait: longer than this test takes.
    limits = {"LOGIN_FREE_FAILURES": "2", "LOGIN_BACKOFF_BASE_S": "60"}
    settings = stack.gateway_settings(**limits)
    await add_agent(settings, "t@example.com", ["alpha"])
    async with gateway(stack, **limits) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        unknown = await client.post("/api/login", json={"email": "nobody@example.com", "password": PASSWORD})
        wrong = await client.post("/api/login", json={"email": "t@example.com", "password": "wrong password"})
        garbage = await client.post("/api/login", content=b"not json", headers={"content-type": "application/json"})
        form = await client.post("/api/login", data={"email": "t@example.com", "password": PASSWORD})
        assert form.status_code == 415  # a cross-site HTML form cannot sign anyone in
        for r in (unknown, wrong, garbage):
            assert r.status_code == 401 and r.json() == {"detail": "Invalid e-mail or password."}
            assert SESSION_COOKIE not in r.headers.get("set-cookie", "")
        for _ in range(2):  # the third failure is checked, and starts the wait
            r = await client.post("/api/login", json={"email": "T@example.com", "password": "wrong"})
            assert r.status_code == 401
        # Waiting now: even the right password is not checked until the wait has passed.
        waiting = await client.post("/api/login", json={"email": "t@example.com", "password": PASSWORD})
        assert waiting.status_code == 429
        assert 1 <= int(waiting.headers["retry-after"]) <= 60
        assert re.fullmatch(r"Too many sign-in attempts\. Try again in \d+ seconds\.", waiting.json()["detail"])
        assert SESSION_COOKIE not in waiting.headers.get("set-cookie", "")
        # Another e-mail is not affected.
        other = await client.post("/api/login", json={"email": "nobody2@example.com", "password": "x"})
        assert other.status_code == 401


async def test_csrf_logout_and_session_expiry(stack):
    settings = stack.gateway_settings()
    await add_agent(settings, "c@example.com", ["alpha"])
    async with gateway(stack) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        csrf = await login(client, "c@example.com")
        # State-changing calls without (or with a wrong) CSRF header are refused.
        r = await client.put("/api/me/preferences", json={"muted": True})
        assert r.status_code == 403 and r.json()["detail"] == "Missing or invalid CSRF token."
        r = await client.put("/api/me/preferences", json={"muted": True}, headers={"X-CSRF-Token": "nope"})
        assert r.status_code == 403
        assert (await client.post("/api/logout")).status_code == 403
        r = await client.put("/api/me/preferences", json={"muted": True}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 200 and r.json()["muted"] is True
        assert (await client.get("/api/me")).json()["agent"]["muted"] is True  # remembered
        r = await client.put("/api/me/preferences", json={"muted": "loud"}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 422

        r = await client.post("/api/logout", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 204
        assert f'{SESSION_COOKIE}=""' in r.headers["set-cookie"] or "Max-Age=0" in r.headers["set-cookie"]
        assert (await client.get("/api/me")).status_code == 401

        # Expiry: a session past its expires_at is refused even before the TTL sweeper runs.
        await login(client, "c@example.com")
        assert (await client.get("/api/me")).status_code == 200
        mongo, db = open_mongo(settings)
        try:
            digest = token_digest(client.cookies[SESSION_COOKIE])
            await db["sessions"].update_one({"_id": digest},
                                            {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}})
        finally:
            await mongo.close()
        assert (await client.get("/api/me")).status_code == 401


async def test_reads_are_proxied_and_queue_errors_mapped(stack):
    settings = stack.gateway_settings()
    await add_agent(settings, "r@example.com", ["alpha", "ghost"])
    async with gateway(stack) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        await login(client, "r@example.com")
        snap = await client.get("/api/chatbots/alpha/snapshot", params={"limit": 5})
        assert snap.status_code == 200 and snap.json()["epoch"] == "e1" and snap.json()["stats"]["open"] == 1
        assert (await client.get("/api/chatbots/alpha/stats")).json()["chatbot_id"] == "alpha"
        assert len((await client.get("/api/chatbots/alpha/handoffs")).json()["items"]) == 1
        convs = await client.get("/api/chatbots/alpha/conversations", params={"status": "needs_reply", "q": "ada"})
        assert convs.json()["items"][0]["conversation_id"] == "cv_1"
        assert any(p.startswith("/internal/chatbots/alpha/conversations?") and "status=needs_reply" in p and "q=ada" in p
                   for p in stack.queue_seen["requests"])
        bad_status = await client.get("/api/chatbots/alpha/conversations", params={"status": "weird"})
        assert bad_status.status_code == 422
        detail = await client.get("/api/chatbots/alpha/conversations/cv_1")
        assert detail.status_code == 200 and detail.json()["messages"]["items"][0]["text"] == "hi"
        # 404 from the queue stays a 404 with its detail.
        missing = await client.get("/api/chatbots/alpha/conversations/cv_nope")
        assert missing.status_code == 404 and missing.json() == {"detail": "Conversation not found."}
        assert (await client.get("/api/chatbots/ghost/settings")).status_code == 404
        # Ids are passed to the queue as single path segments: no way to walk elsewhere.
        before = len(stack.queue_seen["requests"])
        assert (await client.get("/api/chatbots/alpha/conversations/..")).status_code == 404
        assert (await client.get("/api/chatbots/alpha/conversations/a%3Fx=1")).status_code == 404
        assert stack.queue_seen["requests"][before:] == ["/internal/chatbots/alpha/conversations/a%3Fx=1?limit=100"]

        # Settings: the public view, never a secret.
        s = await client.get("/api/chatbots/alpha/settings")
        assert s.status_code == 200
        assert set(s.json()) == {"chatbot_id", "name", "timezone", "human_handoff", "channels", "version"}
        assert s.json()["channels"] == {"telegram_configured": True, "whatsapp_configured": True,
                                        "whatsapp_connected": False, "whatsapp_phone_number_id": "555"}
        assert "SECRET" not in s.text and "appsecret" not in s.text

    # The queue unreachable: a clear 503.
    async with gateway(stack, QUEUE_URL="http://127.0.0.1:9") as gw, httpx.AsyncClient(base_url=gw.url) as client:
        await login(client, "r@example.com")
        r = await client.get("/api/chatbots/alpha/stats")
        assert r.status_code == 503 and "unreachable" in r.json()["detail"]


async def test_commands_round_trip_through_the_bus(stack):
    settings = stack.gateway_settings(COMMAND_TIMEOUT_S="1.5")
    await add_agent(settings, "a@example.com", ["alpha"], first_name=None)
    async with gateway(stack, COMMAND_TIMEOUT_S="1.5") as gw, httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
        csrf = await login(client, "a@example.com")
        h = {"X-CSRF-Token": csrf}
        command_id = cid()
        r = await client.post("/api/chatbots/alpha/conversations/cv_1/reply", headers=h,
                              json={"command_id": command_id, "text": "Hello there"})
        assert r.status_code == 200, r.text
        assert r.json()["command_id"] == command_id and r.json()["ok"] is True
        sent = [c for c in stack.queue_seen["commands"] if c.command_id == command_id]
        assert len(sent) == 1
        assert sent[0].action == "reply" and sent[0].text == "Hello there" and sent[0].conversation_id == "cv_1"
        # No first name: the agent is shown by e-mail.
        assert sent[0].agent.display_name == "a@example.com"

        r = await client.post(f"/api/chatbots/alpha/conversations/{CONV_ACTIVE}/reply", headers=h,
                              json={"command_id": cid(), "text": "hi"})
        assert r.status_code == 409 and r.json() == {"detail": "Can only reply to handed-off conversations."}
        r = await client.post(f"/api/chatbots/alpha/conversations/{CONV_UNKNOWN}/close", headers=h,
                              json={"command_id": cid()})
        assert r.status_code == 404
        for action, wire in (("close", "close"), ("reopen", "reopen"), ("return-to-ai", "return_to_ai")):
            command_id = cid()
            r = await client.post(f"/api/chatbots/alpha/conversations/cv_1/{action}", headers=h,
                                  json={"command_id": command_id})
            assert r.status_code == 200, (action, r.text)
            assert [c.action for c in stack.queue_seen["commands"] if c.command_id == command_id] == [wire]
        # The queue never answers: 202, and the command was still published (once).
        command_id = cid()
        r = await client.post(f"/api/chatbots/alpha/conversations/{CONV_SILENT}/close", headers=h,
                              json={"command_id": command_id})
        assert r.status_code == 202 and r.json()["command_id"] == command_id
        assert len([c for c in stack.queue_seen["commands"] if c.command_id == command_id]) == 1

        # Empty / whitespace text: 422 before anything is published.
        before = len(stack.queue_seen["commands"])
        for body in ({"command_id": cid(), "text": "   \n"}, {"command_id": cid(), "text": ""},
                     {"command_id": "short", "text": "hi"}, {"text": "no id"}):
            r = await client.post("/api/chatbots/alpha/conversations/cv_1/reply", headers=h, json=body)
            assert r.status_code == 422, body
        r = await client.post("/api/chatbots/alpha/conversations/cv_1/reply", headers=h,
                              json={"command_id": cid(), "text": " "})
        assert r.json() == {"detail": "Reply text cannot be empty."}
        r = await client.post("/api/chatbots/alpha/conversations/cv_1/reply", headers=h, content=b"{oops")
        assert r.status_code == 422
        assert len(stack.queue_seen["commands"]) == before


async def test_human_handoff_settings_update(stack):
    settings = stack.gateway_settings()
    await add_agent(settings, "s@example.com", ["alpha"])
    async with gateway(stack) as gw, httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
        h = {"X-CSRF-Token": await login(client, "s@example.com")}
        before = len(stack.queue_seen["commands"])
        bad = await client.put("/api/chatbots/alpha/settings/human-handoff", headers=h,
                               json={"enabled": True, "start_time": "17:00", "end_time": "09:00"})
        assert bad.status_code == 422 and bad.json() == {"detail": "End Time must be after Start Time."}
        bad = await client.put("/api/chatbots/alpha/settings/human-handoff", headers=h,
                               json={"timezone": "Mars/Base"})
        assert bad.status_code == 422 and bad.json() == {"detail": "Unknown timezone: 'Mars/Base'."}
        # A time with an offset cannot be compared with the schedule's local times: a 422, not a 500.
        bad = await client.put("/api/chatbots/alpha/settings/human-handoff", headers=h,
                               json={"version": 0, "end_time": "00:00:00Z"})
        assert bad.status_code == 422 and "without an offset" in bad.json()["detail"]
        assert len(stack.queue_seen["commands"]) == before

        # The form sends the version it was loaded at; without one the save is refused.
        missing = await client.put("/api/chatbots/alpha/settings/human-handoff", headers=h, json={"enabled": True})
        assert missing.status_code == 422 and "version" in missing.json()["detail"]
        assert len(stack.queue_seen["commands"]) == before

        command_id = cid()
        ok = await client.put("/api/chatbots/alpha/settings/human-handoff", headers=h,
                              json={"command_id": command_id, "version": 4, "enabled": False,
                                    "contact_fields": ["email"]})
        assert ok.status_code == 200, ok.text
        assert ok.json()["human_handoff"]["enabled"] is False
        assert ok.json()["human_handoff"]["contact_fields"] == ["email"]
        assert ok.json()["version"] == 5
        assert "SECRET" not in ok.text and "appsecret" not in ok.text
        sent = [c for c in stack.queue_seen["commands"] if c.command_id == command_id]
        assert len(sent) == 1 and sent[0].type == "agent.update_human_handoff"
        assert sent[0].based_on_version == 4 and sent[0].human_handoff.contact_fields == ["email"]


def chatbot_routes(app) -> list[tuple[str, str]]:
    """Every (method, path) under /api/chatbots/{chatbot_id}, from the app's own route table."""
    routes = []
    for path, ops in app.openapi()["paths"].items():
        if path.startswith("/api/chatbots/{chatbot_id}"):
            routes += [(method.upper(), path) for method in ops]
    return sorted(routes)


async def test_permission_matrix_every_chatbot_route_refuses_non_members(stack):
    settings = stack.gateway_settings()
    await add_agent(settings, "only-alpha@example.com", ["alpha"])
    async with gateway(stack) as gw, httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
        routes = chatbot_routes(gw.app)
        # The contract's table: a new endpoint joins this list automatically.
        assert len(routes) >= 11, routes
        csrf = await login(client, "only-alpha@example.com")
        anonymous = httpx.AsyncClient(base_url=gw.url)
        before_requests = len(stack.queue_seen["requests"])
        before_commands = len(stack.queue_seen["commands"])
        try:
            for method, path in routes:
                url = path.replace("{chatbot_id}", "beta").replace("{conversation_id}", "cv_1")
                for body in ({"command_id": cid(), "text": "hi", "enabled": True}, None):
                    kwargs = {"json": body} if body is not None else {"content": b"{broken"}
                    r = await client.request(method, url, headers={"X-CSRF-Token": csrf}, **kwargs)
                    assert r.status_code == 403, (method, url, r.status_code, r.text)
                    assert r.json() == {"detail": "Not a member of this chatbot."}
                    # Without the CSRF header it is still the membership that refuses.
                    r = await client.request(method, url, **kwargs)
                    assert r.status_code == 403 and r.json()["detail"] == "Not a member of this chatbot."
                r = await anonymous.request(method, url, json={"command_id": cid()})
                assert r.status_code == 401, (method, url)
        finally:
            await anonymous.aclose()
        # Nothing reached the queue for beta.
        assert len(stack.queue_seen["requests"]) == before_requests
        assert len(stack.queue_seen["commands"]) == before_commands


async def test_dashboard_pages_and_openapi(stack):
    from services.gateway.routes.pages import STATIC_DIR

    async with gateway(stack) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        assert (await client.get("/openapi.json")).status_code == 200
        assert (await client.get("/docs")).status_code == 200
        for route, name in (("/", "index.html"), ("/login", "login.html")):
            r = await client.get(route)
            path = STATIC_DIR / name
            if path.is_file():
                assert r.status_code == 200 and r.content == path.read_bytes()
            else:
                assert r.status_code == 404
        statics = sorted(p for p in STATIC_DIR.rglob("*") if p.is_file())
        if statics:
            rel = statics[0].relative_to(STATIC_DIR).as_posix()
            r = await client.get(f"/static/{rel}")
            assert r.status_code == 200 and r.content == statics[0].read_bytes()
        assert (await client.get("/static/../settings.py")).status_code == 404
        ready = await client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["checks"] == {"broker": True, "topics": True, "consumers": True, "mongo": True, "redis": True}


async def test_chatbot_names_are_known_right_after_start_up(stack):
    """The settings table is read to its end before the gateway serves: no first /api/me
    showing bare chatbot ids."""
    settings = stack.gateway_settings()
    await add_agent(settings, "early@example.com", ["alpha"])
    await publish_settings(stack, "alpha", enabled=True, name="Alpha Early")
    async with gateway(stack) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        # Checked the moment start-up is over, before any request could give it time.
        assert "alpha" in gw.app.state.gateway.directory.chatbots
        await login(client, "early@example.com")
        me = (await client.get("/api/me")).json()
        assert me["chatbots"] == [{"chatbot_id": "alpha", "name": "Alpha Early", "handoff_enabled": True,
                                  "settings_version": 0}]


class _BrokerDown:
    async def publish(self, event) -> None:  # noqa: ANN001
        raise ConnectionError("no broker")


async def test_commands_answer_503_when_the_broker_is_down(stack):
    settings = stack.gateway_settings()
    await add_agent(settings, "down@example.com", ["alpha"])
    async with gateway(stack) as gw, httpx.AsyncClient(base_url=gw.url, timeout=10) as client:
        h = {"X-CSRF-Token": await login(client, "down@example.com")}
        state = gw.app.state.gateway
        state.commands = _BrokerDown()
        r = await client.post("/api/chatbots/alpha/conversations/cv_1/reply", headers=h,
                              json={"command_id": cid(), "text": "Hello"})
        assert r.status_code == 503 and r.json() == {"detail": "Could not send the command. Try again in a moment."}
        r = await client.post("/api/chatbots/alpha/conversations/cv_1/close", headers=h, json={"command_id": cid()})
        assert r.status_code == 503
        r = await client.put("/api/chatbots/alpha/settings/human-handoff", headers=h, json={"version": 0, "enabled": True})
        assert r.status_code == 503
        assert len(state.pending) == 0  # nobody is left waiting for a result that cannot come


async def test_login_throttle_holds_against_parallel_guesses(stack):
    """Each attempt counts before the (slow) password check, and past the free failures only
    one attempt at a time gets through: many guesses sent at once get at most
    LOGIN_FREE_FAILURES + 1 checks."""
    limits = {"LOGIN_FREE_FAILURES": "3", "LOGIN_BACKOFF_BASE_S": "60"}
    settings = stack.gateway_settings(**limits)
    await add_agent(settings, "par@example.com", ["alpha"])
    async with gateway(stack, **limits) as gw, httpx.AsyncClient(base_url=gw.url, timeout=30) as client:
        answers = await asyncio.gather(*(client.post("/api/login", json={"email": "par@example.com",
                                                                         "password": f"guess {i}"})
                                         for i in range(12)))
        codes = [r.status_code for r in answers]
        assert set(codes) == {401, 429} and 1 <= codes.count(401) <= 4, codes
        assert all(int(r.headers["retry-after"]) >= 1 for r in answers if r.status_code == 429)
        # A success clears the count (checked on another e-mail, this one must wait now).
        await add_agent(settings, "ok@example.com", ["alpha"])
        for _ in range(3):
            assert (await client.post("/api/login", json={"email": "ok@example.com", "password": "no"})).status_code == 401
        await login(client, "ok@example.com")
        for _ in range(3):  # six failures in all, but the success between reset the count
            assert (await client.post("/api/login", json={"email": "ok@example.com", "password": "no"})).status_code == 401
        await login(client, "ok@example.com")
