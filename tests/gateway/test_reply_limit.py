"""The reply's length limit: one value (shared/views.py), the one the bus carries, refused in
words by the gateway (the dashboard shows the text beside the reply box)."""

from __future__ import annotations

import pytest
from fastapi import HTTPException

from services.gateway.deps import validated
from services.gateway.domain import ReplyBody
from shared.events import AgentCommand, OutboundMessage
from shared.views import REPLY_MAX_CHARS


def _max_length(model, field: str) -> int:
    return next(m.max_length for m in model.model_fields[field].metadata if getattr(m, "max_length", None))


def test_a_reply_over_the_limit_is_refused_in_words():
    with pytest.raises(HTTPException) as refused:
        validated(ReplyBody, {"command_id": "cmd-12345678", "text": "x" * 5000})
    assert refused.value.status_code == 422
    assert refused.value.detail == "The reply is too long: at most 4,096 characters."
    # Exactly the limit goes through; characters, not bytes (an emoji is one).
    assert len(validated(ReplyBody, {"command_id": "cmd-12345678", "text": "x" * REPLY_MAX_CHARS}).text) == 4096
    assert validated(ReplyBody, {"command_id": "cmd-12345678", "text": "🙂" * REPLY_MAX_CHARS}).text


def test_the_limit_is_what_the_bus_carries():
    assert _max_length(AgentCommand, "text") == REPLY_MAX_CHARS == _max_length(OutboundMessage, "text")
