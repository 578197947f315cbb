"""Issue 12: what the outside world can send channels is bounded, and a signed webhook body
channels cannot use is acknowledged as ignored (a 5xx or 4xx makes Telegram and Meta
redeliver it for days), with a log line saying why; bodies and websocket frames are capped."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from urllib.parse import urlsplit

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from services.channels.domain import whatsapp_signature
from shared.http_limits import nested_deeper_than
from shared.ids import conversation_id_for
from tests.channels.test_telegram import _creds as _telegram_creds
from tests.channels.test_telegram import _update
from tests.channels.test_whatsapp import _creds as _whatsapp_creds
from tests.channels.test_whatsapp import _message_payload

DEEP = b"[" * 100_000


async def _signed(client: httpx.AsyncClient, url: str, raw: bytes, secret: str) -> httpx.Response:
    return await client.post(url, content=raw, headers={"Content-Type": "application/json",
                                                        "X-Hub-Signature-256": whatsapp_signature(secret, raw)})


def _ignored(r: httpx.Response) -> bool:
    return r.status_code == 200 and r.json().get("status") == "ignored"


async def test_signed_whatsapp_bodies_it_cannot_use_are_ignored_not_5xx(stack, caplog):
    caplog.set_level(logging.INFO)
    creds = _whatsapp_creds()
    bot = await stack.add_chatbot(**creds)
    url = f"{stack.url}/whatsapp/{bot.chatbot_id}/webhook"
    secret = creds["whatsapp_app_secret"]
    bodies = [
        b'{"object":"whatsapp_business_account","entry":"oops"}',
        json.dumps({"object": "whatsapp_business_account", "entry": [{"changes": {"value": {"messages": []}}}]}).encode(),
        json.dumps({"entry": [{"changes": [{"value": "x"}, "y", 3]}, 5, None]}).encode(),
        DEEP,
        b"{not json",
        b"[1, 2]",
    ]
    async with httpx.AsyncClient(timeout=10) as client:
        answers = [await _signed(client, url, raw, secret) for raw in bodies]
        unsigned_deep = await client.post(url, content=DEEP)
    assert [(r.status_code, r.json().get("status")) for r in answers] == [(200, "ignored")] * len(bodies)
    assert unsigned_deep.status_code == 401  # authentication first, as before
    assert "whatsapp webhook ignored" in caplog.text and secret not in caplog.text


async def test_whatsapp_timestamp_out_of_range_is_taken_as_now(stack):
    creds = _whatsapp_creds()
    bot = await stack.add_chatbot(**creds)
    url = f"{stack.url}/whatsapp/{bot.chatbot_id}/webhook"
    wa_id = "15551239901"
    payload = _message_payload(wa_id, "wamid.TS1", "from the far future", number=creds["whatsapp_phone_number_id"])
    payload["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = "99999999999999999999"
    future = _message_payload(wa_id, "wamid.TS2", "year 3000", number=creds["whatsapp_phone_number_id"])
    future["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = str(32503680000)  # a valid year 3000
    async with httpx.AsyncClient(timeout=10) as client:
        r1 = await _signed(client, url, json.dumps(payload).encode(), creds["whatsapp_app_secret"])
        r2 = await _signed(client, url, json.dumps(future).encode(), creds["whatsapp_app_secret"])
    assert (r1.status_code, r2.status_code) == (200, 200)
    got = await stack.visitor_messages.wait_for(lambda r: r["chatbot_id"] == bot.chatbot_id, count=2)
    assert [r["text"] for r in got] == ["from the far future", "year 3000"]
    assert all(r["occurred_at"] < "2100" for r in got)
    # A timestamp in the future must not hold the 24-hour window open for centuries.
    window = await stack.window(bot.chatbot_id, conversation_id_for(bot.chatbot_id, "whatsapp", wa_id))
    assert window["open"] is True and window["ends_at"] < "2100"


async def test_signed_telegram_bodies_it_cannot_use_are_ignored_not_5xx(stack, caplog):
    caplog.set_level(logging.INFO)
    creds = _telegram_creds()
    bot = await stack.add_chatbot(**creds)
    url = f"{stack.url}/telegram/{bot.chatbot_id}/webhook"
    headers = {"X-Telegram-Bot-Api-Secret-Token": creds["telegram_webhook_secret"]}
    late = _update(8801, 8801, "date out of range")
    late["message"]["date"] = 99999999999999999999
    odd = _update(8802, 8801, "odd names")
    odd["message"]["from"] = {"id": 1, "first_name": {"x": 1}, "last_name": 5, "username": ["u"]}
    async with httpx.AsyncClient(timeout=10) as client:
        r_late = await client.post(url, json=late, headers=headers)
        r_odd = await client.post(url, json=odd, headers=headers)
        deep = await client.post(url, content=DEEP, headers=headers)
        not_object = await client.post(url, content=b'"hello"', headers=headers)
        unsigned_deep = await client.post(url, content=DEEP)
    assert (r_late.status_code, r_odd.status_code) == (200, 200)
    assert _ignored(deep) and _ignored(not_object)
    assert unsigned_deep.status_code == 401
    got = await stack.visitor_messages.wait_for(lambda r: r["chatbot_id"] == bot.chatbot_id, count=2)
    assert [r["text"] for r in got] == ["date out of range", "odd names"]
    assert got[0]["occurred_at"] < "2100" and got[1]["visitor"]["name"] is None
    assert "telegram webhook ignored" in caplog.text and creds["telegram_webhook_secret"] not in caplog.text


async def test_widget_json_nested_too_deep_is_400(stack):
    bot = await stack.add_chatbot()
    body = b'{"client_message_id": "c1", "text": "x", "name": ' \
        + b"[" * 40 + b"]" * 40 + b"}"
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(f"{stack.url}/web/{bot.chatbot_id}/messages", content=body,
                              headers={"Content-Type": "application/json", **stack.visitor(bot.chatbot_id).headers})
    assert r.status_code == 400 and "nested too deeply" in r.json()["detail"]


# ---------------------------------------------------------------- body caps
async def _raw_exchange(base_url: str, head: str, chunks: list[bytes] = (), timeout: float = 10.0) -> tuple[int, dict]:
    """Send a request head and some body bytes, never finishing the body: the answer must
    come from what was read so far."""
    parts = urlsplit(base_url)
    reader, writer = await asyncio.open_connection(parts.hostname, parts.port)
    try:
        writer.write(head.encode())
        for chunk in chunks:
            writer.write(chunk)
            try:
                await writer.drain()
            except ConnectionError:
                break  # the server answered and closed: read the answer
        async with asyncio.timeout(timeout):
            status_line = await reader.readline()
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                k, _, v = line.decode().partition(":")
                headers[k.strip().lower()] = v.strip()
            body = await reader.readexactly(int(headers["content-length"]))
        return int(status_line.split()[1]), json.loads(body)
    finally:
        writer.close()


async def test_declared_oversize_body_refused_413_without_reading_it(stack):
    bot = await stack.add_chatbot(**_whatsapp_creds())
    for path, size in ((f"/whatsapp/{bot.chatbot_id}/webhook", 20_000_000),
                       (f"/web/{bot.chatbot_id}/messages", stack.settings.widget_max_body_bytes + 1)):
        head = (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Content-Length: {size}\r\n\r\n")
        status, body = await _raw_exchange(stack.url, head)  # not one body byte sent
        assert status == 413 and "too large" in body["detail"]


async def test_chunked_oversize_body_refused_413_while_streaming(stack):
    creds = _telegram_creds()
    bot = await stack.add_chatbot(**creds)
    cap = stack.settings.webhook_max_body_bytes
    chunk = b"x" * 65536
    frames = [f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"] * (cap // len(chunk) + 2)  # never the last chunk
    head = (f"POST /telegram/{bot.chatbot_id}/webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"X-Telegram-Bot-Api-Secret-Token: {creds['telegram_webhook_secret']}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n")
    status, body = await _raw_exchange(stack.url, head, frames)
    assert status == 413 and "too large" in body["detail"]
    web = await _raw_exchange(stack.url, head.replace(f"/telegram/{bot.chatbot_id}/webhook",
                                                      f"/web/{bot.chatbot_id}/messages"), frames[:3])
    assert web[0] == 413


async def test_widget_can_read_the_413(stack):
    bot = await stack.add_chatbot()
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(f"{stack.url}/web/{bot.chatbot_id}/messages", headers={"Origin": "https://shop.example"},
                              json={"client_message_id": "c1",
                                    "text": "y" * (stack.settings.widget_max_body_bytes + 1)})
    assert r.status_code == 413 and "too large" in r.json()["detail"]
    assert r.headers.get("access-control-allow-origin") == "*"  # CORS wraps the limit


async def test_bodies_under_the_caps_still_work(stack):
    bot = await stack.add_chatbot()
    async with httpx.AsyncClient(timeout=10) as client:
        r = await client.post(f"{stack.url}/web/{bot.chatbot_id}/messages", headers=stack.visitor(bot.chatbot_id).headers,
                              json={"client_message_id": "c1", "text": "y" * 4000})
    assert r.status_code == 202


async def test_oversize_websocket_frame_closes_1009(stack):
    bot = await stack.add_chatbot()
    url = stack.service.ws_url + f"/web/{bot.chatbot_id}/ws"
    async with connect(url) as ws:
        await ws.send(stack.visitor(bot.chatbot_id).auth_frame)
        assert json.loads(await ws.recv()) == {"type": "ready"}
        await ws.send(json.dumps({"type": "ping"}))
        assert json.loads(await ws.recv()) == {"type": "pong"}
        await ws.send(json.dumps({"type": "ping", "pad": "z" * (stack.settings.widget_max_frame_bytes + 1)}))
        with pytest.raises(ConnectionClosed) as closed:
            async with asyncio.timeout(10):
                await ws.recv()
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009


# ---------------------------------------------------------------- phone_number_id
async def test_whatsapp_message_for_another_number_is_ignored_and_not_stored(stack, caplog):
    caplog.set_level(logging.INFO)
    creds = _whatsapp_creds()
    bot = await stack.add_chatbot(**creds)
    url = f"{stack.url}/whatsapp/{bot.chatbot_id}/webhook"
    wa_id = "15551239902"
    other = _message_payload(wa_id, "wamid.OTHER", "for another number", number="99999999")
    bare = _message_payload(wa_id, "wamid.BARE", "no metadata", number=creds["whatsapp_phone_number_id"])
    bare["entry"][0]["changes"][0]["value"].pop("metadata")
    mine = _message_payload(wa_id, "wamid.MINE", "for this number", number=creds["whatsapp_phone_number_id"])
    async with httpx.AsyncClient(timeout=10) as client:
        r_other = await _signed(client, url, json.dumps(other).encode(), creds["whatsapp_app_secret"])
        r_bare = await _signed(client, url, json.dumps(bare).encode(), creds["whatsapp_app_secret"])
        window = await stack.window(bot.chatbot_id, conversation_id_for(bot.chatbot_id, "whatsapp", wa_id))
        r_mine = await _signed(client, url, json.dumps(mine).encode(), creds["whatsapp_app_secret"])
    assert _ignored(r_other) and _ignored(r_bare)
    assert r_mine.status_code == 200 and r_mine.json().get("status") != "ignored"
    assert window == {"open": False, "ends_at": None}  # nothing of theirs was stored
    await stack.visitor_messages.wait_for(lambda r: r["chatbot_id"] == bot.chatbot_id and r["text"] == "for this number")
    assert [r["text"] for r in stack.visitor_messages.matching(lambda r: r["chatbot_id"] == bot.chatbot_id)] == [
        "for this number"]
    assert "phone_number_id" in caplog.text


# ---------------------------------------------------------------- reactions, unsupported
async def test_whatsapp_reaction_and_unsupported_message_reach_the_conversation_as_words(stack):
    creds = _whatsapp_creds()
    bot = await stack.add_chatbot(**creds)
    url = f"{stack.url}/whatsapp/{bot.chatbot_id}/webhook"
    wa_id = "15551239903"
    reaction = _message_payload(wa_id, "wamid.RX", "unused", number=creds["whatsapp_phone_number_id"])
    msg = reaction["entry"][0]["changes"][0]["value"]["messages"][0]
    msg.pop("text")
    msg |= {"type": "reaction", "reaction": {"message_id": "wamid.OUT", "emoji": "👎"}}
    unsupported = _message_payload(wa_id, "wamid.UX", "unused", number=creds["whatsapp_phone_number_id"])
    msg = unsupported["entry"][0]["changes"][0]["value"]["messages"][0]
    msg.pop("text")
    msg |= {"type": "unsupported", "errors": [{"code": 131051, "title": "Message type unknown"}]}
    async with httpx.AsyncClient(timeout=10) as client:
        for payload in (reaction, unsupported):
            assert (await _signed(client, url, json.dumps(payload).encode(), creds["whatsapp_app_secret"])).status_code == 200
    got = await stack.visitor_messages.wait_for(lambda r: r["chatbot_id"] == bot.chatbot_id, count=2)
    assert [(r["text"], r["channel_message_id"]) for r in got] == [
        ("[Reacted 👎 to a message]", "wamid.RX"), ("[A message WhatsApp cannot show]", "wamid.UX")]


def test_json_depth_guard_counts_only_brackets_outside_strings():
    assert not nested_deeper_than(b'{"a": "[[[[[[[[[[{{{{"}', 2)
    assert not nested_deeper_than(b'["a\\"[[[[[[", ["b"]]', 2)  # an escaped quote does not end the string
    assert not nested_deeper_than(b"[" * 32 + b"]" * 32, 32) and nested_deeper_than(b"[" * 33 + b"]" * 33, 32)
    assert nested_deeper_than(b'{"a": [{"b": [[]]}]}', 4) and not nested_deeper_than(b'{"a": [{"b": [[]]}]}', 5)
    # Unbalanced: deeper only when the unclosed brackets could be (json.loads refuses it anyway).
    assert not nested_deeper_than(b"]][[", 32) and not nested_deeper_than(b"[[[1", 32)
    assert nested_deeper_than(b"[" * 33, 32) and nested_deeper_than(b"[" * 100_000, 32)
    assert not nested_deeper_than(b"", 32) and not nested_deeper_than(b"12", 32)
    started = time.perf_counter()
    assert nested_deeper_than(DEEP * 10, 32)
    assert not nested_deeper_than(b"[" + b"[]," * 300_000 + b"[]]", 32)  # ~1 MB, two levels
    assert time.perf_counter() - started < 1.0
