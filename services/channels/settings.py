"""The channels service's own environment variables (on top of the shared infrastructure ones)."""

from __future__ import annotations

from pydantic import Field, field_validator

from shared.ratelimit import networks
from shared.settings import ServiceSettings


class ChannelsSettings(ServiceSettings):
    service_name: str = "channels"
    mongodb_db: str = Field(default="handoff_channels")
    http_port: int = 8001
    # Replies to visitors (AI and agents) wait at most this long for their fetch: unnoticed in
    # a chat, and an idle channels polls the broker less.
    kafka_fetch_max_wait_ms: int = 100

    # Where Telegram and Meta reach this service (webhook URLs are built from it). Empty:
    # no setWebhook calls are made.
    channels_public_url: str = ""
    # Bot API base URL handed to python-telegram-bot's Bot(base_url=...); the token follows it.
    telegram_api_base_url: str = "https://api.telegram.org/bot"
    # Meta Graph API: POST {graph_api_base_url}/{graph_api_version}/{phone_number_id}/messages
    graph_api_base_url: str = "https://graph.facebook.com"
    graph_api_version: str = "v21.0"
    http_timeout_s: float = 15.0

    # Outbound delivery: attempts per message on transient errors (network, 5xx, 429),
    # exponential backoff from delivery_backoff_s, capped; a platform's retry_after wins.
    delivery_attempts: int = 5
    delivery_backoff_s: float = 1.0
    delivery_max_backoff_s: float = 30.0
    # The consumer group sharing outbound.messages between channels instances.
    outbound_group_id: str = "channels-outbound"
    # Outbound messages delivered at once per process (each conversation strictly in order),
    # so a platform's retry_after or a slow API for one visitor does not hold up the others.
    outbound_concurrency: int = 16

    # Web widget: origins allowed to call /web/* (comma-separated, "*" = any site may embed it).
    widget_allowed_origins: str = "*"
    # Messages kept per widget visitor for the history replay on (re)connect.
    widget_history_limit: int = 200
    widget_history_ttl_s: int = 30 * 24 * 3600

    # Key signing the widget's visitor tokens (HMAC-SHA256); the same on every instance, long
    # and random. Empty: a random key per process (tokens die with it; a warning is logged).
    widget_token_secret: str = Field(default="", repr=False)
    # A visitor token's lifetime: how long a copied token works unrenewed. The widget renews
    # it from half-time on.
    widget_token_ttl_s: int = 24 * 3600
    # An expired token can still be renewed (once, if it is the visitor's newest) this long
    # after it expired, so a returning visitor keeps the conversation (as long as the history).
    widget_token_renew_grace_s: int = 30 * 24 * 3600
    # A widget socket must send its token (first frame) within this long, or it is closed.
    widget_socket_auth_timeout_s: float = 10.0
    # Proxies (comma-separated addresses or networks) whose X-Forwarded-For is believed for
    # the per-IP widget limits. Empty: the direct peer is the client.
    trusted_proxies: str = ""

    # Start-up waits this long at most to read the chatbot settings table to its end.
    settings_preload_timeout_s: float = 10.0

    # A visitor's message is acknowledged (202 to the widget, 200 to a webhook) only once the
    # broker acknowledged its write; this long at most, then 503 with Retry-After so the
    # sender retries (the write may still land: the retry is then taken as its duplicate).
    publish_timeout_s: float = 5.0

    # Edge dedupe keys (Telegram update ids, wamids, widget client message ids) live this long.
    inbound_dedupe_ttl_s: int = 7 * 24 * 3600

    # Request bodies are refused with 413 beyond these sizes (Content-Length checked first,
    # chunked bodies counted while read): the widget's API sends small JSON; Telegram updates
    # and Meta's webhook batches stay well under 1 MB.
    widget_max_body_bytes: int = 64 * 1024
    webhook_max_body_bytes: int = 1024 * 1024
    # A frame the widget sends over its socket (pings) beyond this closes it with 1009.
    widget_max_frame_bytes: int = 4096
    # JSON nested deeper than this is refused (widget: 400; signed webhook: 200 ignored).
    max_json_depth: int = 32

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, v: str) -> str:
        networks(v)
        return v
