"""Telegram, both directions, against the fake Bot API through python-telegram-bot, with
the service on the real broker, Redis and Mongo-wire server."""

from __future__ import annotations

import itertools
import logging

import httpx
import pytest

from shared.events import OutboundMessage, VisitorIdentity
from shared.ids import conversation_id_for, new_id
from tests.channels.conftest import PUBLIC_URL
from tests.fakes.telegram_api import Answer
from tests.support import eventually

# PTB 22 warns (inside RetryAfter itself) that retry_after becomes a timedelta; we read both.
pytestmark = pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")

TOKEN_SEQ = itertools.count(1)


def _creds() -> dict:
    n = next(TOKEN_SEQ)
    return {"telegram_bot_token": f"{700000 + n}:AAFakeTokenSecretPart{n:04d}xyz",
            "telegram_webhook_secret": f"hook-secret-{n}-{new_id()[:8]}"}


def _update(update_id: int, chat_id: int, text: str) -> dict:
    return {"update_id": update_id, "message": {
        "message_id": update_id, "date": 1764000000, "text": text,
        "chat": {"id": chat_id, "type": "private", "first_name": "Ada"},
        "from": {"id": chat_id, "is_bot": False, "first_name": "Ada", "last_name": "Lovelace"}}}


def _outbound(chatbot_id: str, chat_id: str, text: str, message_id: str | None = None) -> OutboundMessage:
    return OutboundMessage(chatbot_id=chatbot_id, conversation_id=conversation_id_for(chatbot_id, "telegram", chat_id),
                           message_id=message_id or new_id(), channel="telegram",
                           visitor=VisitorIdentity(external_id=chat_id), text=text, sender="agent", sender_name="Maria")


async def test_set_webhook_called_with_url_and_secret(stack):
    creds = _creds()
    bot = await stack.add_chatbot(**creds)
    calls = await eventually(lambda: _async([c for c in stack.telegram.calls_to("setWebhook")
                                              if c.token == creds["telegram_bot_token"]]))
    assert calls[0].params["url"] == f"{PUBLIC_URL}/telegram/{bot.chatbot_id}/webhook"
    assert calls[0].params["secret_token"] == creds["telegram_webhook_secret"]

    # A new secret registers again; the same settings again do not.
    new_secret = "rotated-" + new_id()[:10]
    await stack.add_chatbot(bot.chatbot_id, **{**creds, "telegram_webhook_secret": new_secret})
    calls = await eventually(lambda: _async([c for c in stack.telegram.calls_to("setWebhook")
                                              if c.params.get("secret_token") == new_secret]))
    assert len(calls) == 1


async def test_inbound_message_published_once_with_name(stack):
    creds = _creds()
    bot = await stack.add_chatbot(**creds)
    url = f"{stack.url}/telegram/{bot.chatbot_id}/webhook"
    headers = {"X-Telegram-Bot-Api-Secret-Token": creds["telegram_webhook_secret"]}
    async with httpx.AsyncClient() as client:
        r1 = await client.post(url, json=_update(5001, 99001, "Hello there"), headers=headers)
        r2 = await client.post(url, json=_update(5001, 99001, "Hello there"), headers=headers)  # Telegram retry
        r3 = await client.post(url, json=_update(5002, 99001, "Second"), headers=headers)
    assert (r1.status_code, r2.status_code, r3.status_code) == (200, 200, 200)
    assert r2.json()["duplicate"] is True

    mine = lambda r: r["chatbot_id"] == bot.chatbot_id  # noqa: E731
    await stack.visitor_messages.wait_for(lambda r: mine(r) and r["text"] == "Second")
    records = stack.visitor_messages.matching(mine)
    assert [r["text"] for r in records] == ["Hello there", "Second"]
    first = records[0]
    assert first["type"] == "visitor.message_received" and first["channel"] == "telegram"
    assert first["visitor"] == {"external_id": "99001", "name": "Ada Lovelace"}
    assert first["channel_message_id"] == "5001"
    assert first["conversation_id"] == conversation_id_for(bot.chatbot_id, "telegram", "99001")


async def test_bad_or_missing_secret_refused_and_nothing_published(stack):
    creds = _creds()
    bot = await stack.add_chatbot(**creds)
    url = f"{stack.url}/telegram/{bot.chatbot_id}/webhook"
    async with httpx.AsyncClient() as client:
        missing = await client.post(url, json=_update(1, 5, "forged 1"))
        wrong = await client.post(url, json=_update(2, 5, "forged 2"),
                                  headers={"X-Telegram-Bot-Api-Secret-Token": creds["telegram_webhook_secret"] + "x"})
        ok = await client.post(url, json=_update(3, 5, "genuine"),
                               headers={"X-Telegram-Bot-Api-Secret-Token": creds["telegram_webhook_secret"]})
    assert (missing.status_code, wrong.status_code, ok.status_code) == (401, 401, 200)
    await stack.visitor_messages.wait_for(lambda r: r["chatbot_id"] == bot.chatbot_id and r["text"] == "genuine")
    assert [r["text"] for r in stack.visitor_messages.matching(lambda r: r["chatbot_id"] == bot.chatbot_id)] == ["genuine"]


async def test_outbound_reply_sent_and_status_recorded(stack):
    creds = _creds()
    bot = await stack.add_chatbot(**creds)
    event = _outbound(bot.chatbot_id, "424242", "Hi, this is Maria")
    await stack.outbound(event)
    await stack.outbound(event)  # the same message id again: never sent twice
    sent = await stack.delivery_status.wait_for(lambda r: r["message_id"] == event.message_id)
    assert sent[0]["status"] == "sent" and sent[0]["permanent"] is False
    assert sent[0]["conversation_id"] == event.conversation_id
    calls = [c for c in stack.telegram.calls_to("sendMessage") if c.token == creds["telegram_bot_token"]]
    assert len(calls) == 1
    assert calls[0].params["chat_id"] in (424242, "424242") and calls[0].params["text"] == "Hi, this is Maria"
    assert sent[0]["channel_message_id"] is not None


async def test_429_retry_after_is_honoured(stack):
    creds = _creds()
    bot = await stack.add_chatbot(**creds)
    stack.telegram.script("sendMessage", Answer(429, retry_after=1))
    event = _outbound(bot.chatbot_id, "5151", "after the flood")
    await stack.outbound(event)
    sent = await stack.delivery_status.wait_for(lambda r: r["message_id"] == event.message_id, timeout=20)
    assert sent[0]["status"] == "sent"
    calls = [c for c in stack.telegram.calls_to("sendMessage") if c.token == creds["telegram_bot_token"]]
    assert len(calls) == 2
    assert calls[1].at - calls[0].at >= 0.95  # waited retry_after (1 s), not the 0.05 s backoff


async def test_transient_5xx_retried_permanent_4xx_reported_without_token(stack, caplog):
    caplog.set_level(logging.DEBUG)
    creds = _creds()
    bot = await stack.add_chatbot(**creds)
    stack.telegram.script("sendMessage", Answer(500), Answer(502), Answer(400, description="Bad Request: chat not found"))
    event = _outbound(bot.chatbot_id, "6161", "will fail")
    await stack.outbound(event)
    failed = await stack.delivery_status.wait_for(lambda r: r["message_id"] == event.message_id, timeout=20)
    assert failed[0]["status"] == "failed" and failed[0]["permanent"] is True
    assert "chat not found" in failed[0]["error"].lower()
    assert len([c for c in stack.telegram.calls_to("sendMessage") if c.token == creds["telegram_bot_token"]]) == 3
    # The token never reaches a log line or an error text.
    assert creds["telegram_bot_token"] not in failed[0]["error"]
    assert "will fail" in caplog.text or "not delivered" in caplog.text
    assert creds["telegram_bot_token"] not in caplog.text
    assert creds["telegram_webhook_secret"] not in caplog.text


async def _async(value):
    return value


async def test_publish_failure_answers_503_so_telegram_retries(stack):
    creds = _creds()
    bot = await stack.add_chatbot(**creds)
    inbound = stack.service.app.state.channels_api.inbound_visitor
    real = inbound.publisher

    class BrokenBus:
        async def publish(self, event):
            raise ConnectionError("broker unreachable")

    url = f"{stack.url}/telegram/{bot.chatbot_id}/webhook"
    headers = {"X-Telegram-Bot-Api-Secret-Token": creds["telegram_webhook_secret"]}
    async with httpx.AsyncClient() as client:
        inbound.publisher = BrokenBus()
        try:
            refused = await client.post(url, json=_update(8001, 8, "keep me"), headers=headers)
        finally:
            inbound.publisher = real
        retried = await client.post(url, json=_update(8001, 8, "keep me"), headers=headers)
    assert refused.status_code == 503 and retried.status_code == 200 and retried.json()["duplicate"] is False
    got = await stack.visitor_messages.wait_for(lambda r: r["chatbot_id"] == bot.chatbot_id)
    assert [r["text"] for r in got] == ["keep me"]


async def test_unknown_chatbot_media_and_other_updates(stack):
    creds = _creds()
    bot = await stack.add_chatbot(**creds)
    headers = {"X-Telegram-Bot-Api-Secret-Token": creds["telegram_webhook_secret"]}
    async with httpx.AsyncClient() as client:
        unknown = await client.post(f"{stack.url}/telegram/nobody/webhook", json=_update(1, 1, "x"), headers=headers)
        sticker = await client.post(f"{stack.url}/telegram/{bot.chatbot_id}/webhook", headers=headers,
                                    json={"update_id": 9, "message": {"message_id": 9, "date": 1, "chat": {"id": 9},
                                                                      "sticker": {"file_id": "x", "emoji": "😀"}}})
        joined = await client.post(f"{stack.url}/telegram/{bot.chatbot_id}/webhook", headers=headers,
                                   json={"update_id": 10, "message": {"message_id": 10, "date": 1, "chat": {"id": 9},
                                                                      "new_chat_members": [{"id": 1}]}})
        not_json = await client.post(f"{stack.url}/telegram/{bot.chatbot_id}/webhook", headers=headers,
                                     content=b"{not json")
    assert unknown.status_code == 404
    # A sticker is something the visitor sent: it reaches the conversation as words. A
    # service message is not: acknowledged (or Telegram redelivers it) and dropped.
    assert sticker.status_code == 200 and "ignored" not in sticker.json()
    assert joined.status_code == 200 and joined.json()["ignored"] is True
    got = await stack.visitor_messages.wait_for(lambda r: r["chatbot_id"] == bot.chatbot_id)
    assert [(r["text"], r["channel_message_id"]) for r in got] == [("[Sticker: 😀]", "9")]
    # Authenticated but unusable: acknowledged as ignored (a 400 would make Telegram redeliver it).
    assert not_json.status_code == 200 and not_json.json()["status"] == "ignored"


async def test_token_without_configured_secret_gets_a_derived_one(stack):
    token = f"{800000 + next(TOKEN_SEQ)}:AAOnlyTokenNoSecret"
    bot = await stack.add_chatbot(telegram_bot_token=token)
    calls = await eventually(lambda: _async([c for c in stack.telegram.calls_to("setWebhook") if c.token == token]))
    secret = calls[0].params["secret_token"]
    assert secret and token not in secret
    url = f"{stack.url}/telegram/{bot.chatbot_id}/webhook"
    async with httpx.AsyncClient() as client:
        none = await client.post(url, json=_update(1, 3, "no header"))
        ok = await client.post(url, json=_update(2, 3, "with it"), headers={"X-Telegram-Bot-Api-Secret-Token": secret})
    assert (none.status_code, ok.status_code) == (401, 200)


async def test_set_webhook_retried_after_a_server_error(stack):
    creds = _creds()
    stack.telegram.script("setWebhook", Answer(500))
    await stack.add_chatbot(**creds)
    calls = await eventually(lambda: _async(len([c for c in stack.telegram.calls_to("setWebhook")
                                                  if c.token == creds["telegram_bot_token"]]) >= 2 or None))
    assert calls is True


def _group_update(update_id: int, chat_id: int, text: str, kind: str = "message", **extra) -> dict:
    """A supergroup message as Telegram sends it (the fake Bot API's getMe says @fake_bot, id 42)."""
    message = {"message_id": update_id, "date": 1764000000, "text": text,
               "chat": {"id": chat_id, "type": "supergroup", "title": "Bike Club"},
               "from": {"id": 1001, "is_bot": False, "first_name": "Ana", "last_name": "Lima"}, **extra}
    if text.startswith("@"):
        message["entities"] = [{"type": "mention", "offset": 0, "length": len(text.split()[0])}]
    return {"update_id": update_id, kind: message}


async def test_groups_take_only_messages_for_the_bot_as_one_conversation_and_edits_are_marked(stack):
    creds = _creds()
    bot = await stack.add_chatbot(**creds)
    token = creds["telegram_bot_token"]
    registered = await eventually(lambda: _async([c for c in stack.telegram.calls_to("setWebhook") if c.token == token]))
    assert registered[0].params["allowed_updates"] == ["message", "edited_message"]
    url = f"{stack.url}/telegram/{bot.chatbot_id}/webhook"
    headers = {"X-Telegram-Bot-Api-Secret-Token": creds["telegram_webhook_secret"]}
    async with httpx.AsyncClient() as client:
        chatter = await client.post(url, json=_group_update(9101, -100777, "anyone riding sunday?"), headers=headers)
        mention = await client.post(url, json=_group_update(9102, -100777, "@fake_bot where is my order?"),
                                    headers=headers)
        reply = await client.post(url, headers=headers, json=_group_update(
            9103, -100777, "and the tracking number?",
            reply_to_message={"message_id": 5, "date": 1764000000, "text": "It ships today.",
                              "chat": {"id": -100777, "type": "supergroup", "title": "Bike Club"},
                              "from": {"id": 42, "is_bot": True, "first_name": "Fake", "username": "fake_bot"}}))
        edited = {**_update(9104, 99002, "my order is 1243")["message"], "edit_date": 1764000100}
        edit = await client.post(url, json={"update_id": 9104, "edited_message": edited}, headers=headers)
        channel_post = await client.post(url, headers=headers, json={"update_id": 9105, "channel_post": {
            "message_id": 1, "date": 1764000000, "text": "@fake_bot new bikes",
            "chat": {"id": -100888, "type": "channel", "title": "News"}}})
    assert chatter.json()["ignored"] is True and channel_post.json()["ignored"] is True
    assert all(r.status_code == 200 and "ignored" not in r.json() for r in (mention, reply, edit))

    mine = lambda r: r["chatbot_id"] == bot.chatbot_id  # noqa: E731
    got = await stack.visitor_messages.wait_for(mine, count=3)
    got.sort(key=lambda r: r["channel_message_id"])  # two conversations: no order between them
    assert [(r["text"], r["visitor"]["name"]) for r in got] == [
        ("Ana Lima: where is my order?", "Bike Club"), ("Ana Lima: and the tracking number?", "Bike Club"),
        ("(edited) my order is 1243", "Ada Lovelace")]
    group = conversation_id_for(bot.chatbot_id, "telegram", "-100777")
    assert got[0]["conversation_id"] == got[1]["conversation_id"] == group
    assert got[2]["conversation_id"] == conversation_id_for(bot.chatbot_id, "telegram", "99002")
    # Who the bot is was asked once (and only for group messages).
    assert len([c for c in stack.telegram.calls_to("getMe") if c.token == token]) == 1


async def test_a_group_message_waits_for_the_bots_identity_when_telegram_does_not_answer(stack):
    creds = _creds()
    bot = await stack.add_chatbot(**creds)
    url = f"{stack.url}/telegram/{bot.chatbot_id}/webhook"
    headers = {"X-Telegram-Bot-Api-Secret-Token": creds["telegram_webhook_secret"]}
    stack.telegram.script("getMe", Answer(502))  # then it answers
    async with httpx.AsyncClient() as client:
        refused = await client.post(url, json=_group_update(9201, -100999, "@fake_bot hello"), headers=headers)
        retried = await client.post(url, json=_group_update(9201, -100999, "@fake_bot hello"), headers=headers)
    assert refused.status_code == 503 and refused.headers["Retry-After"]
    assert retried.status_code == 200 and retried.json()["duplicate"] is False
    got = await stack.visitor_messages.wait_for(lambda r: r["chatbot_id"] == bot.chatbot_id)
    assert [r["text"] for r in got] == ["Ana Lima: hello"]
