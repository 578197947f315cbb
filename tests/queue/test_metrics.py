"""The queue's metrics on its /metrics: open handoffs per chatbot (from the Redis index at
scrape time) and the wait for an agent's first reply, once per waiting period."""

from __future__ import annotations

from services.queue.metrics import OPEN_HANDOFFS
from shared.ids import new_id
from shared.topics import AGENT_COMMANDS
from tests.metrics_support import scrape, value
from tests.queue.support import command, conv_id, seed

OPEN = "handoff_queue_open_handoffs"
FIRST_REPLY = "handoff_queue_first_reply_seconds_count"


async def test_open_handoffs_per_chatbot_and_the_wait_for_a_first_reply(queue):
    q = queue
    bot = "metrics-" + new_id()[:8]
    seen = q.seen.for_chatbot(bot)
    await seed(q, bot)

    async def act(visitor_id: str, action: str, text: str | None = None, channel: str = "web") -> dict:
        cmd = command(bot, conv_id(bot, visitor_id, channel), action, text)
        await q.send(AGENT_COMMANDS, cmd)
        result = await seen.result(cmd.command_id)
        assert result["ok"], result
        return result

    start = await scrape(q.url)
    assert value(start, OPEN, chatbot_id=bot) == 0
    await q.hand_off(bot, "m1")
    await q.hand_off(bot, "m2")
    await q.hand_off(bot, "m3", channel="telegram")
    assert value(await scrape(q.url), OPEN, chatbot_id=bot) == 3

    await act("m1", "reply", "Hello, I'm here.")
    await act("m1", "reply", "Still here.")  # not the first reply of this wait
    await act("m3", "reply", "Hi on Telegram.", channel="telegram")
    await act("m2", "close")
    after = await scrape(q.url)
    assert value(after, OPEN, chatbot_id=bot) == 2
    assert value(after, FIRST_REPLY, channel="web") - value(start, FIRST_REPLY, channel="web") == 1
    assert value(after, FIRST_REPLY, channel="telegram") - value(start, FIRST_REPLY, channel="telegram") == 1

    # A reopen starts a new wait: its first reply is measured again.
    await act("m1", "close")
    await act("m1", "reopen")
    await act("m1", "reply", "Back again.")
    last = await scrape(q.url)
    assert value(last, FIRST_REPLY, channel="web") - value(start, FIRST_REPLY, channel="web") == 2
    assert value(last, OPEN, chatbot_id=bot) == 2


async def test_the_gauge_is_read_from_the_index_at_scrape_time(queue):
    """Not a figure kept in memory: what the index holds when the scrape comes."""
    q = queue
    bot = "metrics-" + new_id()[:8]
    await seed(q, bot)
    await q.hand_off(bot, "w1")
    OPEN_HANDOFFS.labels(bot).set(42)  # stale
    assert value(await scrape(q.url), OPEN, chatbot_id=bot) == 1
