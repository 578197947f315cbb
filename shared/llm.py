"""The AI model every service that needs one talks to: any OpenAI-compatible server.

With neither a key nor a base URL set the model is "not configured" and the service runs
its offline behaviour (intake: the offline responder; summarizer: extractive summaries).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import openai
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion
from prometheus_client import Counter, Histogram
from pydantic import Field

from shared.ids import redact
from shared.settings import ServiceSettings


# Every model call of intake (AI turns) and the summarizer (summaries) goes through
# `ChatModel.complete`: the scraper's job label tells the two apart.
MODEL_CALL_SECONDS = Histogram(
    "handoff_model_call_duration_seconds",
    "Model calls (one chat completion, the client's retries included), by model and outcome (ok, error).",
    ["model", "outcome"],
    buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 45.0, 60.0),
)
MODEL_ERRORS = Counter(
    "handoff_model_call_errors_total",
    "Model calls that failed, by model and kind: timeout (the total timeout), or the OpenAI "
    "error's class (APIConnectionError, RateLimitError, InternalServerError, ...).",
    ["model", "kind"],
)


class LLMSettings(ServiceSettings):
    # The AI model (any OpenAI-compatible server). With neither a key nor a base URL the
    # service runs without one (its offline behaviour).
    openai_api_key: str | None = Field(default=None, repr=False)
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    # Per HTTP attempt; the client retries 429 (honouring Retry-After), 5xx and timeouts
    # with its own backoff, this many times.
    openai_timeout_s: float = 15.0
    openai_max_retries: int = 2

    @property
    def llm_configured(self) -> bool:
        return bool(self.openai_api_key or self.openai_base_url)


def log_ai_mode(log: logging.Logger, settings: LLMSettings, offline: str) -> None:
    """The start-up line saying which AI mode runs: the model and its server, or (a warning)
    offline, followed by what the service does without a model (`offline`)."""
    if settings.llm_configured:
        log.info("AI mode: llm (model %s at %s)", settings.openai_model, settings.openai_base_url or "api.openai.com")
    else:
        log.warning("AI mode: offline (no OPENAI_API_KEY / OPENAI_BASE_URL): %s", offline)


class ModelCallFailed(Exception):
    """The model call failed: an OpenAI error after the client's retries, or no answer within
    the total timeout (`timed_out`, error "timeout"). `error` never carries the API key (some
    OpenAI-compatible servers echo the key they refused), so it may be logged and stored."""

    def __init__(self, error: str, *, timed_out: bool = False) -> None:
        super().__init__(error)
        self.error = error
        self.timed_out = timed_out


class ChatModel:
    """One chat completion per call with the settings' model, per-attempt timeout and
    retries (the openai client's backoff: 429 honouring Retry-After, 5xx, timeouts)."""

    def __init__(self, settings: LLMSettings) -> None:
        self.model = settings.openai_model
        self.client = AsyncOpenAI(
            # Local OpenAI-compatible servers often need no key; the client insists on one.
            api_key=settings.openai_api_key or "not-needed",
            base_url=settings.openai_base_url or None,
            timeout=settings.openai_timeout_s,
            max_retries=settings.openai_max_retries,
        )
        self._secrets = [settings.openai_api_key]

    async def close(self) -> None:
        await self.client.close()

    async def complete(
        self, messages: list[dict[str, str]], *, max_tokens: int | None,
        tools: list[dict[str, Any]] | None = None, temperature: float | None = None,
        total_timeout_s: float | None = None,
    ) -> ChatCompletion:
        """The completion; `tools` are offered with tool_choice "auto". `total_timeout_s`
        bounds the whole call, retries included (None: only the per-attempt timeout).
        Raises ModelCallFailed."""
        extra: dict[str, Any] = {"tools": tools, "tool_choice": "auto"} if tools else {}
        if temperature is not None:
            extra["temperature"] = temperature
        started = time.perf_counter()
        try:
            completion = await asyncio.wait_for(self.client.chat.completions.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=max_tokens,
                **extra,
            ), total_timeout_s)
        except TimeoutError:
            self._failed(started, "timeout")
            raise ModelCallFailed("timeout", timed_out=True) from None
        except openai.OpenAIError as exc:
            self._failed(started, type(exc).__name__)
            raise ModelCallFailed(redact(repr(exc), self._secrets)) from None
        MODEL_CALL_SECONDS.labels(self.model, "ok").observe(time.perf_counter() - started)
        return completion

    def _failed(self, started: float, kind: str) -> None:
        MODEL_CALL_SECONDS.labels(self.model, "error").observe(time.perf_counter() - started)
        MODEL_ERRORS.labels(self.model, kind).inc()
