"""The summarizer's rules without I/O: the extractive recap and the model's prompt."""

from __future__ import annotations

from datetime import UTC, datetime

from services.summarizer import domain
from shared.events import ConversationStateChanged, TranscriptLine, VisitorIdentity
from shared.views import Contact

AT = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def _handoff(lines: list[tuple[str, str]], reason: str | None = "Topic is a refund", **contact: str):
    return ConversationStateChanged(
        chatbot_id="b", conversation_id="cv_1", transition="handoff", status="handed_off",
        previous_status="active", channel="web", visitor=VisitorIdentity(external_id="v1"),
        handoff_id="h1", reason=reason, by="ai", contact=Contact(**contact),
        transcript=[TranscriptLine(sender=s, text=t, at=AT) for s, t in lines])


def test_extractive_summary_has_reason_first_and_last_visitor_messages_and_contact():
    event = _handoff([("visitor", "My order 123 never arrived"), ("ai", "Sorry to hear that."),
                      ("visitor", "I want a refund now"), ("ai", "Connecting you.")],
                     name="Ann", email="ann@example.com")
    assert domain.extractive_summary(event) == (
        'Handed off: Topic is a refund.\nVisitor first asked: "My order 123 never arrived"\n'
        'Latest message: "I want a refund now"\nContact: Ann, ann@example.com.')


def test_extractive_summary_single_message_and_long_text_is_capped():
    event = _handoff([("visitor", "x " * 500)], reason=None)
    text = domain.extractive_summary(event)
    assert text is not None and text.startswith('Visitor first asked: "x x')
    assert "Latest message" not in text and len(text) < 320


def test_nothing_to_summarize_gives_none():
    assert domain.extractive_summary(_handoff([("ai", "Hello")], reason=None)) is None


def test_prompt_carries_reason_contact_and_recent_transcript():
    lines = [("visitor", f"message {i}") for i in range(100)]
    messages = domain.prompt_messages(_handoff(lines, phone="+31 6 1234"), max_chars=200)
    assert messages[0] == {"role": "system", "content": domain.SYSTEM_PROMPT}
    user = messages[1]["content"]
    assert "Handoff reason: Topic is a refund" in user and "Contact details: +31 6 1234" in user
    assert "Visitor: message 99" in user and "Visitor: message 0\n" not in user
    assert len(user.split("Transcript:\n")[1]) <= 200


def test_summary_event_id_is_stable_and_text_is_capped():
    assert domain.summary_event_id("h1") == domain.summary_event_id("h1") != domain.summary_event_id("h2")
    assert len(domain.clean_summary("y" * 5000)) == domain.SUMMARY_LIMIT
