"""Intake's rules without I/O: explicit-request detection, the schedule, the prompt and
the tool, the model's context, deterministic ids. (Contact extraction and what is still
missing moved to the queue: tests/queue/test_contact.py.)"""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest

from services.intake import domain
from shared.chatbots import HumanHandoffSettings
from shared.events import AiProfile, TranscriptLine


@pytest.mark.parametrize("text", [
    "I want to talk to a human", "Can I speak to a real person please?", "agent", "Human please!",
    "connect me with an agent", "let me talk to someone", "I need a live agent",
    "Ich möchte mit einem Menschen sprechen", "Kann ich mit einem Mitarbeiter reden?",
    "Je veux parler à un humain", "je voudrais parler avec une personne",
    "Quiero hablar con una persona", "¿Puedo hablar con un agente?",
    "Vorrei parlare con un operatore", "posso parlare con una persona?",
    "Quero falar com um atendente", "Gostaria de falar com uma pessoa",
    "Ik wil met een medewerker praten", "Kan ik een echte mens spreken?",
])
def test_explicit_requests_in_several_languages(text):
    assert domain.is_explicit_request(text)


@pytest.mark.parametrize("text", [
    "What are your opening hours?", "How do I reset my password?", "The human body has 206 bones",
    "Wie spät ist es?", "Quel est le prix ?", "¿Dónde está mi pedido?", "Grazie mille",
    "Obrigado pela ajuda", "Hoe laat gaan jullie open?", "My agent number is 4",
])
def test_ordinary_questions_are_not_requests_for_a_person(text):
    assert not domain.is_explicit_request(text)


def _tool(**kw) -> HumanHandoffSettings:
    return HumanHandoffSettings(enabled=True, **kw)


def test_decision_without_schedule_hands_off_and_asks_contact():
    d = domain.decide_handoff(_tool(contact_fields=["email", "name"]), datetime(2026, 11, 28, 3, 0, tzinfo=UTC))
    assert d.hand_off and d.reply == domain.HANDOFF_NOTICE and d.ask_contact == ["email", "name"]


def test_decision_outside_business_hours_sends_offline_message():
    tool = _tool(schedule_enabled=True, available_days=["mon", "tue", "wed", "thu", "fri"],
                 start_time=time(9), end_time=time(17), timezone="Europe/Berlin", offline_message="We're away.")
    wednesday_10_berlin = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    wednesday_18_berlin = datetime(2026, 11, 25, 17, 0, tzinfo=UTC)
    saturday_10_berlin = datetime(2026, 11, 28, 9, 0, tzinfo=UTC)
    assert domain.decide_handoff(tool, wednesday_10_berlin).hand_off
    for at in (wednesday_18_berlin, saturday_10_berlin):
        d = domain.decide_handoff(tool, at)
        assert not d.hand_off and d.reply == "We're away." and d.ask_contact == []


def test_decision_with_tool_off_never_hands_off():
    assert not domain.decide_handoff(HumanHandoffSettings(enabled=False), datetime.now(UTC)).hand_off


def test_prompt_and_tool_follow_the_tool_switch():
    on = AiProfile(instructions="You sell bikes.", human_handoff=_tool(conditions="Hand over refunds."))
    off = AiProfile(instructions="You sell bikes.")
    assert domain.build_system_prompt(on).startswith("You sell bikes.")
    assert "Hand over refunds." in domain.build_system_prompt(on)
    assert domain.build_system_prompt(off) == "You sell bikes."
    assert domain.tools_for(off) == []
    [tool] = domain.tools_for(on)
    assert tool["function"]["name"] == "request_human_handoff"
    assert tool["function"]["parameters"]["required"] == ["reason"]


def test_reason_is_cleaned():
    assert domain.clean_reason("  Topic is\n a refund ") == "Topic is a refund"
    assert domain.clean_reason(None) == domain.DEFAULT_TOOL_REASON
    assert len(domain.clean_reason("x" * 900)) == 500


def test_contact_question_lists_the_fields():
    assert domain.contact_question(["email"]) == "So our team can follow up, please share your e-mail address."
    assert domain.contact_question(["name", "email", "phone"]) == (
        "So our team can follow up, please share your name, your e-mail address and your phone number.")


def test_ids_are_deterministic():
    a = domain.reply_message_id("m_visitor-1")
    assert a == domain.reply_message_id("m_visitor-1", 0) != domain.reply_message_id("m_visitor-1", 1)
    assert a != domain.reply_message_id("m_visitor-2")
    assert domain.outcome_event_id("t_1") == domain.outcome_event_id("t_1") != domain.outcome_event_id("t_2")


AT = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)


def _line(sender: str, text: str, name: str | None = None) -> TranscriptLine:
    return TranscriptLine(sender=sender, text=text, at=AT, sender_name=name)


@pytest.mark.parametrize(("transcript", "expected"), [
    ([], []),
    ([_line("visitor", "hi"), _line("ai", "Hello!")],
     [{"role": "user", "text": "hi"}, {"role": "assistant", "text": "Hello!"}]),
    # After Return to AI the model sees what the team said, marked as a human's words.
    ([_line("agent", "Refund sent.", "Ann")],
     [{"role": "assistant", "text": "[Reply from Ann, a human team member] Refund sent."}]),
    ([_line("agent", "Refund sent.")],
     [{"role": "assistant", "text": "[Reply from a team member, a human team member] Refund sent."}]),
    # System lines are not part of the conversation with the model.
    ([_line("system", "Conversation handed off"), _line("visitor", "still there?")],
     [{"role": "user", "text": "still there?"}]),
])
def test_model_context(transcript, expected):
    assert domain.model_context(transcript) == expected


def test_offline_responder_is_honest():
    on = AiProfile(human_handoff=_tool())
    off = AiProfile()
    assert "without an AI model" in domain.offline_responder_reply(on, AT)
    assert "human" in domain.offline_responder_reply(on, AT)
    assert "isn't available" in domain.offline_responder_reply(off, AT)
    assert "human" not in domain.offline_responder_reply(off, AT)


def test_offline_responder_outside_the_schedule_gives_the_offline_message_not_an_invitation():
    """A handoff asked for now would get the Offline Message, so the responder says that
    instead of inviting the visitor to ask for a person."""
    weekdays = _tool(schedule_enabled=True, timezone="UTC", offline_message="Back on Monday at 9.")
    saturday = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    closed = domain.offline_responder_reply(AiProfile(human_handoff=weekdays), saturday)
    assert closed == f"{domain.OFFLINE_RESPONDER_INTRO} Back on Monday at 9."
    assert "talk to a human" not in closed
    assert domain.offline_responder_reply(AiProfile(human_handoff=weekdays), AT) == domain.OFFLINE_RESPONDER_WITH_HANDOFF
