"""The handoff domain, pure: every transition from every state (the rules, and the fields
the conversation aggregate's transitions change), reply rules, deterministic ids, stats
boundaries with an injected clock (midnight in the chatbot's zone, the exact 7-day edge)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from services.queue import domain
from services.queue.ai import turn_id_for
from services.queue.conversation import SEEN_AFTER_CLOSE, Conversation, transcript_of
from services.queue.domain import (
    REPLY_NOT_ALLOWED,
    WHATSAPP_WINDOW_CLOSED,
    CommandRefused,
    TransitionRefused,
    plan_transition,
    stats_window,
    to_ms,
)
from services.queue.incoming import handoff_id_for, visitor_message_id
from shared.events import VisitorIdentity
from shared.views import Contact

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


# ---------------------------------------------------------------- the aggregate's transitions
WAITING_SINCE = NOW - timedelta(minutes=20)


def _conversation(status: str, **fields) -> Conversation:  # noqa: ANN003
    return Conversation.model_validate({
        "_id": "c1", "chatbot_id": "b", "channel": "web", "visitor_id": "v1", "created_at": NOW - timedelta(hours=1),
        "status": status, "version": 3, "handoff_id": "h0", "waiting_since": WAITING_SINCE,
        "pending_message_id": "m-waiting", "contact_wanted": ["email"], **fields})


def test_a_new_conversation_is_with_the_ai_at_version_0():
    fields = Conversation.new_fields("b", "web", VisitorIdentity(external_id="v1"), NOW)
    conv = Conversation.model_validate({"_id": "c1", **fields})
    assert (conv.status, conv.version, conv.with_ai, conv.pending_message_id) == ("active", 0, True, None)
    assert conv.hand_off("h1", "Refund", NOW, []).fields["version"] == 1  # a brand-new one can be handed off


@pytest.mark.parametrize("state", STATES)
def test_hand_off_from_every_state(state):
    """The AI's tool or the visitor hands off an active conversation; one already handed off
    or closed stays as it is (only an agent reopens a closed one)."""
    conv = _conversation(state, pending_message_id=None, contact_wanted=[])
    if state != "active":
        with pytest.raises(TransitionRefused):
            conv.hand_off("h1", "Refund", NOW, ["email"])
        return
    change = conv.hand_off("h1", "Refund", NOW, ["email", "name"])
    assert (change.action, change.previous, change.expected_version, change.guard) == ("handoff", "active", 3, {})
    assert change.fields == {
        "status": "handed_off", "version": 4, "previous_status": "active", "handoff_id": "h1", "reason": "Refund",
        "waiting_since": NOW, "updated_at": NOW, "closed_at": None, "pending_message_id": None,
        "contact_wanted": ["email", "name"], "first_reply_at": None,
        # The wait clock starts (waitclock.py); no loop (history.py) unless the caller found one.
        "wait_started_at": NOW, "nudges": 0, "last_agent_reply_at": None, "loop": 0,
        "summary": {"handoff_id": "h1", "status": "pending", "text": None, "mode": None},
    }


STOPPED = {"wait_started_at": None, "nudges": 0}  # nobody waits for the team (waitclock.py)


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("action", ("close", "reopen", "return_to_ai"))
def test_agent_transition_from_every_state(state, action):
    conv = _conversation(state)
    if (state, action) not in VALID:
        with pytest.raises(TransitionRefused):
            conv.agent_transition(action, NOW, "cmd-1")
        return
    change = conv.agent_transition(action, NOW, "cmd-1")
    assert (change.action, change.previous, change.expected_version) == (action, state, 3)
    common = {"status": VALID[(state, action)], "version": 4, "previous_status": state, "updated_at": NOW,
              "last_command_id": "cmd-1"}
    expected, guard = {
        # Close ends the wait and drops what the visitor was waiting on.
        # Close and Reopen also clear what the visitor wrote while closed (seen by the team).
        "close": ({"closed_at": NOW, "pending_message_id": None, **SEEN_AFTER_CLOSE, **STOPPED}, {}),
        # Reopen starts a new waiting period (its first reply is measured again).
        "reopen": ({"waiting_since": NOW, "closed_at": None, "first_reply_at": None, **SEEN_AFTER_CLOSE,
                    "wait_started_at": NOW, "nudges": 0, "last_agent_reply_at": None}, {}),
        # Return to AI hands the unanswered message to the AI, only if no newer one came in.
        "return_to_ai": ({"waiting_since": None, "pending_message_id": None, "contact_wanted": [],
                          "returned_message_id": "m-waiting", **STOPPED, "loop": 0},
                         {"pending_message_id": "m-waiting"}),
    }[action]
    assert change.fields == {**common, **expected}
    assert change.guard == guard


def test_row_and_view_name_the_visitor_by_contact_first():
    conv = _conversation("handed_off", visitor_name="annie_tg", contact=Contact(name="Ann"), message_count=4,
                         reason="Refund")
    row = conv.row()
    assert (row.conversation_id, row.display_name, row.waiting_since, row.reason, row.message_count) == (
        "c1", "Ann", WAITING_SINCE, "Refund", 4)
    assert conv.view().display_name == "Ann" and conv.view().updated_at == conv.created_at
    assert _conversation("active", visitor_name="annie_tg").name == "annie_tg"
    with pytest.raises(AssertionError):  # only a conversation waiting for the team has a row
        _conversation("active", waiting_since=None).row()


def test_transcript_leaves_out_answers_that_were_not_sent():
    docs = [{"sender": "visitor", "text": "hi", "created_at": NOW},
            {"sender": "ai", "text": "late answer", "created_at": NOW, "delivery": "not_sent"},
            {"sender": "agent", "text": "Hello, Ann here", "created_at": NOW, "sender_name": "Ann", "delivery": "sent"}]
    assert [(line.sender, line.text, line.sender_name) for line in transcript_of(docs)] == [
        ("visitor", "hi", None), ("agent", "Hello, Ann here", "Ann")]


def test_exact_texts():
    assert REPLY_NOT_ALLOWED == "Can only reply to handed-off conversations."
    assert WHATSAPP_WINDOW_CLOSED == "The WhatsApp 24-hour window has closed: the visitor has to write first."


def test_reply_window_only_on_whatsapp():
    assert domain.reply_window_ends_at("whatsapp", NOW) == NOW + timedelta(hours=24)
    assert domain.reply_window_ends_at("web", NOW) is None


def test_agent_message_id_is_deterministic_per_command():
    assert domain.agent_message_id("cmd-00000001") == domain.agent_message_id("cmd-00000001")
    assert domain.agent_message_id("cmd-00000001") != domain.agent_message_id("cmd-00000002")


def test_ids_derived_from_the_input_are_deterministic():
    """A replayed input yields the same message, turn and handoff ids (consumers drop the repeat)."""
    m = visitor_message_id("cv_1", "tg-42")
    assert m == visitor_message_id("cv_1", "tg-42") != visitor_message_id("cv_1", "tg-43")
    assert m != visitor_message_id("cv_2", "tg-42")
    assert turn_id_for(m) == turn_id_for(m) != turn_id_for(visitor_message_id("cv_1", "tg-43"))
    assert handoff_id_for("t_1") == handoff_id_for("t_1") != handoff_id_for("t_2")


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


def test_a_delivery_report_moves_a_message_only_forward():
    from services.queue.domain import states_moved_by
    assert states_moved_by("sent") == [None, "pending"]
    assert states_moved_by("delivered") == [None, "pending", "sent", "failed"]
    assert states_moved_by("read") == [None, "pending", "sent", "delivered", "failed"]
    assert states_moved_by("failed") == [None, "pending", "sent"]  # never over a delivered or read one
