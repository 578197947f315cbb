"""The visitors' places in line, for the web widget (docs/contracts.md, "The visitor's place
in line").

The queue publishes a chatbot's whole line (`LineChanged`) on `visitor.line`; the one
channels instance that consumes it keeps it in Redis (the newest wins: two queue instances
may publish out of order) and announces it on the widget's live channel, so every instance
updates the sockets it holds. A socket that connects reads its visitor's place from Redis."""

from __future__ import annotations

import json
from typing import Any

import redis.asyncio as aioredis

from shared.events import LineChanged

# Replace a chatbot's line unless the stored one is newer. KEYS[1] the hash; ARGV[1] the
# line's time (epoch ms), ARGV[2] the TTL, then visitor id / frame pairs.
_REPLACE_IF_NEWER = """
local at = redis.call('HGET', KEYS[1], '@at')
if at and tonumber(at) > tonumber(ARGV[1]) then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '@at', ARGV[1])
for i = 3, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""
# A line nobody refreshed for this long (the queue republishes a line on show every minute)
# is gone, so a widget does not show a place from a queue that stopped long ago.
LINE_TTL_S = 3600

NOT_WAITING: dict[str, Any] = {"type": "line", "position": None, "text": None}


def line_frame(position: int, text: str) -> dict[str, Any]:
    """What the widget gets: its place and the text to show under the messages."""
    return {"type": "line", "position": position, "text": text}


class LineBoard:
    def __init__(self, redis: aioredis.Redis, prefix: str, live_channel: str) -> None:
        self.redis, self.prefix, self.live_channel = redis, prefix, live_channel
        self._replace = redis.register_script(_REPLACE_IF_NEWER)

    def _key(self, chatbot_id: str) -> str:
        return f"{self.prefix}:web:line:{chatbot_id}"

    async def on_line(self, event: LineChanged) -> bool:
        """Keep the line and announce it to every instance; False for one older than the kept."""
        frames = {p.visitor_id: line_frame(p.position, p.text) for p in event.places}
        args: list[Any] = [int(event.occurred_at.timestamp() * 1000), LINE_TTL_S]
        for visitor_id, frame in frames.items():
            args += [visitor_id, json.dumps(frame)]
        if not await self._replace(keys=[self._key(event.chatbot_id)], args=args):
            return False
        await self.redis.publish(self.live_channel, json.dumps({"chatbot_id": event.chatbot_id, "line": frames}))
        return True

    async def place(self, chatbot_id: str, visitor_id: str) -> dict[str, Any]:
        """The visitor's line frame as it stands (NOT_WAITING when they are not in line)."""
        raw = await self.redis.hget(self._key(chatbot_id), visitor_id)
        return json.loads(raw) if raw else NOT_WAITING
