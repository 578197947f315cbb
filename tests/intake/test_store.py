"""Intake's Redis memory against the real redis-server, and the settings table."""

from __future__ import annotations

import uuid

import redis.asyncio as aioredis

from services.intake.store import ChatbotTable, ConversationMemory
from shared.chatbots import ChatbotSettings, HumanHandoffSettings


async def test_status_context_and_contact_question(infra):
    redis = aioredis.from_url(infra.redis_url, decode_responses=True)
    prefix = f"t{uuid.uuid4().hex[:8]}:intake"
    memory = ConversationMemory(redis, prefix, context_messages=3, ttl_s=60)
    try:
        assert await memory.status("cv1") == "active"  # never heard of: the AI answers
        await memory.set_status("cv1", "handed_off")
        assert await memory.status("cv1") == "handed_off"
        assert await memory.status("cv2") == "active"

        await memory.remember("cv1", "m1", "user", "hello")
        await memory.remember("cv1", "m1", "user", "hello")  # a replay: kept once
        await memory.remember("cv1", "m2", "assistant", "hi")
        assert [e["id"] for e in await memory.context("cv1")] == ["m1", "m2"]
        for i in range(3, 9):
            await memory.remember("cv1", f"m{i}", "user", f"text {i}")
        assert [e["text"] for e in await memory.context("cv1")] == ["text 6", "text 7", "text 8"]
        assert await memory.context("cv2") == []

        assert await memory.wanted_contact("cv1") == []
        await memory.set_wanted_contact("cv1", ["email", "phone"])
        assert await memory.wanted_contact("cv1") == ["email", "phone"]
        await memory.set_wanted_contact("cv1", [])
        assert await memory.wanted_contact("cv1") == []

        keys = await redis.keys(prefix + ":*")
        assert keys and all(k.startswith(prefix + ":") for k in keys)
        ttls = {k.rsplit(":", 2)[-2]: await redis.ttl(k) for k in keys}
        assert ttls["status"] == -1  # never forgotten: closed stays closed
        assert 0 < ttls["context"] <= 60
    finally:
        await redis.aclose()


def test_chatbot_table_defaults_updates_and_deletes():
    table = ChatbotTable()
    assert table.get("unknown").human_handoff.enabled is False
    bot = ChatbotSettings(chatbot_id="b", name="B", human_handoff=HumanHandoffSettings(enabled=True))
    table.apply(bot)
    assert table.get("b").human_handoff.enabled is True
    table.apply(bot.model_copy(update={"human_handoff": HumanHandoffSettings(enabled=False)}))
    assert table.get("b").human_handoff.enabled is False and len(table) == 1
    table.apply(bot, deleted=True)
    assert len(table) == 0
