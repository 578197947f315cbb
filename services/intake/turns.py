"""Taking one AI turn: everything the model needs comes with the turn (the queue owns the
conversation), the outcome goes back to the queue, which applies it only if the
conversation is still the AI's at the version the turn was asked at.

In order: an explicit request for a person (checked before any model) or the model's
`request_human_handoff(reason)` call hands off — subject to the tool's schedule (outside it
the Offline Message is the answer); otherwise the model's answer, or without a model the
offline responder's honest one; a failed model call gets a short apology."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from services.intake import domain
from services.intake.responder import LLMResponder, ModelFailed, ModelReply, ModelWantsHandoff
from shared.chatbots import ContactField
from shared.events import AiReply, AiTurnCompleted, AiTurnRequested, HandoffAsked
from shared.ids import utcnow

log = logging.getLogger("handoff.intake")


class AiWorker:
    def __init__(self, responder: LLMResponder | None, clock: Callable[[], datetime] = utcnow) -> None:
        self.responder = responder
        self.clock = clock

    @property
    def mode(self) -> domain.Mode:
        return "llm" if self.responder is not None else "offline"

    async def take_turn(self, turn: AiTurnRequested) -> AiTurnCompleted:
        tool = turn.profile.human_handoff
        if tool.enabled and domain.is_explicit_request(turn.text):
            return self._hand_off(turn, domain.EXPLICIT_REQUEST_REASON, "explicit_request", "llm")
        if self.responder is None:
            return self._answer(turn, "offline", domain.offline_responder_reply(turn.profile, self.clock()))
        outcome = await self.responder.respond(turn.profile, domain.model_context(turn.transcript))
        if isinstance(outcome, ModelWantsHandoff) and tool.enabled:
            return self._hand_off(turn, outcome.reason, "ai_tool", "llm")
        if isinstance(outcome, ModelReply):
            return self._answer(turn, "llm", outcome.text)
        error = outcome.error if isinstance(outcome, ModelFailed) else "tool call while the tool is off"
        log.warning("answering with an apology: %s", error)
        return self._answer(turn, "apology", domain.LLM_APOLOGY)

    def _hand_off(self, turn: AiTurnRequested, reason: str, source: str, mode: str) -> AiTurnCompleted:
        decision = domain.decide_handoff(turn.profile.human_handoff, self.clock())
        if not decision.hand_off:
            log.info("handoff requested (%s) outside business hours: offline message", source)
            return self._answer(turn, mode, decision.reply)
        fields = turn.contact.missing(decision.ask_contact)
        log.info("handoff requested (%s): %s", source, reason)
        if fields and turn.channel == "web":
            # The widget shows a contact form for these fields with the notice.
            replies = [self._reply(turn, 0, domain.HANDOFF_NOTICE, fields)]
        else:
            replies = [self._reply(turn, 0, domain.HANDOFF_NOTICE)]
            if fields:  # Telegram and WhatsApp: a plain question
                replies.append(self._reply(turn, 1, domain.contact_question(fields)))
        return self._outcome(turn, mode, replies,
                             HandoffAsked(reason=reason, source=source, contact_fields=fields))  # type: ignore[arg-type]

    def _answer(self, turn: AiTurnRequested, mode: str, text: str) -> AiTurnCompleted:
        return self._outcome(turn, mode, [self._reply(turn, 0, text)])

    @staticmethod
    def _reply(turn: AiTurnRequested, n: int, text: str, contact_fields: list[ContactField] | None = None) -> AiReply:
        return AiReply(message_id=domain.reply_message_id(turn.message_id, n), text=text,
                       request_contact_fields=contact_fields or [])

    def _outcome(self, turn: AiTurnRequested, mode: str, replies: list[AiReply],
                 handoff: HandoffAsked | None = None) -> AiTurnCompleted:
        return AiTurnCompleted(
            event_id=domain.outcome_event_id(turn.turn_id), chatbot_id=turn.chatbot_id,
            conversation_id=turn.conversation_id, turn_id=turn.turn_id, version=turn.version,
            replies=replies, handoff=handoff, mode=mode,  # type: ignore[arg-type]
        )
