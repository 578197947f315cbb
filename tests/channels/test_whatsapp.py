"""WhatsApp Cloud API, both directions: verification, signed webhooks, statuses mapped to our
message ids, the 24-hour window, outbound through the fake Graph API."""

from __future__ import annotations

import itertools
import json
import logging
import time

import httpx

from services.channels.domain import OUTSIDE_WINDOW_ERROR, whatsapp_signature
from shared.events import OutboundMessage, VisitorIdentity
from shared.ids import conversation_id_for, new_id
from tests.fakes.whatsapp_api import Answer
from tests.support import eventually

SEQ = itertools.count(1)
# The chatbots' WhatsApp number: a message Meta sends for another number is not theirs.
PHONE_NUMBER_ID = "109876543210"


def _creds(connected: bool = True) -> dict:
    n = next(SEQ)
    return {"whatsapp_phone_number_id": PHONE_NUMBER_ID, "whatsapp_access_token": f"EAAGfakeAccessToken{n}{new_id()}",
            "whatsapp_app_secret": f"app-secret-{n}-{new_id()[:12]}", "whatsapp_verify_token": f"verify-{n}",
            "whatsapp_connected": connected}


def _message_payload(wa_id: str, wamid: str, text: str, name: str = "Grace Hopper", ts: int | None = None,
                     number: str = PHONE_NUMBER_ID) -> dict:
    return {"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550000000", "phone_number_id": number},
        "contacts": [{"profile": {"name": name}, "wa_id": wa_id}],
        "messages": [{"from": wa_id, "id": wamid, "timestamp": str(ts or int(time.time())), "type": "text",
                      "text": {"body": text}}]}}]}]}


def _status_payload(wamid: str, status: str, wa_id: str, errors: list | None = None,
                    number: str = PHONE_NUMBER_ID) -> dict:
    st = {"id": wamid, "status": status, "timestamp": str(int(time.time())), "recipient_id": wa_id}
    if errors:
        st["errors"] = errors
    return {"object": "whatsapp_business_account", "entry": [{"id": "WABA", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"display_phone_number": "15550000000", "phone_number_id": number},
        "statuses": [st]}}]}]}


async def _post_signed(client: httpx.AsyncClient, url: str, payload: dict, secret: str | None, signature: str | None = None):
    raw = json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    if signature is not None:
        headers["X-Hub-Signature-256"] = signature
    elif secret is not None:
        headers["X-Hub-Signature-256"] = whatsapp_signature(secret, raw)
    return await client.post(url, content=raw, headers=headers)


def _outbound(chatbot_id: str, wa_id: str, text: str) -> OutboundMessage:
    return OutboundMessage(chatbot_id=chatbot_id, conversation_id=conversation_id_for(chatbot_id, "whatsapp", wa_id),
                           message_id=new_id(), channel="whatsapp", visitor=VisitorIdentity(external_id=wa_id),
                           text=text, sender="agent", sender_name="Maria")


async def test_webhook_verification(stack):
    creds = _creds()
    bot = await stack.add_chatbot(**creds)
    url = f"{stack.url}/whatsapp/{bot.chatbot_id}/webhook"
    async with httpx.AsyncClient() as client:
        ok = await client.get(url, params={"hub.mode": "subscribe", "hub.verify_token": creds["whatsapp_verify_token"],
                                           "hub.challenge": "1158201444"})
        wrong = await client.get(url, params={"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "1"})
        mode = await client.get(url, params={"hub.mode": "unsubscribe", "hub.verify_token": creds["whatsapp_verify_token"],
                                             "hub.challenge": "1"})
    assert (ok.status_code, ok.text) == (200, "1158201444")
    assert wrong.status_code == 403 and mode.status_code == 403


async def test_signed_message_published_once_and_opens_window(stack):
    creds = _creds()
    bot = await stack.add_chatbot(**creds)
    url = f"{stack.url}/whatsapp/{bot.chatbot_id}/webhook"
    wa_id = "15551230001"
    conversation_id = conversation_id_for(bot.chatbot_id, "whatsapp", wa_id)
    async with httpx.AsyncClient() as client:
        before = await stack.window(bot.chatbot_id, conversation_id)
        r1 = await _post_signed(client, url, _message_payload(wa_id, "wamid.IN1", "Hola"), creds["whatsapp_app_secret"])
        r2 = await _post_signed(client, url, _message_payload(wa_id, "wamid.IN1", "Hola"), creds["whatsapp_app_secret"])
        r3 = await _post_signed(client, url, _message_payload(wa_id, "wamid.IN2", "Second"), creds["whatsapp_app_secret"])
        after = await stack.window(bot.chatbot_id, conversation_id)
    assert (r1.status_code, r2.status_code, r3.status_code) == (200, 200, 200)
    assert before == {"open": False, "ends_at": None}
    assert after["open"] is True and after["ends_at"]

    mine = lambda r: r["chatbot_id"] == bot.chatbot_id  # noqa: E731
    await stack.visitor_messages.wait_for(lambda r: mine(r) and r["text"] == "Second")
    records = stack.visitor_messages.matching(mine)
    assert [r["channel_message_id"] for r in records] == ["wamid.IN1", "wamid.IN2"]
    assert records[0]["visitor"] == {"external_id": wa_id, "name": "Grace Hopper"}
    assert records[0]["channel"] == "whatsapp" and records[0]["conversation_id"] == conversation_id


async def test_media_arrives_described_and_a_system_message_only_opens_the_window(stack):
    creds = _creds()
    bot = await stack.add_chatbot(**creds)
    url = f"{stack.url}/whatsapp/{bot.chatbot_id}/webhook"
    wa_id = "15551230077"
    photo = _message_payload(wa_id, "wamid.PH1", "unused")
    photo["entry"][0]["changes"][0]["value"]["messages"][0] |= {
        "type": "image", "image": {"id": "media-1", "mime_type": "image/jpeg", "caption": "The box was crushed"}}
    photo["entry"][0]["changes"][0]["value"]["messages"][0].pop("text")
    reaction = _message_payload(wa_id, "wamid.RE1", "unused")  # (reactions are words now: test_limits.py)
    reaction["entry"][0]["changes"][0]["value"]["messages"][0] |= {
        "type": "system", "system": {"body": "User changed number", "type": "user_changed_number"}}
    reaction["entry"][0]["changes"][0]["value"]["messages"][0].pop("text")
    async with httpx.AsyncClient() as client:
        r1 = await _post_signed(client, url, reaction, creds["whatsapp_app_secret"])
        window = await stack.window(bot.chatbot_id, conversation_id_for(bot.chatbot_id, "whatsapp", wa_id))
        r2 = await _post_signed(client, url, photo, creds["whatsapp_app_secret"])
    assert (r1.status_code, r2.status_code) == (200, 200)
    assert window["open"] is True
    mine = lambda r: r["chatbot_id"] == bot.chatbot_id  # noqa: E731
    await stack.visitor_messages.wait_for(lambda r: mine(r) and r["channel_message_id"] == "wamid.PH1")
    # Published in order on one partition: had the system message been published, it came first.
    assert [(r["text"], r["channel_message_id"]) for r in stack.visitor_messages.matching(mine)] == [
        ("[Photo] The box was crushed", "wamid.PH1")]


async def test_bad_or_missing_signature_refused_and_nothing_published(stack):
    creds = _creds()
    bot = await stack.add_chatbot(**creds)
    url = f"{stack.url}/whatsapp/{bot.chatbot_id}/webhook"
    wa_id = "15551230002"
    async with httpx.AsyncClient() as client:
        missing = await _post_signed(client, url, _message_payload(wa_id, "wamid.F1", "forged 1"), None)
        wrong_key = await _post_signed(client, url, _message_payload(wa_id, "wamid.F2", "forged 2"), "not-the-secret")
        garbage = await _post_signed(client, url, _message_payload(wa_id, "wamid.F3", "forged 3"), None, "sha256=zz")
        # Signed over other bytes than those sent (the RAW body is what counts).
        tampered = await client.post(url, content=json.dumps(_message_payload(wa_id, "wamid.F4", "forged 4")).encode(),
                                     headers={"X-Hub-Signature-256": whatsapp_signature(
                                         creds["whatsapp_app_secret"], json.dumps(_message_payload(wa_id, "wamid.F4", "x")).encode())})
        ok = await _post_signed(client, url, _message_payload(wa_id, "wamid.OK", "genuine"), creds["whatsapp_app_secret"])
    assert [r.status_code for r in (missing, wrong_key, garbage, tampered, ok)] == [401, 401, 401, 401, 200]
    await stack.visitor_messages.wait_for(lambda r: r["chatbot_id"] == bot.chatbot_id and r["text"] == "genuine")
    assert [r["text"] for r in stack.visitor_messages.matching(lambda r: r["chatbot_id"] == bot.chatbot_id)] == ["genuine"]


async def test_outbound_within_window_then_statuses_mapped_to_message_id(stack):
    creds = _creds()
    bot = await stack.add_chatbot(**creds)
    wa_id = "15551230003"
    url = f"{stack.url}/whatsapp/{bot.chatbot_id}/webhook"
    async with httpx.AsyncClient() as client:
        assert (await _post_signed(client, url, _message_payload(wa_id, "wamid.W1", "Need help"),
                                   creds["whatsapp_app_secret"])).status_code == 200
        event = _outbound(bot.chatbot_id, wa_id, "Hello from Maria")
        await stack.outbound(event)
        sent = await stack.delivery_status.wait_for(lambda r: r["message_id"] == event.message_id)
        assert sent[0]["status"] == "sent"
        wamid = sent[0]["channel_message_id"]
        request = stack.graph.sent_to(wa_id)
        assert len(request) == 1 and request[0].wamid == wamid
        assert request[0].phone_number_id == creds["whatsapp_phone_number_id"]
        assert request[0].authorization == f"Bearer {creds['whatsapp_access_token']}"
        assert request[0].body["type"] == "text" and request[0].body["text"]["body"] == "Hello from Maria"

        for status in ("sent", "delivered", "read"):  # Meta's own 'sent' adds nothing: recorded once
            r = await _post_signed(client, url, _status_payload(wamid, status, wa_id), creds["whatsapp_app_secret"])
            assert r.status_code == 200
        statuses = await stack.delivery_status.wait_for(lambda r: r["message_id"] == event.message_id, count=3)
    assert [s["status"] for s in statuses] == ["sent", "delivered", "read"]
    assert all(s["conversation_id"] == event.conversation_id for s in statuses)


async def test_failed_status_from_meta_is_permanent(stack):
    creds = _creds()
    bot = await stack.add_chatbot(**creds)
    wa_id = "15551230004"
    url = f"{stack.url}/whatsapp/{bot.chatbot_id}/webhook"
    async with httpx.AsyncClient() as client:
        await _post_signed(client, url, _message_payload(wa_id, "wamid.X1", "hi"), creds["whatsapp_app_secret"])
        event = _outbound(bot.chatbot_id, wa_id, "will bounce")
        await stack.outbound(event)
        sent = await stack.delivery_status.wait_for(lambda r: r["message_id"] == event.message_id)
        await _post_signed(client, url, _status_payload(sent[0]["channel_message_id"], "failed", wa_id,
                                                        [{"code": 131026, "title": "Message undeliverable"}]),
                           creds["whatsapp_app_secret"])
    failed = await stack.delivery_status.wait_for(lambda r: r["message_id"] == event.message_id and r["status"] == "failed")
    assert failed[0]["permanent"] is True and "Message undeliverable" in failed[0]["error"]


async def test_reply_outside_window_refused_without_calling_graph(stack):
    creds = _creds()
    bot = await stack.add_chatbot(**creds)
    wa_id = "15551230005"  # never wrote: no window
    event = _outbound(bot.chatbot_id, wa_id, "unsolicited")
    await stack.outbound(event)
    failed = await stack.delivery_status.wait_for(lambda r: r["message_id"] == event.message_id)
    assert failed[0]["status"] == "failed" and failed[0]["permanent"] is True
    assert failed[0]["error"] == OUTSIDE_WINDOW_ERROR
    assert stack.graph.sent_to(wa_id) == []


async def test_window_closed_after_24_hours(stack):
    creds = _creds()
    bot = await stack.add_chatbot(**creds)
    wa_id = "15551230006"
    url = f"{stack.url}/whatsapp/{bot.chatbot_id}/webhook"
    old = int(time.time()) - 25 * 3600
    async with httpx.AsyncClient() as client:
        await _post_signed(client, url, _message_payload(wa_id, "wamid.OLD", "yesterday", ts=old), creds["whatsapp_app_secret"])
        conversation_id = conversation_id_for(bot.chatbot_id, "whatsapp", wa_id)
        state = await stack.window(bot.chatbot_id, conversation_id)
        assert (await client.get(f"{stack.url}/whatsapp/{bot.chatbot_id}/window/{conversation_id}")).status_code == 404
    assert state["open"] is False and state["ends_at"].startswith(
        time.strftime("%Y-%m-%dT%H", time.gmtime(old + 24 * 3600)))
    event = _outbound(bot.chatbot_id, wa_id, "too late")
    await stack.outbound(event)
    failed = await stack.delivery_status.wait_for(lambda r: r["message_id"] == event.message_id)
    assert failed[0]["error"] == OUTSIDE_WINDOW_ERROR


async def test_not_connected_refused(stack):
    creds = _creds(connected=False)
    bot = await stack.add_chatbot(**creds)
    wa_id = "15551230007"
    url = f"{stack.url}/whatsapp/{bot.chatbot_id}/webhook"
    async with httpx.AsyncClient() as client:
        await _post_signed(client, url, _message_payload(wa_id, "wamid.NC", "hi"), creds["whatsapp_app_secret"])
    event = _outbound(bot.chatbot_id, wa_id, "nope")
    await stack.outbound(event)
    failed = await stack.delivery_status.wait_for(lambda r: r["message_id"] == event.message_id)
    assert failed[0]["status"] == "failed" and failed[0]["error"] == "WhatsApp is not connected for this chatbot."
    assert stack.graph.sent_to(wa_id) == []


async def test_429_and_5xx_retried_then_sent_and_errors_carry_no_token(stack, caplog):
    caplog.set_level(logging.DEBUG)
    creds = _creds()
    bot = await stack.add_chatbot(**creds)
    wa_id = "15551230008"
    url = f"{stack.url}/whatsapp/{bot.chatbot_id}/webhook"
    async with httpx.AsyncClient() as client:
        await _post_signed(client, url, _message_payload(wa_id, "wamid.R1", "hi"), creds["whatsapp_app_secret"])
    stack.graph.script(Answer(429, retry_after=1, message="Rate limit hit", code=130429), Answer(503, message="down"))
    event = _outbound(bot.chatbot_id, wa_id, "eventually")
    await stack.outbound(event)
    sent = await stack.delivery_status.wait_for(lambda r: r["message_id"] == event.message_id, timeout=20)
    assert sent[0]["status"] == "sent"
    tries = stack.graph.sent_to(wa_id)
    assert len(tries) == 3 and tries[1].at - tries[0].at >= 0.95  # Retry-After honoured

    stack.graph.script(Answer(400, message=f"Invalid token {creds['whatsapp_access_token']}", code=190))
    bad = _outbound(bot.chatbot_id, wa_id, "rejected")
    await stack.outbound(bad)
    failed = await stack.delivery_status.wait_for(lambda r: r["message_id"] == bad.message_id)
    assert failed[0]["status"] == "failed" and failed[0]["permanent"] is True and "code 190" in failed[0]["error"]
    assert creds["whatsapp_access_token"] not in failed[0]["error"]
    await eventually(lambda: _async("not delivered" in caplog.text))
    for secret in (creds["whatsapp_access_token"], creds["whatsapp_app_secret"]):
        assert secret not in caplog.text


async def _async(value):
    return value
