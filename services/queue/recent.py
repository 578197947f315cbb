"""The newest messages of the conversations this instance handled lately: the AI's context
for the next turn without a sorted Mongo query per visitor message.

Only a cache. An entry is used only while the conversation's `message_count` (read from
Mongo with the conversation, moved by every message insert) is the count the entry was
filled or last extended at; anything it did not see (another instance after a rebalance, a
replay that recounted, an insert this process did not report) leaves the counts apart, and
the next ask reads Mongo again. One handler at a time per conversation (the bus's keyed
dispatcher) makes "read the count, then extend" safe within the process.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from services.queue.domain import to_us

# Conversations kept (least recently used dropped): at ~20 messages each, tens of MB at most.
RECENT_CONVERSATIONS = 2000
# What a transcript line needs (conversation.transcript_of) and what orders messages.
FIELDS = ("_id", "sender", "sender_name", "text", "created_at", "at_us", "delivery")


def _order(doc: dict[str, Any]) -> tuple[int, str]:
    return doc["at_us"], doc["_id"]  # as QueueRecord.messages_before orders them


class RecentMessages:
    def __init__(self, keep: int, conversations: int = RECENT_CONVERSATIONS) -> None:
        self.keep = keep
        self.conversations = conversations
        self._entries: OrderedDict[str, tuple[int, list[dict[str, Any]]]] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, conversation_id: str, message_count: int, limit: int) -> list[dict[str, Any]] | None:
        """The newest `limit` messages, oldest first; None when not known for this count."""
        entry = self._entries.get(conversation_id)
        if entry is None or entry[0] != message_count or limit > self.keep:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(conversation_id)
        return entry[1][-limit:] if limit else []

    def put(self, conversation_id: str, message_count: int, newest: list[dict[str, Any]]) -> None:
        """What a Mongo read found: the newest messages (up to `keep`, oldest first) at `message_count`."""
        self._entries[conversation_id] = (message_count, [_slim(d) for d in newest[-self.keep:]])
        self._entries.move_to_end(conversation_id)
        while len(self._entries) > self.conversations:
            self._entries.popitem(last=False)

    def added(self, conversation_id: str, docs: list[dict[str, Any]], message_count: int) -> None:
        """Messages just stored and counted, the count now `message_count`. Extends an entry
        that was current before them; drops one that was not (it would be stale)."""
        entry = self._entries.get(conversation_id)
        if entry is None:
            return
        if entry[0] != message_count - len(docs):
            del self._entries[conversation_id]
            return
        new = [_slim({"at_us": to_us(d["created_at"]), **d}) for d in docs]
        merged = sorted([*entry[1], *new], key=_order)
        self._entries[conversation_id] = (message_count, merged[-self.keep:])

    def __len__(self) -> int:
        return len(self._entries)


def _slim(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc[k] for k in FIELDS if k in doc}
