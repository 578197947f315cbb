"""The model call: one chat completion with capped tokens, the per-attempt timeout and the
openai client's retries with backoff (429 honouring Retry-After, 5xx, timeouts)."""

from __future__ import annotations

from services.summarizer.domain import clean_summary, prompt_messages, refresh_prompt
from services.summarizer.settings import SummarizerSettings
from shared.events import ConversationStateChanged, TranscriptLine
from shared.llm import ChatModel, ModelCallFailed


class ModelError(Exception):
    """The model call failed; the text carries no secret."""


class LLMSummarizer(ChatModel):
    def __init__(self, settings: SummarizerSettings) -> None:
        super().__init__(settings)
        self.max_tokens = settings.summary_max_tokens
        self.transcript_chars = settings.summary_transcript_chars

    async def summarize(self, event: ConversationStateChanged) -> str:
        """The recap; raises (ModelError, or ValueError on an empty answer) on failure."""
        return await self._recap(prompt_messages(event, self.transcript_chars))

    async def refresh(self, previous: str | None, new: list[TranscriptLine]) -> str:
        """The recap written again from the previous one and the new messages only."""
        return await self._recap(refresh_prompt(previous, new, self.transcript_chars))

    async def _recap(self, messages: list[dict[str, str]]) -> str:
        try:
            completion = await self.complete(messages, max_tokens=self.max_tokens, temperature=0.2)
        except ModelCallFailed as exc:
            # Logged and stored by the caller; the key is redacted already.
            raise ModelError(exc.error) from None
        text = (completion.choices[0].message.content or "").strip() if completion.choices else ""
        if not text:
            raise ValueError("the model returned an empty summary")
        return clean_summary(text)
