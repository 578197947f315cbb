"""The model call: one chat completion with capped tokens, the per-attempt timeout and the
openai client's retries with backoff (429 honouring Retry-After, 5xx, timeouts)."""

from __future__ import annotations

from services.summarizer.domain import clean_summary, prompt_messages
from services.summarizer.settings import SummarizerSettings
from shared.events import ConversationStateChanged
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
        try:
            completion = await self.complete(prompt_messages(event, self.transcript_chars),
                                             max_tokens=self.max_tokens, temperature=0.2)
        except ModelCallFailed as exc:
            # Logged and stored by the caller; the key is redacted already.
            raise ModelError(exc.error) from None
        text = (completion.choices[0].message.content or "").strip() if completion.choices else ""
        if not text:
            raise ValueError("the model returned an empty summary")
        return clean_summary(text)
