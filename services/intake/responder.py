"""The AI responder: one call to an OpenAI-compatible chat model per visitor message.

The model sees the chatbot's instructions (+ the Handoff Conditions when the tool is on)
and the conversation's recent messages; it is offered `request_human_handoff(reason)` only
while the Human Handoff tool is on. Errors (timeouts, 5xx after the client's retries) are
returned as a `ModelFailed`, never raised: the visitor's message is already appended and
the caller answers with a short apology."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from services.intake.domain import TOOL_NAME, build_system_prompt, clean_reason, tools_for
from services.intake.settings import IntakeSettings
from shared.events import AiProfile
from shared.llm import ChatModel, ModelCallFailed

log = logging.getLogger("handoff.intake.ai")


@dataclass(frozen=True)
class ModelReply:
    text: str


@dataclass(frozen=True)
class ModelWantsHandoff:
    reason: str


@dataclass(frozen=True)
class ModelFailed:
    error: str


ModelOutcome = ModelReply | ModelWantsHandoff | ModelFailed


def build_messages(settings: AiProfile, context: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{"role": "system", "content": build_system_prompt(settings)}] + [
        {"role": m["role"], "content": m["text"]} for m in context
    ]


class LLMResponder(ChatModel):
    def __init__(self, settings: IntakeSettings) -> None:
        super().__init__(settings)
        self.max_tokens = settings.openai_max_tokens
        self.total_timeout_s = settings.openai_total_timeout_s

    async def respond(self, chatbot: AiProfile, context: list[dict[str, str]]) -> ModelOutcome:
        tools = tools_for(chatbot)
        try:
            completion = await self.complete(build_messages(chatbot, context), max_tokens=self.max_tokens,
                                             tools=tools, total_timeout_s=self.total_timeout_s)
        except ModelCallFailed as exc:
            if exc.timed_out:
                log.error("the AI model did not answer within %.0fs", self.total_timeout_s)
            else:
                log.error("the AI model failed: %s", exc.error)  # the key is redacted already
            return ModelFailed(exc.error)
        if not completion.choices:
            log.error("the AI model returned no choices")
            return ModelFailed("no choices")
        message = completion.choices[0].message
        for call in message.tool_calls or []:
            function = getattr(call, "function", None)
            if function is not None and function.name == TOOL_NAME and tools:
                try:
                    args = json.loads(function.arguments or "{}")
                except json.JSONDecodeError:
                    args = {}
                return ModelWantsHandoff(clean_reason(args.get("reason") if isinstance(args, dict) else None))
        text = (message.content or "").strip()
        if not text:
            log.error("the AI model returned neither text nor a known tool call")
            return ModelFailed("empty reply")
        return ModelReply(text[:4096])
