"""The queue's stores. Mongo is the record (chatbots, conversations, messages, handoffs,
commands); Redis is the index (open handoffs, recent closes, rows, seq, epoch), derived
from Mongo and rebuilt from it whenever it is missing or disagrees.

Redis keys, per chatbot, under `<redis_prefix>:bot:<chatbot_id>:`
- `open`   sorted set: conversation id -> waiting_since (epoch ms), oldest first
- `closed` sorted set: handoff id -> closed_at (epoch ms), for "Resolved this week"
- `rows`   hash: conversation id -> HandoffRow JSON (the list's rows)
- `order`  sorted set: conversation id -> the list's order by the wait clock
           (`waitclock.order_score`: waiting rows by the clock's start, then replied ones);
           `open` keeps the handoff times the stats count
- `after_close` sorted set: conversation id -> when the visitor first wrote to it while
           closed (epoch ms), while no agent has seen it (Conversations' count)
- `meta`   hash: epoch (new on every rebuild) and seq (one HINCRBY per dashboard update):
           one key, so losing it loses both and the index is rebuilt under a new epoch

Every read and update checks the index is whole, cheaply, in the same MULTI: an epoch, and
as many rows as open handoffs. A partial loss (a key deleted, a server that lost some keys)
is rebuilt from Mongo at once, not at the next restart.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import redis.asyncio as aioredis
from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError

from services.queue.conversation import Change, Conversation
from services.queue.domain import StatsCounts, StatsWindow, from_ms, to_ms, to_us
from services.queue.waitclock import order_score
from shared.batching import Coalescer
from shared.chatbots import ChatbotSettings
from shared.ids import new_id
from shared.stores import DUPLICATE_KEY, insert_each, write_errors, write_failure
from shared.views import HandoffRow

# Entries of `closed` older than this are trimmed: the count only looks back 7 days.
CLOSED_KEEP_MS = 8 * 24 * 3600 * 1000
SEARCH_MESSAGE_SCAN = 2000  # at most this many matching messages feed one search
# A conversation's last message counted into message_count by its activity write
# (record_activity's `counting`): a retried handler does not count it again.
COUNTED = "counted_message_id"


# ---------------------------------------------------------------------- cursors
def encode_cursor(*parts: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(parts, default=str).encode()).decode()


def decode_cursor(cursor: str) -> list[Any]:
    try:
        parts = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (ValueError, TypeError) as exc:
        raise ValueError("Invalid cursor.") from exc
    if not isinstance(parts, list) or len(parts) != 2 or not isinstance(parts[1], str):
        raise ValueError("Invalid cursor.")
    return parts


def _cursor_time(raw: Any) -> datetime:
    try:
        return datetime.fromisoformat(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError("Invalid cursor.") from exc


def _cursor_int(raw: Any) -> int:
    try:
        return int(raw)
    except (TypeError, ValueError) as exc:
        raise ValueError("Invalid cursor.") from exc


# ---------------------------------------------------------------------- Mongo record
async def _by_id(collection: AsyncCollection, ids: list[str]) -> dict[str, dict]:
    return {d["_id"]: d async for d in collection.find({"_id": {"$in": list(dict.fromkeys(ids))}})}


class QueueRecord:
    """The durable record. Transitions are conditional updates (filter on the expected
    status) so two agents, or two queue instances overlapping in a rebalance, cannot both
    apply one.

    The writes and reads every visitor message, AI answer and delivery status makes go
    through coalescers: what concurrent handlers (different conversations) ask while one
    batch is in flight goes to Mongo as one insert_many / bulk_write / `$in` find, each
    caller still awaiting its own outcome."""

    def __init__(self, db: AsyncDatabase) -> None:
        self.db = db
        self.chatbots = db["chatbots"]
        self.conversations = db["conversations"]
        self.messages = db["messages"]
        self.handoffs = db["handoffs"]
        self.commands = db["commands"]
        self._message_inserts: Coalescer[dict, bool] = Coalescer(self._insert_messages, name="messages insert")
        self._message_updates: Coalescer[tuple[str | dict, dict], bool] = Coalescer(
            lambda items: self._update_only(self.messages, items), name="messages update")
        self._activity: Coalescer[tuple[str, dict, str | None], dict | None] = Coalescer(
            self._activity_then_read, name="activity")
        self._activity_writes: Coalescer[tuple[str, dict], bool] = Coalescer(
            lambda items: self._update_only(self.conversations, items), name="known activity")
        self._conversation_reads: Coalescer[str, dict | None] = Coalescer(
            lambda ids: self._read(self.conversations, ids), name="conversations read")
        self._message_reads: Coalescer[str, dict | None] = Coalescer(
            lambda ids: self._read(self.messages, ids), name="messages read")

    # -- batched round trips
    async def _insert_messages(self, docs: list[dict]) -> list[bool | BaseException]:
        """True when stored now, False when that id was stored already (a replay)."""
        return await insert_each(self.messages, docs)

    async def _activity_then_read(self, items: list[tuple[str, dict, str | None]]) -> list[dict | None | BaseException]:
        """The upserts in one bulk write, then the conversations as they are after it in one
        find. Only one handler at a time touches a conversation (the bus's keyed dispatcher),
        so what the find returns is what the update made. An item with a message id counts
        that message at most once: it applies only while the conversation's last counted
        message is another, and one that finds it counted already (its first try got that
        far) is read as it is — the duplicate key its upsert then meets is that answer."""
        errors: dict[int, dict] = {}
        try:
            await self.conversations.bulk_write(
                [UpdateOne({"_id": _id, **({COUNTED: {"$ne": counted}} if counted else {})}, update, upsert=True)
                 for _id, update, counted in items], ordered=False)
        except BulkWriteError as exc:
            errors = write_errors(exc)
        docs = await _by_id(self.conversations, [_id for _id, _, _ in items])
        outcomes: list[dict | None | BaseException] = []
        for i, (_id, _, counted) in enumerate(items):
            doc = docs.get(_id)
            counted_before = counted and doc is not None and doc.get(COUNTED) == counted and errors.get(i, {}).get("code") == DUPLICATE_KEY
            outcomes.append(write_failure(errors[i]) if i in errors and not counted_before else doc)
        return outcomes

    async def _update_only(self, collection: AsyncCollection,
                           items: list[tuple[str | dict, dict]]) -> list[bool | BaseException]:
        """The updates in one bulk write, nothing read back: for callers that hold the document
        and know what the update makes of it, or that write only under a condition (a filter
        instead of an _id)."""
        errors: dict[int, dict] = {}
        try:
            await collection.bulk_write([UpdateOne(f if isinstance(f, dict) else {"_id": f}, update) for f, update in items],
                                        ordered=False)
        except BulkWriteError as exc:
            errors = write_errors(exc)
        return [write_failure(errors[i]) if i in errors else True for i in range(len(items))]

    async def _read(self, collection: AsyncCollection, ids: list[str]) -> list[dict | None | BaseException]:
        docs = await _by_id(collection, ids)
        return [docs.get(_id) for _id in ids]

    async def create_indexes(self) -> None:
        # Secantus has no $text index (checked): search uses case-insensitive regexes.
        await self.conversations.create_index([("chatbot_id", ASCENDING), ("status", ASCENDING), ("updated_at", DESCENDING)])
        await self.conversations.create_index([("chatbot_id", ASCENDING), ("updated_at", DESCENDING)])
        await self.messages.create_index([("conversation_id", ASCENDING), ("at_us", ASCENDING)])
        await self.messages.create_index([("chatbot_id", ASCENDING), ("created_at", DESCENDING)])
        await self.handoffs.create_index([("chatbot_id", ASCENDING), ("closed_at", DESCENDING)])
        await self.handoffs.create_index([("conversation_id", ASCENDING)])

    # -- chatbots
    async def get_chatbot(self, chatbot_id: str) -> ChatbotSettings | None:
        doc = await self.chatbots.find_one({"_id": chatbot_id})
        return _chatbot(doc) if doc else None

    async def list_chatbots(self) -> list[ChatbotSettings]:
        return [_chatbot(d) async for d in self.chatbots.find({}).sort("_id", ASCENDING)]

    async def save_chatbot(self, settings: ChatbotSettings, previous: int | None = None,
                           command_id: str | None = None) -> bool:
        """Write `settings` only while the record is at version `previous` (None: only while
        there is no record yet); False when another change came first. `command_id` is kept
        with it: a command retried after a crash recognises the change it already made."""
        doc = {"_id": settings.chatbot_id, **settings.model_dump(mode="json"), "last_command_id": command_id}
        if previous is None:
            try:
                await self.chatbots.insert_one(doc)
            except DuplicateKeyError:
                return False
            return True
        found = await self.chatbots.replace_one({"_id": settings.chatbot_id, "version": _version_is(previous)}, doc)
        return found.matched_count == 1

    async def chatbot_changed_by(self, chatbot_id: str, command_id: str) -> bool:
        """Whether the chatbot's current settings are this command's change."""
        return await self.chatbots.count_documents({"_id": chatbot_id, "last_command_id": command_id}) > 0

    # -- conversations
    async def get_conversation(self, conversation_id: str) -> Conversation | None:
        return Conversation.load(await self._conversation_reads.submit(conversation_id))

    async def record_activity(self, conversation_id: str, on_insert: dict, set_fields: dict,
                              inc: Mapping[str, int] | None = None,
                              latest: Mapping[str, Any] | None = None, *,
                              counting: str | None = None) -> Conversation:
        """Activity fields (never state ones): created with `on_insert` when new; `latest`
        fields only ever move forward ($max: a late-delivered older message moves nothing).
        `counting`: the message id this write counts (`inc`), applied once per message even
        when its handler is retried after the write went through."""
        update: dict[str, Any] = {"$setOnInsert": {k: v for k, v in on_insert.items()
                                                   if k not in set_fields and not (inc and k in inc)
                                                   and not (latest and k in latest)}}
        set_fields = {**set_fields, COUNTED: counting} if counting else set_fields
        if set_fields:
            update["$set"] = set_fields
        if inc:
            update["$inc"] = dict(inc)
        if latest:
            update["$max"] = dict(latest)
        doc = await self._activity.submit((conversation_id, update, counting))
        if doc is None:
            raise RuntimeError(f"conversation {conversation_id} vanished while its activity was recorded")
        return Conversation.model_validate(doc)

    async def record_known_activity(self, conv: Conversation, set_fields: dict,
                                    inc: Mapping[str, int] | None = None) -> Conversation:
        """Activity of a conversation the caller has just read or saved: written (batched),
        not read back. One handler at a time changes a conversation (the bus's keyed
        dispatcher), so the result is `conv` with these changes."""
        update: dict[str, Any] = {"$set": set_fields} if set_fields else {}
        if inc:
            update["$inc"] = dict(inc)
        await self._activity_writes.submit((conv.id, update))
        changes = {k: v for k, v in set_fields.items() if k in Conversation.model_fields}
        changes.update({k: getattr(conv, k) + n for k, n in (inc or {}).items()})
        return conv.model_copy(update=changes)

    async def save(self, conversation_id: str, change: Change) -> Conversation | None:
        """Apply a transition only if the conversation is still at the version it was planned
        on; None when something else changed it first."""
        return await self._update_and_read(
            {**change.guard, "_id": conversation_id, "version": _version_is(change.expected_version)},
            {"$set": change.fields})

    async def set_pending(self, conversation_id: str, version: int, message_id: str) -> bool:
        """Mark the visitor's message as waiting for a human, only while the conversation is
        still handed off at `version` (a Return to AI since then must route it instead)."""
        result = await self.conversations.update_one(
            {"_id": conversation_id, "version": _version_is(version), "status": "handed_off"},
            {"$set": {"pending_message_id": message_id}})
        return result.matched_count == 1

    async def set_assignee(self, conversation_id: str, assignee: dict, *, expected: str | None, at: datetime,
                           inc: Mapping[str, int] | None = None) -> Conversation | None:
        """Claim a handed-off conversation for `assignee` only while it is unclaimed (`expected`
        None) or still claimed by agent `expected`: one conditional write, so of two claims at
        once exactly one matches. None when the condition did not hold."""
        query: dict[str, Any] = {"_id": conversation_id, "status": "handed_off"}
        if expected is None:
            query["assignee"] = None  # unset or null
        else:
            query["assignee.agent_id"] = expected
        update: dict[str, Any] = {"$set": {"assignee": assignee, "updated_at": at}}
        if inc:
            update["$inc"] = dict(inc)
        return await self._update_and_read(query, update)

    async def update_conversation(self, conversation_id: str, update: dict, *,
                                  expected_status: str | None = None) -> Conversation | None:
        query: dict[str, Any] = {"_id": conversation_id}
        if expected_status is not None:
            query["status"] = expected_status
        return await self._update_and_read(query, update)

    async def _update_and_read(self, query: dict, update: dict) -> Conversation | None:
        """The conversation after a conditional update; None when the condition did not hold.
        An update and a read by _id, not findAndModify: the Mongo-wire server scans the whole
        collection for a findAndModify (0.8 s at 50,000 conversations), and one handler at a
        time changes a conversation (the bus's keyed dispatcher), so the read sees this update."""
        result = await self.conversations.update_one(query, update)
        if result.matched_count == 0:
            return None
        return Conversation.load(await self.conversations.find_one({"_id": query["_id"]}))

    async def open_conversations(self, chatbot_id: str) -> list[Conversation]:
        docs = await self.conversations.find({"chatbot_id": chatbot_id, "status": "handed_off"}).to_list()
        return [Conversation.model_validate(d) for d in docs]

    async def closed_with_new_messages(self, chatbot_id: str) -> list[tuple[str, datetime]]:
        """Closed conversations with visitor messages no agent has seen: id, first such message."""
        docs = await self.conversations.find(
            {"chatbot_id": chatbot_id, "status": "closed", "unseen_after_close_at": {"$ne": None}},
            {"_id": 1, "unseen_after_close_at": 1}).to_list()
        return [(d["_id"], d["unseen_after_close_at"]) for d in docs if d.get("unseen_after_close_at")]

    async def count_open(self, chatbot_id: str) -> int:
        return await self.conversations.count_documents({"chatbot_id": chatbot_id, "status": "handed_off"})

    async def conversations_page(self, chatbot_id: str, status: str | None, q: str | None,
                                 cursor: str | None, limit: int) -> tuple[list[Conversation], str | None]:
        """Most recent activity first (updated_at desc, id desc); `q` matches name, e-mail,
        phone and message text, case-insensitively."""
        query: dict[str, Any] = {"chatbot_id": chatbot_id}
        if status:
            query["status"] = status
        ands: list[dict] = []
        if q and q.strip():
            pattern = {"$regex": re.escape(q.strip()), "$options": "i"}
            matching = await self.messages.find(
                {"chatbot_id": chatbot_id, "text": pattern}, {"conversation_id": 1}
            ).sort("created_at", DESCENDING).limit(SEARCH_MESSAGE_SCAN).to_list()
            ids = sorted({m["conversation_id"] for m in matching})
            ors: list[dict] = [{"display_name": pattern}, {"contact.name": pattern}, {"contact.email": pattern},
                               {"contact.phone": pattern}, {"visitor_name": pattern}]
            if ids:
                ors.append({"_id": {"$in": ids}})
            ands.append({"$or": ors})
        if cursor:
            at_raw, last_id = decode_cursor(cursor)
            at = _cursor_time(at_raw)
            ands.append({"$or": [{"updated_at": {"$lt": at}}, {"updated_at": at, "_id": {"$lt": last_id}}]})
        if ands:
            query["$and"] = ands
        docs = await self.conversations.find(query).sort([("updated_at", DESCENDING), ("_id", DESCENDING)]).limit(limit + 1).to_list()
        next_cursor = None
        if len(docs) > limit:
            docs = docs[:limit]
            next_cursor = encode_cursor(docs[-1]["updated_at"].isoformat(), docs[-1]["_id"])
        return [Conversation.model_validate(d) for d in docs], next_cursor

    # -- messages
    async def insert_message(self, doc: dict) -> bool:
        """False when this message id is already stored (a replay)."""
        return await self._message_inserts.submit({**doc, "at_us": to_us(doc["created_at"])})

    async def get_message(self, message_id: str) -> dict | None:
        return await self._message_reads.submit(message_id)

    async def update_message(self, message_id: str, set_fields: dict) -> None:
        """Set fields of a stored message the caller has read: one handler at a time changes a
        conversation's messages (the bus's keyed dispatcher), so it knows the result."""
        await self._message_updates.submit((message_id, {"$set": set_fields}))

    async def advance_delivery(self, message_id: str, from_states: list[str | None], set_fields: dict) -> None:
        """Set a message's delivery fields only while its delivery state is one of
        `from_states`: written, not read (a repeat or a late report matches nothing)."""
        await self._message_updates.submit(({"_id": message_id, "delivery": {"$in": from_states}}, {"$set": set_fields}))

    async def count_messages(self, conversation_id: str) -> int:
        return await self.messages.count_documents({"conversation_id": conversation_id})

    async def messages_before(self, conversation_id: str, before: str | None, limit: int) -> tuple[list[dict], str | None]:
        """The `limit` messages before the cursor, oldest first; the cursor pages further back.

        Ordered by `at_us` (epoch microseconds, exact) because BSON dates keep only
        milliseconds and messages often arrive within one."""
        query: dict[str, Any] = {"conversation_id": conversation_id}
        if before:
            at_raw, last_id = decode_cursor(before)
            at_us = _cursor_int(at_raw)
            query["$or"] = [{"at_us": {"$lt": at_us}}, {"at_us": at_us, "_id": {"$lt": last_id}}]
        docs = await self.messages.find(query).sort([("at_us", DESCENDING), ("_id", DESCENDING)]).limit(limit + 1).to_list()
        next_cursor = None
        if len(docs) > limit:
            docs = docs[:limit]
            next_cursor = encode_cursor(docs[-1]["at_us"], docs[-1]["_id"])
        docs.reverse()
        return docs, next_cursor

    # -- handoffs
    async def create_handoff(self, doc: dict) -> None:
        """Idempotent: a replay of the same handoff keeps the first record."""
        await self.handoffs.update_one({"_id": doc["_id"]}, {"$setOnInsert": doc}, upsert=True)

    async def update_handoff(self, handoff_id: str, set_fields: dict, history_entry: dict | None = None) -> None:
        update: dict[str, Any] = {"$set": set_fields}
        if history_entry is not None:
            update["$push"] = {"history": history_entry}
        await self.handoffs.update_one({"_id": handoff_id}, update)

    async def get_handoff(self, handoff_id: str) -> dict | None:
        return await self.handoffs.find_one({"_id": handoff_id})

    async def handoffs_of(self, conversation_id: str) -> list[dict]:
        """Every handoff record of a conversation (its history; a handful, indexed)."""
        return await self.handoffs.find({"conversation_id": conversation_id}, {"history": 0, "summary": 0}).to_list()

    async def count_visitor_messages_since(self, conversation_id: str, since: datetime) -> int:
        """The visitor's messages at or after `since` (the wait clock's nudges, recounted on a replay)."""
        return await self.messages.count_documents(
            {"conversation_id": conversation_id, "sender": "visitor", "at_us": {"$gte": to_us(since)}})

    async def count_closed_since(self, chatbot_id: str, since: datetime) -> int:
        return await self.handoffs.count_documents(
            {"chatbot_id": chatbot_id, "status": "closed", "closed_at": {"$gte": since}})

    async def closed_since(self, chatbot_id: str, since: datetime) -> list[dict]:
        return await self.handoffs.find(
            {"chatbot_id": chatbot_id, "status": "closed", "closed_at": {"$gte": since}}, {"_id": 1, "closed_at": 1}
        ).to_list()

    # -- commands
    async def get_command(self, command_id: str) -> dict | None:
        return await self.commands.find_one({"_id": command_id})

    async def save_command(self, command_id: str, doc: dict) -> dict:
        """Store a command's result once; if another instance stored one first, that one wins."""
        try:
            await self.commands.insert_one({"_id": command_id, **doc})
            return {"_id": command_id, **doc}
        except DuplicateKeyError:
            return await self.commands.find_one({"_id": command_id}) or {"_id": command_id, **doc}


def _version_is(version: int) -> Any:
    # Conversations stored before versions existed have none: they are at version 0.
    return {"$in": [0, None]} if version == 0 else version


def _chatbot(doc: dict) -> ChatbotSettings:
    return ChatbotSettings.model_validate({k: v for k, v in doc.items() if k not in ("_id", "last_command_id")})


# ---------------------------------------------------------------------- Redis index
@dataclass
class IndexChange:
    """What one transition or message does to a chatbot's index."""

    upsert_row: HandoffRow | None = None
    remove_row: str | None = None  # conversation id
    closed_add: tuple[str, datetime] | None = None  # handoff id, closed_at
    closed_remove: str | None = None  # handoff id
    after_close_add: tuple[str, datetime] | None = None  # conversation id, its first unseen message
    after_close_remove: str | None = None  # conversation id


@dataclass
class IndexState:
    """The index at one sequence number."""

    epoch: str
    seq: int
    counts: StatsCounts
    rows: list[HandoffRow] = field(default_factory=list)
    next_cursor: str | None = None
    row_count: int = 0  # HLEN rows: as many as open handoffs when the index is whole
    order_count: int = 0  # ZCARD order: likewise

    @property
    def whole(self) -> bool:
        return bool(self.epoch) and self.row_count == self.counts.open == self.order_count


# An index change, the next seq and the stats at it, atomically, in one round trip and one
# small answer (a MULTI of the same commands cost the queue twice the CPU: ~20 replies to parse).
# KEYS: _INDEX_KEYS. ARGV: bump the seq (1/0), today's and the week's start (ms), how many rows
# of the list to return too (-1: none), then the changes, each a letter and its arguments.
_INDEX_KEYS = ("open", "order", "rows", "meta", "closed", "after_close")
_APPLY = """
local i = 5
while i <= #ARGV do
  local op, id = ARGV[i], ARGV[i + 1]
  if op == 'U' then      -- a row upserted: id, waiting since, list order, the row
    redis.call('ZADD', KEYS[1], ARGV[i + 2], id)
    redis.call('ZADD', KEYS[2], ARGV[i + 3], id)
    redis.call('HSET', KEYS[3], id, ARGV[i + 4])
    i = i + 5
  elseif op == 'R' then  -- a row removed: id
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    redis.call('HDEL', KEYS[3], id)
    i = i + 2
  elseif op == 'C' then  -- a handoff closed: id, when, the oldest score kept (exclusive)
    redis.call('ZADD', KEYS[5], ARGV[i + 2], id)
    redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', ARGV[i + 3])
    i = i + 4
  elseif op == 'c' then  -- a close undone (reopened): id
    redis.call('ZREM', KEYS[5], id)
    i = i + 2
  elseif op == 'A' then  -- written to after its close: conversation id, when
    redis.call('ZADD', KEYS[6], ARGV[i + 2], id)
    i = i + 3
  elseif op == 'a' then  -- seen after its close: conversation id
    redis.call('ZREM', KEYS[6], id)
    i = i + 2
  else
    return redis.error_reply('unknown index change ' .. tostring(op))
  end
end
if ARGV[1] == '1' then redis.call('HINCRBY', KEYS[4], 'seq', 1) end
local stats = {
  redis.call('HMGET', KEYS[4], 'epoch', 'seq'), redis.call('HLEN', KEYS[3]), redis.call('ZCARD', KEYS[1]),
  redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES'), redis.call('ZCOUNT', KEYS[1], ARGV[2], '+inf'),
  redis.call('ZCOUNT', KEYS[5], ARGV[3], '+inf'), redis.call('ZCARD', KEYS[6]), redis.call('ZCARD', KEYS[2])}
if tonumber(ARGV[4]) >= 0 then stats[9] = redis.call('ZRANGE', KEYS[2], 0, ARGV[4], 'WITHSCORES') end
return stats
"""


class HandoffIndex:
    """Stats and the first page of the open list in O(log n + page), no Mongo query."""

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._apply_script = redis.register_script(_APPLY)

    def key(self, chatbot_id: str, part: str) -> str:
        return f"{self.prefix}:bot:{chatbot_id}:{part}"

    def rebuild_lock(self, chatbot_id: str, timeout_s: float = 120.0) -> Any:
        """A lock across queue instances (its key is not part of the index, so a rebuild
        never deletes it); it expires if its holder dies."""
        return self.redis.lock(self.key(chatbot_id, "rebuild-lock"), timeout=timeout_s, blocking_timeout=timeout_s)

    async def epoch(self, chatbot_id: str) -> str | None:
        return await self.redis.hget(self.key(chatbot_id, "meta"), "epoch")

    async def invalidate(self, chatbot_id: str) -> None:
        """Mark the index as being rebuilt (no epoch) before the rebuild reads Mongo: an
        `apply` that lands from here on sees no epoch and knows its change may be lost."""
        await self.redis.hdel(self.key(chatbot_id, "meta"), "epoch")

    async def counts_for_check(self, chatbot_id: str, week_starts_at: datetime) -> tuple[str | None, int, int]:
        """Epoch, open and closed-this-week counts; no epoch when the index is not whole."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hget(self.key(chatbot_id, "meta"), "epoch")
        pipe.zcard(self.key(chatbot_id, "open"))
        pipe.zcount(self.key(chatbot_id, "closed"), to_ms(week_starts_at), "+inf")
        pipe.hlen(self.key(chatbot_id, "rows"))
        pipe.zcard(self.key(chatbot_id, "order"))
        epoch, open_count, closed_count, rows, order = await pipe.execute()
        whole = int(rows) == int(open_count) == int(order)
        return (epoch if whole else None), int(open_count), int(closed_count)

    async def open_counts(self, chatbot_ids: list[str]) -> dict[str, int]:
        """Open handoffs per chatbot (the metrics' gauge): one pipelined ZCARD each."""
        pipe = self.redis.pipeline(transaction=False)
        for chatbot_id in chatbot_ids:
            pipe.zcard(self.key(chatbot_id, "open"))
        return dict(zip(chatbot_ids, map(int, await pipe.execute()), strict=True)) if chatbot_ids else {}

    async def is_whole(self, chatbot_id: str) -> bool:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hget(self.key(chatbot_id, "meta"), "epoch")
        pipe.zcard(self.key(chatbot_id, "open"))
        pipe.hlen(self.key(chatbot_id, "rows"))
        pipe.zcard(self.key(chatbot_id, "order"))
        epoch, open_count, rows, order = await pipe.execute()
        return epoch is not None and int(open_count) == int(rows) == int(order)

    def _keys(self, chatbot_id: str) -> list[str]:
        return [self.key(chatbot_id, part) for part in _INDEX_KEYS]

    async def _run(self, chatbot_id: str, window: StatsWindow, changes: list[Any], *, bump_seq: bool,
                   page: int = -1) -> list[Any]:
        return await self._apply_script(keys=self._keys(chatbot_id), args=[
            int(bump_seq), to_ms(window.today_starts_at), to_ms(window.week_starts_at), page, *changes])

    @staticmethod
    def _read_stats(results: list[Any]) -> IndexState:
        (epoch, seq), rows, open_count, oldest, today, resolved, after_close, order = results[:8]
        return IndexState(epoch or "", int(seq or 0), StatsCounts(
            open=int(open_count), oldest_waiting_ms=int(float(oldest[1])) if oldest else None,
            today=int(today), resolved_this_week=int(resolved), closed_with_new=int(after_close),
        ), row_count=int(rows), order_count=int(order))

    async def apply(self, chatbot_id: str, change: IndexChange, window: StatsWindow,
                    *, bump_seq: bool = True) -> IndexState:
        """Apply `change`, take the next seq and read the stats in one script, so the update
        that carries seq N shows exactly the state at N."""
        changes: list[Any] = []
        if change.upsert_row is not None:
            row = change.upsert_row
            changes += ["U", row.conversation_id, to_ms(row.waiting_since), row_order(row), row.model_dump_json()]
        if change.remove_row is not None:
            changes += ["R", change.remove_row]
        if change.closed_add is not None:
            handoff_id, closed_at = change.closed_add
            changes += ["C", handoff_id, to_ms(closed_at), f"({to_ms(closed_at) - CLOSED_KEEP_MS}"]
        if change.closed_remove is not None:
            changes += ["c", change.closed_remove]
        if change.after_close_add is not None:
            conversation_id, at = change.after_close_add
            changes += ["A", conversation_id, to_ms(at)]
        if change.after_close_remove is not None:
            changes += ["a", change.after_close_remove]
        return self._read_stats(await self._run(chatbot_id, window, changes, bump_seq=bump_seq))

    async def stats(self, chatbot_id: str, window: StatsWindow) -> IndexState:
        return self._read_stats(await self._run(chatbot_id, window, [], bump_seq=False))

    async def snapshot(self, chatbot_id: str, window: StatsWindow, limit: int) -> IndexState:
        """Stats and the first page at one seq: one script plus one HMGET for the rows."""
        results = await self._run(chatbot_id, window, [], bump_seq=False, page=limit)
        state = self._read_stats(results)
        flat = results[8]
        members = [(flat[i], float(flat[i + 1])) for i in range(0, len(flat), 2)]
        state.rows, state.next_cursor = await self._rows_page(chatbot_id, members, limit)
        return state

    async def page(self, chatbot_id: str, cursor: str | None, limit: int) -> tuple[list[HandoffRow], str | None, int]:
        """Open handoffs in the list's order (the wait clock's, `order`) after the cursor
        (score, conversation id): exact even when rows before it were removed meanwhile."""
        list_key = self.key(chatbot_id, "order")
        if not cursor:
            pipe = self.redis.pipeline(transaction=False)
            pipe.zrange(list_key, 0, limit, withscores=True)
            pipe.zcard(list_key)
            members, total = await pipe.execute()
            rows, next_cursor = await self._rows_page(chatbot_id, members, limit)
            return rows, next_cursor, int(total)
        raw_score, last_id = decode_cursor(cursor)
        score = _cursor_int(raw_score)
        pipe = self.redis.pipeline(transaction=False)
        pipe.zcount(list_key, score, score)
        pipe.zcard(list_key)
        ties, total = await pipe.execute()
        members = await self.redis.zrangebyscore(list_key, score, "+inf", start=0, num=limit + 1 + int(ties), withscores=True)
        members = [(m, s) for m, s in members if int(s) > score or m > last_id]
        rows, next_cursor = await self._rows_page(chatbot_id, members, limit)
        return rows, next_cursor, int(total)

    async def _rows_page(self, chatbot_id: str, members: list[tuple[str, float]], limit: int) -> tuple[list[HandoffRow], str | None]:
        more = len(members) > limit
        members = members[:limit]
        if not members:
            return [], None
        raw = await self.redis.hmget(self.key(chatbot_id, "rows"), [m for m, _ in members])
        rows = [HandoffRow.model_validate_json(r) for r in raw if r is not None]
        next_cursor = encode_cursor(int(members[-1][1]), members[-1][0]) if more else None
        return rows, next_cursor

    async def rebuild(self, chatbot_id: str, rows: Iterable[HandoffRow], closed: Iterable[tuple[str, datetime]],
                      after_close: Iterable[tuple[str, datetime]] = (), batch: int = 5000) -> str:
        """Replace the chatbot's index with what Mongo says, under a new epoch (clients that
        see it resync from a snapshot). The epoch is written last: no epoch = incomplete."""
        epoch = new_id()
        keys = [self.key(chatbot_id, p) for p in ("meta", "open", "closed", "rows", "seq", "after_close", "order")]
        await self.redis.delete(*keys)
        rows, closed = list(rows), list(closed)
        for i in range(0, len(rows), batch):
            chunk = rows[i:i + batch]
            pipe = self.redis.pipeline(transaction=False)
            pipe.zadd(self.key(chatbot_id, "open"), {r.conversation_id: to_ms(r.waiting_since) for r in chunk})
            pipe.zadd(self.key(chatbot_id, "order"), {r.conversation_id: row_order(r) for r in chunk})
            pipe.hset(self.key(chatbot_id, "rows"), mapping={r.conversation_id: r.model_dump_json() for r in chunk})
            await pipe.execute()
        for i in range(0, len(closed), batch):
            chunk = closed[i:i + batch]
            await self.redis.zadd(self.key(chatbot_id, "closed"), {h: to_ms(at) for h, at in chunk})
        after_close = list(after_close)
        for i in range(0, len(after_close), batch):
            await self.redis.zadd(self.key(chatbot_id, "after_close"),
                                  {c: to_ms(at) for c, at in after_close[i:i + batch]})
        await self.redis.hset(self.key(chatbot_id, "meta"), mapping={"epoch": epoch})
        return epoch


def row_order(row: HandoffRow) -> int:
    return order_score(row.wait_started_at, row.last_agent_reply_at, row.waiting_since)


def oldest_from(counts: StatsCounts) -> datetime | None:
    return from_ms(counts.oldest_waiting_ms) if counts.oldest_waiting_ms is not None else None
