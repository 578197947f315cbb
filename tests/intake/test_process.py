"""`python -m services.intake` as a real process: it serves, says which AI mode runs (log
and /readyz), and hands off an explicit request."""

from __future__ import annotations

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from services.intake import domain
from shared.chatbots import ChatbotSettings, HumanHandoffSettings
from tests.harness import ServiceProcess
from tests.intake.test_integration import Visitor, publish_settings
from tests.intake.watch import TopicWatcher


@pytest.mark.e2e
async def test_intake_process_offline_mode(isolated, tmp_path):
    producer = AIOKafkaProducer(bootstrap_servers=isolated.infra.kafka_bootstrap)
    await producer.start()
    proc = ServiceProcess("intake", isolated.env("intake"), tmp_path)
    try:
        bot = ChatbotSettings(chatbot_id="p", name="P", human_handoff=HumanHandoffSettings(enabled=True))
        await publish_settings(producer, isolated.topic_prefix, bot)
        proc.start()
        await proc.wait_ready()
        async with httpx.AsyncClient(base_url=proc.url) as http:
            ready = (await http.get("/readyz")).json()
        assert ready["ready"] and ready["ai_mode"] == "offline"
        assert "AI mode: offline" in proc.logs()

        async with TopicWatcher(isolated.infra.kafka_bootstrap, isolated.topic_prefix, "conversation.events") as w:
            v = Visitor(producer, isolated.topic_prefix, "p", channel="whatsapp")
            await v.says("Quiero hablar con una persona")
            [h] = await w.wait_for("conversation.events", v.conversation_id, type="conversation.handoff_requested",
                                   timeout=30)
            assert h["reason"] == domain.EXPLICIT_REQUEST_REASON
    finally:
        proc.stop()
        await producer.stop()
