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


# ---------------------------------------------------------------- stats windows
# (the counts at these boundaries are tested on the real index: tests/queue/test_store.py)
BERLIN = ZoneInfo("Europe/Berlin")


def test_today_ends_at_next_local_midnight():
    window = stats_window(datetime(2026, 11, 24, 23, 30, tzinfo=UTC), "Europe/Berlin")
    assert window.today_starts_at == datetime(2026, 11, 25, tzinfo=BERLIN)
    assert window.today_ends_at == datetime(2026, 11, 26, tzinfo=BERLIN)


def test_ms_scores_are_exact():
    at = datetime(2026, 11, 25, 14, 30, 0, 123456, tzinfo=UTC)
    assert to_ms(at) == 1795617000123
    assert domain.from_ms(to_ms(at)) == at.replace(microsecond=123000)
