"""WhatsApp's 24-hour window: the one definition the queue and channels use."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.channels.domain import whatsapp_window
from services.queue import domain as queue_domain
from shared import reply_window as rw

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_the_fact_is_the_platforms_stamp_else_when_received_never_the_future():
    stamped = NOW - timedelta(hours=25)
    assert rw.inbound_at(stamped, NOW) == stamped  # not when we received it
    assert rw.inbound_at(None, NOW) == NOW
    assert rw.inbound_at(NOW + timedelta(hours=3), NOW) == NOW


def test_a_late_delivered_older_message_never_moves_the_window_back():
    recent = NOW - timedelta(hours=1)
    assert rw.latest(None, recent) == recent
    assert rw.latest(recent, NOW - timedelta(hours=25)) == recent
    assert rw.latest(recent, NOW) == NOW


def test_open_until_24_hours_after_the_last_message():
    assert rw.window_ends_at(None) is None and not rw.is_open(None, NOW)
    last = NOW - timedelta(hours=23, minutes=22)
    assert rw.window_ends_at(last) == NOW + timedelta(minutes=38)
    assert rw.is_open(last, NOW)
    assert not rw.is_open(NOW - timedelta(hours=24), NOW)  # the end itself is closed
    assert not rw.is_open(NOW - timedelta(hours=25), NOW)


def test_only_whatsapp_has_a_window():
    assert rw.ends_at_for("whatsapp", NOW) == NOW + rw.WINDOW
    assert rw.ends_at_for("web", NOW) is None and rw.ends_at_for("telegram", NOW) is None


def test_queue_and_channels_agree_at_every_edge():
    """The queue (view, reply check) and channels (delivery) give the same answer."""
    for age in (timedelta(0), timedelta(hours=23, minutes=59, seconds=59), timedelta(hours=24),
                timedelta(hours=25), None):
        last = None if age is None else NOW - age
        channels = whatsapp_window(last, NOW)
        ends = queue_domain.reply_window_ends_at("whatsapp", last)
        assert channels.ends_at == ends
        try:
            queue_domain.check_reply("handed_off", "hi", "whatsapp", last, NOW)
            queue_open = True
        except queue_domain.CommandRefused:
            queue_open = False
        assert channels.open is queue_open is rw.is_open(last, NOW), age
