"""Stopping intake while the model is still answering: the answer is finished and sent
before the model client closes (it used to be closed under the call, and the visitor got the
apology instead)."""

from __future__ import annotations

import asyncio

from services.intake import domain
from shared.chatbots import ChatbotSettings
from tests.fakes.openai_server import FakeOpenAI, Reply, Slow
from tests.intake.pipeline import pipeline


async def test_stop_lets_an_answer_in_progress_finish(isolated):
    async with FakeOpenAI() as fake, pipeline(isolated, OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY="test-key",
                                              OPENAI_MAX_RETRIES="0") as p:
        fake.when("SLOW-STOP", Slow(1.5, Reply("The real answer.")))
        await p.chatbot(ChatbotSettings(chatbot_id="slow", name="Slow"))
        visitor = p.visitor("slow")
        async with p.intake():
            await visitor.says("Hello SLOW-STOP")
            while not fake.requests_containing("SLOW-STOP"):
                await asyncio.sleep(0.02)
        # stopped while the model was still answering
        [reply] = await visitor.told()
        assert reply["text"] == "The real answer." and reply["text"] != domain.LLM_APOLOGY
