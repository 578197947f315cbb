"""Intake's environment: the shared infrastructure variables plus the AI model's."""

from __future__ import annotations

from pydantic import Field

from shared.llm import LLMSettings


class IntakeSettings(LLMSettings):
    service_name: str = "intake"
    mongodb_db: str = Field(default="handoff_intake")
    http_port: int = 8003

    # The whole answer, retries included: the visitor gets an apology after this long, and
    # the conversation (its next message) is not held up longer.
    openai_total_timeout_s: float = 30.0
    openai_max_tokens: int = 500
    # How many recent messages of a conversation the model sees.
    context_messages: int = 20
    # How long intake remembers a conversation's AI context and pending contact question
    # (its status is kept for good).
    memory_ttl_s: int = 60 * 60 * 24 * 30
    # Visitor messages handled at once per process (different conversations in parallel,
    # each conversation strictly in order), so one slow model answer does not hold up the
    # other conversations on its partition.
    visitor_concurrency: int = 16
    # Startup waits this long at most to load the chatbot settings table before consuming.
    settings_preload_timeout_s: float = 10.0
