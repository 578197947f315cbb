"""The model call against the fake OpenAI server: a refused key echoed back by the server
is not in the error the job logs and stores."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.summarizer.model import LLMSummarizer, ModelError
from services.summarizer.settings import SummarizerSettings
from shared.events import ConversationStateChanged, TranscriptLine, VisitorIdentity
from tests.fakes.openai_server import Error, FakeOpenAI

KEY = "sk-proj-THISISTHESECRETKEY0123456789"


async def test_an_echoed_api_key_is_not_in_the_error():
    event = ConversationStateChanged(
        chatbot_id="b", conversation_id="c", transition="handoff", status="handed_off", previous_status="active",
        channel="web", visitor=VisitorIdentity(external_id="v"), handoff_id="h1", by="ai",
        transcript=[TranscriptLine(sender="visitor", text="refund please", at=datetime.now(UTC))])
    async with FakeOpenAI(default=Error(401, message=f"Incorrect API key provided: {KEY}.")) as fake:
        model = LLMSummarizer(SummarizerSettings(openai_api_key=KEY, openai_base_url=fake.base_url,
                                                 openai_max_retries=0))
        try:
            with pytest.raises(ModelError) as caught:
                await model.summarize(event)
        finally:
            await model.close()
    text = repr(caught.value) + "".join(str(a) for a in caught.value.args)
    assert "401" in text and KEY not in text and "[redacted]" in text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
