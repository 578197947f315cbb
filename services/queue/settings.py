"""The queue service's settings (environment variables only)."""

from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings


class QueueSettings(ServiceSettings):
    service_name: str = "queue"
    mongodb_db: str = Field(default="handoff_queue")
    http_port: int = 8002
    # The consumer groups every queue instance joins (partitions are shared among them):
    # this name for conversation.events (AI outcomes), and "<name>-visitors", "-commands",
    # "-summaries", "-delivery".
    queue_consumer_group: str = "queue"
    # Visitor messages and AI outcomes handled at once per process (different conversations
    # in parallel, each conversation strictly in order).
    visitor_concurrency: int = 16
    # How many recent messages of a conversation an AI turn carries for the model.
    ai_context_messages: int = 20
    # The internal query API's page size ceiling.
    queue_max_page: int = 200
