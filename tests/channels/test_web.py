"""The web widget's HTTP and websocket surface against the real broker and Redis: messages
and contact details published, replies pushed live with history replay, delivery statuses
recorded once, several instances, and nothing lost when the bus refuses a publish."""

from __future__ import annotations

import asyncio
import json
import uuid

import httpx
from websockets.asyncio.client import connect

from services.channels.app import create_app
from services.channels.settings import ChannelsSettings
from services.channels.outbound import web_entry
from shared.events import OutboundMessage, VisitorIdentity
from shared.ids import conversation_id_for, new_id
from tests.harness import run_in_process, settings_from_env


def _reply(chatbot_id: str, visitor_id: str, text: str, **kw) -> OutboundMessage:
    return OutboundMessage(chatbot_id=chatbot_id, conversation_id=conversation_id_for(chatbot_id, "web", visitor_id),
                           message_id=new_id(), channel="web", visitor=VisitorIdentity(external_id=visitor_id),
                           text=text, **{"sender": "agent", "sender_name": "Maria", **kw})


async def _frames_until(ws, pred, timeout: float = 15.0) -> list[dict]:
    frames: list[dict] = []
    async with asyncio.timeout(timeout):
        while True:
            frames.append(json.loads(await ws.recv()))
            if pred(frames[-1]):
                return frames


async def test_visitor_message_published_once(stack):
    bot = await stack.add_chatbot()
    me = stack.visitor(bot.chatbot_id)
    visitor = me.visitor_id
    url = f"{stack.url}/web/{bot.chatbot_id}/messages"
    body = {"client_message_id": "c1", "text": "Hi, I need help"}
    async with httpx.AsyncClient(headers=me.headers) as client:
        r1 = await client.post(url, json=body)
        r2 = await client.post(url, json=body)  # the widget retried
        r3 = await client.post(url, json={**body, "client_message_id": "c2", "text": "Anyone?", "name": "Lin"})
    assert (r1.status_code, r2.status_code, r3.status_code) == (202, 202, 202)
    assert r2.json()["duplicate"] is True
    conv = conversation_id_for(bot.chatbot_id, "web", visitor)
    await stack.visitor_messages.wait_for(lambda r: r["conversation_id"] == conv and r["text"] == "Anyone?")
    records = stack.visitor_messages.matching(lambda r: r["conversation_id"] == conv)
    assert [(r["text"], r["channel_message_id"]) for r in records] == [("Hi, I need help", "c1"), ("Anyone?", "c2")]
    assert records[0]["visitor"] == {"external_id": visitor, "name": None}
    assert records[1]["visitor"] == {"external_id": visitor, "name": "Lin"}
    assert records[0]["channel"] == "web" and records[0]["chatbot_id"] == bot.chatbot_id


async def test_bad_input_gets_clear_errors(stack):
    bot = await stack.add_chatbot()
    me = stack.visitor(bot.chatbot_id)
    async with httpx.AsyncClient(headers=me.headers) as client:
        blank = await client.post(f"{stack.url}/web/{bot.chatbot_id}/messages",
                                  json={"client_message_id": "c1", "text": "   "})
        bad_message_id = await client.post(f"{stack.url}/web/{bot.chatbot_id}/messages",
                                           json={"client_message_id": "robert'); drop", "text": "x"})
        unknown = await client.post(f"{stack.url}/web/no_such_bot/messages", json={"client_message_id": "c1", "text": "x"})
        no_fields = await client.post(f"{stack.url}/web/{bot.chatbot_id}/contact", json={})
        bad_email = await client.post(f"{stack.url}/web/{bot.chatbot_id}/contact", json={"email": "not-an-address"})
    assert blank.status_code == 422 and "The message is empty." in blank.text
    assert bad_message_id.status_code == 422
    assert unknown.status_code == 404 and unknown.json() == {"detail": "Unknown chatbot."}
    assert no_fields.status_code == 422 and no_fields.json() == {"detail": "Please fill in at least one field."}
    assert bad_email.status_code == 422 and "Please enter a valid e-mail address." in bad_email.text


async def test_cors_lets_any_site_embed_the_widget(stack):
    bot = await stack.add_chatbot()
    async with httpx.AsyncClient() as client:
        pre = await client.options(f"{stack.url}/web/{bot.chatbot_id}/messages", headers={
            "Origin": "https://shop.example.com", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})
        js = await client.get(f"{stack.url}/widget.js")
        page = await client.get(f"{stack.url}/widget/test", params={"chatbot": bot.chatbot_id})
    assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] in ("*", "https://shop.example.com")
    assert "authorization" in pre.headers["access-control-allow-headers"].lower()  # the widget's token header
    assert js.status_code == 200 and js.headers["content-type"].startswith("application/javascript")
    assert "attachShadow" in js.text
    assert f'data-chatbot="{bot.chatbot_id}"' in page.text and 'src="/widget.js"' in page.text


async def test_contact_submission_published(stack):
    bot = await stack.add_chatbot()
    me = stack.visitor(bot.chatbot_id)
    visitor = me.visitor_id
    async with httpx.AsyncClient(headers=me.headers) as client:
        r = await client.post(f"{stack.url}/web/{bot.chatbot_id}/contact",
                              json={"name": "Lin Chen", "email": "lin@example.com"})
    assert r.status_code == 202
    conv = conversation_id_for(bot.chatbot_id, "web", visitor)
    got = await stack.visitor_messages.wait_for(lambda r: r["conversation_id"] == conv)
    assert got[0]["type"] == "visitor.contact_submitted"
    assert got[0]["contact"] == {"name": "Lin Chen", "email": "lin@example.com", "phone": None}
    assert got[0]["visitor"] == {"external_id": visitor, "name": "Lin Chen"}


async def test_reply_live_with_history_replay_and_statuses_once(stack):
    bot = await stack.add_chatbot()
    me = stack.visitor(bot.chatbot_id)
    visitor = me.visitor_id
    async with httpx.AsyncClient(headers=me.headers) as client:
        await client.post(f"{stack.url}/web/{bot.chatbot_id}/messages", json={"client_message_id": "first", "text": "Hello?"})
    ws_url = f"{stack.service.ws_url}/web/{bot.chatbot_id}/ws"
    async with connect(ws_url) as ws:
        await ws.send(me.auth_frame)
        history = await _frames_until(ws, lambda f: f["type"] == "ready")
        assert [(f["sender"], f["text"]) for f in history[:-1]] == [("visitor", "Hello?")]
        reply = _reply(bot.chatbot_id, visitor, "Hi, I'm Maria. How can I help?", request_contact_fields=["email"])
        await stack.outbound(reply)
        frames = await _frames_until(ws, lambda f: f.get("message_id") == reply.message_id)
        live = frames[-1]
        assert live["sender"] == "agent" and live["sender_name"] == "Maria"
        assert live["text"] == "Hi, I'm Maria. How can I help?" and live["request_contact_fields"] == ["email"]
        await ws.send(json.dumps({"type": "ping"}))
        assert (await _frames_until(ws, lambda f: f["type"] == "pong"))[-1] == {"type": "pong"}

    # A reload replays the conversation; the reply is not reported 'delivered' twice.
    async with connect(ws_url) as ws:
        await ws.send(me.auth_frame)
        replay = await _frames_until(ws, lambda f: f["type"] == "ready")
        assert [f["text"] for f in replay[:-1]] == ["Hello?", "Hi, I'm Maria. How can I help?"]
        sentinel = _reply(bot.chatbot_id, visitor, "Anything else?")
        await stack.outbound(sentinel)
        await _frames_until(ws, lambda f: f.get("message_id") == sentinel.message_id)
    await stack.delivery_status.wait_for(lambda r: r["message_id"] == sentinel.message_id and r["status"] == "delivered")
    statuses = [r["status"] for r in stack.delivery_status.matching(lambda r: r["message_id"] == reply.message_id)]
    assert statuses == ["sent", "delivered"]


async def test_unknown_chatbot_socket_closed(stack):
    for url, code in ((f"{stack.service.ws_url}/web/nobody/ws", 4404),):
        try:
            async with connect(url) as ws:
                await ws.recv()
            raise AssertionError("socket should have been refused")
        except Exception as exc:  # noqa: BLE001 - websockets raises on a refused handshake
            assert "403" in str(exc) or str(code) in str(exc), exc


async def test_publish_failure_answers_503_and_the_retry_is_accepted(stack):
    """Nothing is lost: a refused publish is answered 5xx and the claim released."""
    bot = await stack.add_chatbot()
    me = stack.visitor(bot.chatbot_id)
    visitor = me.visitor_id
    inbound = stack.service.app.state.channels_api.inbound_visitor
    real = inbound.publisher

    class BrokenBus:
        async def publish(self, event):
            raise ConnectionError("broker unreachable")

    body = {"client_message_id": "retry-me", "text": "Did this arrive?"}
    async with httpx.AsyncClient(headers=me.headers) as client:
        inbound.publisher = BrokenBus()
        try:
            refused = await client.post(f"{stack.url}/web/{bot.chatbot_id}/messages", json=body)
        finally:
            inbound.publisher = real
        retried = await client.post(f"{stack.url}/web/{bot.chatbot_id}/messages", json=body)
    assert refused.status_code == 503
    assert retried.status_code == 202 and retried.json()["duplicate"] is False
    conv = conversation_id_for(bot.chatbot_id, "web", visitor)
    got = await stack.visitor_messages.wait_for(lambda r: r["conversation_id"] == conv)
    assert [r["text"] for r in got] == ["Did this arrive?"]


async def test_second_instance_delivers_to_its_own_socket_and_nothing_twice(stack):
    """Instance B holds the socket and consumes outbound.messages in another group, so both
    instances handle every message (as a redelivery would): the widget shows it once, and the
    status events both publish are the same event (one id per message and status)."""
    bot = await stack.add_chatbot()
    env = stack.iso.env("channels", OUTBOUND_GROUP_ID=f"other-{uuid.uuid4().hex[:6]}",
                        TELEGRAM_API_BASE_URL=stack.telegram.base_url, GRAPH_API_BASE_URL=stack.graph.base_url,
                        WIDGET_TOKEN_SECRET=stack.settings.widget_token_secret)
    async with run_in_process("channels-b", create_app, settings_from_env(ChannelsSettings, env)) as b:
        # Known as soon as the instance serves (start-up reads the settings table to its end).
        assert b.app.state.channels.chatbots.get(bot.chatbot_id) == bot
        me = stack.visitor(bot.chatbot_id)  # issued by the first instance: the key is shared
        visitor = me.visitor_id
        async with connect(f"{b.ws_url}/web/{bot.chatbot_id}/ws") as ws:
            await ws.send(me.auth_frame)
            await _frames_until(ws, lambda f: f["type"] == "ready")
            reply = _reply(bot.chatbot_id, visitor, "Delivered wherever you are")
            await stack.outbound(reply)
            frames = await _frames_until(ws, lambda f: f.get("message_id") == reply.message_id, timeout=30)
            assert frames[-1]["text"] == "Delivered wherever you are"
            await stack.delivery_status.wait_for(lambda r: r["message_id"] == reply.message_id and r["status"] == "delivered")
            # Let both consumers finish with the message, then: one 'sent', one 'delivered'.
            sentinel = _reply(bot.chatbot_id, visitor, "sentinel")
            await stack.outbound(sentinel)
            await _frames_until(ws, lambda f: f.get("message_id") == sentinel.message_id, timeout=30)
            await stack.delivery_status.wait_for(lambda r: r["message_id"] == sentinel.message_id and r["status"] == "delivered")
            extra = [f for f in await _drain(ws) if f.get("message_id") == reply.message_id]
    statuses = {(r["event_id"], r["status"]) for r in stack.delivery_status.matching(
        lambda r: r["message_id"] == reply.message_id)}
    assert sorted(status for _, status in statuses) == ["delivered", "sent"]
    assert extra == []


async def _drain(ws, quiet: float = 0.3) -> list[dict]:
    frames = []
    try:
        while True:
            frames.append(json.loads(await asyncio.wait_for(ws.recv(), quiet)))
    except TimeoutError:
        return frames


async def test_reply_in_flight_when_channels_stopped_is_sent_after_the_restart(stack):
    """Stopped mid-delivery (here: after storing the reply in the history), an instance
    leaves its offset uncommitted, so the bus hands the reply to the restarted service. To a
    widget a repeat is harmless (its history, the sockets and the widget dedupe by message
    id): the reply is sent and shown at once, not reported 'failed (outcome unknown)'."""
    bot = await stack.add_chatbot()
    me = stack.visitor(bot.chatbot_id)
    visitor = me.visitor_id
    reply = _reply(bot.chatbot_id, visitor, "Sorry for the wait", sender="ai", sender_name=None)
    outbox = stack.service.app.state.widget_api.outbox
    async with connect(f"{stack.service.ws_url}/web/{bot.chatbot_id}/ws") as ws:
        await ws.send(me.auth_frame)
        await _frames_until(ws, lambda f: f["type"] == "ready")
        assert await outbox.store(bot.chatbot_id, visitor, web_entry(reply))  # what the stopped instance did
        await stack.outbound(reply)  # the redelivery after the restart
        frames = await _frames_until(ws, lambda f: f.get("message_id") == reply.message_id, timeout=10)
        await stack.delivery_status.wait_for(
            lambda r: r["message_id"] == reply.message_id and r["status"] == "delivered", timeout=10)
    assert frames[-1]["text"] == "Sorry for the wait"
    statuses = [r["status"] for r in stack.delivery_status.matching(lambda r: r["message_id"] == reply.message_id)]
    assert sorted(statuses) == ["delivered", "sent"]
    history = await stack.service.app.state.widget_api.outbox.history(bot.chatbot_id, visitor)
    assert [e["message_id"] for e in history] == [reply.message_id]


async def test_write_unanswered_at_the_timeout_keeps_its_claim_until_it_settles(stack):
    """A write the broker has not answered within PUBLISH_TIMEOUT_S is answered 503, but it is
    not abandoned: until it settles, a retry is 503 as well (never a 202 'duplicate' for a
    message that may not be on the bus); once it failed, the retry publishes the message."""
    bot = await stack.add_chatbot()
    me = stack.visitor(bot.chatbot_id)
    visitor = me.visitor_id
    inbound = stack.service.app.state.channels_api.inbound_visitor
    real, real_timeout = inbound.publisher, getattr(inbound, "timeout_s", None)
    answer = asyncio.Event()

    class UnansweredThenFailed:
        async def publish(self, event):
            await answer.wait()
            raise ConnectionError("batch expired")

    body = {"client_message_id": "slow-1", "text": "Hello?"}
    url = f"{stack.url}/web/{bot.chatbot_id}/messages"
    async with httpx.AsyncClient(timeout=3.0, headers=me.headers) as client:
        inbound.publisher, inbound.timeout_s = UnansweredThenFailed(), 0.3
        try:
            refused = await client.post(url, json=body)
            retried_meanwhile = await client.post(url, json=body)
        finally:
            inbound.publisher, inbound.timeout_s = real, real_timeout
            answer.set()
        retried = await _post_until_not_503(client, url, body)
    assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
    assert retried_meanwhile.status_code == 503
    assert retried.status_code == 202 and retried.json()["duplicate"] is False
    conv = conversation_id_for(bot.chatbot_id, "web", visitor)
    got = await stack.visitor_messages.wait_for(lambda r: r["conversation_id"] == conv)
    assert [r["text"] for r in got] == ["Hello?"]


async def _post_until_not_503(client: httpx.AsyncClient, url: str, body: dict) -> httpx.Response:
    for _ in range(20):
        response = await client.post(url, json=body)
        if response.status_code != 503:
            return response
        await asyncio.sleep(0.1)
    return response
