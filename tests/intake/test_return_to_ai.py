"""Return to AI races visitor messages: conversation.state and visitor.messages are separate
topics, so a visitor message written after the Return to AI can be handled while intake
still sees the conversation handed off. It used to get no answer at all; now the AI answers
it (once in effect), and a message written before the return stays the team's."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest_asyncio
import redis.asyncio as aioredis
from pymongo import AsyncMongoClient

from services.intake import domain
from services.intake.handlers import Intake
from services.intake.store import ChatbotTable, ConversationMemory
from shared.events import ConversationStateChanged, VisitorIdentity, VisitorMessageReceived
from shared.ids import utcnow


class Recorder:
    def __init__(self) -> None:
        self.events: list = []

    async def publish(self, event) -> None:
        self.events.append(event)


class RacingMemory(ConversationMemory):
    """Runs `before_hold` just before the message is held (the state consumer overtaking)."""

    before_hold = None

    async def hold_unanswered(self, conversation_id, event_json):
        if self.before_hold is not None:
            hook, self.before_hold = self.before_hold, None
            await hook()
        await super().hold_unanswered(conversation_id, event_json)


@pytest_asyncio.fixture
async def setup(infra):
    redis = aioredis.from_url(infra.redis_url, decode_responses=True)
    mongo = AsyncMongoClient(infra.mongodb_uri)
    memory = RacingMemory(redis, f"t{uuid.uuid4().hex[:8]}:intake", context_messages=10, ttl_s=60,
                          statuses=mongo[f"t{uuid.uuid4().hex[:8]}_intake"]["conversation_status"])
    events, outbound, replay = Recorder(), Recorder(), Recorder()
    intake = Intake(memory=memory, chatbots=ChatbotTable(), conversation_events=events, outbound=outbound,
                    responder=None, visitor_replay=replay)  # type: ignore[arg-type]
    try:
        yield intake, memory, outbound, replay
    finally:
        await redis.aclose()
        await mongo.close()


def _message(cid: str, text: str, at) -> VisitorMessageReceived:
    return VisitorMessageReceived(chatbot_id="b", conversation_id=cid, channel="web", occurred_at=at,
                                  visitor=VisitorIdentity(external_id="v"), text=text, channel_message_id=text)


def _returned(cid: str, at) -> ConversationStateChanged:
    return ConversationStateChanged(chatbot_id="b", conversation_id=cid, channel="web", occurred_at=at,
                                    visitor=VisitorIdentity(external_id="v"), transition="return_to_ai",
                                    status="active", previous_status="handed_off", by="agent:a1")


async def test_message_after_the_return_but_handled_before_it_is_answered(setup):
    intake, memory, outbound, replay = setup
    returned_at = utcnow()
    after = _message("cv1", "after the return", returned_at + timedelta(seconds=2))
    await memory.set_status("cv1", "handed_off")

    await intake.on_visitor_message(after)  # the state consumer is behind: silent for now
    assert outbound.events == []
    await intake.on_state_changed(_returned("cv1", returned_at))
    [again] = replay.events  # handed back to the visitor consumer ...
    assert again.text == "after the return" and again.event_id != after.event_id
    assert again.conversation_id == "cv1" and again.channel_message_id == after.channel_message_id
    await intake.on_visitor_message(again)  # ... which answers it
    [reply] = outbound.events
    msg_id = domain.visitor_message_id("cv1", after.channel_message_id)
    assert reply.message_id == domain.reply_message_id(msg_id) and reply.sender == "ai"
    # A redelivered Return to AI hands nothing back twice.
    await intake.on_state_changed(_returned("cv1", returned_at))
    assert len(replay.events) == 1


async def test_message_written_before_the_return_stays_the_teams(setup):
    intake, memory, outbound, replay = setup
    returned_at = utcnow()
    await memory.set_status("cv2", "handed_off")
    await intake.on_visitor_message(_message("cv2", "before the return", returned_at - timedelta(seconds=2)))
    await intake.on_state_changed(_returned("cv2", returned_at))
    assert replay.events == [] and outbound.events == []
    assert await memory.held_unanswered("cv2") is None


async def test_return_applied_while_the_message_is_handled_answers_it_directly(setup):
    intake, memory, outbound, replay = setup
    returned_at = utcnow()
    await memory.set_status("cv3", "handed_off")

    async def state_consumer_overtakes() -> None:
        await intake.on_state_changed(_returned("cv3", returned_at))

    memory.before_hold = state_consumer_overtakes
    await intake.on_visitor_message(_message("cv3", "just after", returned_at + timedelta(seconds=1)))
    assert replay.events == []  # nothing was held when the return was applied
    assert [e.sender for e in outbound.events] == ["ai"]  # answered here instead
    assert await memory.held_unanswered("cv3") is None

    # Still handed off and no return coming: silent, as before.
    await memory.set_status("cv4", "handed_off")
    await intake.on_visitor_message(_message("cv4", "waiting for a human", utcnow()))
    assert len(outbound.events) == 1
