"""Intake's handler on the in-memory broker (TestKafkaBroker): one outcome per turn, at the
turn's version, with ids derived from the turn (a redelivered turn yields the same ids, so
the queue keeps the first); a handoff asks only for the contact fields not yet known. The
real-broker flows, with the queue, are in test_integration."""

from __future__ import annotations

from datetime import UTC, datetime

from faststream.kafka import TestKafkaBroker

from services.intake import domain
from services.intake.handlers import IntakeHandlers
from services.intake.turns import AiWorker
from shared.bus import Bus
from shared.chatbots import HumanHandoffSettings
from shared.events import AI_TURN_EVENT, CONVERSATION_EVENT
from shared.settings import ServiceSettings
from shared.topics import AI_TURNS, CONVERSATION_EVENTS
from shared.views import Contact
from tests.intake.turns import turn


async def test_one_outcome_per_turn_with_ids_derived_from_it():
    bus = Bus(ServiceSettings(), client_id="intake-test")
    handlers = IntakeHandlers(AiWorker(responder=None), bus.publisher(CONVERSATION_EVENTS))
    bus.consume(AI_TURNS, AI_TURN_EVENT, handlers.on_turn, group_id="intake", dedupe=False)
    outcomes: list = []

    async def collect(event) -> None:
        outcomes.append(event)

    bus.consume(CONVERSATION_EVENTS, CONVERSATION_EVENT, collect, group_id="t1", dedupe=False)
    turns = bus.publisher(AI_TURNS)
    tool = HumanHandoffSettings(enabled=True, contact_fields=["name", "email", "phone"])
    hello = turn("hello", tool=tool, version=3)
    human = turn("I want to talk to a human", tool=tool, channel="telegram",
                 contact=Contact(name="Ann", email="ann@example.com"))
    async with TestKafkaBroker(bus.broker):
        await turns.publish(hello)
        await turns.publish(hello)  # redelivered
        await turns.publish(human)

    first, again, handoff = outcomes
    # Same event id, same reply ids: the queue drops the copy.
    assert first.model_dump(exclude={"occurred_at"}) == again.model_dump(exclude={"occurred_at"})
    assert (first.turn_id, first.version, first.handoff, first.mode) == (hello.turn_id, 3, None, "offline")
    assert [r.text for r in first.replies] == [domain.OFFLINE_RESPONDER_WITH_HANDOFF]
    assert first.replies[0].message_id == domain.reply_message_id(hello.message_id, 0)

    # The explicit request hands off and asks only for what is still missing (the phone).
    assert handoff.handoff is not None
    assert (handoff.handoff.reason, handoff.handoff.source) == (domain.EXPLICIT_REQUEST_REASON, "explicit_request")
    assert handoff.handoff.contact_fields == ["phone"]
    assert [r.text for r in handoff.replies] == [domain.HANDOFF_NOTICE, domain.contact_question(["phone"])]
    assert len({r.message_id for r in handoff.replies}) == 2


async def test_the_web_widget_gets_a_form_and_a_tool_that_is_off_never_hands_off():
    worker = AiWorker(responder=None)
    web = await worker.take_turn(turn("I want to talk to a human",
                                      tool=HumanHandoffSettings(enabled=True, contact_fields=["email"])))
    assert [(r.text, r.request_contact_fields) for r in web.replies] == [(domain.HANDOFF_NOTICE, ["email"])]
    off = await worker.take_turn(turn("I want to talk to a human"))
    assert off.handoff is None and [r.text for r in off.replies] == [domain.OFFLINE_RESPONDER_NO_HANDOFF]


async def test_offline_mode_never_invites_a_handoff_that_cannot_happen_now():
    """Tool off: no invitation. Outside the tool's schedule: the Offline Message, not
    "write 'I want to talk to a human'" (which would only get the Offline Message)."""
    saturday = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    worker = AiWorker(responder=None, clock=lambda: saturday)
    off = await worker.take_turn(turn("hello"))
    weekdays = HumanHandoffSettings(enabled=True, schedule_enabled=True, offline_message="Back on Monday.")
    closed = await worker.take_turn(turn("hello", tool=weekdays))
    for outcome in (off, closed):
        [reply] = outcome.replies
        assert outcome.handoff is None and "talk to a human" not in reply.text
    assert closed.replies[0].text == f"{domain.OFFLINE_RESPONDER_INTRO} Back on Monday."
