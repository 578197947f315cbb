"""Keeping a summary current, without I/O: when a refresh is due, what it covers, the
incremental prompt (the previous summary and only the new messages) and the extractive merge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.summarizer import domain
from services.summarizer.domain import RefreshPolicy
from shared.events import TranscriptLine

AT = datetime(2026, 12, 3, 12, 0, tzinfo=UTC)
POLICY = RefreshPolicy(after_messages=3, after=timedelta(minutes=10))


def line(sender: str, text: str, minutes: float = 0, name: str | None = None) -> TranscriptLine:
    return TranscriptLine(sender=sender, text=text, at=AT + timedelta(minutes=minutes), sender_name=name)


def test_due_after_n_new_visitor_messages_agents_lines_do_not_count():
    two = [line("visitor", "a", 1), line("agent", "b", 2, "Ann"), line("visitor", "c", 3)]
    assert not POLICY.due(two, AT + timedelta(minutes=4))
    assert POLICY.due([*two, line("visitor", "d", 4)], AT + timedelta(minutes=4))
    assert not POLICY.due([], AT + timedelta(days=1))


def test_due_once_the_oldest_uncovered_message_is_m_minutes_old():
    one = [line("agent", "We are on it", 1, "Ann")]
    assert not POLICY.due(one, AT + timedelta(minutes=10, seconds=59))
    assert POLICY.due(one, AT + timedelta(minutes=11))


def test_a_failed_refresh_is_not_retried_by_itself_for_m_minutes():
    many = [line("visitor", str(i), i / 10) for i in range(5)]
    now = AT + timedelta(minutes=30)
    assert not POLICY.due(many, now, failed_at=now - timedelta(minutes=9))
    assert POLICY.due(many, now, failed_at=now - timedelta(minutes=10))


def test_uncovered_are_the_lines_after_what_the_summary_covers_oldest_first():
    lines = [line("visitor", "late", 5), line("visitor", "covered", 0), line("visitor", "new", 2)]
    assert [x.text for x in domain.uncovered(lines, AT)] == ["new", "late"]
    assert [x.text for x in domain.uncovered(lines, None)] == ["covered", "new", "late"]
    assert domain.covered_until([line("visitor", "x", 1), line("ai", "y", 2)], AT) == AT + timedelta(minutes=2)
    assert domain.covered_until([], AT) == AT


def test_the_refresh_prompt_has_the_previous_summary_and_only_the_new_messages():
    messages = domain.refresh_prompt("Visitor wants a refund for order 123.",
                                     [line("visitor", "Any news?", 1), line("agent", "Refund sent.", 2, "Ann")], 12000)
    assert messages[0] == {"role": "system", "content": domain.REFRESH_SYSTEM_PROMPT}
    assert messages[1]["content"] == ("Previous recap:\nVisitor wants a refund for order 123.\n\n"
                                      "Messages since:\nVisitor: Any news?\nAgent: Refund sent.")
    assert "Previous recap:\n(none)" in domain.refresh_prompt(None, [line("visitor", "hi")], 100)[1]["content"]


def test_the_extractive_refresh_merges_the_previous_summary_with_the_new_messages():
    first = ('Handed off: Topic is a refund.\nVisitor first asked: "Where is my order?"\n'
             'Latest message: "I want a refund"\nContact: ann@example.com.')
    second = domain.extractive_refresh(first, [line("visitor", "Hello?", 1), line("agent", "Looking now", 2, "Bo"),
                                               line("visitor", "It was order 123", 3)])
    assert second == ('Handed off: Topic is a refund.\nVisitor first asked: "Where is my order?"\n'
                      'Contact: ann@example.com.\nLatest message: "It was order 123"\n'
                      'Agent\'s last reply: "Looking now"')
    # Refreshed again: the latest lines are replaced, not piled up.
    third = domain.extractive_refresh(second, [line("visitor", "Thanks!", 4)])
    assert third is not None and third.count("Latest message") == 1 and third.endswith('Latest message: "Thanks!"')
    assert "Agent's last reply" not in third
    assert domain.extractive_refresh(None, [line("visitor", "Hi", 1)]) == 'Latest message: "Hi"'
    assert domain.extractive_refresh(None, []) is None
