"""The internal query API (docs/contracts.md, "Queue's internal query API"): only the
gateway calls it, with the service token (auth.py). Stats, snapshot and the open list come
from the Redis index; the Conversations table and transcripts from Mongo. No route returns
a channel secret: settings leave as `ChatbotView`."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request

from services.queue.auth import require_service_token
from services.queue.conversation import message_view
from services.queue.history import history_items
from services.queue.parts import Queue
from services.queue.store import decode_cursor
from shared.chatbots import ChatbotView
from shared.views import ConversationDetail, ConversationView, HandoffRow, MessageView, Page, Snapshot, Stats

STATUS_FILTERS: dict[str, str | None] = {"all": None, "needs_reply": "handed_off", "active": "active", "closed": "closed"}

router = APIRouter(prefix="/internal", tags=["internal"], dependencies=[Depends(require_service_token)])


def the_queue(request: Request) -> Queue:
    return request.app.state.queue


QueueDep = Annotated[Queue, Depends(the_queue)]


async def known_chatbot(chatbot_id: str, queue: QueueDep) -> Queue:
    if await queue.chatbots.get(chatbot_id) is None:
        raise HTTPException(404, "Unknown chatbot.")
    return queue


KnownChatbot = Annotated[Queue, Depends(known_chatbot)]


def page_limit(request: Request, limit: int = Query(50, ge=1)) -> int:
    max_page = request.app.state.queue.settings.queue_max_page
    if limit > max_page:
        raise HTTPException(422, f"limit: at most {max_page}.")
    return limit


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


@router.get("/chatbots", response_model=list[ChatbotView])
async def list_chatbots(queue: QueueDep) -> list[ChatbotView]:
    return [bot.view() for bot in await queue.record.list_chatbots()]


@router.get("/chatbots/{chatbot_id}/settings", response_model=ChatbotView)
async def chatbot_settings(chatbot_id: str, queue: QueueDep) -> ChatbotView:
    found = await queue.record.get_chatbot(chatbot_id)
    if found is None:
        raise HTTPException(404, "Unknown chatbot.")
    return found.view()


@router.get("/chatbots/{chatbot_id}/snapshot", response_model=Snapshot)
async def snapshot(chatbot_id: str, queue: KnownChatbot, limit: int = Depends(page_limit)) -> Snapshot:
    return await queue.feed.snapshot(chatbot_id, limit)


@router.get("/chatbots/{chatbot_id}/stats", response_model=Stats)
async def stats(chatbot_id: str, queue: KnownChatbot) -> Stats:
    return await queue.feed.stats(chatbot_id)


@router.get("/chatbots/{chatbot_id}/handoffs", response_model=Page[HandoffRow])
async def handoffs(chatbot_id: str, queue: KnownChatbot, cursor: str | None = None,
                   limit: int = Depends(page_limit)) -> Page[HandoffRow]:
    try:
        return await queue.feed.open_page(chatbot_id, checked_cursor(cursor), limit)
    except ValueError as exc:
        raise invalid_cursor(exc) from exc


@router.get("/chatbots/{chatbot_id}/conversations", response_model=Page[ConversationView])
async def conversations(
    chatbot_id: str,
    queue: KnownChatbot,
    status: Literal["all", "needs_reply", "active", "closed"] = "all",
    q: str | None = Query(None, max_length=200),
    cursor: str | None = None,
    limit: int = Depends(page_limit),
) -> Page[ConversationView]:
    try:
        convs, next_cursor = await queue.record.conversations_page(
            chatbot_id, STATUS_FILTERS[status], q, checked_cursor(cursor), limit)
    except ValueError as exc:
        raise invalid_cursor(exc) from exc
    return Page[ConversationView](items=[c.view() for c in convs], next_cursor=next_cursor)


@router.get("/chatbots/{chatbot_id}/conversations/{conversation_id}", response_model=ConversationDetail)
async def conversation(chatbot_id: str, conversation_id: str, queue: QueueDep, before: str | None = None,
                       limit: int = Query(100, ge=1, le=500)) -> ConversationDetail:
    conv = await queue.record.get_conversation(conversation_id)
    if conv is None or conv.chatbot_id != chatbot_id:
        raise HTTPException(404, "Unknown conversation.")
    try:
        docs, next_cursor = await queue.record.messages_before(conversation_id, checked_cursor(before), limit)
    except ValueError as exc:
        raise invalid_cursor(exc) from exc
    return ConversationDetail(
        conversation=conv.view(),
        messages=Page[MessageView](items=[message_view(d) for d in docs], next_cursor=next_cursor,
                                   total=conv.message_count),
        handoffs=history_items(await queue.record.handoffs_of(conversation_id), current_id=conv.handoff_id,
                               current_first_reply_at=conv.first_reply_at) if not before else [],
    )
