"""The gateway's own environment variables (on top of the shared infrastructure ones)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator

from shared import reply_window
from shared.ratelimit import Network, networks, rule
from shared.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    service_name: str = "gateway"
    mongodb_db: str = Field(default="handoff_gateway")

    # The queue's internal query API (never exposed publicly). Several replicas' base URLs,
    # comma-separated: a call goes to the one that answered last and fails over to the next
    # when one refuses the connection, times out or answers 5xx (reads only: safe to repeat).
    queue_url: str = "http://127.0.0.1:8002"
    # One call to one queue replica takes at most this long; then the next replica is asked.
    queue_timeout_s: float = 10.0
    # The queue's service token (the queue's QUEUE_API_TOKEN), sent on every internal call;
    # the gateway refuses to start without it.
    queue_api_token: SecretStr | None = None
    # How long an action waits for the queue's CommandResult before answering 202.
    command_timeout_s: float = 5.0

    # Extra origins allowed to open /ws (comma-separated); the gateway's own origin always is.
    allowed_origins: str = ""
    # The session cookie is Secure (never sent in clear) unless this is set false: only for
    # a stack served over plain http (the local runner, http://127.0.0.1), never in production.
    cookie_secure: bool = True
    session_ttl_s: int = 7 * 24 * 3600

    # Sign-in attempts from one client address, across all e-mails (`limits` notation), so
    # spraying many e-mails from one place is slowed too; over it -> 429 with Retry-After.
    login_attempts_per_ip: str = "30/minute"
    # Per e-mail: this many failed sign-ins cost nothing; each further one doubles the wait
    # before the next attempt, from LOGIN_BACKOFF_BASE_S up to LOGIN_BACKOFF_MAX_S (429 with
    # Retry-After meanwhile). A success clears it; no lock-out longer than the maximum.
    login_free_failures: int = Field(default=5, ge=0)
    login_backoff_base_s: int = Field(default=2, gt=0)
    login_backoff_max_s: int = Field(default=300, gt=0)
    # Failures older than this no longer count toward an e-mail's wait (a sliding window).
    login_failures_window_s: int = Field(default=3600, gt=0)
    # Password checks (argon2: ~64 MiB each) run at most this many at once per process; an
    # attempt that waits longer than LOGIN_CHECK_WAIT_S for its turn gets 503 with Retry-After.
    login_checks_at_once: int = Field(default=2, gt=0)
    login_check_wait_s: float = Field(default=5.0, gt=0)
    # Proxies (comma-separated addresses or networks) whose X-Forwarded-For is believed for
    # the per-address sign-in limit. Empty: the direct peer is the client.
    trusted_proxies: str = ""
    # An agent's "Refresh" of a summary, per conversation (`limits` notation): each one is a
    # model call, so agents cannot hammer the model; over it -> 429 with Retry-After.
    summary_refreshes_per_conversation: str = "3/minute"

    # A WhatsApp handoff whose 24-hour reply window closes within this many minutes is
    # flagged on its row with a countdown and listed right after the oldest (0: never).
    reply_window_warning_min: int = Field(default=int(reply_window.WARNING.total_seconds() // 60), ge=0)

    # Start-up waits this long at most to read the chatbot settings table to its end.
    settings_preload_timeout_s: float = 10.0

    # Frames other than updates (command results, settings, answers) waiting per websocket;
    # a client with this many waiting is stuck: dropped (4408; it resyncs from a snapshot
    # when it reconnects) so it never slows the others.
    ws_send_queue_size: int = Field(default=256, gt=0)
    # A chatbot's updates go to its dashboards at most every subscribers / WS_FRAME_BUDGET
    # seconds, never held longer than WS_TICK_S: its fan-out costs at most this many frames a
    # second, and the first update after a quiet tick goes at once. What a tick holds goes in
    # one frame (the latest state of each row and stat, every transcript message).
    ws_tick_s: float = Field(default=0.05, ge=0)
    ws_frame_budget: float = Field(default=2000.0, gt=0)
    # A dashboard further behind than this many updates of a chatbot is stuck: dropped
    # (4408). One behind by fewer gets everything it missed coalesced into one frame.
    ws_catch_up_updates: int = Field(default=1000, gt=0)
    # Every this many seconds each open websocket is checked against its session as stored:
    # a session ended on any gateway process (sign-out, expiry) closes it, and memberships
    # taken away end those subscriptions (granted ones can be subscribed to).
    ws_revalidate_s: float = Field(default=30.0, gt=0)

    # An agent's presence in a conversation (viewing, typing) lasts this long unless the
    # dashboard repeats it (it does every 5 s while the pane is open, static/js/presence.js):
    # a gateway process that dies takes its agents' presence with it within this time (a
    # closed socket at once). At least two heartbeats, so one late frame does not blink.
    presence_ttl_s: float = Field(default=15.0, ge=10)
    # Presence frames one agent may send (all its sockets; `limits` notation): a pane's
    # heartbeat and typing take a few a minute; over it -> an error frame, the frame is ignored.
    presence_frames_per_agent: str = "120/minute"

    # Request bodies over this many bytes -> 413 (the API's bodies are a few KB at most).
    max_body_bytes: int = Field(default=64 * 1024, gt=0)
    # JSON bodies and websocket frames nested deeper than this -> 400 / an error frame.
    max_json_depth: int = Field(default=32, gt=0)
    # Websocket messages from the dashboard over this many bytes close the socket (1009);
    # `python -m services.gateway` also has the server refuse to read more than this.
    ws_max_message_bytes: int = Field(default=64 * 1024, gt=0)

    @field_validator("queue_url")
    @classmethod
    def _queue_urls(cls, v: str) -> str:
        queue_base_urls(v)
        return v

    @field_validator("login_attempts_per_ip", "summary_refreshes_per_conversation", "presence_frames_per_agent")
    @classmethod
    def _rule(cls, v: str) -> str:
        rule(v)
        return v

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, v: str) -> str:
        networks(v)
        return v

    @property
    def trusted_proxy_networks(self) -> list[Network]:
        return networks(self.trusted_proxies)

    @property
    def allowed_origin_list(self) -> list[str]:
        return [o.strip().rstrip("/") for o in self.allowed_origins.split(",") if o.strip()]


def queue_base_urls(text: str) -> list[str]:
    """QUEUE_URL's base URLs, in order; a clear error for an entry that is not one."""
    urls = [u.strip().rstrip("/") for u in text.split(",")]
    bad = [u for u in urls if not u.startswith(("http://", "https://"))]  # "http://" alone ends as "http:"
    if bad:
        raise ValueError(f"QUEUE_URL must be one or more comma-separated http(s) base URLs, e.g. "
                         f"http://queue-1:8002,http://queue-2:8002; not {', '.join(map(repr, bad))}")
    return urls
