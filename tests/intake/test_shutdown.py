"""Stopping intake while the model is still answering: the answer is finished and sent
before the model client closes (it used to be closed under the call, and the visitor got the
apology instead)."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from services.intake import domain
from services.intake.app import create_app
from services.intake.settings import IntakeSettings
from shared.chatbots import ChatbotSettings
from tests.fakes.openai_server import FakeOpenAI, Reply, Slow
from tests.harness import run_in_process, settings_from_env
from tests.intake.test_integration import Visitor, publish_settings
from tests.intake.watch import TopicWatcher


async def test_stop_lets_an_answer_in_progress_finish(isolated):
    prefix = isolated.topic_prefix
    producer = AIOKafkaProducer(bootstrap_servers=isolated.infra.kafka_bootstrap)
    await producer.start()
    try:
        await publish_settings(producer, prefix, ChatbotSettings(chatbot_id="slow", name="Slow"))
        async with FakeOpenAI() as fake, TopicWatcher(isolated.infra.kafka_bootstrap, prefix, "outbound.messages") as w:
            fake.when("SLOW-STOP", Slow(1.5, Reply("The real answer.")))
            settings = settings_from_env(IntakeSettings, isolated.env(
                "intake", OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY="test-key", OPENAI_MAX_RETRIES="0"))
            visitor = Visitor(producer, prefix, "slow")
            async with run_in_process("intake", create_app, settings):
                await visitor.says("Hello SLOW-STOP")
                while not fake.requests_containing("SLOW-STOP"):
                    await asyncio.sleep(0.02)
            # stopped while the model was still answering
            [reply] = await w.wait_for("outbound.messages", visitor.conversation_id)
            assert reply["text"] == "The real answer." and reply["text"] != domain.LLM_APOLOGY
    finally:
        await producer.stop()
