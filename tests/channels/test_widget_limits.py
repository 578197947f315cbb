"""Rate limits of the public widget API (the chatbot's `widget` settings, counted in the real
Redis): messages per visitor and per IP address, new sessions per IP address; 429 with
Retry-After and a readable message. A second IP address is a client bound to 127.0.0.2."""

from __future__ import annotations

import ipaddress
import uuid

import httpx
import pytest
from pydantic import ValidationError

from services.channels.app import create_app
from services.channels.settings import ChannelsSettings
from shared.chatbots import ChatbotSettings, WidgetLimits
from shared.ratelimit import client_address, networks
from tests.harness import run_in_process, settings_from_env

LIMITS = WidgetLimits(messages_per_visitor="3/minute", messages_per_ip="5/minute", sessions_per_ip="2/minute")


def _client(stack, address: str = "127.0.0.1") -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=stack.url, transport=httpx.AsyncHTTPTransport(local_address=address))


async def _send(client: httpx.AsyncClient, chatbot_id: str, visitor, n: int) -> httpx.Response:
    return await client.post(f"/web/{chatbot_id}/messages", headers=visitor.headers,
                             json={"client_message_id": f"m{n}", "text": f"message {n}"})


def _refused_429(r: httpx.Response, words: str) -> None:
    assert r.status_code == 429, r.text
    assert r.headers["Retry-After"].isdigit() and 1 <= int(r.headers["Retry-After"]) <= 60
    assert words in r.json()["detail"]


async def test_messages_are_limited_per_visitor_then_per_ip(stack):
    bot = await stack.add_chatbot(widget=LIMITS)
    ann, bo, cy = (stack.visitor(bot.chatbot_id) for _ in range(3))
    async with _client(stack) as here, _client(stack, "127.0.0.2") as elsewhere:
        ann_sent = [(await _send(here, bot.chatbot_id, ann, i)).status_code for i in range(3)]
        ann_over = await _send(here, bot.chatbot_id, ann, 3)
        ann_contact = await here.post(f"/web/{bot.chatbot_id}/contact", headers=ann.headers, json={"name": "Ann"})
        # Another visitor on the same address is not held up by Ann's limit...
        bo_sent = [(await _send(here, bot.chatbot_id, bo, i)).status_code for i in range(2)]
        # ...until the address's limit (5) is used up; a forged X-Forwarded-For does not help
        # (no trusted proxy is configured).
        bo_over = await here.post(f"/web/{bot.chatbot_id}/messages", headers={**bo.headers, "X-Forwarded-For": "9.9.9.9"},
                                  json={"client_message_id": "m9", "text": "again"})
        # Another address is another count; Ann's own limit follows her there.
        cy_elsewhere = await _send(elsewhere, bot.chatbot_id, cy, 0)
        ann_elsewhere = await _send(elsewhere, bot.chatbot_id, ann, 4)
    assert ann_sent == [202, 202, 202] and bo_sent == [202, 202]
    _refused_429(ann_over, "too quickly")
    _refused_429(ann_contact, "too quickly")  # contact details count as messages
    _refused_429(bo_over, "too quickly")
    assert cy_elsewhere.status_code == 202
    _refused_429(ann_elsewhere, "too quickly")
    # Nothing refused reached the bus.
    got = await stack.visitor_messages.wait_for(lambda r: r["chatbot_id"] == bot.chatbot_id, count=6)
    assert sorted(r["text"] for r in got) == sorted(
        ["message 0", "message 1", "message 2", "message 0", "message 1", "message 0"])


async def test_new_sessions_are_limited_per_ip_and_per_chatbot(stack):
    bot = await stack.add_chatbot(widget=LIMITS)
    roomy = await stack.add_chatbot()  # default limits
    async with _client(stack) as here, _client(stack, "127.0.0.2") as elsewhere:
        issued = [(await here.post(f"/web/{bot.chatbot_id}/session")).status_code for _ in range(2)]
        over = await here.post(f"/web/{bot.chatbot_id}/session")
        other_address = await elsewhere.post(f"/web/{bot.chatbot_id}/session")
        other_chatbot = await here.post(f"/web/{roomy.chatbot_id}/session")
    assert issued == [201, 201]
    _refused_429(over, "Too many new chats")
    assert other_address.status_code == 201 and other_chatbot.status_code == 201


async def test_behind_a_trusted_proxy_the_forwarded_address_is_counted(stack):
    bot = await stack.add_chatbot(widget=LIMITS)
    env = stack.iso.env("channels", OUTBOUND_GROUP_ID=f"proxied-{uuid.uuid4().hex[:6]}", TRUSTED_PROXIES="127.0.0.1")
    async with run_in_process("channels-proxied", create_app, settings_from_env(ChannelsSettings, env)) as proxied:
        async with httpx.AsyncClient(base_url=proxied.url) as client:
            async def session(forwarded_for: str) -> httpx.Response:
                return await client.post(f"/web/{bot.chatbot_id}/session", headers={"X-Forwarded-For": forwarded_for})

            first = [(await session("198.51.100.1")).status_code for _ in range(2)]
            over = await session("6.6.6.6, 198.51.100.1")  # what the client prepends is not believed
            other = await session("198.51.100.2")
    assert first == [201, 201]
    _refused_429(over, "Too many new chats")
    assert other.status_code == 201


def test_the_client_address_believes_forwarded_for_only_from_a_trusted_proxy():
    proxies = networks("10.0.0.0/8, 127.0.0.1")
    assert client_address("203.0.113.9", "9.9.9.9", proxies) == "203.0.113.9"  # not a proxy: its own address
    assert client_address("127.0.0.1", "9.9.9.9", proxies) == "9.9.9.9"
    # The client may prepend anything; the hop the proxies saw is the rightmost untrusted one.
    assert client_address("127.0.0.1", "1.1.1.1, 9.9.9.9, 10.2.3.4", proxies) == "9.9.9.9"
    assert client_address("127.0.0.1", None, proxies) == "127.0.0.1"
    assert client_address("127.0.0.1", "9.9.9.9", []) == "127.0.0.1"  # no proxies trusted
    # One IPv6 subscriber gets a /64: counted as one.
    assert client_address("2001:db8::1", None) == client_address("2001:db8::ffff", None) == "2001:db8::/64"
    assert client_address("::ffff:198.51.100.7", None) == "198.51.100.7"
    with pytest.raises(ValueError, match="not-a-network"):
        networks("10.0.0.0/8, not-a-network")
    assert ipaddress.ip_network("10.0.0.0/8") in proxies


def test_widget_limits_are_validated_with_readable_messages():
    assert ChatbotSettings(chatbot_id="b", name="B").widget == WidgetLimits()  # sane defaults, nothing to set
    with pytest.raises(ValidationError, match="Not a rate: 'lots'"):
        WidgetLimits(messages_per_ip="lots")
    with pytest.raises(ValidationError, match="at least one request"):
        WidgetLimits(sessions_per_ip="0/hour")
    with pytest.raises(ValidationError):
        WidgetLimits(messages_per_minute="5/minute")  # extra="forbid": a typo is not silently ignored
