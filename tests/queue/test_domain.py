"""The handoff domain, pure: every transition from every state, reply rules, stats
boundaries with an injected clock (midnight in the chatbot's zone, the exact 7-day edge)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.queue import domain
from services.queue.domain import (
    REPLY_NOT_ALLOWED,
    WHATSAPP_WINDOW_CLOSED,
    CommandRefused,
    TransitionRefused,
    count_stats,
    decide_handoff,
    plan_transition,
    stats_window,
    to_ms,
)

STATES = ("active", "handed_off", "closed")
VALID = {
    ("active", "handoff"): "handed_off",
    ("handed_off", "close"): "closed",
    ("closed", "reopen"): "handed_off",
    ("handed_off", "return_to_ai"): "active",
}


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("transition", ("handoff", "close", "reopen", "return_to_ai"))
def test_every_transition_from_every_state(state, transition):
    if (state, transition) in VALID:
        assert plan_transition(state, transition) == VALID[(state, transition)]
    else:
        with pytest.raises(TransitionRefused) as refused:
            plan_transition(state, transition)
        assert refused.value.status_code == 409
        assert refused.value.message.startswith("Cannot ")
        assert refused.value.message.endswith(".")


def test_refusal_reads_well():
    with pytest.raises(TransitionRefused, match=r"^Cannot close a conversation that is closed\.$"):
        plan_transition("closed", "close")
    with pytest.raises(TransitionRefused, match=r"^Cannot reopen a conversation that is handed off\.$"):
        plan_transition("handed_off", "reopen")


@pytest.mark.parametrize(("state", "decision"), [
    (None, "hand_off"), ("active", "hand_off"), ("handed_off", "already_handed_off"), ("closed", "refused_closed"),
])
def test_handoff_decision(state, decision):
    assert decide_handoff(state) == decision


NOW = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)


@pytest.mark.parametrize(("status", "text", "channel", "last_visitor", "expected"), [
    ("handed_off", "  hello  ", "web", None, "hello"),
    ("handed_off", "hi", "telegram", None, "hi"),
    ("active", "hi", "web", None, (409, REPLY_NOT_ALLOWED)),
    ("closed", "hi", "web", None, (409, REPLY_NOT_ALLOWED)),
    ("handed_off", "   ", "web", None, (422, domain.EMPTY_REPLY)),
    ("handed_off", None, "web", None, (422, domain.EMPTY_REPLY)),
    ("handed_off", "hi", "whatsapp", NOW - timedelta(hours=23, minutes=59), "hi"),
    ("handed_off", "hi", "whatsapp", NOW - timedelta(hours=24), (409, WHATSAPP_WINDOW_CLOSED)),
    ("handed_off", "hi", "whatsapp", None, (409, WHATSAPP_WINDOW_CLOSED)),
])
def test_reply_rules(status, text, channel, last_visitor, expected):
    if isinstance(expected, str):
        assert domain.check_reply(status, text, channel, last_visitor, NOW) == expected
    else:
        with pytest.raises(CommandRefused) as refused:
            domain.check_reply(status, text, channel, last_visitor, NOW)
        assert (refused.value.status_code, refused.value.message) == expected


def test_exact_texts():
    assert REPLY_NOT_ALLOWED == "Can only reply to handed-off conversations."
    assert WHATSAPP_WINDOW_CLOSED == "The WhatsApp 24-hour window has closed: the visitor has to write first."


def test_reply_window_only_on_whatsapp():
    assert domain.reply_window_ends_at("whatsapp", NOW) == NOW + timedelta(hours=24)
    assert domain.reply_window_ends_at("web", NOW) is None


def test_agent_message_id_is_deterministic_per_command():
    assert domain.agent_message_id("cmd-00000001") == domain.agent_message_id("cmd-00000001")
    assert domain.agent_message_id("cmd-00000001") != domain.agent_message_id("cmd-00000002")


def test_display_name_prefers_contact_then_visitor_then_label():
    assert domain.display_name("Ann", "annie_tg", "v1") == "Ann"
    assert domain.display_name(None, "annie_tg", "v1") == "annie_tg"
    assert domain.display_name(" ", None, "v1").startswith("Visitor ")


@pytest.mark.parametrize(("current", "reported", "expected"), [
    (None, "sent", "sent"), ("pending", "sent", "sent"), ("delivered", "sent", "delivered"),
    ("read", "delivered", "read"), ("pending", "failed", "failed"), ("delivered", "failed", "delivered"),
    ("failed", "sent", "failed"), ("failed", "delivered", "delivered"),
])
def test_delivery_state_never_goes_backwards(current, reported, expected):
    assert domain.next_delivery_state(current, reported) == expected


def test_transcript_cap_keeps_the_latest():
    lines = [{"text": str(i)} for i in range(120)]
    capped = domain.cap_transcript(lines)
    assert len(capped) == 50 and capped[0]["text"] == "70" and capped[-1]["text"] == "119"


# ---------------------------------------------------------------- stats boundaries
BERLIN = ZoneInfo("Europe/Berlin")


@pytest.mark.parametrize(("now", "tz", "waiting", "today"), [
    # UTC: midnight itself counts for the new day, one ms before does not.
    (datetime(2026, 11, 25, 10, tzinfo=UTC), "UTC", datetime(2026, 11, 25, 0, tzinfo=UTC), 1),
    (datetime(2026, 11, 25, 10, tzinfo=UTC), "UTC", datetime(2026, 11, 24, 23, 59, 59, 999000, tzinfo=UTC), 0),
    # Berlin (UTC+1 in November): local midnight is 23:00 UTC the day before.
    (datetime(2026, 11, 25, 10, tzinfo=UTC), "Europe/Berlin", datetime(2026, 11, 24, 23, 0, tzinfo=UTC), 1),
    (datetime(2026, 11, 25, 10, tzinfo=UTC), "Europe/Berlin", datetime(2026, 11, 24, 22, 59, 59, 999000, tzinfo=UTC), 0),
    # 23:30 UTC is already tomorrow in Berlin: a handoff at 23:10 UTC is "today" there, not in UTC terms.
    (datetime(2026, 11, 24, 23, 30, tzinfo=UTC), "Europe/Berlin", datetime(2026, 11, 24, 23, 10, tzinfo=UTC), 1),
    (datetime(2026, 11, 24, 23, 30, tzinfo=UTC), "UTC", datetime(2026, 11, 24, 0, 10, tzinfo=UTC), 1),
    (datetime(2026, 11, 24, 23, 30, tzinfo=UTC), "Europe/Berlin", datetime(2026, 11, 24, 22, 50, tzinfo=UTC), 0),
    # New York (UTC-5): 03:00 UTC on Nov 25 is still Nov 24 there.
    (datetime(2026, 11, 25, 3, tzinfo=UTC), "America/New_York", datetime(2026, 11, 24, 5, tzinfo=UTC), 1),
    (datetime(2026, 11, 25, 3, tzinfo=UTC), "America/New_York", datetime(2026, 11, 24, 4, 59, tzinfo=UTC), 0),
])
def test_today_starts_at_local_midnight(now, tz, waiting, today):
    window = stats_window(now, tz)
    counts = count_stats([to_ms(waiting)], [], window)
    assert counts.open == 1
    assert counts.today == today


def test_today_ends_at_next_local_midnight():
    window = stats_window(datetime(2026, 11, 24, 23, 30, tzinfo=UTC), "Europe/Berlin")
    assert window.today_starts_at == datetime(2026, 11, 25, tzinfo=BERLIN)
    assert window.today_ends_at == datetime(2026, 11, 26, tzinfo=BERLIN)


@pytest.mark.parametrize(("closed_ago", "counted"), [
    (timedelta(0), 1),
    (timedelta(days=6, hours=23, minutes=59), 1),
    (timedelta(days=7), 1),  # exactly 7 days ago: still in the last 7 days
    (timedelta(days=7, milliseconds=1), 0),
    (timedelta(days=8), 0),
])
def test_resolved_this_week_edge(closed_ago, counted):
    window = stats_window(NOW, "Europe/Berlin")
    assert count_stats([], [to_ms(NOW - closed_ago)], window).resolved_this_week == counted


def test_oldest_and_open():
    window = stats_window(NOW, "UTC")
    counts = count_stats([to_ms(NOW - timedelta(hours=3)), to_ms(NOW - timedelta(days=2))], [], window)
    assert counts.open == 2
    assert counts.oldest_waiting_ms == to_ms(NOW - timedelta(days=2))
    assert counts.today == 1
    empty = count_stats([], [], window)
    assert empty.open == 0 and empty.oldest_waiting_ms is None


def test_ms_scores_are_exact():
    at = datetime(2026, 11, 25, 14, 30, 0, 123456, tzinfo=UTC)
    assert to_ms(at) == 1795617000123
    assert domain.from_ms(to_ms(at)) == at.replace(microsecond=123000)
