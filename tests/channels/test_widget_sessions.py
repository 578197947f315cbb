"""The widget's credential is a server-issued, signed, expiring visitor token (not a bare
visitor id): issued by POST /web/{chatbot}/session, required by every widget endpoint and the
widget socket (first frame), renewed by POST /web/{chatbot}/session/renew. Against the real
service, broker and Redis."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from services.channels.visitors import BadToken, NewestTokens, WidgetTokens
from shared.ids import conversation_id_for, new_visitor_id


def _tokens(stack):
    return stack.service.app.state.widget_api.tokens


async def test_a_session_is_issued_and_its_token_is_the_only_credential(stack):
    bot = await stack.add_chatbot()
    ttl = stack.settings.widget_token_ttl_s
    async with httpx.AsyncClient(base_url=stack.url) as client:
        issued = await client.post(f"/web/{bot.chatbot_id}/session")
        assert issued.status_code == 201, issued.text
        session = issued.json()
        assert session["visitor_id"].startswith("v_") and session["token"].startswith("w1.")
        assert session["visitor_id"] in session["token"] and session["expires_in"] in (ttl - 1, ttl)
        assert ttl // 2 - 2 <= session["renew_in"] <= ttl // 2
        another = (await client.post(f"/web/{bot.chatbot_id}/session")).json()
        assert another["visitor_id"] != session["visitor_id"]  # every session is a new visitor

        sent = await client.post(f"/web/{bot.chatbot_id}/messages", json={"client_message_id": "c1", "text": "Hello"},
                                 headers={"Authorization": f"Bearer {session['token']}"})
        # A bare visitor id (what the widget used to send) is no credential any more.
        bare = await client.post(f"/web/{bot.chatbot_id}/messages",
                                 json={"visitor_id": session["visitor_id"], "client_message_id": "c2", "text": "Me too"})
        bare_contact = await client.post(f"/web/{bot.chatbot_id}/contact",
                                         json={"visitor_id": session["visitor_id"], "email": "x@example.com"})
        # Authentication comes first: no token and a bad body is 401, not 422.
        bad_body = await client.post(f"/web/{bot.chatbot_id}/messages", json={"text": ["not", "text"]})
        unknown = await client.post("/web/no_such_bot/session")
    assert sent.status_code == 202
    conv = conversation_id_for(bot.chatbot_id, "web", session["visitor_id"])
    got = await stack.visitor_messages.wait_for(lambda r: r["conversation_id"] == conv)
    assert got[0]["visitor"]["external_id"] == session["visitor_id"] and got[0]["text"] == "Hello"
    for refused in (bare, bare_contact, bad_body):
        assert refused.status_code == 401
        assert refused.json()["detail"].startswith("Missing widget token")
        assert refused.headers["WWW-Authenticate"].startswith("Bearer")
    assert unknown.status_code == 404 and unknown.json() == {"detail": "Unknown chatbot."}


async def test_forged_expired_and_other_chatbots_tokens_are_refused_401(stack):
    bot = await stack.add_chatbot()
    other_bot = await stack.add_chatbot()
    mine = stack.visitor(bot.chatbot_id)
    tokens = _tokens(stack)
    alien = WidgetTokens(b"not the service's key", tokens.newest, tokens.ttl_s, tokens.grace_s)
    flipped = mine.token[:-1] + ("A" if mine.token[-1] != "A" else "B")
    cases = {
        "Invalid widget token.": [flipped, alien.issue(bot.chatbot_id).token, "w1.garbage", mine.visitor_id,
                                  mine.token.replace(mine.visitor_id, new_visitor_id())],
        "This widget token belongs to another chatbot.": [stack.visitor(other_bot.chatbot_id).token],
        "The widget token has expired": [tokens.issue(bot.chatbot_id, now=time.time() - tokens.ttl_s - 5).token],
    }
    async with httpx.AsyncClient(base_url=stack.url) as client:
        for detail, bad_tokens in cases.items():
            for token in bad_tokens:
                for path, body in (("messages", {"client_message_id": "c1", "text": "x"}), ("contact", {"name": "Lin"})):
                    r = await client.post(f"/web/{bot.chatbot_id}/{path}", json=body,
                                          headers={"Authorization": f"Bearer {token}"})
                    assert r.status_code == 401 and r.json()["detail"].startswith(detail), (token, r.text)
        ok = await client.post(f"/web/{bot.chatbot_id}/messages", json={"client_message_id": "c1", "text": "x"},
                               headers=mine.headers)
    assert ok.status_code == 202


async def _closed_with(ws) -> tuple[int, str]:
    with pytest.raises(ConnectionClosed) as closed:
        async with asyncio.timeout(10):
            while True:
                await ws.recv()
    return closed.value.rcvd.code, closed.value.rcvd.reason


async def test_the_socket_takes_the_token_in_its_first_frame_and_closes_4401_without_a_good_one(stack):
    bot = await stack.add_chatbot()
    other_bot = await stack.add_chatbot()
    me = stack.visitor(bot.chatbot_id)
    await stack.service.app.state.widget_api.outbox.append(bot.chatbot_id, me.visitor_id, {
        "type": "message", "message_id": "m_secret", "sender": "visitor", "text": "my address is ..."})
    url = f"{stack.service.ws_url}/web/{bot.chatbot_id}/ws"
    expired = _tokens(stack).issue(bot.chatbot_id, now=time.time() - 10 * 24 * 3600, visitor_id=me.visitor_id).token
    for first_frame, reason in (
            (json.dumps({"type": "auth", "token": me.token[:-2] + "xx"}), "Invalid widget token."),
            (json.dumps({"type": "auth", "token": stack.visitor(other_bot.chatbot_id).token}), "another chatbot"),
            (json.dumps({"type": "auth", "token": expired}), "expired"),
            (json.dumps({"type": "ping"}), "Missing widget token")):
        async with connect(url) as ws:
            await ws.send(first_frame)
            code, why = await _closed_with(ws)
        assert code == 4401 and reason in why, (first_frame, code, why)
    # The old way, the visitor id in the URL and no token, gets nothing of the history.
    api = stack.service.app.state.widget_api
    api.socket_auth_timeout_s, before = 0.5, api.socket_auth_timeout_s
    try:
        async with connect(f"{url}?visitor_id={me.visitor_id}") as ws:
            code, why = await _closed_with(ws)
    finally:
        api.socket_auth_timeout_s = before
    assert code == 4401 and "Missing widget token" in why
    async with connect(url) as ws:
        await ws.send(me.auth_frame)
        first = json.loads(await ws.recv())
        assert first["message_id"] == "m_secret" and json.loads(await ws.recv()) == {"type": "ready"}


async def test_an_open_socket_is_closed_4401_when_its_token_expires(stack):
    """A token is checked when the socket opens; the socket does not outlive it: at expiry it
    is closed with 4401 (the widget then renews and opens another)."""
    bot = await stack.add_chatbot()
    tokens = _tokens(stack)
    soon = tokens.issue(bot.chatbot_id, now=time.time() - tokens.ttl_s + 2)  # expires in 2 s
    url = f"{stack.service.ws_url}/web/{bot.chatbot_id}/ws"
    async with connect(url) as ws:
        await ws.send(json.dumps({"type": "auth", "token": soon.token}))
        assert json.loads(await ws.recv()) == {"type": "ready"}
        code, why = await _closed_with(ws)
    assert code == 4401 and "expired" in why


async def test_renewal_keeps_the_visitor_and_only_the_newest_token_renews(stack):
    bot = await stack.add_chatbot()
    tokens = _tokens(stack)
    ttl, grace = tokens.ttl_s, tokens.grace_s
    url = f"/web/{bot.chatbot_id}/session/renew"
    fresh = stack.visitor(bot.chatbot_id)
    # Past half its life: due for renewal, still valid.
    due = tokens.issue(bot.chatbot_id, now=time.time() - ttl * 3 // 4)
    lapsed = tokens.issue(bot.chatbot_id, now=time.time() - ttl - 7 * 24 * 3600)  # expired a week ago
    too_old = tokens.issue(bot.chatbot_id, now=time.time() - ttl - grace - 60)

    def bearer(token: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    async with httpx.AsyncClient(base_url=stack.url) as client:
        not_due = await client.post(url, headers=bearer(fresh.token))
        renewed = await client.post(url, headers=bearer(due.token))
        repeated = await client.post(url, headers=bearer(due.token))  # its answer was lost: same answer
        back = await client.post(url, headers=bearer(lapsed.token))
        refused = await client.post(url, headers=bearer(too_old.token))
        missing = await client.post(url)
        sent = await client.post(f"/web/{bot.chatbot_id}/messages", headers=bearer(renewed.json()["token"]),
                                 json={"client_message_id": "after-renewal", "text": "still me"})
    assert not_due.status_code == 200 and not_due.json()["token"] == fresh.token  # nothing new before half-time
    assert renewed.status_code == 200
    new = renewed.json()
    assert new["visitor_id"] == due.visitor_id and new["token"] != due.token and new["expires_in"] >= ttl - 2
    assert repeated.status_code == 200 and repeated.json()["token"] == new["token"]
    assert back.status_code == 200 and back.json()["visitor_id"] == lapsed.visitor_id
    assert refused.status_code == 401 and "start a new session" in refused.json()["detail"]
    assert missing.status_code == 401
    assert sent.status_code == 202
    conv = conversation_id_for(bot.chatbot_id, "web", due.visitor_id)
    await stack.visitor_messages.wait_for(lambda r: r["conversation_id"] == conv and r["text"] == "still me")

    # Once the visitor renewed, the token it had (a copy an attacker kept, say) is spent: after
    # the short replay window it renews no more, and the newer token still does.
    later = time.time() + ttl  # the old token is then expired but within the grace period
    with pytest.raises(BadToken, match="already renewed"):
        await tokens.renew(due.token, bot.chatbot_id, now=later)
    assert (await tokens.renew(new["token"], bot.chatbot_id, now=later)).visitor_id == due.visitor_id


async def test_two_renewals_of_one_token_cannot_both_win(stack):
    """The newest-token record is advanced atomically (a Lua script on the real Redis)."""
    newest = NewestTokens(stack.service.app.state.widget_api.tokens.newest.redis, stack.iso.redis_prefix("race"))
    results = await asyncio.gather(*(newest.advance("bot", "v_00000000000000aa", 100, 200 + i, 60) for i in range(10)))
    winners = [r for i, r in enumerate(results) if r == 200 + i]
    assert len(winners) == 1 and set(results) == {winners[0]}
