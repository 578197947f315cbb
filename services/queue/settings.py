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
    # The internal query API's page size ceiling.
    queue_max_page: int = 200
    # The service token every /internal request must carry (`Authorization: Bearer …`; the
    # gateway sends its QUEUE_API_TOKEN). Required to serve: the local runner generates one,
    # compose and Kubernetes must set it. At least 16 characters.
    queue_api_token: SecretStr | None = None
