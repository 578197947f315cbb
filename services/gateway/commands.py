"""The command round-trip behind every action: publish an `AgentCommand` or a
`HumanHandoffUpdate` on `agent.commands`, wait `COMMAND_TIMEOUT_S` for the queue's
`CommandResult` (it comes back on `dashboard.updates`, see handlers.py), and turn it into
the HTTP answer: 200 / 404 / 409 / 422 as the result says, 202 when it did not come in time
(the command is still applied once)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, TypeVar

from fastapi import HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError

from services.gateway import domain
from services.gateway.claims import command_extras
from services.gateway.deps import Gateway, parse_body
from services.gateway.domain import CommandBody
from services.gateway.store import Session
from shared.events import AgentCommand, CommandResult, HumanHandoffUpdate

log = logging.getLogger("handoff.gateway.commands")

E = TypeVar("E", bound=BaseModel)


async def await_result(gw: Gateway, command_id: str,
                       event: AgentCommand | HumanHandoffUpdate) -> CommandResult | None:
    """Publish the command and wait for its CommandResult; None when it did not come in time."""
    fut = gw.pending.expect(command_id)  # before publishing: a quick answer is never missed
    try:
        try:
            await gw.commands.publish(event)
        except Exception as exc:  # noqa: BLE001 - the broker did not confirm it (it may
            # still have it, e.g. after a timeout): a retry with the same command id is
            # applied once all the same, since the queue answers a known id from its record.
            log.exception("could not publish command %s", command_id)
            raise HTTPException(503, "Could not send the command. Try again in a moment.") from exc
        try:
            return await asyncio.wait_for(asyncio.shield(fut), gw.settings.command_timeout_s)
        except TimeoutError:
            return None
    finally:
        gw.pending.forget(command_id, fut)


def command_answer(result: CommandResult | None, command_id: str) -> JSONResponse:
    if result is None:
        return JSONResponse({"command_id": command_id, "status": "pending", "detail": domain.COMMAND_PENDING},
                            status_code=202)
    status, body = domain.command_response(result)
    return JSONResponse(body, status_code=status)


def command(factory: type[E], **fields: Any) -> E:
    """The event, or a 422 when the fields do not make one."""
    try:
        return factory(**fields)
    except ValidationError as exc:
        raise HTTPException(422, domain.validation_message(exc)) from None


async def act(gw: Gateway, request: Request, session: Session, chatbot_id: str, conversation_id: str,
              action: str, body_model: type[CommandBody]) -> JSONResponse:
    """An agent action on a conversation (reply, close, reopen, return to the AI, take, take over)."""
    body = await parse_body(request, body_model)
    event = command(AgentCommand, chatbot_id=chatbot_id, conversation_id=conversation_id,
                    command_id=body.command_id, action=action, text=getattr(body, "text", None),
                    agent=session.agent.ref(), **await command_extras(gw, chatbot_id, conversation_id, action))
    return command_answer(await await_result(gw, body.command_id, event), body.command_id)
