"""The gateway's own environment variables (on top of the shared infrastructure ones)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    service_name: str = "gateway"
    mongodb_db: str = Field(default="handoff_gateway")

    # The queue's internal query API (never exposed publicly).
    queue_url: str = "http://127.0.0.1:8002"
    queue_timeout_s: float = 10.0
    # How long an action waits for the queue's CommandResult before answering 202.
    command_timeout_s: float = 5.0

    # Extra origins allowed to open /ws (comma-separated); the gateway's own origin always is.
    allowed_origins: str = ""
    # The session cookie is Secure (never sent in clear) unless this is set false: only for
    # a stack served over plain http (the local runner, http://127.0.0.1), never in production.
    cookie_secure: bool = True
    session_ttl_s: int = 7 * 24 * 3600

    # Login throttling per e-mail: this many failures within the window -> 429.
    login_max_failures: int = 10
    login_failure_window_s: int = 15 * 60

    # Start-up waits this long at most to read the chatbot settings table to its end.
    settings_preload_timeout_s: float = 10.0

    # Frames buffered per websocket; a client that falls this far behind is dropped
    # (it resyncs from a snapshot when it reconnects) so it never slows the others.
    ws_send_queue_size: int = 256
    # Every this many seconds each open websocket is checked against its session as stored:
    # a session ended on any gateway process (sign-out, expiry) closes it, and memberships
    # taken away end those subscriptions (granted ones can be subscribed to).
    ws_revalidate_s: float = Field(default=30.0, gt=0)

    # Request bodies over this many bytes -> 413 (the API's bodies are a few KB at most).
    max_body_bytes: int = Field(default=64 * 1024, gt=0)
    # JSON bodies and websocket frames nested deeper than this -> 400 / an error frame.
    max_json_depth: int = Field(default=32, gt=0)
    # Websocket messages from the dashboard over this many bytes close the socket (1009);
    # `python -m services.gateway` also has the server refuse to read more than this.
    ws_max_message_bytes: int = Field(default=64 * 1024, gt=0)

    @property
    def allowed_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.allowed_origins.split(",") if o.strip()]
