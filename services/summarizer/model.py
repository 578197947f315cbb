"""The model call: one chat completion with capped tokens, a timeout and the openai
client's retries with backoff (429 honouring Retry-After, 5xx, timeouts)."""

from __future__ import annotations

import openai

from services.summarizer.domain import clean_summary, prompt_messages
from services.summarizer.settings import SummarizerSettings
from shared.events import ConversationStateChanged
from shared.llm import open_llm_client


class ModelError(Exception):
    """The model call failed; the text carries no secret."""


class LLMSummarizer:
    def __init__(self, settings: SummarizerSettings) -> None:
        self.model = settings.openai_model
        self.max_tokens = settings.summary_max_tokens
        self.transcript_chars = settings.summary_transcript_chars
        self.client = open_llm_client(settings)
        self._api_key = settings.openai_api_key

    async def close(self) -> None:
        await self.client.close()

    async def summarize(self, event: ConversationStateChanged) -> str:
        """The recap; raises (ModelError, or ValueError on an empty answer) on failure."""
        try:
            completion = await self.client.chat.completions.create(
                model=self.model,
                messages=prompt_messages(event, self.transcript_chars),  # type: ignore[arg-type]
                max_tokens=self.max_tokens,
                temperature=0.2,
            )
        except openai.OpenAIError as exc:
            # Logged and stored by the caller: some OpenAI-compatible servers echo the key
            # they refused, which must not reach either.
            text = repr(exc)
            if self._api_key:
                text = text.replace(self._api_key, "[redacted]")
            raise ModelError(text) from None
        text = (completion.choices[0].message.content or "").strip() if completion.choices else ""
        if not text:
            raise ValueError("the model returned an empty summary")
        return clean_summary(text)
