"""Claims: which agent is handling a conversation (docs/contracts.md, "Presence and claims").

The first agent who replies, or presses Take, becomes the conversation's `assignee`; another
agent may Take over (a system line in the transcript says so). The claim is queue state like
the status: on the conversation record (Mongo), on its row in the Redis index (rebuilt from
Mongo with the rest), in the dashboard updates. Every claim is one conditional write — "only
while unassigned" or "only while still <the assignee read>" — so two agents claiming in the
same instant, even on two queue instances, cannot both win: the loser is told who has it.

Close clears the claim and remembers it (`previous_assignee`); Reopen gives it back when the
gateway (owner of agents) says that agent is still on the chatbot's team; Return to AI
clears both (the next handoff starts unclaimed).
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from services.queue.conversation import Conversation, message_view
from services.queue.domain import CommandRefused, derived_event_id
from shared.events import AgentCommand, AgentRef
from shared.ids import derived_id

if TYPE_CHECKING:
    from services.queue.usecase import UseCases

CLAIMS = ("take", "take_over")
NOT_OPEN = "Only a conversation waiting for a human can be taken."
CHANGED = "The conversation changed meanwhile; try again."
# Take-over retries this often when yet another agent claimed it between the read and the write.
ATTEMPTS = 3


def taken_by(name: str) -> str:
    """The loser's answer (409): who has the conversation."""
    return f"{name} is already handling this conversation."


def took_over_line(agent: str, previous: str) -> str:
    return f"{agent} took over from {previous}."


def assignee_of(agent: AgentRef) -> dict[str, str]:
    return {"agent_id": agent.agent_id, "name": agent.display_name}


def transition_fields(action: str, conv: Conversation, keep_assignee: bool) -> dict[str, Any]:
    """What Close, Reopen and Return to AI do to the claim (merged into the transition's write)."""
    if action == "close":
        held = conv.assignee or conv.previous_assignee
        return {"assignee": None, "previous_assignee": held.model_dump() if held else None}
    if action == "reopen":
        back = conv.previous_assignee if keep_assignee else None
        return {"assignee": back.model_dump() if back else None, "previous_assignee": None}
    return {"assignee": None, "previous_assignee": None}


async def claim_on_reply(uc: UseCases, conv: Conversation, agent: AgentRef, now: datetime) -> Conversation:
    """A reply to an unclaimed conversation claims it for its agent; when another agent's claim
    landed first, theirs stands (the reply is sent all the same: "Reply anyway")."""
    if conv.assignee is not None:
        return conv
    claimed = await uc.record.set_assignee(conv.id, assignee_of(agent), expected=None, at=now)
    return claimed or await uc.record.get_conversation(conv.id) or conv


async def claim(uc: UseCases, cmd: AgentCommand, conv: Conversation) -> Conversation:
    """Take (only while unclaimed, or already ours) or Take over (from whoever has it)."""
    now = uc.clock()
    me = cmd.agent.agent_id
    for _ in range(ATTEMPTS):
        if conv.status != "handed_off":
            raise CommandRefused(NOT_OPEN, 409)
        holder = conv.assignee
        if holder is not None and holder.agent_id == me:
            return conv  # ours already (or this command's, replayed)
        if holder is not None and cmd.action == "take":
            raise CommandRefused(taken_by(holder.name), 409)
        line = took_over_line(cmd.agent.display_name, holder.name) if holder else None
        claimed = await uc.record.set_assignee(conv.id, assignee_of(cmd.agent),
                                               expected=holder.agent_id if holder else None, at=now,
                                               inc={"message_count": 1} if line else None)
        if claimed is not None:
            await _published(uc, cmd, claimed, line, now)
            return claimed
        conv = await uc.record.get_conversation(conv.id) or conv  # someone else moved first: as it is now
        if cmd.action == "take" and conv.assignee is None and conv.status == "handed_off":
            raise CommandRefused(CHANGED, 409)
    raise CommandRefused(CHANGED, 409)


async def _published(uc: UseCases, cmd: AgentCommand, conv: Conversation, line: str | None, now: datetime) -> None:
    """The row and the pane follow the claim; a take-over leaves its line in the transcript
    (the team's record, never sent to the visitor)."""
    message = None
    if line is not None:
        doc = {"_id": derived_id("sm_", "take_over", cmd.command_id, length=24), "conversation_id": conv.id,
               "chatbot_id": conv.chatbot_id, "sender": "system", "sender_name": None, "text": line,
               "created_at": now, "delivery": None, "command_id": cmd.command_id}
        if not await uc.record.insert_message(doc):
            doc = await uc.record.get_message(doc["_id"]) or doc
        message = message_view(doc)
    await uc.feed.conversation_changed(conv, message=message, event_id=derived_event_id(cmd.command_id, "update"))

