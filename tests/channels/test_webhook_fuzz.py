"""Issue 12, item 6 for channels: generated Telegram updates and WhatsApp payloads, signed
correctly so they pass authentication and reach the parsers, are acknowledged (200, or 429
when rate-limited), never answered >= 500; and the parsers alone never raise on them.

The strategies know the platforms' shapes (a Telegram message with its chat, sender and one
kind of content; a WhatsApp change with contacts, messages of every type and statuses), so
most bodies are nearly valid, and then: a field of the wrong type, a huge number, a missing or
an unknown key, a value wrapped in a list, deep nesting, odd unicode (lone surrogates, NUL,
right-to-left marks, emoji), and now and then raw bytes that are not JSON at all. hypothesis
runs a bounded number of them, derandomized (the same ones every run), without an example
database (tests/fuzzing.py)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.channels.domain import parse_telegram_update, parse_whatsapp_payload, whatsapp_signature
from tests.channels.test_telegram import _creds as _telegram_creds
from tests.channels.test_whatsapp import PHONE_NUMBER_ID
from tests.channels.test_whatsapp import _creds as _whatsapp_creds
from tests.fuzzing import ODD_TEXT, bounded

# ------------------------------------------------------------------ building blocks
ODD_STRINGS = st.one_of(
    ODD_TEXT, st.sampled_from(["", " ", "\u0000", "\u202eevil", "👍🏽", "99999999999999999999", "-1", "1e400",
                               "x" * 5000, "\ud800", "null"]))
HUGE_INTS = st.one_of(st.integers(min_value=2**53), st.integers(max_value=-(2**53)))


def _nest(depth: int) -> Any:
    node: Any = "deep"
    for level in range(depth):
        node = [node] if level % 2 else {"n": node}
    return node


# Values of the wrong kind: what a field may hold instead of what it should.
ODD = st.one_of(
    st.none(), st.booleans(), st.integers(), HUGE_INTS, st.floats(), ODD_STRINGS,
    st.lists(st.integers(), max_size=3), st.dictionaries(ODD_TEXT, st.integers(), max_size=2),
    st.integers(min_value=1, max_value=60).map(_nest),
)
WORDS = st.one_of(st.sampled_from(["Ada", "Grace Hopper", "Is this broken?"]), st.text(min_size=1, max_size=40),
                  ODD_TEXT)
TIMESTAMPS = st.integers(min_value=0, max_value=2_000_000_000)


@st.composite
def shaped(draw: st.DrawFn, fields: dict[str, st.SearchStrategy[Any]]) -> dict[str, Any]:
    """An object with `fields`, each one mostly as it should be, sometimes missing, of a
    wrong kind or wrapped in a list; sometimes with an unknown key besides."""
    out: dict[str, Any] = {}
    for key, good in fields.items():
        roll = draw(st.integers(min_value=0, max_value=23))  # shrinks to 0: the valid value
        if roll == 23:
            continue
        out[key] = draw(ODD) if roll == 22 else [draw(good)] if roll == 21 else draw(good)
    if draw(st.integers(min_value=0, max_value=7)) == 7:
        out[draw(ODD_TEXT)] = draw(ODD)
    return out


def merged(*parts: st.SearchStrategy[dict[str, Any]]) -> st.SearchStrategy[dict[str, Any]]:
    return st.tuples(*parts).map(lambda ds: {k: v for d in ds for k, v in d.items()})


def mostly(first: st.SearchStrategy[Any], *others: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """`first` as often as all the `others` together (st.one_of would pick each one alike)."""
    return st.sampled_from([first] * len(others) + list(others)).flatmap(lambda strategy: strategy)


def some(strategy: st.SearchStrategy[Any], max_size: int = 3) -> st.SearchStrategy[list[Any]]:
    return st.lists(strategy, min_size=1, max_size=max_size)


# ------------------------------------------------------------------ Telegram
TG_IDS = st.one_of(st.integers(min_value=1, max_value=2**53), st.integers(min_value=1).map(str), ODD_TEXT)
TG_USER = shaped({"id": TG_IDS, "is_bot": st.booleans(), "first_name": WORDS, "last_name": WORDS, "username": WORDS})
TG_CHAT = shaped({"id": TG_IDS, "type": st.sampled_from(["private", "group", "supergroup", "channel"]),
                  "first_name": WORDS})
TG_PLACE = shaped({"latitude": st.floats(-90, 90), "longitude": st.floats(-180, 180)})
TG_FILE = shaped({"file_id": WORDS, "file_unique_id": WORDS, "width": TG_IDS, "height": TG_IDS})
TG_CONTENT = mostly(
    shaped({"text": WORDS}),
    shaped({"photo": some(TG_FILE), "caption": WORDS}),
    shaped({"sticker": shaped({"emoji": WORDS, "file_id": WORDS})}),
    shaped({"document": shaped({"file_name": WORDS, "file_id": WORDS}), "caption": WORDS}),
    shaped({"voice": shaped({"duration": TG_IDS, "file_id": WORDS})}),
    shaped({"location": TG_PLACE}),
    shaped({"venue": shaped({"location": TG_PLACE, "title": WORDS, "address": WORDS})}),
    shaped({"contact": shaped({"first_name": WORDS, "last_name": WORDS, "phone_number": WORDS})}),
    shaped({"poll": shaped({"question": WORDS, "options": some(shaped({"text": WORDS}))})}),
    shaped({"dice": shaped({"emoji": WORDS, "value": st.integers(1, 6)})}),
    shaped({"new_chat_members": some(TG_USER)}),
)
TG_MESSAGE = merged(shaped({"message_id": TG_IDS, "date": TIMESTAMPS, "chat": TG_CHAT, "from": TG_USER}), TG_CONTENT)
TG_UPDATE = mostly(  # a message, the kind the parser reads, or another kind of update
    shaped({"update_id": TG_IDS, "message": TG_MESSAGE}),
    shaped({"update_id": TG_IDS, "edited_message": TG_MESSAGE}),
    shaped({"update_id": TG_IDS, "channel_post": TG_MESSAGE}),
    shaped({"update_id": TG_IDS, "callback_query": shaped({"id": WORDS, "from": TG_USER, "data": WORDS})}),
)

# ------------------------------------------------------------------ WhatsApp
WA_IDS = st.one_of(st.integers(min_value=1, max_value=10**15).map(str), st.sampled_from(["15551234567", "wamid.HBg"]),
                   ODD_TEXT)
WA_MEDIA = shaped({"id": WORDS, "mime_type": WORDS, "caption": WORDS, "filename": WORDS, "voice": st.booleans()})
WA_PARTS: dict[str, st.SearchStrategy[Any]] = {
    "text": shaped({"body": WORDS}),
    "reaction": shaped({"message_id": WA_IDS, "emoji": WORDS}),
    **{kind: WA_MEDIA for kind in ("image", "audio", "video", "document", "sticker")},
    "location": shaped({"latitude": st.floats(-90, 90), "longitude": st.floats(-180, 180), "name": WORDS,
                        "address": WORDS}),
    "contacts": some(shaped({"name": shaped({"formatted_name": WORDS}), "phones": some(shaped({"phone": WORDS}))})),
    "button": shaped({"text": WORDS, "payload": WORDS}),
    "interactive": shaped({"type": st.sampled_from(["button_reply", "list_reply"]),
                           "button_reply": shaped({"id": WORDS, "title": WORDS}),
                           "list_reply": shaped({"id": WORDS, "title": WORDS, "description": WORDS})}),
    "unsupported": shaped({"errors": some(shaped({"code": st.integers(), "title": WORDS}))}),
    "system": shaped({"body": WORDS, "type": WORDS}),
}
WA_MESSAGE = st.sampled_from(sorted(WA_PARTS)).flatmap(lambda kind: merged(
    shaped({"from": WA_IDS, "id": WA_IDS, "timestamp": TIMESTAMPS.map(str), "type": st.just(kind)}),
    shaped({kind: WA_PARTS[kind]})))
WA_STATUS = shaped({
    "id": WA_IDS, "status": st.sampled_from(["sent", "delivered", "read", "failed", "deleted"]),
    "timestamp": TIMESTAMPS.map(str), "recipient_id": WA_IDS,
    "errors": some(shaped({"code": st.integers(), "title": WORDS, "message": WORDS,
                           "error_data": shaped({"details": WORDS})}), max_size=2)})
WA_VALUE = shaped({
    "messaging_product": st.just("whatsapp"),
    # Mostly the chatbot's own number: a change for another one is skipped before the parsing.
    "metadata": shaped({"display_phone_number": WA_IDS,
                        "phone_number_id": st.sampled_from([PHONE_NUMBER_ID] * 7 + ["1"])}),
    "contacts": some(shaped({"profile": shaped({"name": WORDS}), "wa_id": WA_IDS}), max_size=2),
    "messages": some(WA_MESSAGE),
    "statuses": some(WA_STATUS, max_size=2),
})
WA_PAYLOAD = shaped({
    "object": st.just("whatsapp_business_account"),
    "entry": some(shaped({"id": WA_IDS, "changes": some(shaped({"field": st.just("messages"), "value": WA_VALUE}),
                                                          max_size=2)}), max_size=2),
})

# Bodies no JSON encoder writes: huge integers, NaN, bad UTF-8, nesting past the parser's
# recursion limit, truncated text.
RAW_ODDITIES = st.sampled_from([
    b'{"update_id": 1' + b"9" * 5000 + b"}", b'{"entry": NaN}', b"\xff\xfe{}", b"[" * 100_000, b'{"a": ',
    b"", b"null", b"[]", b'"text"',
])


@st.composite
def raw_bodies(draw: st.DrawFn, payloads: st.SearchStrategy[Any]) -> bytes:
    """The bytes a platform would sign: mostly a generated payload as JSON, sometimes something
    that is not a JSON object at all."""
    roll = draw(st.integers(min_value=0, max_value=19))
    if roll == 19:
        return draw(st.one_of(RAW_ODDITIES, st.binary(max_size=64)))
    body = draw(ODD) if roll == 18 else draw(payloads)
    return json.dumps(body).encode()


# ------------------------------------------------------------------ the parsers alone
@given(update=TG_UPDATE)
@bounded(400)
def test_telegram_parser_never_raises(update):
    parse_telegram_update("b", update)


@given(payload=WA_PAYLOAD)
@bounded(200)
def test_whatsapp_parser_never_raises(payload):
    parse_whatsapp_payload("b", payload, PHONE_NUMBER_ID)


# ------------------------------------------------------------------ the signed webhooks
@dataclass
class Webhooks:
    telegram_url: str
    telegram_secret: str
    whatsapp_url: str
    whatsapp_secret: str


@pytest.fixture(scope="module")
async def webhooks(stack) -> Webhooks:
    tg, wa = _telegram_creds(), _whatsapp_creds()
    tg_bot, wa_bot = await stack.add_chatbot(**tg), await stack.add_chatbot(**wa)
    return Webhooks(f"{stack.url}/telegram/{tg_bot.chatbot_id}/webhook", tg["telegram_webhook_secret"],
                    f"{stack.url}/whatsapp/{wa_bot.chatbot_id}/webhook", wa["whatsapp_app_secret"])


def _accepted(r: httpx.Response, raw: bytes) -> None:
    """A signed body is acknowledged (200: used, a duplicate or ignored), or rate-limited: never
    refused as unsigned, never a server error (Meta and Telegram retry those for days)."""
    assert r.status_code in (200, 429), f"{r.status_code} {r.text[:500]} for {raw[:3000]!r}"


@given(raw=raw_bodies(TG_UPDATE))
@bounded(100)
async def test_signed_telegram_updates_never_get_a_5xx(webhooks, raw):
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.post(webhooks.telegram_url, content=raw, headers={
            "Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": webhooks.telegram_secret})
    _accepted(r, raw)


@given(raw=raw_bodies(WA_PAYLOAD))
@bounded(100)
async def test_signed_whatsapp_payloads_never_get_a_5xx(webhooks, raw):
    async with httpx.AsyncClient(timeout=30) as client:
        r = await client.post(webhooks.whatsapp_url, content=raw, headers={
            "Content-Type": "application/json",
            "X-Hub-Signature-256": whatsapp_signature(webhooks.whatsapp_secret, raw)})
    _accepted(r, raw)
