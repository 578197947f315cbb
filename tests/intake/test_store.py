"""Intake's memory against the real redis-server and Mongo-wire server, and the settings table."""

from __future__ import annotations



from services.intake.store import ChatbotTable
from shared.chatbots import ChatbotSettings, HumanHandoffSettings


async def test_status_context_and_contact_question(memory_stores):
    redis, prefix = memory_stores.redis, memory_stores.prefix
    memory = memory_stores.memory(context_messages=3)
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


async def test_status_survives_losing_redis(memory_stores):
    """The status gates the AI: after Redis is wiped a handed-off or closed conversation
    must still be silent to the AI (the Mongo record answers and refills the cache)."""
    redis, prefix = memory_stores.redis, memory_stores.prefix
    memory = memory_stores.memory(context_messages=3)
    await memory.set_status("closed-one", "closed")
    await memory.mark_handoff("handed-one", "m1", "Visitor asked for a person", "explicit_request")
    await memory.set_status("back-to-ai", "handed_off")
    await memory.set_status("back-to-ai", "active")

    wiped = await redis.keys(prefix + ":*")
    assert wiped
    await redis.delete(*wiped)

    assert await memory.status("closed-one") == "closed"
    assert await memory.status("handed-one") == "handed_off"
    assert await memory.status("back-to-ai") == "active"
    assert await memory.status("never-seen") == "active"
    # the cache is refilled, so the next read is Redis-only
    assert await redis.get(f"{prefix}:status:closed-one") == "closed"


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
