"""The live hub: fan-out never waits for a client; a client stuck too far behind is dropped
while the others keep receiving (coalescing itself: test_fanout.py)."""

from __future__ import annotations

import asyncio
import json

from services.gateway.live import CLOSE_TOO_SLOW, LiveClient, LiveHub


class FakeSocket:
    """Stands in for a Starlette WebSocket; `stuck` never finishes a send (a slow reader)."""

    def __init__(self, stuck: bool = False) -> None:
        self.stuck = stuck
        self.sent: list[dict] = []
        self.closed_with: int | None = None
        self._never = asyncio.Event()

    async def send_text(self, text: str) -> None:
        if self.stuck:
            await self._never.wait()
        self.sent.append(json.loads(text))

    async def close(self, code: int = 1000, reason: str | None = None) -> None:
        self.closed_with = code


def seqs(frames: list[dict]) -> list[int]:
    """The update seqs the frames carry, single and coalesced alike, in order."""
    out: list[int] = []
    for f in frames:
        if f["type"] == "update":
            out.append(f["seq"])
        elif f["type"] == "updates":
            out.extend(u["seq"] for u in f["updates"])
    return out


def entry(seq: int, chatbot_id: str = "demo") -> dict:
    return {"chatbot_id": chatbot_id, "epoch": "e1", "seq": seq, "stats": {"open": seq}}


async def test_stuck_client_is_dropped_and_others_keep_receiving():
    hub = LiveHub(tick_s=0, catch_up=3)
    fast_ws, slow_ws = FakeSocket(), FakeSocket(stuck=True)
    fast = LiveClient(fast_ws, "a1", {"demo"})
    slow = LiveClient(slow_ws, "a2", {"demo"})
    for c in (fast, slow):
        hub.add(c)
        hub.subscribe(c, "demo")
    for seq in range(1, 11):
        hub.update("demo", entry(seq))
        await asyncio.sleep(0)  # let the fast writer drain
    await asyncio.sleep(0.01)
    assert seqs(fast_ws.sent) == list(range(1, 11))
    assert slow.dropped and slow not in hub.clients and hub.dropped_slow == 1
    assert slow_ws.closed_with == CLOSE_TOO_SLOW
    assert hub.subscribers("demo") == {fast}
    await asyncio.wait_for(fast.drained(), 1)


async def test_broadcast_reaches_only_subscribers_of_that_chatbot():
    hub = LiveHub()
    a_ws, b_ws = FakeSocket(), FakeSocket()
    a = LiveClient(a_ws, "a", {"alpha"}, queue_size=10)
    b = LiveClient(b_ws, "b", {"beta"}, queue_size=10)
    for c, bot in ((a, "alpha"), (b, "beta")):
        hub.add(c)
        hub.subscribe(c, bot)
    assert hub.broadcast("alpha", {"type": "command_result", "chatbot_id": "alpha"}) == 1
    assert hub.broadcast("gamma", {"type": "command_result", "chatbot_id": "gamma"}) == 0
    hub.remove(a)
    assert hub.broadcast("alpha", {"type": "settings"}) == 0
    assert len(a.outbox) == 1 and len(b.outbox) == 0


async def test_revalidate_looks_up_each_session_once_and_applies_the_answer():
    hub = LiveHub()
    sockets = {name: FakeSocket() for name in ("s1a", "s1b", "gone")}
    s1a = LiveClient(sockets["s1a"], "a", {"alpha", "beta"}, queue_size=10, session_digest="d1")
    s1b = LiveClient(sockets["s1b"], "a", {"alpha", "beta"}, queue_size=10, session_digest="d1")
    gone = LiveClient(sockets["gone"], "b", {"alpha"}, queue_size=10, session_digest="d2")
    for c in (s1a, s1b, gone):
        hub.add(c)
        hub.subscribe(c, "alpha")
    hub.subscribe(s1a, "beta")
    looked_up: list[str] = []

    async def memberships_of(digest: str) -> set[str] | None:
        looked_up.append(digest)
        return {"beta", "gamma"} if digest == "d1" else None

    assert await hub.revalidate(memberships_of, 4401) == 1
    await asyncio.sleep(0.01)
    assert sorted(looked_up) == ["d1", "d2"]
    assert gone not in hub.clients and sockets["gone"].closed_with == 4401
    assert set(s1a.subscriptions) == {"beta"} and not s1b.subscriptions and s1a.member_of == {"beta", "gamma"}
    assert set(hub.channels) == {"beta"} and hub.subscribers("beta") == {s1a}
    for name in ("s1a", "s1b"):
        assert sockets[name].sent == [{"type": "error", "chatbot_id": "alpha", "code": 403,
                                       "error": "Not a member of this chatbot."}]


async def test_close_handshakes_stay_referenced_until_done():
    """The loop holds tasks weakly: the hub keeps each close task until it has finished."""

    class SlowClose(FakeSocket):
        async def close(self, code: int = 1000, reason: str | None = None) -> None:
            await asyncio.sleep(0.05)
            self.closed_with = code

    hub = LiveHub()
    ws = SlowClose()
    client = LiveClient(ws, "a", {"alpha"}, queue_size=10, session_digest="d1")
    hub.add(client)
    assert hub.end_session("d1", 4401) == 1
    assert len(hub.closing) == 1
    await asyncio.wait_for(asyncio.gather(*hub.closing), 1)
    await asyncio.sleep(0)
    assert ws.closed_with == 4401 and not hub.closing
