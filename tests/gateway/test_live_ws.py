"""The live protocol (/ws) against the real broker: handshake checks, subscriptions limited
to memberships, updates / command results / settings forwarded with their sequence, bad
frames answered, and two gateway processes each delivering to their own clients."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from services.gateway.deps import SESSION_COOKIE
from services.gateway.domain import token_digest
from services.gateway.store import AgentStore
from shared.events import CommandResult
from shared.stores import open_mongo
from tests.gateway.conftest import add_agent, gateway, login, publish_dashboard, publish_settings, update
from tests.gateway.test_live import seqs


async def session_cookie(url: str, email: str) -> str:
    async with httpx.AsyncClient(base_url=url) as client:
        await login(client, email)
        return client.cookies[SESSION_COOKIE]


def open_ws(gw, cookie: str | None, origin: str | None = None):
    headers = {"Cookie": f"{SESSION_COOKIE}={cookie}"} if cookie else {}
    return connect(gw.ws_url + "/ws", additional_headers=headers, origin=origin, open_timeout=10)


async def recv(ws: ClientConnection, timeout: float = 15) -> dict[str, Any]:
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws: ClientConnection, pred, timeout: float = 20) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The first frame matching `pred`, and every frame that came before it."""
    before: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            frame = await recv(ws, timeout)
            if pred(frame):
                return frame, before
            before.append(frame)


async def subscribe(ws: ClientConnection, chatbot_id: str) -> dict[str, Any]:
    await ws.send(json.dumps({"type": "subscribe", "chatbot_id": chatbot_id}))
    frame, _ = await recv_until(ws, lambda f: f.get("chatbot_id") == chatbot_id and f["type"] in ("subscribed", "error"))
    return frame


async def test_handshake_refused_without_session_or_from_foreign_origin(stack):
    settings = stack.gateway_settings()
    await add_agent(settings, "h@example.com", ["alpha"])
    async with gateway(stack) as gw:
        cookie = await session_cookie(gw.url, "h@example.com")
        for bad_cookie in (None, "forged-token"):
            async with open_ws(gw, bad_cookie) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await recv(ws)
                assert closed.value.rcvd.code == 4401
        async with open_ws(gw, cookie, origin="https://evil.example.net") as ws:
            with pytest.raises(ConnectionClosed) as closed:
                await recv(ws)
            assert closed.value.rcvd.code == 4403
        # The allow-list and the gateway's own origin are accepted.
        for origin in ("https://dash.example.com", gw.url):
            async with open_ws(gw, cookie, origin=origin) as ws:
                await ws.send(json.dumps({"type": "ping"}))
                assert await recv(ws) == {"type": "pong"}


async def test_subscribe_receives_updates_results_and_settings_never_other_chatbots(stack):
    settings = stack.gateway_settings()
    await add_agent(settings, "alpha-only@example.com", ["alpha"])
    await add_agent(settings, "both@example.com", ["alpha", "beta"])
    async with gateway(stack) as gw:
        alpha_cookie = await session_cookie(gw.url, "alpha-only@example.com")
        both_cookie = await session_cookie(gw.url, "both@example.com")
        async with open_ws(gw, alpha_cookie) as ws, open_ws(gw, both_cookie) as witness:
            before = datetime.now(UTC)
            subscribed = await subscribe(ws, "alpha")
            at = datetime.fromisoformat(subscribed.pop("at"))
            assert subscribed == {"type": "subscribed", "chatbot_id": "alpha", "epoch": "e1", "seq": 7}
            assert before <= at <= datetime.now(UTC)
            assert await subscribe(ws, "beta") == {"type": "error", "chatbot_id": "beta", "code": 403,
                                                   "error": "Not a member of this chatbot."}
            await ws.send(json.dumps({"type": "unsubscribe", "chatbot_id": "beta"}))
            assert (await recv(ws))["code"] == 403
            for chatbot_id in ("alpha", "beta"):
                assert (await subscribe(witness, chatbot_id))["type"] == "subscribed"

            result = CommandResult(chatbot_id="alpha", conversation_id="cv_1", command_id="cmd-12345678", ok=True)
            await publish_dashboard(stack, update("beta", 8), update("alpha", 8), update("alpha", 9), result,
                                    update("beta", 9), CommandResult(chatbot_id="beta", command_id="cmd-beta-1234",
                                                                     ok=True))
            # Once the member of both has all six events, the hub has handed out everything
            # (chatbots sit on different partitions, so their relative order is not fixed).
            witnessed: list[str] = []
            async with asyncio.timeout(20):
                while len(witnessed) < 6:
                    frame = await recv(witness)
                    if frame["type"] in ("update", "updates", "command_result"):
                        witnessed.extend([frame["chatbot_id"]] * max(1, len(seqs([frame]))))
            assert sorted(witnessed) == ["alpha"] * 3 + ["beta"] * 3
            await ws.send(json.dumps({"type": "ping"}))
            _, frames = await recv_until(ws, lambda f: f["type"] == "pong")
            assert all(f.get("chatbot_id") == "alpha" for f in frames), frames
            updates = [u for f in frames for u in ([f["update"]] if f["type"] == "update" else f.get("updates", []))]
            assert [(u["epoch"], u["seq"]) for u in updates] == [("e1", 8), ("e1", 9)]
            assert updates[0]["row_upserted"]["conversation_id"] == "cv_8"
            assert updates[1]["stats"]["open"] == 1
            results = [f for f in frames if f["type"] == "command_result"]
            assert [r["result"]["command_id"] for r in results] == ["cmd-12345678"]

            # A settings change of alpha reaches alpha's subscribers as a settings frame.
            await publish_settings(stack, "alpha", enabled=False, name="Alpha Renamed")
            frame, _ = await recv_until(ws, lambda f: f["type"] == "settings")
            assert frame == {"type": "settings", "chatbot_id": "alpha", "handoff_enabled": False,
                             "name": "Alpha Renamed", "settings_version": 0}

            # After unsubscribing, alpha's updates stop.
            await ws.send(json.dumps({"type": "unsubscribe", "chatbot_id": "alpha"}))
            await publish_dashboard(stack, update("alpha", 10))
            await recv_until(witness, lambda f: f["type"] == "update" and f["seq"] == 10)
            await ws.send(json.dumps({"type": "ping"}))
            _, frames = await recv_until(ws, lambda f: f["type"] == "pong")
            assert frames == []


async def test_malformed_frames_get_error_frames_and_socket_stays_open(stack):
    settings = stack.gateway_settings()
    await add_agent(settings, "m@example.com", ["alpha"])
    async with gateway(stack) as gw:
        cookie = await session_cookie(gw.url, "m@example.com")
        async with open_ws(gw, cookie) as ws:
            bad: list[str | bytes] = ["not json", "[1, 2]", '"text"', '{"type": "dance"}', "{}",
                                      '{"type": "subscribe"}', '{"type": "subscribe", "chatbot_id": ""}',
                                      b"\x00\x01binary", "x" * 10000]
            for frame in bad:
                await ws.send(frame)
                answer = await recv(ws)
                assert answer["type"] == "error" and answer["error"], (frame, answer)
            errors = []
            await ws.send('{"type": "dance"}')
            errors.append((await recv(ws))["error"])
            assert errors == ["Unknown frame type: 'dance'."]
            await ws.send(json.dumps({"type": "ping"}))
            assert await recv(ws) == {"type": "pong"}
            assert (await subscribe(ws, "alpha"))["type"] == "subscribed"


async def test_two_gateway_instances_both_deliver_the_same_update(stack):
    settings = stack.gateway_settings()
    await add_agent(settings, "two@example.com", ["alpha"])
    async with gateway(stack) as gw1, gateway(stack) as gw2:
        async with open_ws(gw1, await session_cookie(gw1.url, "two@example.com")) as ws1, \
                open_ws(gw2, await session_cookie(gw2.url, "two@example.com")) as ws2:
            await subscribe(ws1, "alpha")
            await subscribe(ws2, "alpha")
            await publish_dashboard(stack, update("alpha", 42, epoch="e2"))
            for ws in (ws1, ws2):
                frame, _ = await recv_until(ws, lambda f: f["type"] == "update")
                assert (frame["chatbot_id"], frame["epoch"], frame["seq"]) == ("alpha", "e2", 42)


async def test_logout_closes_the_sessions_sockets(stack):
    settings = stack.gateway_settings()
    await add_agent(settings, "out@example.com", ["alpha"])
    async with gateway(stack) as gw, httpx.AsyncClient(base_url=gw.url) as client:
        csrf = await login(client, "out@example.com")
        other = await session_cookie(gw.url, "out@example.com")  # a second session of the same agent
        async with open_ws(gw, client.cookies[SESSION_COOKIE]) as ws, open_ws(gw, other) as ws_other:
            assert (await subscribe(ws, "alpha"))["type"] == "subscribed"
            assert (await subscribe(ws_other, "alpha"))["type"] == "subscribed"
            assert (await client.post("/api/logout", headers={"X-CSRF-Token": csrf})).status_code == 204
            with pytest.raises(ConnectionClosed) as closed:
                await recv(ws)
            assert closed.value.rcvd.code == 4401
            # The other session is untouched.
            await ws_other.send(json.dumps({"type": "ping"}))
            assert await recv(ws_other) == {"type": "pong"}


async def test_sockets_follow_their_session_and_memberships_on_every_gateway_process(stack):
    """Revalidation (WS_REVALIDATE_S): a sign-out on another process and an expired session
    close the socket; a membership taken away ends that subscription, a new one can be used."""
    settings = stack.gateway_settings()
    agent_id = await add_agent(settings, "re@example.com", ["alpha"])
    fast = {"WS_REVALIDATE_S": "0.3"}
    async with gateway(stack, **fast) as gw1, gateway(stack, **fast) as gw2, \
            httpx.AsyncClient(base_url=gw1.url) as client:
        csrf = await login(client, "re@example.com")
        expiring = await session_cookie(gw1.url, "re@example.com")
        async with open_ws(gw2, client.cookies[SESSION_COOKIE]) as ws, open_ws(gw2, expiring) as ws_expiring:
            assert (await subscribe(ws, "alpha"))["type"] == "subscribed"
            assert (await subscribe(ws, "beta"))["code"] == 403

            mongo, db = open_mongo(settings)
            try:
                store = AgentStore(db)
                await store.set_memberships(agent_id, ["beta"])
                frame, _ = await recv_until(ws, lambda f: f["type"] == "error")
                assert frame == {"type": "error", "chatbot_id": "alpha", "code": 403,
                                 "error": "Not a member of this chatbot."}
                await publish_dashboard(stack, update("alpha", 11))
                assert (await subscribe(ws, "beta"))["type"] == "subscribed"
                await ws.send(json.dumps({"type": "ping"}))
                _, frames = await recv_until(ws, lambda f: f["type"] == "pong")
                assert not any(f.get("chatbot_id") == "alpha" for f in frames), frames

                await db["sessions"].update_one({"_id": token_digest(expiring)},
                                                {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}})
                with pytest.raises(ConnectionClosed) as closed:
                    await recv_until(ws_expiring, lambda f: False, timeout=10)
                assert closed.value.rcvd.code == 4401
            finally:
                await mongo.close()

            # Signed out through gw1: the socket held by gw2 closes too.
            assert (await client.post("/api/logout", headers={"X-CSRF-Token": csrf})).status_code == 204
            with pytest.raises(ConnectionClosed) as closed:
                await recv_until(ws, lambda f: False, timeout=10)
            assert closed.value.rcvd.code == 4401
