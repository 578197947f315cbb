"""`POST /api/chatbots/{chatbot_id}/conversations/{conversation_id}/refresh-summary`: an
agent's "Refresh" on the Summary banner. Each refresh is a model call, so it is limited per
conversation (SUMMARY_REFRESHES_PER_CONVERSATION, in Redis: every gateway process counts
together; 429 with Retry-After); then it is the `refresh_summary` command round trip every
action makes (the queue answers 404 / 409 in words; the summarizer does the work and every
dashboard sees it in flight)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from limits import RateLimitItem

from services.gateway.commands import act
from services.gateway.deps import GatewayDep, MemberWithCsrf
from services.gateway.domain import CommandBody
from services.gateway.routes.chatbots import ACTION_ANSWERS, BASE, body_doc
from shared.ratelimit import RateLimited, RateLimits

router = APIRouter()


@dataclass(frozen=True)
class RefreshLimit:
    limits: RateLimits
    per_conversation: RateLimitItem

    async def check(self, chatbot_id: str, conversation_id: str) -> None:
        decision = await self.limits.hit(self.per_conversation, "summary-refresh", chatbot_id, conversation_id)
        if not decision.allowed:
            raise RateLimited(decision.retry_after_s, "This summary was refreshed a moment ago. "
                              f"Try again in {decision.retry_after_s} seconds.")


@router.post(BASE + "/conversations/{conversation_id}/refresh-summary", name="refresh_summary", tags=["actions"],
             responses={**ACTION_ANSWERS, 429: {"description": "Refreshed too often; Retry-After says when"}},
             openapi_extra=body_doc(CommandBody))
async def refresh_summary(chatbot_id: str, conversation_id: str, request: Request, gw: GatewayDep,
                          session: MemberWithCsrf) -> JSONResponse:
    limit: RefreshLimit = request.app.state.summary_refresh_limit
    await limit.check(chatbot_id, conversation_id)
    return await act(gw, request, session, chatbot_id, conversation_id, "refresh_summary", CommandBody)
