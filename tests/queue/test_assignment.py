"""Claims (services/queue/assignment.py) against the real broker, Redis and Mongo-wire server:
Take, the loser's answer, Take over with its system line, the first reply claiming, Close /
Reopen / Return to AI, the row's assignee surviving an index rebuild from Mongo, and two claims
at the same instant with exactly one winner."""

from __future__ import annotations

import asyncio

from services.queue.assignment import NOT_OPEN, taken_by, took_over_line, transition_fields
from services.queue.conversation import Conversation
from shared.ids import utcnow
from shared.views import Assignee
from shared.topics import AGENT_COMMANDS
from tests.queue.support import command, conv_id, seed


def _who(view: dict) -> str | None:
    return (view.get("assignee") or {}).get("agent_id")


async def test_take_take_over_reply_close_reopen_and_rebuild(queue):
    q = queue
    BOT = "claims"
    seen = q.seen.for_chatbot(BOT)
    await seed(q, BOT)
    cid = conv_id(BOT, "v-ada")
    await q.hand_off(BOT, "v-ada", text="I need a person", name="Ada")

    async def act(action: str, agent: str, **extra) -> dict:
        cmd = command(BOT, cid, action, "Hello!" if action == "reply" else None, agent=agent)
        cmd = cmd.model_copy(update=extra)
        await q.send(AGENT_COMMANDS, cmd)
        return await seen.result(cmd.command_id)

    async def row() -> dict | None:
        items = (await q.api(f"/internal/chatbots/{BOT}/handoffs")).json()["items"]
        return next((r for r in items if r["conversation_id"] == cid), None)

    async def detail() -> dict:
        return (await q.api(f"/internal/chatbots/{BOT}/conversations/{cid}")).json()

    taken = await act("take", "alice")
    assert taken["ok"] and taken["conversation"]["assignee"] == {"agent_id": "alice", "name": "Alice"}
    assert _who(await row()) == "alice"
    assert (await act("take", "alice"))["ok"]  # ours already: nothing changes
    refused = await act("take", "bob")
    assert (refused["status_code"], refused["error"]) == (409, taken_by("Alice"))
    assert _who(refused["conversation"]) == "alice"

    over = await act("take_over", "bob")
    assert over["ok"] and _who(over["conversation"]) == "bob"
    lines = [(m["sender"], m["text"]) for m in (await detail())["messages"]["items"]]
    assert ("system", took_over_line("Bob", "Alice")) in lines
    # The live update carries the row (with its assignee) and the transcript line.
    update = (await seen.wait_for("dashboard.updates", lambda r: (r.get("message") or {}).get("sender") == "system"
                                  and r.get("conversation_id") == cid))[0]
    assert _who(update["row_upserted"]) == "bob" and _who(update["conversation"]) == "bob"

    # The Redis index is derived from Mongo: a rebuild keeps the claim on the row.
    await q.queue.feed.rebuild(BOT)
    assert _who(await row()) == "bob"

    # Close clears it (remembered); Reopen gives it back only when the gateway says that agent
    # is still on the team.
    closed = (await act("close", "alice"))["conversation"]
    assert closed["assignee"] is None and closed["previous_assignee"]["agent_id"] == "bob"
    assert _who((await act("reopen", "alice", keep_assignee=True))["conversation"]) == "bob"
    assert _who(await row()) == "bob"
    await act("close", "alice")
    reopened = (await act("reopen", "alice"))["conversation"]
    assert reopened["assignee"] is None and reopened["previous_assignee"] is None

    # The first reply to an unclaimed conversation claims it; a colleague's reply does not move it.
    assert _who((await act("reply", "carol"))["conversation"]) == "carol"
    assert _who((await act("reply", "dave"))["conversation"]) == "carol"
    # Return to AI clears the claim; a taken conversation must be waiting for a human.
    back = (await act("return_to_ai", "carol"))["conversation"]
    assert back["assignee"] is None and back["previous_assignee"] is None
    refused = await act("take", "alice")
    assert (refused["status_code"], refused["error"]) == (409, NOT_OPEN)


async def test_two_claims_at_the_same_instant_have_exactly_one_winner(queue):
    """Both commands read the conversation unclaimed and write at once (called side by side,
    not one after the other as the bus's keyed dispatcher would): the conditional write in
    Mongo lets one through; the other is told who has it."""
    q = queue
    BOT = "race"
    seen = q.seen.for_chatbot(BOT)
    await seed(q, BOT)
    for n in range(3):
        cid = conv_id(BOT, f"v-{n}")
        await q.hand_off(BOT, f"v-{n}")
        alice, bob = command(BOT, cid, "take", agent="alice"), command(BOT, cid, "take", agent="bob")
        await asyncio.gather(q.queue.commands.on_agent_command(alice), q.queue.commands.on_agent_command(bob))
        results = {r["conversation"]["assignee"]["agent_id"] if r["ok"] else None: r
                   for r in [await seen.result(alice.command_id), await seen.result(bob.command_id)]}
        winners = [k for k in results if k is not None]
        assert len(winners) == 1 and None in results, results
        loser = results[None]
        assert (loser["status_code"], loser["error"]) == (409, taken_by(winners[0].title()))
        stored = await q.queue.record.get_conversation(cid)
        assert stored is not None and stored.assignee is not None and stored.assignee.agent_id == winners[0]


def test_close_remembers_the_claim_reopen_gives_it_back_only_when_kept_return_clears_it():
    alex = Assignee(agent_id="a1", name="Alex")
    conv = Conversation(_id="cv", chatbot_id="b", channel="web", visitor_id="v", created_at=utcnow(), assignee=alex)
    assert transition_fields("close", conv, False) == {"assignee": None, "previous_assignee": alex.model_dump()}
    closed = conv.model_copy(update={"assignee": None, "previous_assignee": alex})
    assert transition_fields("reopen", closed, True) == {"assignee": alex.model_dump(), "previous_assignee": None}
    assert transition_fields("reopen", closed, False) == {"assignee": None, "previous_assignee": None}
    assert transition_fields("return_to_ai", conv, True) == {"assignee": None, "previous_assignee": None}
