"""The internal query API (docs/contracts.md, "Queue's internal query API"): only the
gateway calls it. Stats, snapshot and the open list come from the Redis index; the
Conversations table and transcripts from Mongo."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, HTTPException, Query

from services.queue.store import decode_cursor
from services.queue.workflow import HandoffQueue, message_view_of, view_of
from shared.chatbots import ChatbotSettings
from shared.views import ConversationDetail, ConversationView, HandoffRow, MessageView, Page, Snapshot, Stats

STATUS_FILTERS: dict[str, str | None] = {"all": None, "needs_reply": "handed_off", "active": "active", "closed": "closed"}


def build_router(queue: HandoffQueue, max_page: int = 200) -> APIRouter:
    router = APIRouter(prefix="/internal", tags=["internal"])

    async def known_chatbot(chatbot_id: str) -> None:
        if await queue.chatbot(chatbot_id) is None:
            raise HTTPException(404, "Unknown chatbot.")

    def checked_cursor(cursor: str | None) -> str | None:
        if cursor:
            try:
                decode_cursor(cursor)
            except ValueError as exc:
                raise HTTPException(422, "Invalid cursor.") from exc
        return cursor or None

    def invalid_cursor(exc: ValueError) -> HTTPException:
        # A cursor that decodes but is of another list (or tampered with).
        return HTTPException(422, str(exc) or "Invalid cursor.")

    @router.get("/chatbots", response_model=list[ChatbotSettings])
    async def list_chatbots() -> list[ChatbotSettings]:
        return await queue.record.list_chatbots()

    @router.get("/chatbots/{chatbot_id}/settings", response_model=ChatbotSettings)
    async def chatbot_settings(chatbot_id: str) -> ChatbotSettings:
        found = await queue.record.get_chatbot(chatbot_id)
        if found is None:
            raise HTTPException(404, "Unknown chatbot.")
        return found

    @router.get("/chatbots/{chatbot_id}/snapshot", response_model=Snapshot)
    async def snapshot(chatbot_id: str, limit: int = Query(50, ge=1, le=max_page)) -> Snapshot:
        await known_chatbot(chatbot_id)
        await queue.ensure_index(chatbot_id)
        now, window = await queue.window(chatbot_id)
        state = await queue.index.snapshot(chatbot_id, window, limit)
        return Snapshot(
            chatbot_id=chatbot_id, epoch=state.epoch, seq=state.seq,
            stats=queue.stats_of(chatbot_id, state, window, now),
            handoffs=Page[HandoffRow](items=state.rows, next_cursor=state.next_cursor, total=state.counts.open),
        )

    @router.get("/chatbots/{chatbot_id}/stats", response_model=Stats)
    async def stats(chatbot_id: str) -> Stats:
        await known_chatbot(chatbot_id)
        await queue.ensure_index(chatbot_id)
        now, window = await queue.window(chatbot_id)
        return queue.stats_of(chatbot_id, await queue.index.stats(chatbot_id, window), window, now)

    @router.get("/chatbots/{chatbot_id}/handoffs", response_model=Page[HandoffRow])
    async def handoffs(chatbot_id: str, cursor: str | None = None,
                       limit: int = Query(50, ge=1, le=max_page)) -> Page[HandoffRow]:
        await known_chatbot(chatbot_id)
        await queue.ensure_index(chatbot_id)
        try:
            rows, next_cursor, total = await queue.index.page(chatbot_id, checked_cursor(cursor), limit)
        except ValueError as exc:
            raise invalid_cursor(exc) from exc
        return Page[HandoffRow](items=rows, next_cursor=next_cursor, total=total)

    @router.get("/chatbots/{chatbot_id}/conversations", response_model=Page[ConversationView])
    async def conversations(
        chatbot_id: str,
        status: Literal["all", "needs_reply", "active", "closed"] = "all",
        q: str | None = Query(None, max_length=200),
        cursor: str | None = None,
        limit: int = Query(50, ge=1, le=max_page),
    ) -> Page[ConversationView]:
        await known_chatbot(chatbot_id)
        try:
            docs, next_cursor = await queue.record.conversations_page(
                chatbot_id, STATUS_FILTERS[status], q, checked_cursor(cursor), limit)
        except ValueError as exc:
            raise invalid_cursor(exc) from exc
        return Page[ConversationView](items=[view_of(d) for d in docs], next_cursor=next_cursor)

    @router.get("/chatbots/{chatbot_id}/conversations/{conversation_id}", response_model=ConversationDetail)
    async def conversation(chatbot_id: str, conversation_id: str, before: str | None = None,
                           limit: int = Query(100, ge=1, le=500)) -> ConversationDetail:
        conv = await queue.record.get_conversation(conversation_id)
        if conv is None or conv["chatbot_id"] != chatbot_id:
            raise HTTPException(404, "Unknown conversation.")
        try:
            docs, next_cursor = await queue.record.messages_before(conversation_id, checked_cursor(before), limit)
        except ValueError as exc:
            raise invalid_cursor(exc) from exc
        return ConversationDetail(
            conversation=view_of(conv),
            messages=Page[MessageView](items=[message_view_of(d) for d in docs], next_cursor=next_cursor,
                                       total=int(conv.get("message_count") or 0)),
        )

    return router
