"""AI turns as the queue builds them, for intake's own tests."""

from __future__ import annotations

from typing import Any

from shared.chatbots import HumanHandoffSettings
from shared.events import AiProfile, AiTurnRequested, TranscriptLine, VisitorIdentity
from shared.ids import new_id, utcnow


def turn(text: str, *, channel: str = "web", tool: HumanHandoffSettings | None = None, chatbot_id: str = "b",
         conversation_id: str | None = None, **kw: Any) -> AiTurnRequested:
    message_id = "m_" + new_id()
    return AiTurnRequested(
        chatbot_id=chatbot_id, conversation_id=conversation_id or "cv_" + new_id()[:12], turn_id="t_" + message_id,
        message_id=message_id, version=kw.pop("version", 0), channel=channel,
        visitor=VisitorIdentity(external_id="v-" + new_id()[:6]), text=text,
        transcript=kw.pop("transcript", [TranscriptLine(sender="visitor", text=text, at=utcnow())]),
        profile=AiProfile(human_handoff=tool or HumanHandoffSettings()), **kw)
