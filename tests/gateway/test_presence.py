"""Presence over /ws across two gateway instances (services/gateway/presence.py), on the real
broker and Redis: an agent's viewing and typing reach a colleague on the other gateway, a
newly subscribed dashboard is told who is there, a closed socket leaves at once, and an
entry nobody refreshes (its gateway died) expires. Bad presence frames get an error frame, an
agent sending too many a 429 one."""

from __future__ import annotations

import asyncio
import json

from redis.asyncio import Redis

from services.gateway.presence import PresenceStore
from tests.gateway.conftest import add_agent, gateway
from tests.gateway.test_live_ws import open_ws, recv_until, session_cookie, subscribe


def presence(conversation_id: str, state: str, chatbot_id: str = "alpha") -> str:
    return json.dumps({"type": "presence", "chatbot_id": chatbot_id, "conversation_id": conversation_id,
                       "state": state})


def about(name: str, state: str):
    return lambda f: f["type"] == "presence" and any(e["name"] == name and e["state"] == state for e in f["entries"])


async def test_presence_reaches_every_gateway_and_leaves_with_the_socket(stack):
    settings = stack.gateway_settings()
    await add_agent(settings, "alex@example.com", ["alpha"], first_name="Alex")
    await add_agent(settings, "dana@example.com", ["alpha"], first_name="Dana")
    await add_agent(settings, "eve@example.com", ["alpha"], first_name="Eve")
    async with gateway(stack, PRESENCE_FRAMES_PER_AGENT="4/minute") as gw1, gateway(stack) as gw2:
        alex_cookie = await session_cookie(gw1.url, "alex@example.com")
        eve_cookie = await session_cookie(gw2.url, "eve@example.com")
        dana = await open_ws(gw2, await session_cookie(gw2.url, "dana@example.com"))
        assert (await subscribe(dana, "alpha"))["type"] == "subscribed"
        async with open_ws(gw1, alex_cookie) as alex:
            await alex.send(presence("cv_1", "viewing"))
            frame, _ = await recv_until(dana, about("Alex", "viewing"))
            [entry] = frame["entries"]
            assert frame["whole"] is False and entry["conversation_id"] == "cv_1" and entry["ttl_s"] > 0
            conn = entry["conn"]
            await alex.send(presence("cv_1", "typing"))
            frame, _ = await recv_until(dana, about("Alex", "typing"))
            assert frame["entries"][0]["conn"] == conn  # one entry per socket: typing replaced viewing

            # A dashboard that subscribes now is told at once who is there (from Redis).
            async with open_ws(gw2, eve_cookie) as eve:
                await subscribe(eve, "alpha")
                frame, _ = await recv_until(eve, lambda f: f["type"] == "presence")
                assert frame["whole"] is True
                assert [(e["name"], e["state"], e["conversation_id"]) for e in frame["entries"]] == [
                    ("Alex", "typing", "cv_1")]

            # An agent past PRESENCE_FRAMES_PER_AGENT is told to slow down (a repeat that changes
            # nothing was not counted: two frames so far).
            await alex.send(presence("cv_1", "typing"))
            for n in (2, 3, 4):
                await alex.send(presence(f"cv_{n}", "viewing"))
            error, _ = await recv_until(alex, lambda f: f["type"] == "error")
            assert (error["code"], error["error"]) == (429, "Too many presence updates; slow down.")
            await recv_until(dana, lambda f: about("Alex", "viewing")(f) and f["entries"][0]["conversation_id"] == "cv_3")
            # Bad frames are answered, the socket stays open; chatbots of others are refused.
            await alex.send(json.dumps({"type": "presence", "chatbot_id": "alpha", "conversation_id": "cv_1",
                                        "state": "dancing"}))
            error, _ = await recv_until(alex, lambda f: f["type"] == "error")
            assert error["error"].startswith("Invalid presence frame:")
            await alex.send(presence("cv_9", "viewing", chatbot_id="beta"))
            error, _ = await recv_until(alex, lambda f: f["type"] == "error")
            assert (error["code"], error["error"]) == (403, "Not a member of this chatbot.")

        # Alex's socket closed (the page went away): Dana hears that Alex left, on the other gateway.
        frame, _ = await recv_until(dana, about("Alex", "left"))
        assert frame["entries"][0]["conn"] == conn
        async with open_ws(gw2, eve_cookie) as eve:
            await subscribe(eve, "alpha")
            await eve.send(json.dumps({"type": "ping"}))
            _, before = await recv_until(eve, lambda f: f["type"] == "pong")
            assert not [f for f in before if f["type"] == "presence"], before  # nobody is there now
        await dana.close()


async def test_an_entry_nobody_refreshes_expires(stack):
    """What a gateway that died leaves behind: its entries are gone once their TTL passed."""
    settings = stack.gateway_settings()
    redis = Redis.from_url(settings.redis_url, decode_responses=True)
    try:
        store = PresenceStore(redis, settings.redis_prefix)
        await store.put("alpha", {"conn": "c-dead", "conversation_id": "cv_1", "agent_id": "a1", "name": "Alex",
                                  "state": "viewing"}, ttl_s=0.3)
        await store.put("alpha", {"conn": "c-live", "conversation_id": "cv_2", "agent_id": "a2", "name": "Dana",
                                  "state": "typing"}, ttl_s=60)
        assert {e["conn"] for e in await store.current("alpha")} == {"c-dead", "c-live"}
        await asyncio.sleep(0.5)
        [live] = await store.current("alpha")
        assert (live["conn"], live["name"], live["state"]) == ("c-live", "Dana", "typing") and live["ttl_s"] <= 60
        assert await redis.hkeys(f"{settings.redis_prefix}:presence:alpha:info") == ["c-live"]  # pruned
    finally:
        await redis.aclose()
