"""When the dashboard looks for handoffs it could not hear about (static/js/missed.js,
MissedHandoffs), in Chromium: never on a chatbot's first subscription, after every
re-subscription, after a seq gap or a new epoch, looking back a minute before the last
instant heard live but never before the page's first subscription."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

SCRIPT = """async (steps) => {
  const { MissedHandoffs } = await import('/static/js/missed.js');
  const missed = new MissedHandoffs();
  const at = (s) => new Date(Date.UTC(2026, 10, 25, 12, 0, s)).toISOString();
  const seconds = (ms) => ms === null ? null : (ms - Date.UTC(2026, 10, 25, 12, 0, 0)) / 1000;
  const out = [];
  for (const [op, bot, epoch, seq, s] of steps) {
    if (op === 'subscribed') out.push(seconds(missed.subscribed({ type: op, chatbot_id: bot, epoch, seq, at: at(s) })));
    else out.push(seconds(missed.update({ type: op, chatbot_id: bot, epoch, seq,
                                          update: s === null ? {} : { stats: { computed_at: at(s) } } })));
  }
  return out;
}"""


async def test_the_first_subscription_and_updates_in_order_look_for_nothing(module_page):
    out = await module_page.evaluate(SCRIPT, [
        ["subscribed", "a", "e1", 5, 10],
        ["update", "a", "e1", 6, 20], ["update", "a", "e1", 7, None], ["update", "a", "e1", 7, 30],
        ["update", "b", "e1", 9, 30],  # a chatbot not subscribed to yet
    ])
    assert out == [None, None, None, None, None]


async def test_a_reconnect_looks_back_a_minute_before_the_last_instant_heard(module_page):
    out = await module_page.evaluate(SCRIPT, [
        ["subscribed", "a", "e1", 5, 0],
        ["subscribed", "a", "e1", 5, 30],  # a quick reconnect: never before the first subscription
        ["update", "a", "e1", 6, 200],
        ["update", "a", "e1", 7, 150],  # computed earlier than what was heard: no step back
        ["subscribed", "a", "e1", 9, 400],  # from 200 s, minus a minute
        ["subscribed", "b", "e1", 1, 400],  # another chatbot: its own first subscription
    ])
    assert out == [None, 0, None, None, 140, None]


async def test_a_gap_or_a_new_epoch_looks_back(module_page):
    out = await module_page.evaluate(SCRIPT, [
        ["subscribed", "a", "e1", 5, 0],
        ["update", "a", "e1", 6, 100],
        ["update", "a", "e1", 8, 190],  # 7 was lost: from 100 s, minus a minute
        ["update", "a", "e1", 9, 200],
        ["update", "a", "e1", 8, 205],  # an old one again: not a gap
        ["update", "a", "e2", 1, 300],  # the index was rebuilt: updates may be lost
        ["update", "a", "e2", 2, 310],
    ])
    assert out == [None, None, 40, None, None, 145, None]
