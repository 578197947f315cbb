"""Agents' commands (`agent.commands`): reply, close, reopen, return to AI, and saving a
chatbot's Human Handoff settings (that part only, from the version the agent saw). Each
command is answered once with a `CommandResult` (stored by command id, so a retried click
gets the same answer and changes nothing more).

Ordering: the conditional write in Mongo first (it decides), then the handoff history,
then the index, then the events; `last_command_id` recognises a transition this command
already made before a crash.
"""

from __future__ import annotations

import logging
from typing import Any

from services.queue import assignment, domain, summaries, waitclock
from services.queue.conversation import SEEN_AFTER_CLOSE, Conversation, message_view
from services.queue.domain import CommandRefused, derived_event_id
from services.queue.incoming import history_entry, state_event
from services.queue.metrics import first_reply
from services.queue.store import IndexChange
from services.queue.usecase import UseCases
from shared.chatbots import ChatbotView
from shared.events import AgentCommand, CommandResult, HumanHandoffUpdate, OutboundMessage

log = logging.getLogger("handoff.queue.commands")

# A transition retried this often when only a visitor message (not another transition)
# changed the conversation under it.
SAVE_ATTEMPTS = 3


class AgentCommands(UseCases):
    async def on_agent_command(self, cmd: AgentCommand) -> None:
        if await self._answer_stored(cmd.command_id):
            return
        conv = await self.record.get_conversation(cmd.conversation_id) if cmd.conversation_id else None
        if conv is None or conv.chatbot_id != cmd.chatbot_id:
            await self._answer(cmd, 404, domain.UNKNOWN_CONVERSATION, None)
            return
        try:
            if cmd.action == "reply":
                conv = await self._reply(cmd, conv)
            elif cmd.action == "mark_seen":
                conv = await self._mark_seen(cmd, conv)
            elif cmd.action in assignment.CLAIMS:
                conv = await assignment.claim(self, cmd, conv)
            elif cmd.action == "refresh_summary":
                conv = await summaries.request_refresh(self.state_out, cmd, conv)
            else:
                conv = await self._transition(cmd, conv)
        except CommandRefused as refused:
            log.info("command %s (%s) refused: %s", cmd.command_id, cmd.action, refused.message)
            await self._answer(cmd, refused.status_code, refused.message, await self.record.get_conversation(conv.id))
            return
        await self._answer(cmd, 200, None, conv)

    async def _transition(self, cmd: AgentCommand, conv: Conversation) -> Conversation:
        now = self.clock()
        by = f"agent:{cmd.agent.agent_id}"
        action: domain.Transition = cmd.action  # type: ignore[assignment]
        if conv.last_command_id == cmd.command_id:
            updated, previous = conv, conv.previous_status or conv.status  # applied before a crash
        else:
            for _ in range(SAVE_ATTEMPTS):
                change = conv.agent_transition(action, now, cmd.command_id)
                change.fields.update(assignment.transition_fields(action, conv, cmd.keep_assignee))
                saved = await self.record.save(conv.id, change)
                if saved is not None:
                    updated, previous = saved, change.previous
                    break
                fresh = await self.record.get_conversation(conv.id) or conv
                if fresh.version != conv.version:
                    # Someone else moved it first (another agent, another instance): refuse
                    # with the reason as it stands now.
                    fresh.agent_transition(action, now, cmd.command_id)
                    raise domain.TransitionRefused("The conversation changed meanwhile; try again.")
                conv = fresh  # only a visitor message came in: plan again on what it left
            else:
                raise RuntimeError(f"conversation {conv.id} keeps changing; retrying the command")
        if updated.handoff_id:
            # The handoff's history keeps who ended it and the period's first reply.
            ended = {"ended_by": cmd.agent.display_name, "first_reply_at": updated.first_reply_at}
            handoff_set: dict[str, Any] = {
                "close": {"status": "closed", "closed_at": now, **ended},
                "reopen": {"status": "open", "closed_at": None, "waiting_since": updated.waiting_since,
                           "first_reply_at": None, "ended_by": None},
                "return_to_ai": {"status": "returned_to_ai", "ended_at": now, **ended},
            }[action]
            await self.record.update_handoff(updated.handoff_id, handoff_set,
                                             history_entry(action, previous, updated.status, by, now, cmd.command_id))
        await self.state_out.publish(state_event(updated, action, previous, by, derived_event_id(cmd.command_id, "state")))
        if action == "close":
            change_index = IndexChange(remove_row=updated.id, closed_add=(updated.handoff_id, updated.closed_at)
                                       if updated.handoff_id and updated.closed_at else None)
        elif action == "reopen":
            change_index = IndexChange(upsert_row=updated.row(), closed_remove=updated.handoff_id,
                                       after_close_remove=updated.id)
        else:
            change_index = IndexChange(remove_row=updated.id)
        await self.feed.publish(updated.chatbot_id, change_index, conversation=updated,
                                event_id=derived_event_id(cmd.command_id, "update"))
        if action == "reopen":
            await self.line.entered(updated)
        else:
            self.line.moved(updated.chatbot_id)
        if action == "return_to_ai" and updated.returned_message_id:
            await self._hand_pending_to_ai(updated)
        return updated

    async def _mark_seen(self, cmd: AgentCommand, conv: Conversation) -> Conversation:
        """An agent saw what the visitor wrote to a closed conversation and leaves it closed:
        it is no longer marked nor counted (a later message marks it again)."""
        if conv.status != "closed":
            raise CommandRefused(domain.MARK_SEEN_NOT_CLOSED, 409)
        if conv.unseen_after_close or conv.unseen_after_close_at is not None:
            conv = await self.record.update_conversation(
                conv.id, {"$set": dict(SEEN_AFTER_CLOSE)}, expected_status="closed") or conv
        await self.feed.publish(conv.chatbot_id, IndexChange(after_close_remove=conv.id), conversation=conv,
                                event_id=derived_event_id(cmd.command_id, "update"))
        return conv

    async def _hand_pending_to_ai(self, conv: Conversation) -> None:
        """The visitor's message nobody answered before the Return to AI: the AI answers it."""
        assert conv.returned_message_id is not None
        message = await self.record.get_message(conv.returned_message_id)
        if message is not None:
            log.info("Return to AI: the AI answers the visitor's unanswered message")
            await self.ai.ask(conv, message["_id"], message["text"])

    async def _reply(self, cmd: AgentCommand, conv: Conversation) -> Conversation:
        now = self.clock()
        message_id = domain.agent_message_id(cmd.command_id)
        if conv.last_command_id == cmd.command_id:
            updated, text = conv, (cmd.text or "").strip()  # counted before a crash
        else:
            text = domain.check_reply(conv.status, cmd.text, conv.channel, conv.last_visitor_message_at, now)
            # The reply answers whatever the visitor was waiting on.
            set_fields = {"last_message_at": now, "last_message_preview": domain.preview(text), "updated_at": now,
                          "last_command_id": cmd.command_id, "pending_message_id": None,
                          **waitclock.agent_replied(now)}
            first = conv.first_reply_at is None
            if first:
                set_fields["first_reply_at"] = now
            found = await self.record.update_conversation(conv.id, {"$inc": {"message_count": 1}, "$set": set_fields},
                                                          expected_status="handed_off")
            if found is None:
                raise CommandRefused(domain.REPLY_NOT_ALLOWED, 409)
            updated = await assignment.claim_on_reply(self, found, cmd.agent, now)  # the first reply claims it
            if first:
                first_reply(conv.channel, found.waiting_since, now)
                self.line.moved(conv.chatbot_id)  # answered: out of the line
        doc = {
            "_id": message_id, "conversation_id": conv.id, "chatbot_id": conv.chatbot_id, "sender": "agent",
            "sender_name": cmd.agent.display_name, "text": text, "created_at": now, "delivery": "pending",
            "command_id": cmd.command_id,
        }
        if not await self.record.insert_message(doc):  # stored before a crash: show that one
            doc = await self.record.get_message(message_id) or doc
        elif updated is not conv:
            self.ai.counted(updated, [doc])
        await self.outbound_out.publish(OutboundMessage(
            event_id=derived_event_id(cmd.command_id, "outbound"), chatbot_id=conv.chatbot_id,
            conversation_id=conv.id, message_id=message_id, channel=conv.channel, visitor=updated.visitor,
            text=text, sender="agent", sender_name=cmd.agent.display_name,
        ))
        await self.feed.conversation_changed(updated, message=message_view(doc),
                                             event_id=derived_event_id(cmd.command_id, "update"))
        await summaries.message_added(self.state_out, updated, doc)  # a summary keeps up with it
        return updated

    # ------------------------------------------------------------------ settings
    async def on_human_handoff_update(self, cmd: HumanHandoffUpdate) -> None:
        if await self._answer_stored(cmd.command_id):
            return
        try:
            saved = await self.chatbots.update_human_handoff(
                cmd.chatbot_id, cmd.human_handoff, cmd.based_on_version, cmd.command_id,
                event_id=derived_event_id(cmd.command_id, "settings"))
        except CommandRefused as refused:
            log.info("command %s (human handoff settings) refused: %s", cmd.command_id, refused.message)
            await self._answer(cmd, refused.status_code, refused.message, None)
            return
        await self.feed.publish(cmd.chatbot_id, settings_changed=True, event_id=derived_event_id(cmd.command_id, "update"))
        await self._answer(cmd, 200, None, None, settings=saved.view())

    # ------------------------------------------------------------------ answers
    async def _answer_stored(self, command_id: str) -> bool:
        """A retried command id: answer again with the stored result, apply nothing."""
        stored = await self.record.get_command(command_id)
        if stored is None:
            return False
        log.info("command %s already applied; answering with the stored result", command_id)
        await self.answers_out.publish(CommandResult.model_validate_json(stored["result"]))
        return True

    async def _answer(self, cmd: AgentCommand | HumanHandoffUpdate, status_code: int, error: str | None,
                      conv: Conversation | None, settings: ChatbotView | None = None) -> None:
        result = CommandResult(
            event_id=derived_event_id(cmd.command_id, "result"), chatbot_id=cmd.chatbot_id,
            conversation_id=cmd.conversation_id, command_id=cmd.command_id, ok=status_code == 200,
            error=error, status_code=status_code, conversation=conv.view() if conv else None, settings=settings,
        )
        stored = await self.record.save_command(cmd.command_id, {
            "chatbot_id": cmd.chatbot_id, "conversation_id": cmd.conversation_id,
            "action": getattr(cmd, "action", "update_human_handoff"), "agent_id": cmd.agent.agent_id,
            "status_code": status_code, "at": self.clock(), "result": result.model_dump_json(),
        })
        await self.answers_out.publish(CommandResult.model_validate_json(stored["result"]))
