"""A chatbot has one timezone, set in Tools → Human Handoff (its save carries it): the
schedule, Today and Resolved this week all count in it. A fixed clock just after midnight in
the farthest zone (Pacific/Kiritimati, UTC+14), where the UTC date is still the day before."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.queue.domain import stats_window
from shared.chatbots import ChatbotSettings, HumanHandoffSettings
from shared.events import AgentRef, HumanHandoffUpdate
from shared.formatting import local_midnight
from shared.topics import AGENT_COMMANDS, CHATBOT_SETTINGS
from tests.queue.support import command, conv_id, seed

KIRITIMATI = "Pacific/Kiritimati"


def test_the_week_and_the_day_start_at_local_midnights_in_a_far_zone():
    # 10:30 UTC on Dec 2 is 00:30 on Thursday Dec 3 in Kiritimati.
    now = datetime(2026, 12, 2, 10, 30, tzinfo=UTC)
    window = stats_window(now, KIRITIMATI)
    assert window.today_starts_at == datetime(2026, 12, 2, 10, 0, tzinfo=UTC)  # Dec 3, 00:00 there
    assert window.today_ends_at == datetime(2026, 12, 3, 10, 0, tzinfo=UTC)
    # The last 7 days there: Friday Nov 27 to Thursday Dec 3.
    assert window.week_starts_at == datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    # In UTC the same instant is still Dec 2: its days start 10 hours later than Kiritimati's.
    utc = stats_window(now, "UTC")
    assert (utc.today_starts_at, utc.week_starts_at) == (datetime(2026, 12, 2, tzinfo=UTC), datetime(2026, 11, 26, tzinfo=UTC))


def test_a_week_across_a_dst_change_starts_at_local_midnight():
    # Europe/Berlin leaves summer time on Oct 25, 2026: the 7 days are 169 hours long.
    now = datetime(2026, 10, 28, 12, tzinfo=UTC)
    window = stats_window(now, "Europe/Berlin")
    assert window.week_starts_at == datetime(2026, 10, 21, 22, 0, tzinfo=UTC)  # Oct 22, 00:00 CEST
    assert window.today_starts_at == datetime(2026, 10, 27, 23, 0, tzinfo=UTC)  # Oct 28, 00:00 CET


def test_stored_settings_with_two_timezones_read_as_one():
    """Before the timezone was the chatbot's, a Tools save changed only the schedule's zone:
    that saved zone is the chatbot's; a chatbot zone set on purpose wins over the schedule's."""
    saved_from_tools = ChatbotSettings.model_validate({
        "chatbot_id": "b", "name": "B", "timezone": "UTC", "human_handoff": {"timezone": KIRITIMATI}})
    assert saved_from_tools.timezone == saved_from_tools.human_handoff.timezone == KIRITIMATI
    seeded = ChatbotSettings(chatbot_id="b", name="B", timezone="Europe/Berlin", human_handoff=HumanHandoffSettings())
    assert seeded.timezone == seeded.human_handoff.timezone == "Europe/Berlin"


@pytest.mark.parametrize("name", ["Mars/Base", "localtime", "Factory", "../../etc/passwd", "", "utc"])
def test_only_iana_zone_names_are_timezones(name):
    with pytest.raises(ValueError, match="Unknown timezone"):
        HumanHandoffSettings(timezone=name)
    with pytest.raises(ValueError, match="Unknown timezone"):
        ChatbotSettings(chatbot_id="b", name="B", timezone=name)


async def test_a_tools_save_sets_the_chatbots_timezone_for_today_and_resolved_this_week(queue):
    q = queue
    bot = await seed(q, "kiri")
    # The Tools form saves the Human Handoff part with the timezone field (schedule off).
    upd = HumanHandoffUpdate(chatbot_id="kiri", command_id="tz-00000001", based_on_version=bot.version,
                             human_handoff=HumanHandoffSettings(enabled=True, timezone=KIRITIMATI),
                             agent=AgentRef(agent_id="a1", display_name="Alice"))
    await q.send(AGENT_COMMANDS, upd)
    answered = await q.seen.result(upd.command_id)
    assert answered["status_code"] == 200
    assert answered["settings"]["timezone"] == KIRITIMATI
    stored = await q.queue.record.get_chatbot("kiri")
    assert stored.timezone == stored.human_handoff.timezone == KIRITIMATI
    await q.seen.wait_for(CHATBOT_SETTINGS, lambda r: r["chatbot_id"] == "kiri" and r["settings"]["timezone"] == KIRITIMATI)
    view = (await q.api("/internal/chatbots/kiri/settings")).json()
    assert view["timezone"] == view["human_handoff"]["timezone"] == KIRITIMATI

    # Yesterday's midnight there (a day back, so every instant below is in the past).
    midnight = local_midnight(datetime.now(UTC), KIRITIMATI) - timedelta(days=1)
    await q.hand_off("kiri", "late-evening", at=midnight - timedelta(minutes=10))
    await q.hand_off("kiri", "just-after", at=midnight + timedelta(minutes=10))
    await q.hand_off("kiri", "last-week", at=midnight - timedelta(days=7))
    await q.hand_off("kiri", "this-week", at=midnight - timedelta(days=6))
    clocks = (q.queue.feed, q.queue.commands)
    real = [part.clock for part in clocks]
    try:
        # Closed on the eighth day back there (6 days 23 hours before the clock below), and
        # on the seventh.
        for closed_at, visitor_id in ((midnight - timedelta(days=6, hours=1), "last-week"),
                                      (midnight - timedelta(days=5, hours=23), "this-week")):
            for part in clocks:
                part.clock = lambda at=closed_at: at
            close = command("kiri", conv_id("kiri", visitor_id), "close")
            await q.send(AGENT_COMMANDS, close)
            assert (await q.seen.result(close.command_id))["status_code"] == 200
        # 00:30 there: the UTC date is still the day before.
        q.queue.feed.clock = lambda: midnight + timedelta(minutes=30)
        stats = (await q.api("/internal/chatbots/kiri/stats")).json()
    finally:
        for part, clock in zip(clocks, real, strict=True):
            part.clock = clock
    # One UTC day (a UTC "Today" would count both).
    assert (midnight - timedelta(minutes=10)).astimezone(UTC).date() == (midnight + timedelta(minutes=10)).astimezone(UTC).date()
    assert stats["open"] == 2
    assert stats["today"] == 1
    assert stats["resolved_this_week"] == 1
    assert datetime.fromisoformat(stats["today_ends_at"]) == midnight + timedelta(days=1)
