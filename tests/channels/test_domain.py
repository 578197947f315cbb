"""The channels' pure rules: authentication, parsing, the WhatsApp window, retry delays,
stable event ids."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, datetime, timedelta

import pytest

from services.channels.domain import (
    OUTSIDE_WINDOW_ERROR,
    parse_telegram_update,
    parse_whatsapp_payload,
    platform_time,
    retry_delay,
    status_event,
    valid_telegram_secret,
    valid_whatsapp_signature,
    valid_whatsapp_verification,
    whatsapp_window,
)
from shared.ids import conversation_id_for


def test_telegram_secret_must_match_exactly():
    assert valid_telegram_secret("s3cret", "s3cret")
    assert not valid_telegram_secret("s3cret", "s3cret ")
    assert not valid_telegram_secret("s3cret", None)
    assert not valid_telegram_secret(None, "anything")  # no secret configured: refuse everything
    assert not valid_telegram_secret("", "")


def test_whatsapp_signature_over_the_raw_body():
    body = b'{"object":"whatsapp_business_account"}'
    good = "sha256=" + hmac.new(b"app-secret", body, hashlib.sha256).hexdigest()
    assert valid_whatsapp_signature("app-secret", body, good)
    assert valid_whatsapp_signature("app-secret", body, good.upper().replace("SHA256=", "sha256="))
    assert not valid_whatsapp_signature("app-secret", body + b" ", good)
    assert not valid_whatsapp_signature("other", body, good)
    assert not valid_whatsapp_signature("app-secret", body, good[len("sha256="):])  # prefix required
    assert not valid_whatsapp_signature("app-secret", body, None)
    assert not valid_whatsapp_signature(None, body, good)


def test_whatsapp_verification():
    assert valid_whatsapp_verification("tok", "subscribe", "tok")
    assert not valid_whatsapp_verification("tok", "subscribe", "tak")
    assert not valid_whatsapp_verification("tok", "unsubscribe", "tok")
    assert not valid_whatsapp_verification(None, "subscribe", "tok")


def test_parse_telegram_text_update():
    event = parse_telegram_update("bot1", {"update_id": 77, "message": {
        "message_id": 1, "date": 1764000000, "text": "hi", "chat": {"id": -5, "type": "private"},
        "from": {"id": 5, "is_bot": False, "first_name": "Ada", "username": "ada"}}})
    assert event is not None
    assert event.visitor.external_id == "-5" and event.visitor.name == "Ada"
    assert event.channel_message_id == "77" and event.text == "hi"
    assert event.conversation_id == conversation_id_for("bot1", "telegram", "-5")
    assert event.occurred_at == datetime.fromtimestamp(1764000000, UTC)
    # The same update always gets the same event id (so a duplicate is skipped downstream too).
    assert event.event_id == parse_telegram_update("bot1", {"update_id": 77, "message": {
        "message_id": 1, "date": 1764000000, "text": "hi", "chat": {"id": -5}}}).event_id


def test_parse_telegram_ignores_what_is_not_a_visitor_message():
    assert parse_telegram_update("b", {"update_id": 1, "channel_post": {"text": "x", "chat": {"id": 1}}}) is None
    assert parse_telegram_update("b", {"update_id": 1, "message": {"new_chat_members": [{}], "chat": {"id": 1}}}) is None
    assert parse_telegram_update("b", {"update_id": 1, "message": {"text": "   ", "chat": {"id": 1}}}) is None
    assert parse_telegram_update("b", {"message": {"text": "x", "chat": {"id": 1}}}) is None


def test_parse_whatsapp_messages_and_statuses():
    payload = {"entry": [{"changes": [{"value": {
        "metadata": {"phone_number_id": "1555"},
        "contacts": [{"profile": {"name": "Grace"}, "wa_id": "155"}],
        "messages": [
            {"from": "155", "id": "wamid.A", "timestamp": "1764000000", "type": "text", "text": {"body": "hello"}},
            {"from": "155", "id": "wamid.B", "timestamp": "1764000100", "type": "system",
             "system": {"body": "changed number"}},
        ],
        "statuses": [
            {"id": "wamid.OUT", "status": "delivered"},
            {"id": "wamid.OUT2", "status": "failed", "errors": [{"code": 131047, "title": "Re-engagement message"}]},
            {"id": "wamid.OUT3", "status": "deleted"},
        ]}}]}]}
    parsed = parse_whatsapp_payload("bot1", payload, "1555")
    inbound, statuses = parsed.inbound, parsed.statuses
    assert [i.wamid for i in inbound] == ["wamid.A", "wamid.B"]
    assert inbound[0].message is not None and inbound[0].message.visitor.name == "Grace"
    assert inbound[0].message.text == "hello" and inbound[0].message.channel_message_id == "wamid.A"
    assert inbound[1].message is None  # not a message to show, but it still opens the window
    assert inbound[1].sent_at == datetime.fromtimestamp(1764000100, UTC)
    assert [(s.wamid, s.status) for s in statuses] == [("wamid.OUT", "delivered"), ("wamid.OUT2", "failed")]
    assert statuses[1].error == "Re-engagement message (code 131047)"


def _nothing_usable(payload: dict, number: str | None = "1555") -> list[str]:
    parsed = parse_whatsapp_payload("b", payload, number)
    assert (parsed.inbound, parsed.statuses) == ([], [])
    return parsed.skipped


def test_parse_whatsapp_tolerates_garbage():
    meta = {"metadata": {"phone_number_id": "1555"}}
    assert _nothing_usable({"entry": [{"changes": [None, {"value": {**meta, "messages": [1, {"id": "x"}]}}]}]})
    assert _nothing_usable({}) == ["no entry list"]
    # Issue 12: each of these was a 500 (AttributeError, TypeError, OverflowError).
    assert _nothing_usable({"object": "whatsapp_business_account", "entry": "oops"}) == ["no entry list"]
    assert _nothing_usable({"entry": [{"changes": {"value": {}}}]}) == ["an entry without a changes list"]
    assert _nothing_usable({"entry": ["x", 5, {"changes": ["y", {"value": "z"}]}]})
    assert _nothing_usable({"entry": [{"changes": [{"value": {**meta, "contacts": [{"wa_id": {}, "profile": 3}],
                                                              "messages": {"a": 1}, "statuses": [
        {"id": ["w"], "status": "read"}]}}]}]}) == ["a status of an unknown kind or without id"]
    odd = parse_whatsapp_payload("b", {"entry": [{"changes": [{"value": {**meta, "contacts": [
        {"wa_id": "155", "profile": {"name": {"x": 1}}}], "messages": [
        {"from": "155", "id": "w1", "timestamp": "99999999999999999999", "type": "text", "text": {"body": "hi"}}],
        "statuses": [{"id": "w0", "status": "failed", "errors": 5}, {"id": "w2", "status": "failed",
                                                                     "errors": [{"title": 7, "code": {"c": 1}}]}]}}]}]},
        "1555")
    assert [i.message.text for i in odd.inbound if i.message] == ["hi"] and odd.inbound[0].message.visitor.name is None
    assert abs(odd.inbound[0].sent_at - datetime.now(UTC)) < timedelta(minutes=1)
    assert [s.error for s in odd.statuses] == ["WhatsApp could not deliver the message."] * 2


def test_parse_whatsapp_only_for_the_chatbots_number():
    def change(metadata):
        value = {"messages": [{"from": "155", "id": "w", "timestamp": "1764000000", "type": "text", "text": {"body": "hi"}}],
                 "statuses": [{"id": "s", "status": "read"}]}
        return {"entry": [{"changes": [{"value": {**value, **metadata}}]}]}
    mine = parse_whatsapp_payload("b", change({"metadata": {"phone_number_id": "1555"}}), "1555")
    assert [i.wamid for i in mine.inbound] == ["w"] and [s.wamid for s in mine.statuses] == ["s"]
    assert _nothing_usable(change({"metadata": {"phone_number_id": "1666"}})) == [
        "a change for another phone_number_id than the chatbot's"]
    assert _nothing_usable(change({})) == ["a change without metadata.phone_number_id"]
    assert _nothing_usable(change({"metadata": {"phone_number_id": "1555"}}), None)  # no number configured


def test_platform_time_in_range_and_never_in_the_future():
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert platform_time("1764000000", now) == datetime.fromtimestamp(1764000000, UTC)
    assert platform_time(1764000000, now) == datetime.fromtimestamp(1764000000, UTC)
    assert platform_time(32503680000, now) == now  # year 3000: now
    for bad in ("99999999999999999999", 99999999999999999999, -99999999999999999999, "x", None, True, 1.5, [1]):
        assert platform_time(bad, now) is None


def test_whatsapp_window():
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    assert whatsapp_window(None, now).open is False
    fresh = whatsapp_window(now - timedelta(hours=23, minutes=59), now)
    assert fresh.open and fresh.ends_at == now + timedelta(minutes=1)
    assert not whatsapp_window(now - timedelta(hours=24), now).open
    assert OUTSIDE_WINDOW_ERROR == ("Outside WhatsApp's 24-hour customer service window: "
                                    "the visitor has to write first.")


def test_retry_delay_backs_off_and_honours_retry_after():
    assert [retry_delay(a, 1.0, 30.0) for a in (1, 2, 3, 4, 6)] == [1.0, 2.0, 4.0, 8.0, 30.0]
    assert retry_delay(1, 1.0, 30.0, retry_after=7) == 7
    assert retry_delay(3, 1.0, 30.0, retry_after=0.5) == 4.0
    assert retry_delay(1, 1.0, 30.0, retry_after=120) == 120  # the platform's wait wins over the cap


def test_status_events():
    a = status_event("b", "cv", "m1", "sent")
    b = status_event("b", "cv", "m1", "sent")
    assert a.event_id == b.event_id != status_event("b", "cv", "m1", "delivered").event_id
    failed = status_event("b", "cv", "m1", "failed", error="x" * 5000, permanent=True)
    assert failed.permanent and len(failed.error) == 1000
    assert a.event_id != status_event("b", "cv", "m2", "sent").event_id


def test_telegram_webhook_secret_configured_or_derived():
    from services.channels.domain import telegram_webhook_secret

    assert telegram_webhook_secret("b", "1:tok", "mine") == "mine"
    assert telegram_webhook_secret("b", None, None) is None
    derived = telegram_webhook_secret("b", "1:tok", None)
    assert derived == telegram_webhook_secret("b", "1:tok", "") and len(derived) == 64
    assert derived != telegram_webhook_secret("c", "1:tok", None) != telegram_webhook_secret("b", "2:tok", None)
    assert "1:tok" not in derived


def test_same_client_message_id_from_two_visitors_are_two_events():
    from services.channels.domain import visitor_message

    a = visitor_message("b", "web", "v_0000000000000001", None, "hi", "c1")
    b = visitor_message("b", "web", "v_0000000000000002", None, "hi", "c1")
    assert a.event_id != b.event_id
    assert a.event_id == visitor_message("b", "web", "v_0000000000000001", None, "hi again", "c1").event_id


TELEGRAM_SENT = [
    ({"photo": [{"file_id": "p"}], "caption": "Is this item broken?"}, "[Photo] Is this item broken?"),
    ({"photo": [{"file_id": "p"}]}, "[Photo]"),
    ({"document": {"file_id": "d", "file_name": "invoice.pdf"}, "caption": "   "}, "[Document: invoice.pdf]"),
    ({"animation": {"file_id": "a"}, "document": {"file_id": "a", "file_name": "cat.gif"}}, "[GIF]"),
    ({"sticker": {"file_id": "s", "emoji": "👍"}}, "[Sticker: 👍]"),
    ({"sticker": {"file_id": "s"}}, "[Sticker]"),
    ({"voice": {"file_id": "v", "duration": 3}}, "[Voice message]"),
    ({"video_note": {"file_id": "n"}}, "[Video message]"),
    ({"video": {"file_id": "v"}, "caption": "look"}, "[Video] look"),
    ({"audio": {"file_id": "a", "performer": "Nina Simone", "title": "Feeling Good"}}, "[Audio: Nina Simone Feeling Good]"),
    ({"location": {"latitude": 52.52, "longitude": 13.405}}, "[Location: 52.52, 13.405]"),
    ({"venue": {"location": {"latitude": 1, "longitude": 2}, "title": "Shop", "address": "Main St 1"},
      "location": {"latitude": 1, "longitude": 2}}, "[Location: Shop, Main St 1]"),
    ({"contact": {"first_name": "Bo", "last_name": "Berg", "phone_number": "+49 170 1"}}, "[Contact: Bo Berg +49 170 1]"),
    ({"poll": {"question": "Which size?"}}, "[Poll: Which size?]"),
    ({"dice": {"emoji": "🎲", "value": 4}}, "[Dice: 🎲 4]"),
]


@pytest.mark.parametrize(("sent", "text"), TELEGRAM_SENT)
def test_what_a_telegram_visitor_sent_reaches_the_transcript_as_words(sent, text):
    """Media without typed words used to be dropped: an agent never learnt that a photo came
    in. Each kind is now described in words, with its caption after it."""
    event = parse_telegram_update("b", {"update_id": 5, "message": {"message_id": 5, "date": 1764000000,
                                                                    "chat": {"id": 7}, **sent}})
    assert event is not None and event.text == text and event.channel_message_id == "5"


WHATSAPP_SENT = [
    ({"type": "image", "image": {"id": "m", "caption": "My receipt"}}, "[Photo] My receipt"),
    ({"type": "image", "image": {"id": "m"}}, "[Photo]"),
    ({"type": "sticker", "sticker": {"id": "s"}}, "[Sticker]"),
    ({"type": "audio", "audio": {"id": "a", "voice": True}}, "[Voice message]"),
    ({"type": "audio", "audio": {"id": "a"}}, "[Audio]"),
    ({"type": "document", "document": {"id": "d", "filename": "order.pdf", "caption": "see"}}, "[Document: order.pdf] see"),
    ({"type": "location", "location": {"latitude": 40.7, "longitude": -74.0}}, "[Location: 40.7, -74.0]"),
    ({"type": "location", "location": {"latitude": 1, "longitude": 2, "name": "Shop"}}, "[Location: Shop]"),
    ({"type": "contacts", "contacts": [{"name": {"formatted_name": "Bo Berg"}, "phones": [{"phone": "+1 555"}]}]},
     "[Contact: Bo Berg +1 555]"),
    ({"type": "button", "button": {"text": "Talk to sales", "payload": "x"}}, "Talk to sales"),
    ({"type": "interactive", "interactive": {"type": "list_reply", "list_reply": {"id": "1", "title": "Size M"}}}, "Size M"),
    # Issue 12: reactions and unsupported messages used to be dropped; the agent never knew.
    ({"type": "reaction", "reaction": {"message_id": "wamid.X", "emoji": "👍"}}, "[Reacted 👍 to a message]"),
    ({"type": "reaction", "reaction": {"message_id": "wamid.X", "emoji": ""}}, "[Removed a reaction]"),
    ({"type": "unsupported", "errors": [{"code": 131051}]}, "[A message WhatsApp cannot show]"),
    ({"type": "system", "system": {"body": "changed number"}}, None),
    ({"type": "image", "image": "garbage"}, None),
]


@pytest.mark.parametrize(("sent", "text"), WHATSAPP_SENT)
def test_what_a_whatsapp_visitor_sent_reaches_the_transcript_as_words(sent, text):
    inbound = parse_whatsapp_payload("b", {"entry": [{"changes": [{"value": {"metadata": {"phone_number_id": "1"}, "messages": [
        {"from": "155", "id": "wamid.C", "timestamp": "1764000000", **sent}]}}]}]}, "1").inbound
    assert [i.wamid for i in inbound] == ["wamid.C"]  # a message of any kind opens the window
    assert (inbound[0].message.text if inbound[0].message else None) == text


def test_parse_telegram_tolerates_odd_shapes():
    # A 500 here would make Telegram redeliver the update for ever.
    assert parse_telegram_update("b", {"update_id": 1, "message": {"text": "x", "chat": "7"}}) is None
    odd_sender = parse_telegram_update("b", {"update_id": 1, "message": {"text": "x", "chat": {"id": 7}, "from": "z"}})
    assert odd_sender is not None and odd_sender.visitor.name is None
    # Issue 12: each of these was a 500 (OverflowError, TypeError).
    late = parse_telegram_update("b", {"update_id": 2, "message": {"text": "x", "chat": {"id": 7},
                                                                   "date": 99999999999999999999}})
    assert late is not None and abs(late.occurred_at - datetime.now(UTC)) < timedelta(minutes=1)
    named = parse_telegram_update("b", {"update_id": 3, "message": {"text": "x", "chat": {"id": 7},
                                                                    "from": {"first_name": {"a": 1}, "last_name": 5}}})
    assert named is not None and named.visitor.name is None
    assert parse_telegram_update("b", {"update_id": 4, "message": {"text": "x", "chat": {"id": "7" * 300}}}) is None
    assert parse_telegram_update("b", {"update_id": [4], "message": {"text": "x", "chat": {"id": 7}}}) is None
