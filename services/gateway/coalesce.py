"""One frame for several of a chatbot's updates (docs/contracts.md "Live protocol",
coalescing). Pure: no sockets, no clock.

A DashboardUpdate carries state, not deltas, and is of two kinds of parts:

- keyed latest state, where only the newest copy matters: the stats (per chatbot), a row of
  the open-handoff list (`row_upserted` / `row_removed`, per conversation), the conversation
  header (per conversation) and a summary (per handoff);
- ordered appends, which are never dropped: a transcript `message`, `settings_changed`, and
  the update that starts a conversation's waiting period (a handoff or a reopen), which the
  dashboard alerts on.

Within one frame each keyed part stays only on the newest update (by seq) that carries it.
Every update keeps its place (its epoch and seq), even when nothing is left of it, so the
client's ordering and gap detection work on coalesced frames exactly as on single ones."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

Entry = dict[str, Any]  # a DashboardUpdate as JSON (model_dump(mode="json"))

# The parts an entry may carry beyond its place; one left over keeps it from being a placeholder.
PARTS = ("stats", "row_upserted", "row_removed", "conversation", "message", "summary", "settings_changed")


def dumps(frame: dict[str, Any]) -> str:
    return json.dumps(frame, separators=(",", ":"))


def starts_waiting(entry: Entry) -> bool:
    """The update of a handoff or a reopen: its conversation is handed off and changed last
    at the instant its waiting began (later activity moves `updated_at` on)."""
    conversation = entry.get("conversation")
    return bool(entry.get("row_upserted") and conversation and conversation.get("status") == "handed_off"
                and conversation.get("waiting_since") and conversation["waiting_since"] == conversation.get("updated_at"))


def _keyed(entry: Entry) -> Iterator[tuple[tuple[str, str], str]]:
    """(key, field) of each keyed part the entry carries."""
    if entry.get("stats"):
        yield ("stats", ""), "stats"
    if entry.get("row_upserted"):
        yield ("row", entry["row_upserted"]["conversation_id"]), "row_upserted"
    if entry.get("row_removed"):
        yield ("row", entry["row_removed"]), "row_removed"
    if entry.get("conversation"):
        yield ("conversation", entry["conversation"]["conversation_id"]), "conversation"
    if entry.get("summary"):
        yield ("summary", entry["summary"]["handoff_id"]), "summary"


def _epoch_runs(entries: list[Entry]) -> Iterator[list[Entry]]:
    """Consecutive entries of one epoch, in seq order; the same seq twice (a redelivery) once,
    its later copy. Seqs compare only within an epoch (a new one restarts them)."""
    run: dict[int, Entry] = {}
    epoch = None
    for entry in entries:
        if run and entry["epoch"] != epoch:
            yield [run[s] for s in sorted(run)]
            run = {}
        epoch = entry["epoch"]
        run[entry["seq"]] = entry
    if run:
        yield [run[s] for s in sorted(run)]


def compact(entries: list[Entry]) -> list[Entry]:
    """The entries in order, each keyed part kept on its newest carrier only."""
    out: list[Entry] = []
    for run in _epoch_runs(entries):
        newest: dict[tuple[str, str], int] = {}
        for i, entry in enumerate(run):
            for key, _ in _keyed(entry):
                newest[key] = i
        for i, entry in enumerate(run):
            event = starts_waiting(entry)
            stale = [f for key, f in _keyed(entry)
                     if newest[key] != i and not (event and f in ("row_upserted", "conversation"))]
            if not stale:
                out.append(entry)
                continue
            kept = {**entry, **dict.fromkeys(stale)}
            if not any(kept.get(p) for p in PARTS):
                kept = {"epoch": entry["epoch"], "seq": entry["seq"]}  # only its place is left
            out.append(kept)
    return out


def updates_frame(chatbot_id: str, entries: list[Entry]) -> str:
    """The frame for a chatbot's updates: a single one as an `update` frame (as it always
    was), several as one `updates` frame of the compacted entries."""
    compacted = compact(entries)
    if len(compacted) == 1:
        entry = compacted[0]
        return dumps({"type": "update", "chatbot_id": chatbot_id, "epoch": entry["epoch"], "seq": entry["seq"],
                      "update": entry})
    return dumps({"type": "updates", "chatbot_id": chatbot_id, "updates": compacted})
