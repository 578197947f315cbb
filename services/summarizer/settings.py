"""Summarizer's environment: the shared infrastructure variables plus the model's."""

from __future__ import annotations

from pydantic import Field

from shared.llm import LLMSettings


class SummarizerSettings(LLMSettings):
    service_name: str = "summarizer"
    mongodb_db: str = Field(default="handoff_summarizer")
    http_port: int = 8004
    # A background consumer: waiting a little longer per fetch costs nothing visible.
    kafka_fetch_max_wait_ms: int = 500

    # Without a model every summary is extractive. A summary may take its time: a longer
    # timeout and more retries than a visitor-facing answer.
    openai_timeout_s: float = 20.0
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

    # Keeping a summary current while the conversation waits for the team: it is written again
    # (incrementally: the previous summary plus only the new messages) after this many new
    # visitor messages, or once the oldest message it does not cover is this many minutes old
    # (checked every SUMMARY_SWEEP_INTERVAL_S). A failed refresh is not retried automatically
    # for as long either, so a model that is down is not called on every message.
    summary_refresh_after_messages: int = Field(default=5, ge=1)
    summary_refresh_after_minutes: float = Field(default=10.0, gt=0)
    # The new messages a summary keeps for its next refresh (the most recent ones); a refresh
    # reads these, never the whole transcript again.
    summary_refresh_max_lines: int = Field(default=50, ge=1)
