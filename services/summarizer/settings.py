"""Summarizer's environment: the shared infrastructure variables plus the model's."""

from __future__ import annotations

from pydantic import Field

from shared.settings import ServiceSettings


class SummarizerSettings(ServiceSettings):
    service_name: str = "summarizer"
    mongodb_db: str = Field(default="handoff_summarizer")
    http_port: int = 8004
    # A background consumer: waiting a little longer per fetch costs nothing visible.
    kafka_fetch_max_wait_ms: int = 100

    # The model (any OpenAI-compatible server). With neither a key nor a base URL every
    # summary is extractive.
    openai_api_key: str | None = Field(default=None, repr=False)
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    openai_timeout_s: float = 20.0
    # The openai client's retries, with its backoff (honours Retry-After on 429/5xx).
    openai_max_retries: int = 3
    summary_max_tokens: int = 200
    # How many summaries are written at once; more wait their turn (persisted as pending).
    summary_concurrency: int = 4
    # How much of the transcript the model sees (the most recent part).
    summary_transcript_chars: int = 12000
    # How often pending jobs that are not running (e.g. a publish failed) are picked up again.
    summary_sweep_interval_s: float = 30.0
    # A job is held by one worker this long at most (longer than a model call with all its
    # retries); a worker that died without finishing lets it go after this.
    summary_lease_s: float = 300.0

    @property
    def llm_configured(self) -> bool:
        return bool(self.openai_api_key or self.openai_base_url)
