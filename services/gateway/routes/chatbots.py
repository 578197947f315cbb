"""`/api/chatbots/{chatbot_id}/...`: the dashboard's reads (proxied to the queue's internal
query API), the agent actions and the chatbot's settings. Every route depends on `Member`
(or `MemberWithCsrf`): see deps.py for the order of checks."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from services.gateway.commands import act, await_result, command, command_answer
from services.gateway.deps import GatewayDep, Member, MemberWithCsrf, json_object, validated
from services.gateway.domain import CommandBody, ReplyBody
from services.gateway.queue_client import internal_path
from shared.chatbots import ChatbotView, HumanHandoffSettings
from shared.events import CommandResult, HumanHandoffUpdate
from shared.ids import new_id
from shared.views import ConversationDetail, ConversationView, HandoffRow, Page, Snapshot, Stats

BASE = "/api/chatbots/{chatbot_id}"

router = APIRouter()


def proxied(body: bytes) -> Response:
    return Response(content=body, media_type="application/json")


def body_doc(model: type[BaseModel]) -> dict[str, Any]:
    """The documented JSON body of a route that parses its body by hand."""
    return {"requestBody": {"content": {"application/json": {"schema": model.model_json_schema()}}}}


# ------------------------------------------------------------ reads (proxied to the queue)
@router.get(BASE + "/snapshot", tags=["dashboard"], response_model=Snapshot)
async def snapshot(chatbot_id: str, gw: GatewayDep, _: Member,
                   limit: int = Query(50, ge=1, le=200)) -> Response:
    return proxied(await gw.queue.get(internal_path(chatbot_id, "snapshot"), {"limit": limit}))


@router.get(BASE + "/stats", tags=["dashboard"], response_model=Stats)
async def stats(chatbot_id: str, gw: GatewayDep, _: Member) -> Response:
    return proxied(await gw.queue.get(internal_path(chatbot_id, "stats")))


@router.get(BASE + "/handoffs", tags=["dashboard"], response_model=Page[HandoffRow])
async def handoffs(chatbot_id: str, gw: GatewayDep, _: Member, cursor: str | None = Query(None, max_length=512),
                   limit: int = Query(50, ge=1, le=200)) -> Response:
    return proxied(await gw.queue.get(internal_path(chatbot_id, "handoffs"), {"cursor": cursor, "limit": limit}))


@router.get(BASE + "/conversations", tags=["conversations"], response_model=Page[ConversationView])
async def conversations(chatbot_id: str, gw: GatewayDep, _: Member,
                        status: Literal["all", "needs_reply", "active", "closed"] = "all",
                        q: str | None = Query(None, max_length=200), cursor: str | None = Query(None, max_length=512),
                        limit: int = Query(50, ge=1, le=200)) -> Response:
    return proxied(await gw.queue.get(internal_path(chatbot_id, "conversations"),
                                      {"status": status, "q": q, "cursor": cursor, "limit": limit}))


@router.get(BASE + "/conversations/{conversation_id}", tags=["conversations"], response_model=ConversationDetail)
async def conversation(chatbot_id: str, conversation_id: str, gw: GatewayDep, _: Member,
                       before: str | None = Query(None, max_length=512),
                       limit: int = Query(100, ge=1, le=500)) -> Response:
    return proxied(await gw.queue.get(internal_path(chatbot_id, "conversations", conversation_id),
                                      {"before": before, "limit": limit}))


# ------------------------------------------------------------ agent actions
# URL segment -> the command's action and the body it takes. A route per action (its own
# URL, documented body and, through name=action, operation id), one implementation.
ACTIONS: dict[str, tuple[str, type[CommandBody]]] = {
    "reply": ("reply", ReplyBody),
    "close": ("close", CommandBody),
    "reopen": ("reopen", CommandBody),
    "return-to-ai": ("return_to_ai", CommandBody),
    "mark-seen": ("mark_seen", CommandBody),
    # Claims (services/queue/assignment.py): 409 "<name> is already handling this conversation."
    "take": ("take", CommandBody),
    "take-over": ("take_over", CommandBody),
}
ACTION_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"model": CommandResult}, 202: {"description": "Not answered in time; applied once later"},
    404: {"description": "Unknown conversation"}, 409: {"description": "Refused (invalid transition)"},
    422: {"description": "Invalid body"}}


def add_action_route(segment: str, action: str, body_model: type[CommandBody]) -> None:
    async def endpoint(chatbot_id: str, conversation_id: str, request: Request, gw: GatewayDep,
                       session: MemberWithCsrf) -> JSONResponse:
        return await act(gw, request, session, chatbot_id, conversation_id, action, body_model)

    router.post(BASE + "/conversations/{conversation_id}/" + segment, name=action, tags=["actions"],
                responses=ACTION_ANSWERS, openapi_extra=body_doc(body_model))(endpoint)


for _segment, (_action, _body) in ACTIONS.items():
    add_action_route(_segment, _action, _body)


# ------------------------------------------------------------ settings
class SavedFrom(BaseModel):
    """What a settings form sends besides the settings: the `version` it was loaded at (GET
    .../settings) and an optional `command_id` (a retried save reuses it)."""

    version: int = Field(ge=0)
    command_id: str | None = Field(default=None, min_length=8, max_length=128)


class HumanHandoffSave(HumanHandoffSettings, SavedFrom):
    """The Human Handoff form's body (documentation: it is read as its two parts)."""


@router.get(BASE + "/settings", tags=["settings"], response_model=ChatbotView,
            summary="The chatbot's settings, without secrets")
async def get_settings(chatbot_id: str, gw: GatewayDep, _: Member) -> ChatbotView:
    return await gw.queue.chatbot_settings(chatbot_id)


@router.put(BASE + "/settings/human-handoff", tags=["settings"], openapi_extra=body_doc(HumanHandoffSave),
            responses={200: {"model": ChatbotView}, 409: {"description": "The settings changed since `version`"}},
            summary="Replace the Human Handoff tool's settings, from the version the form was loaded at")
async def put_human_handoff(chatbot_id: str, request: Request, gw: GatewayDep,
                            session: MemberWithCsrf) -> JSONResponse:
    data = await json_object(request)
    meta = {k: data.pop(k) for k in ("version", "command_id") if k in data}
    human_handoff = validated(HumanHandoffSettings, data)
    saved_from = validated(SavedFrom, meta)
    command_id = saved_from.command_id or new_id()
    # Only the tool's part travels (no secret on the bus); the queue merges it into the
    # settings only if they are still at `version`, else answers 409.
    update = command(HumanHandoffUpdate, chatbot_id=chatbot_id, command_id=command_id, human_handoff=human_handoff,
                     based_on_version=saved_from.version, agent=session.agent.ref())
    result = await await_result(gw, command_id, update)
    if result is not None and result.ok and result.settings is not None:
        return JSONResponse(result.settings.model_dump(mode="json"))
    return command_answer(result, command_id)
