"""The gateway's rules, without I/O."""

from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from services.gateway.domain import (
    ChatbotDirectory,
    LoginBackoff,
    PendingCommands,
    PingFrame,
    ReplyBody,
    SubscribeFrame,
    UnsubscribeFrame,
    command_response,
    csrf_matches,
    display_name,
    email_key,
    hash_password,
    in_words,
    origin_allowed,
    parse_client_frame,
    token_digest,
    validation_message,
    verify_password,
)
from shared.chatbots import ChannelCredentials, ChatbotSettings, HumanHandoffSettings
from shared.events import ChatbotSettingsChanged, CommandResult


def test_email_key_and_display_name():
    assert email_key("  Dana@Example.COM ") == "dana@example.com"
    assert display_name("Dana", "dana@example.com") == "Dana"
    assert display_name("  ", "dana@example.com") == "dana@example.com"
    assert display_name(None, "dana@example.com") == "dana@example.com"


def test_passwords_are_hashed_and_verified():
    h = hash_password("s3cret-pass")
    assert h.startswith("$argon2") and "s3cret-pass" not in h
    assert verify_password(h, "s3cret-pass")
    assert not verify_password(h, "wrong")
    assert not verify_password(None, "s3cret-pass")  # unknown agent
    assert not verify_password("not-a-hash", "s3cret-pass")


def test_login_backoff_doubles_after_the_free_failures_up_to_the_maximum():
    backoff = LoginBackoff(free_failures=3, base_s=2, max_s=20)
    assert [backoff.wait_after(n) for n in range(10)] == [0, 0, 0, 0, 2, 4, 8, 16, 20, 20]
    assert backoff.steps() == [2, 4, 8, 16, 20]
    assert backoff.failures_that_matter == 8 and backoff.wait_after(10**6) == 20
    assert LoginBackoff(free_failures=0, base_s=60, max_s=30).steps() == [30]
    assert LoginBackoff(free_failures=0, base_s=60, max_s=30).wait_after(1) == 30


def test_waits_in_words():
    assert [in_words(s) for s in (0, 1, 2, 119, 120, 121, 300)] == [
        "1 second", "1 second", "2 seconds", "119 seconds", "2 minutes", "3 minutes", "5 minutes"]


def test_token_digest_and_csrf():
    assert token_digest("abc") != "abc" and len(token_digest("abc")) == 64
    assert csrf_matches("t0k", "t0k")
    assert not csrf_matches("t0k", None) and not csrf_matches("t0k", "") and not csrf_matches("t0k", "t0K")


@pytest.mark.parametrize("origin, host, allowed, ok", [
    ("http://127.0.0.1:8000", "127.0.0.1:8000", [], True),           # same origin
    ("http://127.0.0.1:8000", "127.0.0.1:9000", [], False),          # another port
    ("https://dash.example.com", "gw:8000", ["https://dash.example.com"], True),
    ("https://dash.example.com/", "gw:8000", ["https://dash.example.com"], True),
    ("https://evil.example.com", "gw:8000", ["https://dash.example.com"], False),
    ("null", "gw:8000", [], False),
    (None, "gw:8000", [], True),                                      # not a browser
])
def test_origin_allowed(origin, host, allowed, ok):
    assert origin_allowed(origin, host, allowed) is ok


def test_client_frames():
    assert parse_client_frame('{"type":"subscribe","chatbot_id":"demo"}') == SubscribeFrame(type="subscribe",
                                                                                             chatbot_id="demo")
    assert isinstance(parse_client_frame('{"type":"unsubscribe","chatbot_id":"demo"}'), UnsubscribeFrame)
    assert isinstance(parse_client_frame('{"type":"ping","extra":1}'), PingFrame)
    assert parse_client_frame("nope") == "Frames must be JSON objects."
    assert parse_client_frame("[]") == "Frames must be JSON objects."
    assert parse_client_frame(None) == "Frames must be JSON text."
    assert parse_client_frame("{}") == "Frame has no type."
    assert parse_client_frame('{"type":"dance"}') == "Unknown frame type: 'dance'."
    assert parse_client_frame('{"type":"subscribe"}').startswith("Invalid subscribe frame")
    assert parse_client_frame("x" * 5000) == "Frame too large."


def test_reply_body_refuses_blank_text():
    with pytest.raises(ValidationError) as exc:
        ReplyBody(command_id="cmd-12345678", text=" \n\t")
    assert validation_message(exc.value) == "Reply text cannot be empty."
    assert ReplyBody(command_id="cmd-12345678", text=" hi ").text == " hi "


def test_validation_message_gives_the_settings_sentence():
    with pytest.raises(ValidationError) as exc:
        HumanHandoffSettings(start_time="18:00", end_time="09:00")
    assert validation_message(exc.value) == "End Time must be after Start Time."
    with pytest.raises(ValidationError) as exc:
        HumanHandoffSettings(timezone="Mars/Base")
    assert validation_message(exc.value) == "Unknown timezone: 'Mars/Base'."
    with pytest.raises(ValidationError) as exc:
        HumanHandoffSettings(enabled="maybe")
    assert validation_message(exc.value).startswith("enabled: ")


def test_command_response_maps_result_status():
    ok = CommandResult(chatbot_id="b", command_id="c1", ok=True)
    assert command_response(ok) == (200, ok.model_dump(mode="json"))
    refused = CommandResult(chatbot_id="b", command_id="c1", ok=False, status_code=409,
                            error="Can only reply to handed-off conversations.")
    assert command_response(refused) == (409, {"detail": "Can only reply to handed-off conversations."})
    assert command_response(CommandResult(chatbot_id="b", command_id="c", ok=False, status_code=404,
                                          error="Not found."))[0] == 404
    # A refusal that forgot its status code is still an error, never a 200.
    assert command_response(CommandResult(chatbot_id="b", command_id="c", ok=False, error="no"))[0] == 409


async def test_pending_commands_resolve_every_waiter_once():
    pending = PendingCommands()
    a, b = pending.expect("cmd-1"), pending.expect("cmd-1")
    other = pending.expect("cmd-2")
    result = CommandResult(chatbot_id="b", command_id="cmd-1", ok=True)
    assert pending.resolve(result) == 2
    assert (await a, await b) == (result, result)
    assert not other.done()
    assert pending.resolve(result) == 0  # a late duplicate finds nobody
    pending.forget("cmd-2", other)
    assert len(pending) == 0
    await asyncio.sleep(0)


def test_directory_follows_the_settings_table():
    directory = ChatbotDirectory()
    assert directory.describe("demo") == {"chatbot_id": "demo", "name": "demo", "handoff_enabled": False,
                                          "settings_version": None}
    s = ChatbotSettings(chatbot_id="demo", name="Demo", human_handoff=HumanHandoffSettings(enabled=True),
                        channels=ChannelCredentials(telegram_bot_token="123:TOKEN", whatsapp_app_secret="shh"))
    directory.apply(ChatbotSettingsChanged(chatbot_id="demo", settings=s))
    assert directory.describe("demo") == {"chatbot_id": "demo", "name": "Demo", "handoff_enabled": True,
                                          "settings_version": s.version}
    assert directory.apply(ChatbotSettingsChanged(chatbot_id="demo", settings=s, deleted=True)) is None
    assert directory.describe("demo")["name"] == "demo"
