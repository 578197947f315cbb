"""The visitor's place in line reaches the widget's socket: channels takes a chatbot's line
from `visitor.line` (as the queue publishes it), keeps the newest in Redis, and sends each
connected visitor of that chatbot their place when it changed, and on connect."""

from __future__ import annotations

import json
from datetime import timedelta

from websockets.asyncio.client import connect

from shared.events import LineChanged, LinePlace
from shared.ids import utcnow
from shared.topics import VISITOR_LINE
from tests.channels.test_web import _drain, _frames_until


def _line(chatbot_id: str, *places: tuple[str, int], **kw) -> LineChanged:
    return LineChanged(chatbot_id=chatbot_id, places=[
        LinePlace(visitor_id=v, position=p, text=f"You're number {p} in line.") for v, p in places], **kw)


async def _next(ws, pred) -> dict:
    return (await _frames_until(ws, pred))[-1]


async def test_the_line_is_forwarded_to_the_visitors_sockets(stack):
    bot = await stack.add_chatbot()
    me, other = stack.visitor(bot.chatbot_id), stack.visitor(bot.chatbot_id)
    ws_url = f"{stack.service.ws_url}/web/{bot.chatbot_id}/ws"
    async with connect(ws_url) as ws, connect(ws_url) as bystander:
        await ws.send(me.auth_frame)
        await bystander.send(other.auth_frame)
        for sock in (ws, bystander):
            await _next(sock, lambda f: f["type"] == "ready")
        await stack.publish(VISITOR_LINE.name, _line(bot.chatbot_id, ("someone", 1), (me.visitor_id, 2)))
        assert await _next(ws, lambda f: f["type"] == "line") == {
            "type": "line", "position": 2, "text": "You're number 2 in line."}
        # The one ahead was answered: moved up.
        await stack.publish(VISITOR_LINE.name, _line(bot.chatbot_id, (me.visitor_id, 1)))
        assert (await _next(ws, lambda f: f["type"] == "line"))["position"] == 1
        # An older line (a queue instance that published late) changes nothing; then the
        # bystander joins the line (the same partition, handled after it).
        await stack.publish(VISITOR_LINE.name, _line(bot.chatbot_id, ("someone", 1), (me.visitor_id, 2),
                                                     occurred_at=utcnow() - timedelta(minutes=1)))
        await stack.publish(VISITOR_LINE.name, _line(bot.chatbot_id, (me.visitor_id, 1), (other.visitor_id, 2)))
        # A visitor not in line was sent nothing: the bystander's first frame is its place.
        assert json.loads(await bystander.recv()) == {"type": "line", "position": 2, "text": "You're number 2 in line."}
        # And the visitor, whose place neither line changed (the older one was dropped), got nothing.
        assert await _drain(ws, 0.3) == []

    # On connect the visitor gets their place as it stands (after the history).
    async with connect(ws_url) as ws:
        await ws.send(me.auth_frame)
        await _next(ws, lambda f: f["type"] == "ready")
        assert (await _next(ws, lambda f: f["type"] == "line"))["position"] == 1
        # Out of the line (an agent answered): the widget is told to hide it.
        await stack.publish(VISITOR_LINE.name, _line(bot.chatbot_id))
        assert await _next(ws, lambda f: f["type"] == "line") == {"type": "line", "position": None, "text": None}
