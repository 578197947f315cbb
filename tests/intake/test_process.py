"""`python -m services.intake` as a real process: it serves, says which AI mode runs (log
and /readyz), and answers an AI turn with a handoff for an explicit request."""

from __future__ import annotations

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from services.intake import domain
from shared.chatbots import HumanHandoffSettings
from shared.topics import AI_TURNS
from tests.harness import ServiceProcess
from tests.intake.turns import turn
from tests.intake.watch import TopicWatcher


@pytest.mark.e2e
async def test_intake_process_offline_mode(isolated, tmp_path):
    producer = AIOKafkaProducer(bootstrap_servers=isolated.infra.kafka_bootstrap)
    await producer.start()
    proc = ServiceProcess("intake", isolated.env("intake"), tmp_path)
    try:
        proc.start()
        await proc.wait_ready()
        async with httpx.AsyncClient(base_url=proc.url) as http:
            ready = (await http.get("/readyz")).json()
        assert ready["ready"] and ready["ai_mode"] == "offline"
        assert "AI mode: offline" in proc.logs()

        async with TopicWatcher(isolated.infra.kafka_bootstrap, isolated.topic_prefix, "conversation.events") as w:
            asked = turn("Quiero hablar con una persona", channel="whatsapp", tool=HumanHandoffSettings(enabled=True))
            await producer.send_and_wait(isolated.topic_prefix + AI_TURNS.name, asked.model_dump_json().encode(),
                                         key=asked.partition_key())
            [outcome] = await w.wait_for("conversation.events", asked.conversation_id, timeout=30)
            assert outcome["turn_id"] == asked.turn_id
            assert outcome["handoff"]["reason"] == domain.EXPLICIT_REQUEST_REASON
    finally:
        proc.stop()
        await producer.stop()
