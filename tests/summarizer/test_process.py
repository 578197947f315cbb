"""`python -m services.summarizer` as a real process with the fake model: it serves, says
which AI mode runs (log and /readyz), and publishes a summary after a handoff."""

from __future__ import annotations

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.harness import ServiceProcess
from tests.intake.watch import TopicWatcher
from tests.summarizer.test_integration import handoff, send


@pytest.mark.e2e
async def test_summarizer_process_llm_mode(isolated, tmp_path):
    producer = AIOKafkaProducer(bootstrap_servers=isolated.infra.kafka_bootstrap)
    await producer.start()
    try:
        async with FakeOpenAI(default=Reply("The visitor wants a refund.")) as fake:
            proc = ServiceProcess("summarizer", isolated.env(
                "summarizer", OPENAI_BASE_URL=fake.base_url, OPENAI_API_KEY="k"), tmp_path)
            try:
                proc.start()
                await proc.wait_ready()
                async with httpx.AsyncClient(base_url=proc.url) as http:
                    assert (await http.get("/readyz")).json()["ai_mode"] == "llm"
                assert "AI mode: llm" in proc.logs()
                async with TopicWatcher(isolated.infra.kafka_bootstrap, isolated.topic_prefix,
                                        "handoff.summaries") as w:
                    await send(producer, isolated.topic_prefix, handoff("PROC-MARK"))
                    [s] = await w.wait_for("handoff.summaries", handoff_id="h_PROC-MARK", timeout=30)
                assert (s["text"], s["mode"]) == ("The visitor wants a refund.", "llm")
            finally:
                proc.stop()
    finally:
        await producer.stop()
