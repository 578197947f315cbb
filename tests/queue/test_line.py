"""The visitor's place in line: the rules (position, expected wait, words, "a lot") and the
line as computed from a fixed history on the real Mongo-wire server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.queue.chatbots import ChatbotCatalog
from services.queue.line import (
    LineRecord,
    VisitorLine,
    WaitSample,
    changed_a_lot,
    expected_wait_s,
    seconds_per_place,
)
from services.queue.settings import QueueSettings
from services.queue.store import QueueRecord
from shared.chatbots import ChatbotSettings, HumanHandoffSettings, wait_words
from shared.stores import open_mongo

NOW = datetime(2026, 12, 2, 14, 0, tzinfo=UTC)  # a Wednesday


# ---------------------------------------------------------------------- the rules
def test_time_per_place_is_the_median_of_waits_divided_by_the_entry_position():
    samples = [WaitSample(60, 1), WaitSample(240, 3), WaitSample(100, 1), WaitSample(400, 2), WaitSample(90, 1)]
    # 60, 80, 100, 200, 90 seconds per place -> median 90
    assert seconds_per_place(samples, min_samples=5) == 90
    assert expected_wait_s(3, 90) == 270
    # Fewer samples than the threshold: nothing is known, no wait is made up.
    assert seconds_per_place(samples[:4], min_samples=5) is None
    assert expected_wait_s(3, None) is None


def test_wait_words():
    assert [wait_words(s) for s in (0, 59, 60, 89, 90, 240, 3569, 3600, 5300, 9000)] == [
        "less than a minute", "less than a minute", "about 1 minute", "about 1 minute", "about 2 minutes",
        "about 4 minutes", "about 59 minutes", "about 1 hour", "about 1 hour", "about 2 hours"]


def test_line_text_defaults_and_the_position_only_variant():
    hh = HumanHandoffSettings()
    assert hh.line_text(3, 240) == "You're number 3 in line. Expected wait: about 4 minutes."
    assert hh.line_text(3, None) == "You're number 3 in line."
    custom = HumanHandoffSettings(line_message="Place {position}, about {wait} left",
                                  line_message_no_estimate="Place {position}")
    assert custom.line_text(2, 30) == "Place 2, about less than a minute left"
    assert custom.line_text(2, None) == "Place 2"


@pytest.mark.parametrize(("field", "text", "says"), [
    ("line_message", "Wait {minutes}", "must contain {position}"),
    ("line_message", "No place at all", "must contain {position}"),
    ("line_message", "Number {position", "unmatched"),
    ("line_message", "{position:>999999999}", "without a format"),
    ("line_message_no_estimate", "Number {position}, {wait}", "without an estimate must contain {position}"),
    ("line_message", "", "at least 1 character"),
])
def test_line_texts_are_validated(field, text, says):
    with pytest.raises(ValidationError) as err:
        HumanHandoffSettings(**{field: text})
    assert says in str(err.value)


def test_a_lot_is_half_of_what_was_told_and_at_least_five_minutes():
    assert not changed_a_lot(120, 240)  # doubled, but two minutes
    assert changed_a_lot(600, 900)  # +5 min, +50 %
    assert not changed_a_lot(1800, 2400)  # +10 min, but a third
    assert changed_a_lot(1800, 600)  # shorter by 20 minutes


# ---------------------------------------------------------------------- a fixed history
class Captured:
    def __init__(self) -> None:
        self.events: list = []

    async def publish(self, event) -> None:
        self.events.append(event)


def _conv(cid: str, channel: str, since: datetime, *, first_reply_at: datetime | None = None,
          status: str = "handed_off", entry: int | None = None, told: dict | None = None,
          last_visitor: datetime | None = None) -> dict:
    doc = {"_id": cid, "chatbot_id": "lined", "channel": channel, "visitor_id": f"v-{cid}", "status": status,
           "version": 1, "created_at": since, "waiting_since": since, "first_reply_at": first_reply_at,
           "last_visitor_message_at": last_visitor or since}
    if entry is not None:
        doc["line_entry"] = {"since": since, "position": entry}
    if told is not None:
        doc["line_told"] = {"since": since, **told}
    return doc


@pytest.fixture
async def line_of(infra):
    """A VisitorLine on its own database, with a fixed clock and captured publishers."""
    tag = uuid.uuid4().hex[:8]
    settings = QueueSettings(mongodb_uri=infra.mongodb_uri, mongodb_db=f"t{tag}_line")
    client, db = open_mongo(settings)
    record = QueueRecord(db)
    chatbots = ChatbotCatalog(record, Captured())  # type: ignore[arg-type]
    made = []

    async def make(docs: list[dict], *, min_samples: int = 5, hh: HumanHandoffSettings | None = None,
                   interval_s: float = 0):
        await chatbots.save(ChatbotSettings(chatbot_id="lined", name="Lined", human_handoff=hh or HumanHandoffSettings()))
        if docs:
            await db["conversations"].insert_many(docs)
        lines, outbound = Captured(), Captured()
        line = VisitorLine(LineRecord(db["conversations"]), chatbots, lines, outbound,  # type: ignore[arg-type]
                           history_hours=4, min_samples=min_samples, interval_s=interval_s, max_places=1000, clock=lambda: NOW)
        made.append(line)
        return line, lines, outbound

    yield make
    for line in made:
        await line.close()
    await client.drop_database(settings.mongodb_db)
    await client.close()


def _history() -> list[dict]:
    """Seven first replies in the last four hours, one of them of a conversation still open and
    answered (per place: 60, 80, 90, 100, 120, 40, 60 s -> median 80), and one older (ignored)."""
    t = NOW - timedelta(hours=3)
    waits = [(60, 1), (160, 2), (90, 1), (300, 3), (120, 1), (40, None)]
    docs = [_conv(f"h{n}", "web", t + timedelta(minutes=n), first_reply_at=t + timedelta(minutes=n, seconds=w),
                  status="closed", entry=pos) for n, (w, pos) in enumerate(waits)]
    old = NOW - timedelta(hours=5)
    docs.append(_conv("old", "web", old, first_reply_at=old + timedelta(minutes=30), status="closed"))
    talking = NOW - timedelta(minutes=30)  # handed off and answered: served, not in line
    docs.append(_conv("talking", "web", talking, first_reply_at=talking + timedelta(minutes=1)))
    return docs


async def test_positions_and_expected_waits_from_a_fixed_history(line_of):
    waiting = [_conv("w1", "web", NOW - timedelta(minutes=9)), _conv("w2", "telegram", NOW - timedelta(minutes=5)),
               _conv("w3", "web", NOW - timedelta(minutes=2))]
    line, lines, _ = await line_of(_history() + waiting)
    assert await line.per_place_s("lined", NOW) == 80
    event = await line.publish("lined")
    # Web visitors only (Telegram is told in messages), at their place among everyone waiting.
    assert [(p.visitor_id, p.position, p.text) for p in event.places] == [
        ("v-w1", 1, "You're number 1 in line. Expected wait: about 1 minute."),
        ("v-w3", 3, "You're number 3 in line. Expected wait: about 4 minutes.")]  # 3 x 80 s
    assert lines.events == [event]


async def test_too_little_history_says_the_position_only(line_of):
    line, _, _ = await line_of(_history() + [_conv("w1", "web", NOW - timedelta(minutes=9))], min_samples=8)
    event = await line.publish("lined")
    assert [p.text for p in event.places] == ["You're number 1 in line."]


async def test_outside_business_hours_the_offline_message_stands(line_of):
    hh = HumanHandoffSettings(schedule_enabled=True, start_time="09:00", end_time="12:00")
    line, _, _ = await line_of(_history() + [_conv("w1", "web", NOW - timedelta(minutes=9))], hh=hh)
    event = await line.publish("lined")
    assert [p.text for p in event.places] == [hh.offline_message]


async def test_line_text_off_publishes_an_empty_line(line_of):
    line, _, _ = await line_of([_conv("w1", "web", NOW)], hh=HumanHandoffSettings(line_enabled=False))
    assert (await line.publish("lined")).places == []


async def test_telegram_and_whatsapp_get_one_update_when_the_wait_changed_a_lot(line_of):
    told_short = {"wait_s": 60, "updated": False}
    docs = _history() + [
        _conv("tg", "telegram", NOW - timedelta(minutes=20), told=told_short),
        _conv("wa", "whatsapp", NOW - timedelta(minutes=19), told=told_short),
        # Its 24-hour window closed: never messaged.
        _conv("wa-late", "whatsapp", NOW - timedelta(minutes=18), told=told_short,
              last_visitor=NOW - timedelta(hours=25)),
        # Told about what it is now: nothing to say.
        _conv("tg-same", "telegram", NOW - timedelta(minutes=17), told={"wait_s": 800, "updated": False}),
    ]
    # Pushed back by six others handed off earlier and not answered.
    docs += [_conv(f"ahead{n}", "web", NOW - timedelta(hours=1, minutes=n)) for n in range(6)]
    line, _, outbound = await line_of(docs)
    await line.publish("lined")
    texts = {m.conversation_id: m.text for m in outbound.events}
    # tg is 7th: 7 x 80 s = about 9 minutes, told about 1 minute.
    assert texts == {"tg": "You're number 7 in line. Expected wait: about 9 minutes.",
                     "wa": "You're number 8 in line. Expected wait: about 11 minutes."}
    assert {m.sender for m in outbound.events} == {"system"}
    await line.publish("lined")  # at most one update per waiting period
    assert len(outbound.events) == 2


async def test_entered_records_the_position_and_tells_telegram(line_of):
    from services.queue.conversation import Conversation

    docs = _history() + [_conv("w1", "web", NOW - timedelta(minutes=9)), _conv("tg", "telegram", NOW)]
    line, _, _ = await line_of(docs)
    conv = Conversation.model_validate(docs[-1])
    assert await line.entered(conv) == "You're number 2 in line. Expected wait: about 3 minutes."  # 160 s
    stored = await line.record.conversations.find_one({"_id": "tg"})
    assert stored["line_entry"]["position"] == 2 and stored["line_told"]["wait_s"] == 160
    web = Conversation.model_validate(docs[-2])
    assert await line.entered(web) is None  # the widget shows it live
    await line.idle()



async def test_moves_are_coalesced_per_chatbot(line_of):
    line, lines, _ = await line_of([_conv("w1", "web", NOW)], interval_s=0.3)
    for _ in range(5):
        line.moved("lined")  # five moves in one instant: one line goes out, at once
    await line.idle()
    assert len(lines.events) == 1
    line.moved("lined")
    line.moved("lined")  # within the interval: held, then one more for both
    await line.idle()
    assert len(lines.events) == 2


async def test_a_line_on_show_is_published_again_by_the_refresh(line_of):
    line, lines, _ = await line_of([_conv("w1", "web", NOW)])
    await line.refresh()
    await line.idle()
    assert lines.events == []  # nothing published yet: nothing on show to refresh
    await line.publish("lined")
    await line.refresh()  # the estimate and business hours follow the clock between moves
    await line.idle()
    assert len(lines.events) == 2
    await line.record.conversations.update_one({"_id": "w1"}, {"$set": {"status": "closed"}})
    await line.publish("lined")  # the line emptied: no more refreshes
    await line.refresh()
    await line.idle()
    assert len(lines.events) == 3 and lines.events[-1].places == []
