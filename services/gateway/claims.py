"""The gateway's part of claims (docs/contracts.md, "Presence and claims"): the queue owns who
is handling a conversation, the gateway owns who the agents are. A Reopen gives the claim
back to the agent who had it at the close only while that agent is still on the chatbot's
team; the gateway looks that up and says so on the command (`keep_assignee`)."""

from __future__ import annotations

import json
from typing import Any

from services.gateway.deps import Gateway
from services.gateway.queue_client import QueueError, internal_path


async def command_extras(gw: Gateway, chatbot_id: str, conversation_id: str, action: str) -> dict[str, Any]:
    """Fields the action's command carries besides the agent's input."""
    if action != "reopen":
        return {}
    return {"keep_assignee": await previous_assignee_on_team(gw, chatbot_id, conversation_id)}


async def previous_assignee_on_team(gw: Gateway, chatbot_id: str, conversation_id: str) -> bool:
    """Whether the agent who had the conversation when it was closed is still one of the
    chatbot's agents. Unknown (the queue did not answer): no, the claim is not kept."""
    try:
        detail = json.loads(await gw.queue.get(internal_path(chatbot_id, "conversations", conversation_id),
                                               {"limit": 1}))
    except (QueueError, ValueError):
        return False
    previous = (detail.get("conversation") or {}).get("previous_assignee")
    if not previous or not previous.get("agent_id"):
        return False
    return chatbot_id in await gw.store.chatbots_of(previous["agent_id"])
