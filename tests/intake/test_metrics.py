"""Intake's model calls on its /metrics: the time of each call and its errors, with the real
openai client against the fake OpenAI server and AI turns over the real broker."""

from __future__ import annotations

from services.intake.app import create_app
from services.intake.settings import IntakeSettings
from shared.topics import AI_TURNS, CONVERSATION_EVENTS
from tests.intake.turns import turn
from tests.metrics_support import BROKEN, SLOW_OK, SLOW_S, model_calls, value

SECONDS = "handoff_model_call_duration_seconds"


async def test_model_call_latency_and_errors(isolated):
    samples, _, model = await model_calls(isolated, "intake", create_app, IntakeSettings, AI_TURNS,
                                          [turn(f"Where is my order? {SLOW_OK}"), turn(f"Hello {BROKEN}")],
                                          CONVERSATION_EVENTS)
    assert value(samples, SECONDS + "_count", model=model, outcome="ok") == 1
    assert value(samples, SECONDS + "_sum", model=model, outcome="ok") >= SLOW_S
    assert value(samples, SECONDS + "_bucket", model=model, outcome="ok", le="0.25") == 0
    assert value(samples, SECONDS + "_count", model=model, outcome="error") == 1
    assert value(samples, "handoff_model_call_errors_total", model=model, kind="InternalServerError") == 1
