"""Intake's environment: the shared infrastructure variables plus the AI model's."""

from __future__ import annotations

from shared.llm import LLMSettings


class IntakeSettings(LLMSettings):
    service_name: str = "intake"
    http_port: int = 8003
    # Off the path to an agent's screen: an AI turn may wait this long for its fetch (the
    # model takes far longer), and an idle intake polls the broker less.
    kafka_fetch_max_wait_ms: int = 100

    # The whole answer, retries included: the visitor gets an apology after this long, and
    # the conversation (its next message) is not held up longer.
    openai_total_timeout_s: float = 30.0
    # The longest answer the model may write, in tokens.
    openai_max_tokens: int = 500
    # AI turns handled at once per process (different conversations in parallel, each
    # conversation strictly in order), so one slow model answer does not hold up the other
    # conversations on its partition.
    turn_concurrency: int = 16
