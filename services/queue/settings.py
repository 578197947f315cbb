"""The queue service's settings (environment variables only)."""

from __future__ import annotations

from pydantic import Field, SecretStr

from shared.settings import ServiceSettings


class QueueSettings(ServiceSettings):
    service_name: str = "queue"
    mongodb_db: str = Field(default="handoff_queue")
    http_port: int = 8002
    # The consumer group every queue instance joins (the partitions of everything the queue
    # reads are shared among them).
    queue_consumer_group: str = "queue"
    # Events handled at once per process (different conversations in parallel, each
    # conversation strictly in order).
    visitor_concurrency: int = 16
    # How many recent messages of a conversation an AI turn carries for the model.
    ai_context_messages: int = 20
    # How often the Redis index is compared with Mongo (counts per chatbot) and rebuilt where
    # they disagree; a missing key or row is caught at once on every read and update.
    index_check_interval_s: float = 300.0
    # The visitor's place in line: the expected wait is the position times the median time one
    # place took, over the first replies of the last LINE_HISTORY_HOURS; with fewer than
    # LINE_MIN_SAMPLES of them the visitor is told the position only (never a made-up wait).
    line_history_hours: float = Field(default=4.0, gt=0)
    line_min_samples: int = Field(default=5, ge=1)
    # A chatbot's line goes to the widgets at most once per this many seconds, however many
    # conversations moved (the first move at once), and lines on show again this often so the
    # estimate and business hours follow the clock.
    line_interval_s: float = Field(default=1.0, ge=0)
    line_refresh_s: float = Field(default=60.0, gt=0)
    # The line carries at most this many web visitors (those further back see no line).
    line_max_places: int = Field(default=1000, ge=1)
    # A handoff is flagged as a loop ("loop ×3" on its row) when it is the LOOP_HANDOFFS-th of
    # its conversation within LOOP_WINDOW_H hours, or comes within LOOP_RETURN_MIN minutes of
    # a Return to AI: the bot keeps handing back what it cannot do, so its conditions need work.
    loop_handoffs: int = Field(default=3, ge=2)
    loop_window_h: float = Field(default=24.0, gt=0)
    loop_return_min: float = Field(default=10.0, ge=0)
    # The internal query API's page size ceiling.
    queue_max_page: int = 200
    # The service token every /internal request must carry (`Authorization: Bearer …`; the
    # gateway sends its QUEUE_API_TOKEN). Required to serve: the local runner generates one,
    # compose and Kubernetes must set it. At least 16 characters.
    queue_api_token: SecretStr | None = None
