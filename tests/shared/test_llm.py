"""The shared model client against the fake OpenAI server (reached by the real openai
client): what it sends, the total timeout, and errors without the API key; the start-up
line saying which AI mode runs."""

from __future__ import annotations

import logging

import pytest

from shared.llm import ChatModel, LLMSettings, ModelCallFailed, log_ai_mode
from tests.fakes.openai_server import Error, FakeOpenAI, Reply, Slow

KEY = "sk-proj-THISISTHESECRETKEY0123456789"
MESSAGES = [{"role": "user", "content": "hi"}]


def model_for(fake: FakeOpenAI, **settings) -> ChatModel:
    return ChatModel(LLMSettings(openai_base_url=fake.base_url, openai_max_retries=0, **settings))


async def test_a_completion_with_tools_and_temperature():
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}
    async with FakeOpenAI(default=Reply("hello")) as fake:
        model = model_for(fake, openai_model="m-1")
        try:
            completion = await model.complete(MESSAGES, max_tokens=7, tools=[tool], temperature=0.2)
            await model.complete(MESSAGES, max_tokens=None, tools=[])
        finally:
            await model.close()
    assert completion.choices[0].message.content == "hello"
    first, second = fake.requests
    assert first["model"] == "m-1" and first["messages"] == MESSAGES and first["max_tokens"] == 7
    assert first["tools"] == [tool] and first["tool_choice"] == "auto" and first["temperature"] == 0.2
    assert not {"tools", "tool_choice", "temperature"} & second.keys()


async def test_an_echoed_api_key_is_redacted_and_the_cause_dropped():
    async with FakeOpenAI(default=Error(401, message=f"Incorrect API key provided: {KEY}.")) as fake:
        model = model_for(fake, openai_api_key=KEY)
        try:
            with pytest.raises(ModelCallFailed) as caught:
                await model.complete(MESSAGES, max_tokens=5)
        finally:
            await model.close()
    failed = caught.value
    assert "401" in failed.error and KEY not in failed.error and "[redacted]" in failed.error
    assert not failed.timed_out and KEY not in repr(failed)
    assert failed.__cause__ is None and failed.__suppress_context__


async def test_the_total_timeout():
    async with FakeOpenAI(default=Slow(5.0, Reply("late"))) as fake:
        model = model_for(fake)
        try:
            with pytest.raises(ModelCallFailed) as caught:
                await model.complete(MESSAGES, max_tokens=5, total_timeout_s=0.2)
        finally:
            await model.close()
    assert caught.value.timed_out and caught.value.error == "timeout"


def test_the_ai_mode_line(caplog):
    log = logging.getLogger("handoff.test")
    with caplog.at_level(logging.INFO, logger="handoff.test"):
        log_ai_mode(log, LLMSettings(openai_api_key=KEY, openai_model="m-1"), offline="unused")
        log_ai_mode(log, LLMSettings(openai_api_key=None, openai_base_url=None), offline="summaries are extractive")
    llm, offline = caplog.records
    assert (llm.levelno, llm.getMessage()) == (logging.INFO, "AI mode: llm (model m-1 at api.openai.com)")
    assert (offline.levelno, offline.getMessage()) == (
        logging.WARNING, "AI mode: offline (no OPENAI_API_KEY / OPENAI_BASE_URL): summaries are extractive")
