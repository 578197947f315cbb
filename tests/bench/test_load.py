"""The load driver's assumptions about the services (bench/load.py), checked without a stack:
the message ids it looks up are the ones the queue and intake derive, and its traffic asks
for a person exactly where it means to."""

from __future__ import annotations

from bench.load import (
    QueueCount,
    Send,
    Traffic,
    reply_id_for,
    visitor_id_for,
    visitor_message_id,
)
from services.channels.domain import visitor_message
from services.intake.domain import is_explicit_request, reply_message_id
from services.queue.incoming import visitor_message_id as queue_visitor_message_id
from shared.ids import conversation_id_for


def test_ids_are_the_services_ids() -> None:
    visitor = visitor_id_for("t", 1)
    event = visitor_message("demo", "web", visitor, None, "hello", "m_7")
    assert event.conversation_id == conversation_id_for("demo", "web", visitor)
    mid = queue_visitor_message_id(event.conversation_id, event.channel_message_id)
    assert visitor_message_id(event.conversation_id, "m_7") == mid
    assert reply_id_for(mid) == reply_message_id(mid, 0)


def test_track_derives_the_ids() -> None:
    counter = QueueCount("mongodb://127.0.0.1:1/?retryWrites=false&serverSelectionTimeoutMS=10")
    send = Send(visitor_id_for("t", 2), "m_1", "x")
    counter.track(send)
    assert send.conversation_id == conversation_id_for("demo", "web", send.visitor)
    assert send.message_id == visitor_message_id(send.conversation_id, "m_1")


def test_traffic_asks_for_a_person_only_where_planned() -> None:
    traffic = Traffic("t", visitors=10, handoffs=5)
    traffic.plan_handoffs(300)
    sends = [traffic.next() for _ in range(300)]
    asking = [s for s in sends if is_explicit_request(s.text)]
    assert len(asking) == 5 and all(s.text.startswith("I want to talk to a human") for s in asking)
    assert len({s.visitor for s in asking}) == 5  # one message each: every message gets one AI reply
    assert not {s.visitor for s in asking} & {s.visitor for s in sends if s not in asking}
    assert len({s.text for s in sends}) == 300
    assert all(s.visitor.startswith("v_") and len(s.visitor) == 18 for s in sends)
