"""The AI model every service that needs one talks to: any OpenAI-compatible server.

With neither a key nor a base URL set the model is "not configured" and the service runs
its offline behaviour (intake: the offline responder; summarizer: extractive summaries).
"""

from __future__ import annotations

from openai import AsyncOpenAI
from pydantic import Field

from shared.settings import ServiceSettings


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


def open_llm_client(settings: LLMSettings) -> AsyncOpenAI:
    return AsyncOpenAI(
        # Local OpenAI-compatible servers often need no key; the client insists on one.
        api_key=settings.openai_api_key or "not-needed",
        base_url=settings.openai_base_url or None,
        timeout=settings.openai_timeout_s,
        max_retries=settings.openai_max_retries,
    )
