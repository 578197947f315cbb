"""The summarizer's model calls on its /metrics: the time of each call and its errors (the
failed one falls back to the extractive summary), with the real openai client against the
fake OpenAI server and handoffs over the real broker."""

from __future__ import annotations

from datetime import UTC, datetime

from services.summarizer.app import create_app
from services.summarizer.settings import SummarizerSettings
from shared.events import ConversationStateChanged, TranscriptLine, VisitorIdentity
from shared.ids import new_id
from shared.topics import CONVERSATION_STATE, HANDOFF_SUMMARIES
from tests.metrics_support import BROKEN, SLOW_OK, SLOW_S, model_calls, value


def _handoff(text: str) -> ConversationStateChanged:
    return ConversationStateChanged(
        chatbot_id="b", conversation_id="cv_" + new_id()[:12], transition="handoff", status="handed_off",
        previous_status="active", channel="web", visitor=VisitorIdentity(external_id="v"), handoff_id="h_" + new_id(),
        by="ai", transcript=[TranscriptLine(sender="visitor", text=text, at=datetime.now(UTC))])


async def test_model_call_latency_and_errors(isolated):
    samples, summaries, model = await model_calls(
        isolated, "summarizer", create_app, SummarizerSettings, CONVERSATION_STATE,
        [_handoff(f"I want a refund {SLOW_OK}"), _handoff(f"Hello {BROKEN}")], HANDOFF_SUMMARIES)
    assert sorted(s["mode"] for s in summaries) == ["extractive", "llm"]
    assert value(samples, "handoff_model_call_duration_seconds_count", model=model, outcome="ok") == 1
    assert value(samples, "handoff_model_call_duration_seconds_sum", model=model, outcome="ok") >= SLOW_S
    assert value(samples, "handoff_model_call_duration_seconds_count", model=model, outcome="error") == 1
    assert value(samples, "handoff_model_call_errors_total", model=model, kind="InternalServerError") == 1
