"""The queue against the real broker, Redis and Mongo-wire server, served in-process:
events and commands go in over the bus (the test acts as channels, intake, the gateway and
the summarizer), results come out on the bus and the internal API.

One queue serves the whole module (starting one costs seconds of consumer-group joins);
each test works on its own chatbot and only looks at that chatbot's records."""

from __future__ import annotations

import asyncio

from services.queue.domain import REPLY_NOT_ALLOWED, agent_message_id
from shared.topics import (
    AGENT_COMMANDS,
    AI_TURNS,
    CONVERSATION_EVENTS,
    CONVERSATION_STATE,
    DASHBOARD_UPDATES,
    OUTBOUND_MESSAGES,
    VISITOR_MESSAGES,
)
from services.queue.incoming import handoff_id_for
from tests.queue.support import ai_outcome, command, conv_id, message_id_of, seed


class _SameBus:
    """A second queue instance's "bus": the running instance's publishers."""

    def __init__(self, queue) -> None:
        incoming = queue.incoming
        self.by_topic = {DASHBOARD_UPDATES.name: queue.feed.dashboard_out, CONVERSATION_STATE.name: incoming.state_out,
                         OUTBOUND_MESSAGES.name: incoming.outbound_out, AI_TURNS.name: incoming.ai.turns_out,
                         "chatbot.settings": queue.chatbots.settings_out, "visitor.line": queue.line.line_out}

    def publisher(self, topic):
        return self.by_topic[topic.name]


async def _applied(q, event_id: str) -> None:
    """Wait until the queue has handled `event_id` (sent by this test)."""
    await q.handled(event_id)


def _turns_of(q, message) -> list[dict]:
    return [r for r in q.seen.of(AI_TURNS) if r["message_id"] == message_id_of(message)]


def _is_update_for(cid: str):
    return lambda r: r.get("type") == "dashboard.update" and r.get("conversation_id") == cid


async def test_every_transition_over_the_bus(queue):
    q = queue
    BOT = "life"  # each test its own chatbot on the shared queue
    seen = q.seen.for_chatbot(BOT)
    await seed(q, BOT)
    cid = conv_id(BOT, "v-ann")
    hello = await q.visitor_says(BOT, "v-ann", "Hi, my order is late", name="Ann")
    turn = await q.turn_for(hello)
    # The turn carries what the model needs: the message, the transcript so far, the AI profile.
    assert (turn["text"], turn["version"], turn["conversation_id"]) == ("Hi, my order is late", 0, cid)
    assert [line["text"] for line in turn["transcript"]] == ["Hi, my order is late"]
    assert "channels" not in turn["profile"] and turn["profile"]["human_handoff"]["enabled"] is False
    await q.ai_answers(turn, "Let me check that for you.")
    answer = (await seen.wait_for(OUTBOUND_MESSAGES, lambda r: r["sender"] == "ai"))[0]
    assert answer["text"] == "Let me check that for you." and answer["conversation_id"] == cid
    slow = await q.visitor_says(BOT, "v-ann", "Is it shipped?")
    slow_turn = await q.turn_for(slow)  # the model takes its time over this one
    refund = await q.visitor_says(BOT, "v-ann", "I want my money back")
    refund_turn = await q.turn_for(refund)
    assert [line["text"] for line in refund_turn["transcript"]] == [
        "Hi, my order is late", "Let me check that for you.", "Is it shipped?", "I want my money back"]
    await q.ai_answers(refund_turn, "I'm connecting you with a member of our team.", handoff="Topic is a refund")
    first_id = handoff_id_for(refund_turn["turn_id"])

    state = (await seen.wait_for(CONVERSATION_STATE, lambda r: r.get("transition") == "handoff"))[0]
    assert state["status"] == "handed_off" and state["previous_status"] == "active"
    assert state["handoff_id"] == first_id and state["reason"] == "Topic is a refund" and state["by"] == "ai"
    assert [line["text"] for line in state["transcript"]] == [
        "Hi, my order is late", "Let me check that for you.", "Is it shipped?", "I want my money back"]
    up = (await seen.wait_for(DASHBOARD_UPDATES, lambda r: _is_update_for(cid)(r) and r.get("row_upserted") is not None
                                and r["conversation"]["status"] == "handed_off"))[0]
    assert up["row_upserted"]["display_name"] == "Ann" and up["row_upserted"]["message_count"] == 4
    assert up["stats"]["open"] == 1 and up["stats"]["today"] == 1
    notice = (await seen.wait_for(OUTBOUND_MESSAGES, lambda r: r["text"].startswith("I'm connecting you")))[0]
    assert notice["sender"] == "ai" and notice["conversation_id"] == cid

    # While handed off the visitor's messages wait for the team: no AI turn.
    waiting = await q.visitor_says(BOT, "v-ann", "Hello? Anyone?")
    await seen.wait_for(DASHBOARD_UPDATES, lambda r: (r.get("message") or {}).get("text") == "Hello? Anyone?")
    # The slow answer arrives after the handoff: recorded for the team, never sent.
    shipped = await q.ai_answers(slow_turn, "It shipped yesterday.")
    shown_late = (await seen.wait_for(DASHBOARD_UPDATES, lambda r: (r.get("message") or {}).get("text")
                                      == "It shipped yesterday."))[0]
    assert shown_late["message"]["delivery"] == "not_sent"
    # A late outcome asking for a handoff again (asked at the old version) changes nothing.
    again = ai_outcome({**refund_turn, "turn_id": "t-again", "message_id": "m-again"}, "Connecting again",
                       handoff="again")
    await q.send(CONVERSATION_EVENTS, again)
    await _applied(q, again.event_id)
    conv = await q.queue.record.get_conversation(cid)
    assert (conv.status, conv.handoff_id, conv.reason) == ("handed_off", first_id, "Topic is a refund")
    assert conv.pending_message_id == message_id_of(waiting)
    assert await q.queue.record.handoffs.count_documents({"conversation_id": cid}) == 1
    assert _turns_of(q, waiting) == []

    # Reply: stored, sent once, shown.
    reply = command(BOT, cid, "reply", "  We are on it.  ", agent="alice")
    await q.send(AGENT_COMMANDS, reply)
    result = await seen.result(reply.command_id)
    assert result["ok"] and result["status_code"] == 200 and result["conversation"]["message_count"] == 9
    for late in (shipped, again):  # recorded, not sent
        assert (await q.queue.record.get_message(late.replies[0].message_id))["delivery"] == "not_sent"
        assert [r for r in seen.of(OUTBOUND_MESSAGES) if r["message_id"] == late.replies[0].message_id] == []
    out = await seen.wait_for(OUTBOUND_MESSAGES, lambda r: r["message_id"] == agent_message_id(reply.command_id))
    assert out[0]["text"] == "We are on it." and out[0]["sender"] == "agent" and out[0]["sender_name"] == "Alice"
    shown = await seen.wait_for(DASHBOARD_UPDATES, lambda r: (r.get("message") or {}).get("sender") == "agent")
    assert shown[0]["message"]["delivery"] == "pending" and shown[0]["message"]["sender_name"] == "Alice"

    async def act(action: str, text: str | None = None, agent: str = "alice") -> dict:
        cmd = command(BOT, cid, action, text, agent=agent)
        await q.send(AGENT_COMMANDS, cmd)
        return await seen.result(cmd.command_id)

    refused = await act("reopen")
    assert (refused["status_code"], refused["ok"]) == (409, False)
    assert refused["error"] == "Cannot reopen a conversation that is handed off."
    assert (await act("return_to_ai"))["conversation"]["status"] == "active"
    assert (await act("close"))["status_code"] == 409
    not_allowed = await act("reply", "hello?")
    assert (not_allowed["status_code"], not_allowed["error"]) == (409, REPLY_NOT_ALLOWED)
    empty = await act("reply", "   ")
    assert empty["status_code"] == 422

    second_id = await q.hand_off(BOT, "v-ann", "User asked for a person")
    await seen.wait_for(CONVERSATION_STATE, lambda r: r["handoff_id"] == second_id)
    closed = await act("close", agent="bob")
    assert closed["ok"] and closed["conversation"]["status"] == "closed"

    # The visitor writes to the closed conversation: stored and shown, it stays closed, and
    # neither the AI nor anyone is asked.
    one_more = await q.visitor_says(BOT, "v-ann", "Thanks! One more thing")
    late = await seen.wait_for(DASHBOARD_UPDATES, lambda r: (r.get("message") or {}).get("text") == "Thanks! One more thing")
    assert late[0]["conversation"]["status"] == "closed"
    assert late[0]["stats"]["open"] == 0 and late[0]["stats"]["resolved_this_week"] == 1
    assert _turns_of(q, one_more) == []
    # A late handoff outcome on a closed conversation is refused: it stays closed.
    third = ai_outcome({**refund_turn, "turn_id": "t-third", "message_id": "m-third"}, "third", handoff="third")
    await q.send(CONVERSATION_EVENTS, third)
    await _applied(q, third.event_id)
    assert (await q.queue.record.get_conversation(cid)).status == "closed"
    assert await q.queue.record.handoffs.count_documents({"conversation_id": cid}) == 2

    reopened = await act("reopen", agent="bob")
    assert reopened["ok"] and reopened["conversation"]["status"] == "handed_off"
    assert reopened["conversation"]["handoff_id"] == second_id
    assert reopened["conversation"]["waiting_since"] > closed["conversation"]["updated_at"][:19]

    # (conversation.state also carries the messages of handed-off conversations, for the summarizer)
    transitions = [r["transition"] for r in seen.of(CONVERSATION_STATE) if "transition" in r]
    assert transitions == ["handoff", "return_to_ai", "handoff", "close", "reopen"]
    # Every update of this chatbot numbered one by one within the epoch.
    updates = seen.updates(BOT)
    assert [u["seq"] for u in updates] == list(range(1, len(updates) + 1))
    assert len({u["epoch"] for u in updates}) == 1
    final = updates[-1]["stats"]
    assert (final["open"], final["resolved_this_week"]) == (1, 0)  # reopened: no longer resolved

    # History in Mongo, with who and when.
    record = q.queue.record
    h1, h2 = await record.get_handoff(first_id), await record.get_handoff(second_id)
    assert [e["transition"] for e in h1["history"]] == ["handoff", "return_to_ai"]
    assert h1["status"] == "returned_to_ai" and h1["reason"] == "Topic is a refund"
    assert [(e["transition"], e["by"]) for e in h2["history"]] == [
        ("handoff", "ai"), ("close", "agent:bob"), ("reopen", "agent:bob")]
    assert h2["closed_at"] is None and h2["status"] == "open"
    conv = await record.get_conversation(cid)
    # hello, answer, slow, refund, notice, waiting, shipped and "Connecting again" (not sent),
    # reply, "I need a person", notice, one more, "third" (not sent)
    assert conv.status == "handed_off" and conv.message_count == 13


async def test_commands_are_idempotent_and_exact_under_concurrency(queue):
    q = queue
    BOT = "cmds"  # each test its own chatbot on the shared queue
    seen = q.seen.for_chatbot(BOT)
    await seed(q, BOT)
    cid = conv_id(BOT, "v-bo")
    h = await q.hand_off(BOT, "v-bo", text="Need help")
    await seen.wait_for(CONVERSATION_STATE, lambda r: r["handoff_id"] == h)

    # The same command id twice: applied and sent once, answered twice alike.
    reply = command(BOT, cid, "reply", "Hello from us", agent="alice")
    await q.send(AGENT_COMMANDS, reply)
    await q.send(AGENT_COMMANDS, reply.model_copy(update={"event_id": "retry-" + reply.event_id}))
    results = await seen.wait_for(DASHBOARD_UPDATES, lambda r: r.get("command_id") == reply.command_id, count=2)
    assert [r["status_code"] for r in results] == [200, 200]
    assert results[0] == results[1]
    await asyncio.sleep(0.5)  # give a wrongly applied duplicate the time to show up
    sent = [r for r in seen.of(OUTBOUND_MESSAGES) if r["message_id"] == agent_message_id(reply.command_id)]
    assert len(sent) == 1
    assert await q.queue.record.messages.count_documents({"conversation_id": cid, "sender": "agent"}) == 1
    assert (await q.queue.record.get_conversation(cid)).message_count == 3

    # Two agents close at once: exactly one wins, the other gets 409.
    close_a, close_b = command(BOT, cid, "close", agent="alice"), command(BOT, cid, "close", agent="bob")
    await asyncio.gather(q.send(AGENT_COMMANDS, close_a), q.send(AGENT_COMMANDS, close_b))
    ra, rb = await seen.result(close_a.command_id), await seen.result(close_b.command_id)
    assert sorted([ra["status_code"], rb["status_code"]]) == [200, 409]
    handoff_doc = await q.queue.record.get_handoff(h)
    assert [e["transition"] for e in handoff_doc["history"]].count("close") == 1

    # Two queue instances racing on one conversation (a rebalance overlap): the
    # compare-and-set on the version in Mongo lets exactly one reopen through.
    from services.queue.parts import build_queue

    twin = build_queue(q.settings, _SameBus(q.queue), q.queue.record, q.queue.feed.index)  # type: ignore[arg-type]
    await twin.chatbots.load()
    ro_a, ro_b = command(BOT, cid, "reopen", agent="alice"), command(BOT, cid, "reopen", agent="bob")
    await asyncio.gather(q.queue.commands.on_agent_command(ro_a), twin.commands.on_agent_command(ro_b))
    codes = sorted([(await seen.result(ro_a.command_id))["status_code"],
                    (await seen.result(ro_b.command_id))["status_code"]])
    assert codes == [200, 409]
    handoff_doc = await q.queue.record.get_handoff(h)
    assert [e["transition"] for e in handoff_doc["history"]] == ["handoff", "close", "reopen"]

    # Unknown conversation, and another chatbot's conversation: 404.
    ghost = command(BOT, "cv_nope", "close")
    await q.send(AGENT_COMMANDS, ghost)
    assert (await seen.result(ghost.command_id))["status_code"] == 404
    foreign = command("other-bot", cid, "close")
    await q.send(AGENT_COMMANDS, foreign)
    assert (await q.seen.result(foreign.command_id))["status_code"] == 404


async def test_whatsapp_window_settings_summary_and_delivery(queue):
    from datetime import timedelta

    from shared.chatbots import HumanHandoffSettings
    from shared.events import AgentRef, DeliveryStatusChanged, HandoffSummaryReady, HumanHandoffUpdate
    from shared.ids import utcnow
    from shared.topics import CHATBOT_SETTINGS, DELIVERY_STATUS, HANDOFF_SUMMARIES

    q = queue
    BOT = "wa"  # each test its own chatbot on the shared queue
    seen = q.seen.for_chatbot(BOT)
    bot = await seed(q, BOT)
    old = utcnow() - timedelta(hours=25)
    wa = conv_id(BOT, "31611111111", "whatsapp")
    h = await q.hand_off(BOT, "31611111111", text="hello?", channel="whatsapp", at=old)
    await seen.wait_for(CONVERSATION_STATE, lambda r: r["handoff_id"] == h)
    late = command(BOT, wa, "reply", "Sorry for the wait")
    await q.send(AGENT_COMMANDS, late)
    res = await seen.result(late.command_id)
    assert res["status_code"] == 409
    assert res["error"] == "The WhatsApp 24-hour window has closed: the visitor has to write first."
    assert res["conversation"]["reply_window_ends_at"].startswith((old + timedelta(hours=24)).isoformat()[:19])
    # The visitor writes again: the window is open, the reply goes out.
    await q.visitor_says(BOT, "31611111111", "still there?", channel="whatsapp")
    await seen.wait_for(DASHBOARD_UPDATES, lambda r: (r.get("message") or {}).get("text") == "still there?")
    ok = command(BOT, wa, "reply", "Yes!")
    await q.send(AGENT_COMMANDS, ok)
    assert (await seen.result(ok.command_id))["status_code"] == 200
    out = (await seen.wait_for(OUTBOUND_MESSAGES, lambda r: r["message_id"] == agent_message_id(ok.command_id)))[0]
    assert out["channel"] == "whatsapp" and out["visitor"]["external_id"] == "31611111111"

    # Delivery status lands on the message; a late "sent" after "delivered" does not regress it
    # (and, changing nothing, publishes nothing); "sent" alone is recorded, not streamed.
    mid = out["message_id"]
    statuses = [DeliveryStatusChanged(chatbot_id=BOT, conversation_id=wa, message_id=mid, status=status)
                for status in ("sent", "delivered", "sent")]
    for status in statuses:
        await q.send(DELIVERY_STATUS, status)
    await q.handled(statuses[-1].event_id)
    assert (await q.queue.record.get_message(mid))["delivery"] == "delivered"
    await seen.wait_for(DASHBOARD_UPDATES, lambda r: (r.get("message") or {}).get("delivery") == "delivered")
    await asyncio.sleep(0.3)  # an update for the last "sent" was acknowledged before its commit: here by now
    shown = [r["message"]["delivery"] for r in seen.of(DASHBOARD_UPDATES)
             if (r.get("message") or {}).get("message_id") == mid]
    assert shown == ["pending", "delivered"]
    await q.send(DELIVERY_STATUS, DeliveryStatusChanged(chatbot_id=BOT, conversation_id=wa, message_id="nope", status="sent"))

    # The summary lands on the handoff and the conversation header.
    await q.send(HANDOFF_SUMMARIES, HandoffSummaryReady(chatbot_id=BOT, conversation_id=wa, handoff_id=h,
                                                        status="ready", text="Visitor waits for a refund.", mode="llm"))
    shown = (await seen.wait_for(DASHBOARD_UPDATES, lambda r: r.get("summary") is not None))[0]
    assert shown["summary"]["text"] == "Visitor waits for a refund."
    assert shown["conversation"]["summary"]["status"] == "ready"
    assert (await q.queue.record.get_handoff(h))["summary"]["mode"] == "llm"

    # Human Handoff settings: merged, published, announced; an unknown chatbot is refused.
    upd = HumanHandoffUpdate(chatbot_id=BOT, command_id="set-00000001", based_on_version=bot.version,
                             human_handoff=HumanHandoffSettings(enabled=True, timezone="Europe/Berlin"),
                             agent=AgentRef(agent_id="a1", display_name="Alice"))
    await q.send(AGENT_COMMANDS, upd)
    answered = await seen.result(upd.command_id)
    assert answered["status_code"] == 200 and answered["settings"]["version"] == bot.version + 1
    await seen.wait_for(CHATBOT_SETTINGS, lambda r: r["settings"]["human_handoff"]["timezone"] == "Europe/Berlin")
    await seen.wait_for(DASHBOARD_UPDATES, lambda r: r.get("settings_changed") is True)
    assert (await q.queue.record.get_chatbot(BOT)).human_handoff.enabled is True
    wrong = HumanHandoffUpdate(chatbot_id="other", command_id="set-00000002", based_on_version=0,
                               human_handoff=HumanHandoffSettings(), agent=AgentRef(agent_id="a1", display_name="Alice"))
    await q.send(AGENT_COMMANDS, wrong)
    assert (await q.seen.result(wrong.command_id))["status_code"] == 404
    assert (await q.queue.record.get_chatbot("other")) is None


async def _hand_off(q, bot: str, visitor_id: str, text: str, *, name: str | None = None, channel: str = "web") -> str:
    return await q.hand_off(bot, visitor_id, text=text, name=name, channel=channel)


async def test_a_chatbots_updates_reach_the_gateway_in_seq_order(queue):
    """Dashboard updates are keyed by chatbot, not by the conversation they also carry: one
    chatbot's sequence stays on one partition, so a gateway reads it in order and its
    dashboards do not take a reordering for a lost update (and resync for nothing)."""
    q = queue
    BOT = "order"  # each test its own chatbot on the shared queue
    seen = q.seen.for_chatbot(BOT)
    await seed(q, BOT)
    for i in range(6):  # conversations on different partitions of conversation.events
        await _hand_off(q, BOT, f"o{i}", f"hello {i}")
    await seen.wait_for(CONVERSATION_STATE, lambda r: r.get("transition") == "handoff", count=6)
    await seen.wait_for(DASHBOARD_UPDATES, lambda r: r.get("type") == "dashboard.update", count=18)
    updates = [(r, p) for r, p in seen.with_partitions(DASHBOARD_UPDATES) if r.get("type") == "dashboard.update"]
    assert len({r["conversation_id"] for r, _ in updates}) == 6 and len(updates) == 18
    assert len({p for _, p in updates}) == 1
    seqs = [r["seq"] for r, _ in updates]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


async def test_redis_wiped_mid_run_is_rebuilt_with_exact_counts(queue):
    q = queue
    BOT = "wipe"  # each test its own chatbot on the shared queue
    seen = q.seen.for_chatbot(BOT)
    await seed(q, BOT, timezone="Europe/Berlin")
    ids = [await _hand_off(q, BOT, f"v{i}", f"message {i}") for i in range(4)]
    await seen.wait_for(CONVERSATION_STATE, lambda r: r.get("transition") == "handoff", count=4)
    close = command(BOT, conv_id(BOT, "v0"), "close")
    await q.send(AGENT_COMMANDS, close)
    assert (await seen.result(close.command_id))["ok"]
    before = (await q.api(f"/internal/chatbots/{BOT}/snapshot")).json()
    assert (before["stats"]["open"], before["stats"]["resolved_this_week"], before["stats"]["today"]) == (3, 1, 3)

    # Wipe every index key of this chatbot.
    index = q.queue.feed.index
    keys = [k async for k in index.redis.scan_iter(match=index.key(BOT, "*"))]
    assert keys
    await index.redis.delete(*keys)

    # The next event finds the index gone, rebuilds it from Mongo and numbers anew.
    await q.visitor_says(BOT, "v1", "are you there?")
    up = (await seen.wait_for(DASHBOARD_UPDATES, lambda r: (r.get("message") or {}).get("text") == "are you there?"))[0]
    assert up["epoch"] != before["epoch"] and up["seq"] == 1
    assert (up["stats"]["open"], up["stats"]["resolved_this_week"], up["stats"]["today"]) == (3, 1, 3)
    assert up["row_upserted"]["message_count"] == 3
    after = (await q.api(f"/internal/chatbots/{BOT}/snapshot")).json()
    assert after["epoch"] == up["epoch"] and after["seq"] == 1
    assert [r["conversation_id"] for r in after["handoffs"]["items"]] == [conv_id(BOT, f"v{i}") for i in (1, 2, 3)]
    assert after["stats"]["oldest_waiting_since"] == after["handoffs"]["items"][0]["waiting_since"]
    assert after["stats"]["today_ends_at"].endswith("+01:00") or after["stats"]["today_ends_at"].endswith("Z") \
        or after["stats"]["today_ends_at"].endswith("+00:00")

    # A query alone also rebuilds (wiped again, no event this time).
    await index.redis.delete(*[k async for k in index.redis.scan_iter(match=index.key(BOT, "*"))])
    stats = (await q.api(f"/internal/chatbots/{BOT}/stats")).json()
    assert (stats["open"], stats["resolved_this_week"]) == (3, 1)
    assert len(ids) == 4

    # Startup check: an index that disagrees with Mongo is rebuilt under a new epoch.
    epoch = await index.epoch(BOT)
    await index.redis.zrem(index.key(BOT, "open"), conv_id(BOT, "v3"))
    assert BOT in await q.queue.feed.check_index()
    assert await index.epoch(BOT) != epoch
    assert (await q.api(f"/internal/chatbots/{BOT}/stats")).json()["open"] == 3
    assert BOT not in await q.queue.feed.check_index()


async def test_internal_api(queue):
    q = queue
    BOT = "api"  # each test its own chatbot on the shared queue
    seen = q.seen.for_chatbot(BOT)
    await seed(q, BOT)
    await seed(q, "api-other")
    for i in range(5):
        await _hand_off(q, BOT, f"h{i}", f"handoff visitor {i}")
    await q.visitor_says(BOT, "act", "just browsing the blue shoes", name="Carla")
    from shared.events import VisitorContactSubmitted
    from shared.views import Contact
    from tests.queue.support import visitor

    await q.send(VISITOR_MESSAGES, VisitorContactSubmitted(
        chatbot_id=BOT, conversation_id=conv_id(BOT, "h2"), channel="web", visitor=visitor("h2"),
        contact=Contact(name="Dana Doe", email="dana@example.com", phone="+49 170 1234567")))
    await q.visitor_says("api-other", "x", "other bot's visitor")
    await q.seen.wait_for(DASHBOARD_UPDATES, lambda r: r["chatbot_id"] == "api-other")
    await seen.wait_for(DASHBOARD_UPDATES, lambda r: (r.get("conversation") or {}).get("display_name") == "Dana Doe")
    # Partitions are consumed in no fixed order: wait until all five are handed off.
    await seen.wait_for(CONVERSATION_STATE, lambda r: r.get("transition") == "handoff", count=5)
    close = command(BOT, conv_id(BOT, "h4"), "close")
    await q.send(AGENT_COMMANDS, close)
    assert (await seen.result(close.command_id))["ok"]
    await seen.wait_for(DASHBOARD_UPDATES, lambda r: (r.get("message") or {}).get("text") == "just browsing the blue shoes")

    # Open handoffs, oldest first, paged with a cursor.
    page1 = (await q.api(f"/internal/chatbots/{BOT}/handoffs", limit=2)).json()
    page2 = (await q.api(f"/internal/chatbots/{BOT}/handoffs", limit=2, cursor=page1["next_cursor"])).json()
    assert page1["total"] == 4 and page2["next_cursor"] is None
    names = [r["conversation_id"] for r in page1["items"] + page2["items"]]
    assert names == [conv_id(BOT, f"h{i}") for i in range(4)]
    assert page1["items"][0]["reason"] == "User asked for a person" and page1["items"][0]["channel"] == "web"
    snap = (await q.api(f"/internal/chatbots/{BOT}/snapshot", limit=3)).json()
    assert len(snap["handoffs"]["items"]) == 3 and snap["handoffs"]["next_cursor"] and snap["stats"]["open"] == 4
    assert snap["seq"] == max(u["seq"] for u in seen.updates(BOT))

    # Conversations table: filters, most recent first, search, paging.
    async def table(**params) -> list[str]:
        body = (await q.api(f"/internal/chatbots/{BOT}/conversations", **params)).json()
        return [c["conversation_id"] for c in body["items"]]

    everything = await table(status="all")
    assert set(everything) == {conv_id(BOT, v) for v in ("h0", "h1", "h2", "h3", "h4", "act")}
    assert everything[0] == conv_id(BOT, "h4")  # the close was the latest activity
    assert set(await table(status="needs_reply")) == {conv_id(BOT, f"h{i}") for i in range(4)}
    assert await table(status="active") == [conv_id(BOT, "act")]
    assert await table(status="closed") == [conv_id(BOT, "h4")]
    assert await table(q="BLUE SHOES") == [conv_id(BOT, "act")]  # message text
    assert await table(q="carla") == [conv_id(BOT, "act")]  # name
    assert await table(q="dana@example") == [conv_id(BOT, "h2")]  # e-mail
    assert await table(q="170 1234") == [conv_id(BOT, "h2")]  # phone
    assert await table(q="nothing like this") == []
    first = (await q.api(f"/internal/chatbots/{BOT}/conversations", limit=4)).json()
    rest = (await q.api(f"/internal/chatbots/{BOT}/conversations", limit=4, cursor=first["next_cursor"])).json()
    assert [c["conversation_id"] for c in first["items"] + rest["items"]] == everything and rest["next_cursor"] is None
    assert (await q.api(f"/internal/chatbots/{BOT}/conversations", status="bogus")).status_code == 422
    assert (await q.api(f"/internal/chatbots/{BOT}/handoffs", cursor="%%%")).status_code == 422
    # A well-formed cursor of another list is refused too, not a server error.
    assert (await q.api(f"/internal/chatbots/{BOT}/handoffs", cursor=first["next_cursor"])).status_code == 422
    assert (await q.api(f"/internal/chatbots/{BOT}/conversations", cursor=page1["next_cursor"])).status_code == 422

    # One conversation, messages oldest first, paged backwards.
    detail = (await q.api(f"/internal/chatbots/{BOT}/conversations/{conv_id(BOT, 'h2')}")).json()
    assert detail["conversation"]["contact"] == {"name": "Dana Doe", "email": "dana@example.com", "phone": "+49 170 1234567"}
    assert [m["text"] for m in detail["messages"]["items"]] == [
        "handoff visitor 2", "I'm connecting you with a member of our team."]
    assert (await q.api(f"/internal/chatbots/api-other/conversations/{conv_id(BOT, 'h2')}")).status_code == 404
    assert (await q.api(f"/internal/chatbots/{BOT}/conversations/cv_missing")).status_code == 404
    for i in range(3):
        await q.visitor_says(BOT, "h0", f"more {i}")
    await seen.wait_for(DASHBOARD_UPDATES, lambda r: (r.get("message") or {}).get("text") == "more 2")
    last2 = (await q.api(f"/internal/chatbots/{BOT}/conversations/{conv_id(BOT, 'h0')}", limit=2)).json()
    assert [m["text"] for m in last2["messages"]["items"]] == ["more 1", "more 2"]
    older = (await q.api(f"/internal/chatbots/{BOT}/conversations/{conv_id(BOT, 'h0')}", limit=2,
                         before=last2["messages"]["next_cursor"])).json()
    assert [m["text"] for m in older["messages"]["items"]] == ["I'm connecting you with a member of our team.", "more 0"]

    # Settings (with secrets: internal only) and the chatbot list.
    assert (await q.api(f"/internal/chatbots/{BOT}/settings")).json()["chatbot_id"] == BOT
    assert (await q.api("/internal/chatbots/nobody/settings")).status_code == 404
    assert (await q.api("/internal/chatbots/nobody/stats")).status_code == 404
    listed = [c["chatbot_id"] for c in (await q.api("/internal/chatbots")).json()]
    assert {"api-other", BOT} <= set(listed) and listed == sorted(listed)


async def test_malformed_events_go_to_the_dlq_and_the_consumer_keeps_going(queue):
    q = queue
    BOT = "dlq"  # each test its own chatbot on the shared queue
    seen = q.seen.for_chatbot(BOT)
    await seed(q, BOT)
    await q.send(CONVERSATION_EVENTS, b'{"type": "ai.turn_completed", "chatbot_id": "dlq"}', key=b"x")
    await q.send(CONVERSATION_EVENTS, b"\x00not json", key=b"x")
    await q.send(AGENT_COMMANDS, b'{"type": "agent.command", "command_id": "short"}', key=b"x")
    await q.send(VISITOR_MESSAGES, b'{"type": "visitor.message_received", "chatbot_id": "dlq", "text": ""}', key=b"x")
    await q.visitor_says(BOT, "v-after", "still working")
    await seen.wait_for(DASHBOARD_UPDATES, lambda r: (r.get("message") or {}).get("text") == "still working")
    parked = await q.seen.wait_for(CONVERSATION_EVENTS.dlq, lambda r: True, count=2)
    assert [p["error_kind"] for p in parked] == ["invalid", "invalid"]
    assert parked[0]["consumer"].startswith("queue-")
    cmd_parked = await q.seen.wait_for(AGENT_COMMANDS.dlq, lambda r: True)
    assert "command_id" in cmd_parked[0]["error"]
    visitor_parked = await q.seen.wait_for(VISITOR_MESSAGES.dlq, lambda r: True)
    assert visitor_parked[0]["error_kind"] == "invalid"


async def test_settings_changed_by_another_instance_reach_this_one(queue):
    from shared.chatbots import ChatbotSettings
    from shared.events import ChatbotSettingsChanged
    from shared.topics import CHATBOT_SETTINGS
    from tests.support import eventually

    q = queue
    BOT = "tz"
    seeded = await seed(q, BOT)  # UTC: "Today" ends at UTC midnight
    assert (await q.api(f"/internal/chatbots/{BOT}/stats")).json()["today_ends_at"].endswith(("+00:00", "Z"))
    # The other instance's change is the next version (an older one is never applied).
    tokyo = ChatbotSettings(chatbot_id=BOT, name="Tokyo shop", timezone="Asia/Tokyo", version=seeded.version + 1)
    await q.send(CHATBOT_SETTINGS, ChatbotSettingsChanged(chatbot_id=BOT, settings=tokyo))

    async def counts_in_tokyo() -> bool:
        return (await q.api(f"/internal/chatbots/{BOT}/stats")).json()["today_ends_at"].endswith("+09:00")

    await eventually(counts_in_tokyo, timeout=15)


async def test_a_command_that_crashed_half_way_is_finished_on_redelivery(queue):
    from shared.ids import utcnow

    q = queue
    BOT = "crash"
    seen = q.seen.for_chatbot(BOT)
    await seed(q, BOT)
    cid = conv_id(BOT, "v-cr")
    h = await q.hand_off(BOT, "v-cr", text="help")
    await seen.wait_for(CONVERSATION_STATE, lambda r: r["handoff_id"] == h)
    assert (await q.api(f"/internal/chatbots/{BOT}/stats")).json()["open"] == 1

    # The first attempt got as far as the conditional update in Mongo, then the process died.
    close = command(BOT, cid, "close", agent="carol")
    conv = await q.queue.record.get_conversation(cid)
    assert await q.queue.record.save(cid, conv.agent_transition("close", utcnow(), close.command_id))

    # The redelivered command finishes the job instead of being refused as "already closed".
    await q.send(AGENT_COMMANDS, close)
    result = await seen.result(close.command_id)
    assert (result["status_code"], result["conversation"]["status"]) == (200, "closed")
    state = (await seen.wait_for(CONVERSATION_STATE, lambda r: r.get("transition") == "close"))[0]
    assert (state["previous_status"], state["by"]) == ("handed_off", "agent:carol")
    history = (await q.queue.record.get_handoff(h))["history"]
    assert [(e["transition"], e["command_id"]) for e in history] == [("handoff", None), ("close", close.command_id)]
    stats = (await q.api(f"/internal/chatbots/{BOT}/stats")).json()
    assert (stats["open"], stats["resolved_this_week"]) == (0, 1)


async def test_a_late_ai_answer_after_an_agent_took_over_is_never_delivered(queue):
    """The AI was asked at version 0; the conversation was handed off and an agent answered
    before the model did: its answer is recorded for the team as not sent, and no outbound
    message ever leaves for the visitor."""
    q = queue
    BOT = "late"
    seen = q.seen.for_chatbot(BOT)
    await seed(q, BOT)
    cid = conv_id(BOT, "v-late")
    question = await q.visitor_says(BOT, "v-late", "What is your return policy?")
    slow_turn = await q.turn_for(question)
    await q.hand_off(BOT, "v-late", text="Actually, get me a person")
    reply = command(BOT, cid, "reply", "Hi, Dana here: 30 days, no questions asked.", agent="dana")
    await q.send(AGENT_COMMANDS, reply)
    assert (await seen.result(reply.command_id))["ok"]

    late = await q.ai_answers(slow_turn, "Our return policy is 14 days.")
    await _applied(q, late.event_id)
    stored = await q.queue.record.get_message(late.replies[0].message_id)
    assert (stored["text"], stored["delivery"]) == ("Our return policy is 14 days.", "not_sent")
    await asyncio.sleep(0.5)  # a wrongly sent answer would be on the topic by now
    assert [r["text"] for r in seen.of(OUTBOUND_MESSAGES) if r["sender"] == "ai"] == [
        "I'm connecting you with a member of our team."]
    # Not in what the AI or the summarizer will see next: the visitor never read it.
    from services.queue.conversation import transcript_of

    docs, _ = await q.queue.record.messages_before(cid, None, 50)
    assert "Our return policy is 14 days." not in [line.text for line in transcript_of(docs)]
    # A delivery status can never make it look delivered.
    from shared.events import DeliveryStatusChanged
    from shared.topics import DELIVERY_STATUS

    status = DeliveryStatusChanged(chatbot_id=BOT, conversation_id=cid, message_id=stored["_id"], status="delivered")
    await q.send(DELIVERY_STATUS, status)
    await q.handled(status.event_id)
    assert (await q.queue.record.get_message(stored["_id"]))["delivery"] == "not_sent"


async def _returned(q, seen, bot: str, cid: str, agent: str = "alice") -> dict:
    back = command(bot, cid, "return_to_ai", agent=agent)
    await q.send(AGENT_COMMANDS, back)
    result = await seen.result(back.command_id)
    assert result["ok"], result
    return result


async def test_return_to_ai_hands_the_unanswered_message_to_the_ai_exactly_once(queue):
    """The queue owns the status, so a visitor message and a Return to AI cannot miss each
    other: written before the return, the return hands it to the AI; after it, the message
    itself asks the AI; either way one turn, at the version after the return. A message an
    agent already answered is not handed over."""
    q = queue
    BOT = "back"
    seen = q.seen.for_chatbot(BOT)
    await seed(q, BOT)

    # Before the return: it waits for the team, then the return hands it over.
    await q.hand_off(BOT, "before")
    cid = conv_id(BOT, "before")
    waiting = await q.visitor_says(BOT, "before", "Are you still there?")
    await seen.wait_for(DASHBOARD_UPDATES, lambda r: (r.get("message") or {}).get("text") == "Are you still there?")
    await _returned(q, seen, BOT, cid)
    turn = await q.turn_for(waiting)
    assert turn["version"] == (await q.queue.record.get_conversation(cid)).version == 2

    # After the return: the message itself asks.
    await q.hand_off(BOT, "after")
    cid = conv_id(BOT, "after")
    await _returned(q, seen, BOT, cid)
    later = await q.visitor_says(BOT, "after", "Thanks, one more question")
    assert (await q.turn_for(later))["version"] == 2

    # Answered by an agent before the return: the team's, not the AI's.
    await q.hand_off(BOT, "answered")
    cid = conv_id(BOT, "answered")
    asked = await q.visitor_says(BOT, "answered", "Where is my parcel?")
    await seen.wait_for(DASHBOARD_UPDATES, lambda r: (r.get("message") or {}).get("text") == "Where is my parcel?")
    reply = command(BOT, cid, "reply", "It arrives tomorrow.")
    await q.send(AGENT_COMMANDS, reply)
    assert (await seen.result(reply.command_id))["ok"]
    await _returned(q, seen, BOT, cid)

    # Racing: the message and the return at the same instant, on different consumers, for
    # many conversations at once — each message gets exactly one turn, after the return.
    racers = [f"race-{i}" for i in range(8)]
    for v in racers:
        await q.hand_off(BOT, v)
    await seen.wait_for(CONVERSATION_STATE, lambda r: r.get("transition") == "handoff", count=3 + len(racers))
    from shared.ids import utcnow

    now = utcnow()
    backs = [command(BOT, conv_id(BOT, v), "return_to_ai") for v in racers]
    from tests.queue.support import visitor_message

    messages = [visitor_message(BOT, v, "same millisecond", occurred_at=now) for v in racers]
    await asyncio.gather(*(q.send(AGENT_COMMANDS, b) for b in backs),
                         *(q.send(VISITOR_MESSAGES, m) for m in messages))
    for b in backs:
        assert (await seen.result(b.command_id))["ok"]
    for m in messages:
        turn = await q.turn_for(m)
        assert turn["version"] == 2
    await asyncio.sleep(1.0)  # a second turn for any of them would have arrived by now
    assert [len(_turns_of(q, m)) for m in messages] == [1] * len(messages)
    assert _turns_of(q, asked) == [] and len(_turns_of(q, waiting)) == 1 and len(_turns_of(q, later)) == 1


async def test_a_partly_lost_index_repairs_itself_without_a_restart(queue):
    """A Redis key of the index lost (deleted, or a server that lost some keys): the next read
    or update sees the index is not whole and rebuilds it from Mongo; what a count alone
    cannot show (the recent closes) the periodic check against Mongo repairs."""
    q = queue
    BOT = "partial"
    seen = q.seen.for_chatbot(BOT)
    await seed(q, BOT)
    for v in ("p0", "p1", "p2"):
        await q.hand_off(BOT, v)
    close = command(BOT, conv_id(BOT, "p0"), "close")
    await q.send(AGENT_COMMANDS, close)
    assert (await seen.result(close.command_id))["ok"]
    index = q.queue.feed.index

    await index.redis.delete(index.key(BOT, "rows"))  # the list's rows gone, the counts not
    snap = (await q.api(f"/internal/chatbots/{BOT}/snapshot")).json()
    assert [r["conversation_id"] for r in snap["handoffs"]["items"]] == [conv_id(BOT, "p1"), conv_id(BOT, "p2")]
    assert snap["handoffs"]["total"] == snap["stats"]["open"] == 2

    await index.redis.delete(index.key(BOT, "open"))  # the counts gone, the rows not
    await q.visitor_says(BOT, "p1", "still there?")
    up = (await seen.wait_for(DASHBOARD_UPDATES, lambda r: (r.get("message") or {}).get("text") == "still there?"))[0]
    assert up["stats"]["open"] == 2 and up["epoch"] != snap["epoch"]  # rebuilt: clients resync
    assert (await q.api(f"/internal/chatbots/{BOT}/handoffs")).json()["total"] == 2

    await index.redis.delete(index.key(BOT, "closed"))  # "Resolved this week" lost
    assert BOT in await q.queue.feed.check_index()
    assert (await q.api(f"/internal/chatbots/{BOT}/stats")).json()["resolved_this_week"] == 1


async def test_a_delivery_status_right_behind_an_ai_reply_is_kept(queue):
    """The queue stores an AI reply before it hands it to channels, so the reply's delivery
    status can never arrive before the message it reports (they used to travel on two topics
    to two consumer groups, and nearly every AI reply ended with no delivery state)."""
    from shared.events import DeliveryStatusChanged
    from shared.topics import DELIVERY_STATUS

    q = queue
    BOT = "acks"
    seen = q.seen.for_chatbot(BOT)
    await seed(q, BOT)
    for n in range(5):
        turn = await q.turn_for(await q.visitor_says(BOT, f"a{n}", "hello"))
        await q.ai_answers(turn, f"Hello {n}!")
        [out] = await seen.wait_for(OUTBOUND_MESSAGES, lambda r, n=n: r["text"] == f"Hello {n}!")
        # What channels does at once: the platform took it.
        await q.send(DELIVERY_STATUS, DeliveryStatusChanged(chatbot_id=BOT, conversation_id=out["conversation_id"],
                                                            message_id=out["message_id"], status="delivered"))
    shown = await seen.wait_for(DASHBOARD_UPDATES, lambda r: (r.get("message") or {}).get("delivery") == "delivered",
                                count=5)
    assert sorted(u["message"]["text"] for u in shown) == [f"Hello {n}!" for n in range(5)]
