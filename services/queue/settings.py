"""The queue service's settings (environment variables only)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings


class QueueSettings(ServiceSettings):
    service_name: str = "queue"
    mongodb_db: str = Field(default="handoff_queue")
    http_port: int = 8002
    # The consumer groups every queue instance joins (partitions are shared among them):
    # this name for conversation.events, and "<name>-commands", "-summaries", "-delivery".
    queue_consumer_group: str = "queue"
    # The internal query API's page size ceiling.
    queue_max_page: int = 200
