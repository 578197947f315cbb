"""The responder against the fake OpenAI server: a refused key echoed back by the server
never reaches the logs or the failure it returns."""

from __future__ import annotations

import logging

from services.intake.responder import LLMResponder, ModelFailed
from services.intake.settings import IntakeSettings
from shared.events import AiProfile
from tests.fakes.openai_server import Error, FakeOpenAI

KEY = "sk-proj-THISISTHESECRETKEY0123456789"


async def test_an_echoed_api_key_never_reaches_the_logs(caplog):
    async with FakeOpenAI(default=Error(401, message=f"Incorrect API key provided: {KEY}.")) as fake:
        responder = LLMResponder(IntakeSettings(openai_api_key=KEY, openai_base_url=fake.base_url,
                                                openai_max_retries=0))
        try:
            with caplog.at_level(logging.DEBUG):
                outcome = await responder.respond(AiProfile(),
                                                  [{"role": "user", "text": "hi"}])
        finally:
            await responder.close()
    assert isinstance(outcome, ModelFailed) and "401" in outcome.error
    assert KEY not in outcome.error and "[redacted]" in outcome.error
    assert "the AI model failed" in caplog.text and KEY not in caplog.text
